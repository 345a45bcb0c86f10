"""Two logins of one user at once, with a cap of one session: the newest must survive.

Each login creates its session, then revokes the user's sessions beyond the cap. When
both list the user's sessions after both were created, each used to keep its own and
revoke the other, and the user was left with none: two successful logins, both dead.
"""

from __future__ import annotations

import asyncio

from sessionflow import AsyncMemoryBackend, AsyncSessionStore, ManualClock, SessionPolicy


class _ListingAfterBothCreated(AsyncMemoryBackend):
    """Holds every listing of a user's sessions until `creates` listings have arrived."""

    def __init__(self, creates: int) -> None:
        super().__init__()
        self.creates = creates
        self.arrived = 0
        self.all_created = asyncio.Event()

    async def user_keys(self, user_id: str) -> list[str]:
        self.arrived += 1
        if self.arrived >= self.creates:
            self.all_created.set()
        await self.all_created.wait()
        return await super().user_keys(user_id)


async def _login(store: AsyncSessionStore) -> str:
    session = await store.create(user_id="ada")
    return session.id


async def test_concurrent_logins_under_a_cap_keep_the_newest_sessions() -> None:
    for cap, logins in ((1, 2), (2, 5)):
        clock = ManualClock(start=1_000.0)
        store = AsyncSessionStore(
            _ListingAfterBothCreated(logins),
            policy=SessionPolicy(max_sessions_per_user=cap),
            clock=clock,
        )
        ids = []
        for _ in range(logins):  # each created one tick after the other, none listed yet
            ids.append(asyncio.create_task(_login(store)))
            await asyncio.sleep(0)
            clock.advance(1)
        created = await asyncio.gather(*ids)
        live = [i for i in created if await store.get(i, touch=False) is not None]
        assert live == created[-cap:]
