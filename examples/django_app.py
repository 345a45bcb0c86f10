"""A one-file Django project with sessionflow sessions: a counter, login, preferences, logout.

    python examples/django_app.py runserver   # on a local Redis it starts itself

Login here does what ``django.contrib.auth.login`` does to the session (``cycle_key`` and
``_auth_user_id``) without needing a user table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

from sessionflow.django import revoke_user

BEFORE_WRITE: list[Callable[[], None]] = []  # tests hook in here to interleave requests


def configure(store_factory: str, async_store_factory: str | None = None) -> None:
    """Configure Django for this project (once per process)."""
    settings.configure(
        DEBUG=False,
        SECRET_KEY="example-only",  # noqa: S106 - signs nothing here: sessions are server-side
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver", "localhost", "127.0.0.1"],
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=[
            "sessionflow.django.NoStoreOnNewSession",
            "django.contrib.sessions.middleware.SessionMiddleware",
        ],
        DATABASES={},
        SESSION_ENGINE="sessionflow.django",
        SESSIONFLOW_STORE=store_factory,
        SESSIONFLOW_ASYNC_STORE=async_store_factory,
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_AGE=12 * 3600,  # the store's absolute timeout (SessionPolicy default)
    )
    django.setup()


def visit(request: HttpRequest) -> JsonResponse:
    request.session["views"] = request.session.get("views", 0) + 1
    return JsonResponse({"views": request.session["views"]})


UNREMEMBERED_SECONDS = 30 * 60


def login(request: HttpRequest) -> JsonResponse:
    request.session.cycle_key()  # what django.contrib.auth.login does first
    request.session["_auth_user_id"] = request.POST["user"]
    if request.POST.get("remember", "1") != "1":
        # "Remember me" unticked: the session ends half an hour after its last change,
        # on the server as well as in the browser.
        request.session.set_expiry(UNREMEMBERED_SECONDS)
    return JsonResponse({"user": request.POST["user"]})


def set_preference(request: HttpRequest, name: str, value: str) -> JsonResponse:
    before = dict(request.session.items())
    for hook in BEFORE_WRITE:
        hook()
    request.session[name] = value
    return JsonResponse({"before": before})


def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(dict(request.session.items()))


def logout(request: HttpRequest) -> JsonResponse:
    user = request.session.get("_auth_user_id")
    if user is not None and request.GET.get("everywhere") == "1":
        revoke_user(user)
    request.session.flush()
    return JsonResponse({"ok": True})


async def avisit(request: HttpRequest) -> JsonResponse:
    views = await request.session.aget("views", 0) + 1
    await request.session.aset("views", views)
    return JsonResponse({"views": views})


urlpatterns = [
    path("", visit),
    path("login", login),
    path("prefs/<str:name>/<str:value>", set_preference),
    path("whoami", whoami),
    path("logout", logout),
    path("async", avisit),
]


def local_store():  # noqa: ANN201 - the factory SESSIONFLOW_STORE names when run directly
    import redis

    from sessionflow import RedisBackend, SessionStore
    from sessionflow.local_servers import RedisServer

    server = RedisServer().start()  # lives as long as the process
    return SessionStore(RedisBackend(redis.Redis(port=server.port)))


if __name__ == "__main__":
    configure(f"{__name__}.local_store")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
