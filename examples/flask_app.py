"""A Flask app with sessionflow sessions: a visit counter, login, preferences, logout.

python examples/flask_app.py          # on a local Redis it starts itself, port 5000
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, jsonify, request, session

from sessionflow import CookieSettings, HeaderSettings, SessionStore
from sessionflow.flask import FlaskSession, SessionflowInterface

UNREMEMBERED_SECONDS = 30 * 60


def create_app(
    store: SessionStore,
    *,
    cookie: CookieSettings | None = None,
    header: HeaderSettings | None = None,
    before_write: Callable[[], None] | None = None,
) -> Flask:
    """Build the app on `store`; `before_write` runs before a preference is written (tests).

    With `header`, clients send the session id in that header instead of a cookie.
    """
    app = Flask(__name__)
    app.session_interface = SessionflowInterface(store, cookie, header=header)

    def flask_session() -> FlaskSession:
        assert isinstance(session, FlaskSession)  # the interface above made it
        return session

    @app.get("/")
    def visit():
        session["views"] = session.get("views", 0) + 1
        return jsonify(views=session["views"])

    @app.post("/login")
    def login():
        user = request.form["user"]
        flask_session().regenerate(user_id=user)  # a new id at login: no fixation
        session["user"] = user
        if request.form.get("remember", "1") != "1":
            # "Remember me" unticked: half an hour, on the server as well as in the browser
            flask_session().expire_at(store.clock.now() + UNREMEMBERED_SECONDS)
        return jsonify(user=user)

    @app.post("/prefs/<name>/<value>")
    def set_preference(name: str, value: str):
        current = dict(session)  # read first, like a real handler would
        if before_write is not None:
            before_write()
        session[name] = value
        return jsonify(before=current)

    @app.get("/whoami")
    def whoami():
        return jsonify(dict(session))

    @app.post("/logout")
    def logout():
        flask_session().logout(everywhere=request.args.get("everywhere") == "1")
        return jsonify(ok=True)

    return app


if __name__ == "__main__":
    import redis

    from sessionflow import RedisBackend
    from sessionflow.local_servers import RedisServer

    with RedisServer() as server:
        store = SessionStore(RedisBackend(redis.Redis(port=server.port)))
        # Secure cookies need HTTPS; this local run serves plain HTTP on loopback.
        create_app(store, cookie=CookieSettings(secure=False)).run(host="127.0.0.1", port=5000)
