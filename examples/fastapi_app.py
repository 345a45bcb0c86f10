"""A FastAPI app with sessionflow sessions: a cart, login, logout everywhere, a live cart.

uvicorn examples.fastapi_app:app    # needs a Redis on 127.0.0.1:6379
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request, WebSocket, WebSocketDisconnect

from sessionflow import AsyncSessionStore, CookieSettings
from sessionflow.asgi import RequestSession, SessionMiddleware, request_session


def session_of(request: Request) -> RequestSession:
    return request_session(request.scope)


Sessions = Annotated[RequestSession, Depends(session_of)]
api = FastAPI(title="sessionflow example")


@api.post("/cart/{sku}")
async def add_to_cart(sku: str, sessions: Sessions) -> dict[str, list[str]]:
    session = await sessions.get()  # creates a session (and its cookie) if there is none
    session["cart"] = [*session.get("cart", []), sku]
    return {"cart": session["cart"]}


@api.get("/cart")
async def show_cart(sessions: Sessions) -> dict[str, list[str]]:
    session = await sessions.load()  # never creates one
    return {"cart": [] if session is None else session.get("cart", [])}


@api.post("/login/{user}")
async def login(user: str, sessions: Sessions) -> dict[str, str]:
    await sessions.regenerate(user_id=user)  # a new id at login: no session fixation
    return {"user": user}


@api.post("/logout")
async def logout(sessions: Sessions, everywhere: bool = False) -> dict[str, bool]:
    await sessions.logout(everywhere=everywhere)
    return {"ok": True}


@api.websocket("/cart/live")
async def live_cart(websocket: WebSocket) -> None:
    """Answer each message with the cart, for as long as the session lives.

    The session is the one of the handshake's cookie; the middleware keeps it alive as
    messages arrive and closes the connection once it ends (logout everywhere).
    """
    sessions = request_session(websocket.scope)
    session = await sessions.load()
    if session is None:
        await websocket.close(code=1008)  # authenticate at the handshake
        return
    await websocket.accept()
    try:
        while True:
            await websocket.receive_text()
            # Another request may have changed the cart: read it again (no touch: the
            # middleware keeps the session alive at its own pace).
            current = await sessions.store.get(session.id, touch=False)
            await websocket.send_json({"cart": [] if current is None else current.get("cart", [])})
    except WebSocketDisconnect:
        pass


def create_app(store: AsyncSessionStore, cookie: CookieSettings | None = None) -> SessionMiddleware:
    """Wrap the API in the session middleware."""
    return SessionMiddleware(api, store=store, cookie=cookie)


def _default_app() -> SessionMiddleware:
    import redis.asyncio

    from sessionflow import AsyncRedisBackend

    backend = AsyncRedisBackend(redis.asyncio.Redis(host="127.0.0.1", port=6379))
    return create_app(AsyncSessionStore(backend), CookieSettings(secure=False))


def __getattr__(name: str) -> SessionMiddleware:
    # `uvicorn examples.fastapi_app:app` builds the app on first access, not at import.
    if name == "app":
        return _default_app()
    raise AttributeError(name)
