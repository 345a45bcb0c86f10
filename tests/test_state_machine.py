"""A hypothesis state machine: the store on every backend, sync and async, against a model.

The model is a dict of what each session should hold and when it should expire; every
step runs the same operation on both and compares.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from sessionflow import (
    AsyncSessionStore,
    ManualClock,
    SessionPolicy,
    SessionStore,
)
from tests._async.backend_factory import async_build_backend
from tests._sync.backend_factory import sync_build_backend
from tests.conftest import BACKENDS, Servers

POLICY = SessionPolicy(idle_timeout=100, absolute_timeout=1000, touch_interval=10)
USERS = ["alice", "bob", "carol"]
NAMES = st.sampled_from(["cart", "theme", "step", "flags"])
VALUES = st.one_of(
    st.integers(-(2**40), 2**40),
    st.text(max_size=12),
    st.lists(st.integers(0, 9), max_size=4),
    st.dictionaries(st.sampled_from(["a", "b"]), st.booleans(), max_size=2),
)


@dataclass
class Expected:
    attributes: dict[str, Any]
    user: str | None
    last_access: float
    idle_expires_at: float
    absolute_expires_at: float
    deleted: bool = False

    def live(self, now: float) -> bool:
        return not self.deleted and now < min(self.idle_expires_at, self.absolute_expires_at)


@dataclass
class Harness:
    """Runs store calls: directly (sync) or to completion on a private loop (async)."""

    store: Any
    clock: ManualClock
    run: Callable[[Any], Any]
    closers: list[Callable[[], None]] = field(default_factory=list)


class SessionMachine(RuleBasedStateMachine):
    harness_factory: Callable[[], Harness]

    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.harness = self.harness_factory()
        self.model: dict[str, Expected] = {}
        self.tag = uuid.uuid4().hex[:8]  # users are unique per example

    def user(self, name: str | None) -> str | None:
        return None if name is None else f"{name}-{self.tag}"

    @property
    def now(self) -> float:
        return self.harness.clock.now()

    def call(self, result: Any) -> Any:
        return self.harness.run(result)

    @initialize()
    def start(self) -> None:
        assert self.model == {}

    @rule(
        target=sessions,
        attributes=st.dictionaries(NAMES, VALUES, max_size=3),
        user=st.sampled_from([None, *USERS]),
    )
    def create(self, attributes: dict[str, Any], user: str | None) -> str:
        session = self.call(self.harness.store.create(attributes, user_id=self.user(user)))
        now = self.now
        self.model[session.id] = Expected(
            dict(attributes),
            self.user(user),
            now,
            now + POLICY.idle_timeout,
            now + POLICY.absolute_timeout,
        )
        return session.id

    @rule(session_id=sessions, touch=st.booleans())
    def get(self, session_id: str, touch: bool) -> None:
        expected = self.model[session_id]
        loaded = self.call(self.harness.store.get(session_id, touch=touch))
        if not expected.live(self.now):
            assert loaded is None
            return
        assert loaded is not None
        assert loaded.to_dict() == expected.attributes
        assert loaded.user_id == expected.user
        if touch and self.now - expected.last_access >= POLICY.touch_interval:
            expected.last_access = self.now
            expected.idle_expires_at = min(
                self.now + POLICY.idle_timeout, expected.absolute_expires_at
            )
        assert loaded.idle_expires_at == expected.idle_expires_at

    @rule(session_id=sessions, name=NAMES, value=st.one_of(st.none(), VALUES))
    def save(self, session_id: str, name: str, value: Any) -> None:
        expected = self.model[session_id]
        loaded = self.call(self.harness.store.get(session_id, touch=False))
        if loaded is None:
            assert not expected.live(self.now)
            return
        if value is None:
            loaded.pop(name, None)
            expected.attributes.pop(name, None)
        else:
            loaded[name] = value
            expected.attributes[name] = value
        wrote = self.call(self.harness.store.save(loaded))
        # A save with nothing to write still touches the session when a touch is due.
        if wrote or self.now - expected.last_access >= POLICY.touch_interval:
            expected.last_access = self.now
            expected.idle_expires_at = min(
                self.now + POLICY.idle_timeout, expected.absolute_expires_at
            )

    @rule(session_id=sessions)
    def delete(self, session_id: str) -> None:
        expected = self.model[session_id]
        deleted = self.call(self.harness.store.delete(session_id))
        assert deleted == expected.live(self.now)
        expected.deleted = True

    @rule(target=sessions, session_id=consumes(sessions), user=st.sampled_from([None, *USERS]))
    def regenerate(self, session_id: str, user: str | None) -> str:
        expected = self.model[session_id]
        loaded = self.call(self.harness.store.get(session_id, touch=False))
        if loaded is None:
            assert not expected.live(self.now)
            return session_id
        moved = self.call(self.harness.store.regenerate(loaded, user_id=self.user(user)))
        expected.deleted = True
        self.model[moved.id] = Expected(
            dict(expected.attributes),
            self.user(user) if user is not None else expected.user,
            self.now,
            min(self.now + POLICY.idle_timeout, expected.absolute_expires_at),
            expected.absolute_expires_at,
        )
        return moved.id

    @rule(seconds=st.sampled_from([1.0, 10.0, 60.0, 101.0, 400.0]))
    def advance(self, seconds: float) -> None:
        self.harness.clock.advance(seconds)

    @rule(user=st.sampled_from(USERS))
    def revoke_user(self, user: str) -> None:
        owner = self.user(user)
        live = [e for e in self.model.values() if e.user == owner and e.live(self.now)]
        assert self.call(self.harness.store.revoke_user(owner)) == len(live)
        for entry in live:
            entry.deleted = True

    @invariant()
    def user_listings_match(self) -> None:
        for user in USERS:
            owner = self.user(user)
            listed = self.call(self.harness.store.list_user(owner))
            expected = sorted(
                e.absolute_expires_at
                for e in self.model.values()
                if e.user == owner and e.live(self.now)
            )
            assert sorted(s.absolute_expires_at for s in listed) == expected

    def teardown(self) -> None:
        for close in reversed(self.harness.closers):
            close()


def sync_harness(kind: str, servers: Servers) -> Harness:
    clock = ManualClock()
    stack = ExitStack()
    backend = sync_build_backend(kind, servers, clock, f"sm{uuid.uuid4().hex[:8]}", stack=stack)
    store = SessionStore(backend, policy=POLICY, clock=clock)
    return Harness(store, clock, lambda value: value, [stack.close])


def async_harness(kind: str, servers: Servers) -> Harness:
    clock = ManualClock()
    runner = asyncio.Runner()
    stack = AsyncExitStack()
    prefix = f"sm{uuid.uuid4().hex[:8]}"
    backend = runner.run(async_build_backend(kind, servers, clock, prefix, stack=stack))
    store = AsyncSessionStore(backend, policy=POLICY, clock=clock)

    def close() -> None:
        runner.run(stack.aclose())
        runner.close()

    return Harness(store, clock, runner.run, [close])


# Every kind on memory stores and every leaf on its server, both flavours; the real-server
# composites at the stages where authority or fencing changes and in the richer tier
# policy, in the async flavour (the sync one is generated from it). Each of those costs
# 12-18 s here; the contract suite covers all their stages, policies and both flavours.
SLOW_COMPOSITES_SKIPPED = {
    *(f"redis-to-dynamodb-{stage}" for stage in ("off", "shadow", "rampdown", "complete")),
    "redis-dynamodb-tiered-write-through",
}
MODEL_CASES = [
    (kind, flavour)
    for kind in BACKENDS
    if kind not in SLOW_COMPOSITES_SKIPPED
    for flavour in ("sync", "async")
    if flavour == "async" or not kind.startswith(("redis-to-dynamodb-", "redis-dynamodb-"))
]


@pytest.mark.parametrize(("kind", "flavour"), MODEL_CASES)
def test_store_matches_the_model(kind: str, flavour: str, servers: Servers) -> None:
    make = sync_harness if flavour == "sync" else async_harness

    class Machine(SessionMachine):
        harness_factory = staticmethod(lambda: make(kind, servers))

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
