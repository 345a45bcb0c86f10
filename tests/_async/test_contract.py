"""The contract every backend honours through the store: memory, Redis, Redis Cluster, DynamoDB.

Written once against the async store; scripts/unasync.py generates the sync twin.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from functools import partial

import pytest

from sessionflow import (
    AsyncBackend,
    AsyncMemoryBackend,
    AsyncMigratingBackend,
    AsyncSessionStore,
    Codec,
    InvalidAttribute,
    InvalidSessionId,
    ManualClock,
    SessionEvent,
    SessionEventKind,
    SessionNotFound,
    SessionPolicy,
    SessionRecord,
    SessionTooLarge,
    VersionConflict,
    new_session_id,
    storage_key,
)
from sessionflow._async import store as store_module
from tests.concurrency import async_run_all
from tests.conftest import POLICY


async def test_create_then_get_round_trips(async_store: AsyncSessionStore, user: str) -> None:
    session = await async_store.create({"cart": {"items": [1, 2]}, "n": 3}, user_id=user)
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded.to_dict() == {"cart": {"items": [1, 2]}, "n": 3}
    assert loaded.user_id == user
    assert loaded.version == 1
    assert loaded.key == storage_key(session.id) != session.id
    assert loaded.created_at == session.created_at
    assert loaded.absolute_expires_at == session.created_at + POLICY.absolute_timeout
    assert loaded.idle_expires_at == session.created_at + POLICY.idle_timeout


async def test_unknown_id_reads_as_none(async_store: AsyncSessionStore) -> None:
    assert await async_store.get(new_session_id()) is None
    assert not await async_store.exists(new_session_id())


@pytest.mark.parametrize(
    "bad_id",
    ["", "short", "x" * 44, "a" * 42 + "!", "a" * 42 + "=", 12345, None, "a" * 42 + "B"],
)
async def test_malformed_ids_are_refused_before_storage(
    async_store: AsyncSessionStore, bad_id: object
) -> None:
    with pytest.raises(InvalidSessionId) as caught:
        await async_store.get(bad_id)  # type: ignore[arg-type]
    assert str(bad_id) not in str(caught.value) or len(str(bad_id)) < 6
    with pytest.raises(InvalidSessionId):
        await async_store.delete(bad_id)  # type: ignore[arg-type]


async def test_save_writes_changes_and_nested_mutations(async_store: AsyncSessionStore) -> None:
    session = await async_store.create({"cart": {"items": [1]}, "keep": "me", "drop": 1})
    session["cart"]["items"].append(2)  # mutated in place: no setter involved
    session["new"] = True
    del session["drop"]
    assert await async_store.save(session)
    assert session.version == 2
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded.to_dict() == {"cart": {"items": [1, 2]}, "keep": "me", "new": True}
    assert loaded.version == 2


async def test_save_without_changes_writes_nothing(async_store: AsyncSessionStore) -> None:
    session = await async_store.create({"a": 1})
    session["a"] = 1
    assert not await async_store.save(session)
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded.version == 1


async def test_idle_timeout_is_enforced_at_read_time(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create({"a": 1})
    clock.advance(POLICY.idle_timeout - 1)
    assert await async_store.get(session.id, touch=False) is not None
    clock.advance(1)
    assert await async_store.get(session.id) is None


async def test_activity_keeps_a_session_alive_until_the_absolute_timeout(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create({"a": 1})
    step = POLICY.idle_timeout / 2
    elapsed = 0.0
    while elapsed + step < POLICY.absolute_timeout:
        clock.advance(step)
        elapsed += step
        assert await async_store.get(session.id) is not None, f"expired early at {elapsed}"
    clock.advance(POLICY.absolute_timeout - elapsed)
    assert await async_store.get(session.id) is None


async def test_touch_extends_idle_expiry_at_most_once_per_interval(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create({"a": 1})
    first_expiry = session.idle_expires_at
    clock.advance(POLICY.touch_interval - 1)
    assert not await async_store.touch(session)
    assert session.idle_expires_at == first_expiry
    clock.advance(1)
    assert await async_store.touch(session)
    assert session.idle_expires_at == first_expiry + POLICY.touch_interval
    loaded = await async_store.get(session.id, touch=False)
    assert loaded is not None
    assert loaded.idle_expires_at == session.idle_expires_at
    assert loaded.version == 1  # a touch rewrites no attribute and no version
    assert loaded.to_dict() == {"a": 1}


async def test_a_touch_never_brings_back_a_session_that_idled_out(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    """A session held in memory (a long-lived connection's) outlives its idle timeout;
    its record may still be in storage (DynamoDB deletes expired items up to days later)."""
    held = await async_store.create({"a": 1})
    clock.advance(POLICY.idle_timeout + 1)
    assert not await async_store.touch(held)
    assert await async_store.get(held.id) is None
    assert held.idle_expires_at < clock.now()


async def test_a_held_session_another_request_kept_alive_is_touched(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    held = await async_store.create({"a": 1})
    clock.advance(POLICY.idle_timeout - 1)
    assert await async_store.get(held.id) is not None  # another request: touches it
    clock.advance(2)  # past the held copy's idle expiry, not the record's
    assert await async_store.touch(held)
    assert held.idle_expires_at == clock.now() + POLICY.idle_timeout


async def test_a_late_touch_never_moves_expiry_backwards(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create()
    now = clock.now()
    backend = async_store.backend
    assert await backend.touch(session.key, last_access=now + 60, idle_expires_at=now + 660)
    # A slower request that read the clock earlier arrives second.
    assert await backend.touch(session.key, last_access=now + 30, idle_expires_at=now + 630)
    record = await backend.get(session.key)
    assert record is not None
    assert (record.last_access, record.idle_expires_at) == (now + 60, now + 660)
    await async_store.delete(session)
    assert not await backend.touch(session.key, last_access=now + 90, idle_expires_at=now + 690)


async def test_get_touches_so_reading_is_activity(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create()
    clock.advance(POLICY.idle_timeout - 1)
    assert await async_store.get(session.id) is not None  # touches
    clock.advance(POLICY.idle_timeout - 1)
    assert await async_store.get(session.id) is not None


async def test_idle_expiry_never_passes_absolute_expiry(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create()
    clock.advance(POLICY.absolute_timeout - 10)
    session["late"] = 1
    # Idle expiry was long passed without activity: the session is gone.
    with pytest.raises(SessionNotFound):
        await async_store.save(session)


async def test_save_extends_idle_expiry(async_store: AsyncSessionStore, clock: ManualClock) -> None:
    session = await async_store.create()
    clock.advance(POLICY.idle_timeout - 1)
    session["x"] = 1
    assert await async_store.save(session)
    clock.advance(POLICY.idle_timeout - 1)
    assert await async_store.get(session.id) is not None


async def test_a_new_end_alone_is_saved_and_ends_the_session(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    """`expire_at` is a change of its own: "remember me" unticked after the session began."""
    session = await async_store.create({"cart": [1]})
    end = clock.now() + 100
    session.expire_at(end)
    assert await async_store.save(session)  # no attribute changed
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded.absolute_expires_at == end
    assert loaded.idle_expires_at <= end
    assert loaded.to_dict() == {"cart": [1]}
    assert not await async_store.save(loaded)  # read back: nothing moved any more
    clock.advance(99)
    assert await async_store.get(session.id) is not None
    clock.advance(1)
    assert await async_store.get(session.id) is None


async def test_a_new_end_never_passes_the_policy(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create()
    ceiling = session.absolute_expires_at
    session.expire_at(clock.now() + 10)
    await async_store.save(session)
    session.expire_at(clock.now() + 10 * POLICY.absolute_timeout)  # back to the policy, and more
    assert await async_store.save(session)
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded.absolute_expires_at == ceiling == session.absolute_expires_at


async def test_an_end_already_past_deletes_the_session_at_its_save(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create({"a": 1})
    clock.advance(5)
    session.expire_at(clock.now() - 1)
    with pytest.raises(SessionNotFound):
        await async_store.save(session)
    assert await async_store.get(session.id) is None
    session.expire_at(clock.now() + 100)  # a late save cannot bring it back
    with pytest.raises(SessionNotFound):
        await async_store.save(session)
    assert await async_store.get(session.id) is None


async def test_a_new_end_moves_with_regenerate_and_survives_a_merge(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create({"a": 1})
    other = await async_store.get(session.id)
    assert other is not None
    other["b"] = 2
    await async_store.save(other)
    end = clock.now() + 50
    session.expire_at(end)
    assert await async_store.save(session)  # merged over the other request's change
    moved = await async_store.regenerate(session)
    assert moved.absolute_expires_at == end
    loaded = await async_store.get(moved.id)
    assert loaded is not None
    assert loaded.to_dict() == {"a": 1, "b": 2}
    assert loaded.absolute_expires_at == end
    ending = await async_store.get(moved.id)
    assert ending is not None
    ending.expire_at(clock.now() + 20)
    regenerated = await async_store.regenerate(ending)  # an unsaved new end is saved first
    assert regenerated.absolute_expires_at == clock.now() + 20


async def test_create_can_end_sooner_than_the_policy(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    now = clock.now()
    short = await async_store.create(expires_at=now + 30)
    assert short.absolute_expires_at == now + 30
    assert short.idle_expires_at == now + 30
    long = await async_store.create(expires_at=now + 10 * POLICY.absolute_timeout)
    assert long.absolute_expires_at == now + POLICY.absolute_timeout
    clock.advance(30)
    assert await async_store.get(short.id) is None
    assert await async_store.get(long.id) is not None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 10**400, "soon", True, None])
async def test_a_session_end_must_be_a_finite_time(
    async_store: AsyncSessionStore, clock: ManualClock, bad: object
) -> None:
    if bad is not None:  # None is the policy's end when creating
        with pytest.raises(InvalidAttribute, match="session's end"):
            await async_store.create(expires_at=bad)  # type: ignore[arg-type]
    session = await async_store.create()
    with pytest.raises(InvalidAttribute, match="session's end"):
        session.expire_at(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidAttribute, match="before it starts"):
        await async_store.create(expires_at=clock.now())


async def test_save_after_absolute_expiry_fails(
    async_store: AsyncSessionStore, clock: ManualClock
) -> None:
    session = await async_store.create()
    clock.advance(POLICY.absolute_timeout)
    session["x"] = 1
    with pytest.raises(SessionNotFound):
        await async_store.save(session)


async def test_deleted_sessions_stay_deleted(async_store: AsyncSessionStore) -> None:
    session = await async_store.create({"a": 1})
    stale = await async_store.get(session.id)
    assert stale is not None
    assert await async_store.delete(session.id)
    assert await async_store.get(session.id) is None
    assert not await async_store.delete(session)
    stale["a"] = 2
    with pytest.raises(SessionNotFound):
        await async_store.save(stale)
    assert not await async_store.touch(stale)
    assert await async_store.get(session.id) is None
    record = await async_store.backend.get(session.key)
    assert record is not None
    assert record.tombstone


async def test_delete_racing_saves_stays_deleted(async_store: AsyncSessionStore) -> None:
    for _ in range(5):
        session = await async_store.create({"n": 0})
        copies = [await async_store.get(session.id) for _ in range(6)]

        async def save(copy, value: int) -> str:
            copy[f"n{value}"] = value
            try:
                await async_store.save(copy)
            except SessionNotFound:
                return "refused"
            return "saved"

        calls = [partial(save, copy, i) for i, copy in enumerate(copies)]
        calls.insert(3, partial(async_store.delete, session.id))
        await async_run_all(calls)
        assert await async_store.get(session.id) is None
        record = await async_store.backend.get(session.key)
        assert record is not None
        assert record.tombstone


async def test_twenty_concurrent_writers_of_distinct_attributes_all_land(
    async_store: AsyncSessionStore,
) -> None:
    session = await async_store.create({"base": 0})
    copies = [await async_store.get(session.id) for _ in range(20)]

    async def write(index: int) -> bool:
        copy = copies[index]
        assert copy is not None
        copy[f"attr{index}"] = index
        return await async_store.save(copy)

    results = await async_run_all([partial(write, i) for i in range(20)])
    assert all(results)
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded.to_dict() == {"base": 0, **{f"attr{i}": i for i in range(20)}}
    if await fenced(async_store.backend):
        # A fenced save whose write landed in both stores but was overtaken in the new
        # store before its own copy got there is told "conflict": it cannot tell a write
        # built on its own from one by a process already at live. Its merge writes the
        # same values again: one version more, nothing lost.
        assert loaded.version >= 21
    else:
        assert loaded.version == 21
    assert async_store.stats.merged_conflicts >= 1


async def fenced(backend: AsyncBackend) -> bool:
    """Tell whether `backend` is a migrating backend in the fenced cutover stage."""
    return isinstance(backend, AsyncMigratingBackend) and (await backend.stage()).fenced


async def test_a_merged_save_takes_the_other_writers_values(
    async_store: AsyncSessionStore,
) -> None:
    """After a merge the session shows the other request's change and never writes it back."""
    created = await async_store.create({"a": 0, "b": 0, "gone": 1})
    first = await async_store.get(created.id)
    second = await async_store.get(created.id)
    assert first is not None
    assert second is not None
    first["a"] = 1
    del first["gone"]
    await async_store.save(first)
    second["b"] = 2
    await async_store.save(second)  # merged on top of the first save
    assert second.to_dict() == {"a": 1, "b": 2}
    second["b"] = 3
    await async_store.save(second)  # must not write its old view of "a" back
    final = await async_store.get(created.id)
    assert final is not None
    assert final.to_dict() == {"a": 1, "b": 3}


async def test_same_attribute_conflict_raises_by_default(async_store: AsyncSessionStore) -> None:
    session = await async_store.create({"count": 0, "other": 0})
    first = await async_store.get(session.id)
    second = await async_store.get(session.id)
    assert first is not None
    assert second is not None
    first["count"] = 1
    await async_store.save(first)
    second["count"] = 2
    with pytest.raises(VersionConflict) as caught:
        await async_store.save(second)
    assert caught.value.attributes == {"count"}
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded["count"] == 1


async def test_same_value_written_twice_is_not_a_conflict(async_store: AsyncSessionStore) -> None:
    session = await async_store.create({"flag": False})
    first = await async_store.get(session.id)
    second = await async_store.get(session.id)
    assert first is not None
    assert second is not None
    first["flag"] = True
    second["flag"] = True
    await async_store.save(first)
    assert await async_store.save(second)


async def test_last_writer_wins_only_when_chosen(async_backend, clock: ManualClock) -> None:
    store = AsyncSessionStore(
        async_backend,
        policy=SessionPolicy(on_conflict="last_writer_wins"),
        clock=clock,
    )
    session = await store.create({"count": 0})
    first = await store.get(session.id)
    second = await store.get(session.id)
    assert first is not None
    assert second is not None
    first["count"] = 1
    first["mine"] = "first"
    await store.save(first)
    second["count"] = 2
    await store.save(second)
    loaded = await store.get(session.id)
    assert loaded is not None
    assert loaded.to_dict() == {"count": 2, "mine": "first"}


async def test_regenerate_moves_data_to_a_new_id(async_store: AsyncSessionStore, user: str) -> None:
    session = await async_store.create({"cart": [1]})
    session["pending"] = "saved on the way"
    moved = await async_store.regenerate(session, user_id=user)
    assert moved.id != session.id
    assert moved.key != session.key
    assert await async_store.get(session.id) is None
    loaded = await async_store.get(moved.id)
    assert loaded is not None
    assert loaded.to_dict() == {"cart": [1], "pending": "saved on the way"}
    assert loaded.user_id == user
    assert loaded.created_at == session.created_at
    assert loaded.absolute_expires_at == session.absolute_expires_at
    assert [s.handle for s in await async_store.list_user(user)] == [moved.key]
    old = await async_store.backend.get(session.key)
    assert old is not None
    assert old.tombstone


async def test_regenerate_never_loses_a_concurrent_save(async_store: AsyncSessionStore) -> None:
    for _ in range(4):
        session = await async_store.create({"a": 0})
        other = await async_store.get(session.id)
        assert other is not None
        other["b"] = "concurrent"

        async def save_other(other=other) -> bool:
            try:
                return await async_store.save(other)
            except SessionNotFound:
                return False

        moved, saved = await async_run_all([partial(async_store.regenerate, session), save_other])
        loaded = await async_store.get(moved.id)  # type: ignore[union-attr]
        assert loaded is not None
        if saved:
            assert loaded.get("b") == "concurrent", "an acknowledged save was lost"
        assert await async_store.get(session.id) is None


async def test_regenerate_racing_logout_leaves_no_orphan(
    async_store: AsyncSessionStore, user: str
) -> None:
    for _ in range(5):
        session = await async_store.create({"a": 1}, user_id=user)

        async def regenerate(session=session):
            try:
                return await async_store.regenerate(session)
            except SessionNotFound:
                return None

        moved, logged_out = await async_run_all(
            [regenerate, partial(async_store.delete, session.id)]
        )
        # Exactly one of them ended the live session: a logout that won must not be undone
        # by a regeneration that read the session a moment before.
        assert (moved is None) == logged_out
        assert await async_store.get(session.id) is None
        listed = [s.handle for s in await async_store.list_user(user)]
        if moved is None:
            assert listed == [], "a regeneration that failed left a live copy behind"
        else:
            assert listed == [moved.key]
            await async_store.delete(moved)


async def test_regenerate_of_a_deleted_session_fails(async_store: AsyncSessionStore) -> None:
    session = await async_store.create()
    await async_store.delete(session)
    with pytest.raises(SessionNotFound):
        await async_store.regenerate(session)


async def test_list_user_is_oldest_first_and_prunes_dead_sessions(
    async_store: AsyncSessionStore, clock: ManualClock, user: str
) -> None:
    first = await async_store.create(user_id=user)
    clock.advance(1)
    second = await async_store.create(user_id=user)
    clock.advance(1)
    third = await async_store.create(user_id=user)
    await async_store.create(user_id=user + "-other")
    assert [s.handle for s in await async_store.list_user(user)] == [
        first.key,
        second.key,
        third.key,
    ]
    await async_store.delete(second)
    clock.advance(POLICY.idle_timeout - 1)
    await async_store.touch(third)
    clock.advance(2)  # first idles out, third was touched
    listed = await async_store.list_user(user)
    assert [s.handle for s in listed] == [third.key]
    assert listed[0].user_id == user
    assert await async_store.list_user("nobody-" + user) == []


async def test_a_user_with_more_sessions_than_a_page_is_listed_and_revoked_whole(
    async_store: AsyncSessionStore, clock: ManualClock, user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing reads a user's sessions a page at a time; every page counts, dead ones too."""
    monkeypatch.setattr(store_module, "USER_READ_PAGE", 3)
    sessions = []
    for _ in range(8):
        sessions.append(await async_store.create(user_id=user))
        clock.advance(1)
    await async_store.delete(sessions[4])  # in the second page
    listed = await async_store.list_user(user)
    assert [s.handle for s in listed] == [s.key for i, s in enumerate(sessions) if i != 4]
    assert await async_store.revoke_user(user, keep=sessions[7].id) == 6
    assert [s.handle for s in await async_store.list_user(user)] == [sessions[7].key]


async def test_listing_a_user_never_reads_more_than_a_page_at_once(user: str) -> None:
    backend = AsyncMemoryBackend()
    store = AsyncSessionStore(backend)
    for _ in range(store_module.USER_READ_PAGE * 2 + 1):
        await store.create(user_id=user)
    reads: list[int] = []
    read_many = backend.get_many

    async def counted(keys):  # type: ignore[no-untyped-def]
        reads.append(len(keys))
        return await read_many(keys)

    backend.get_many = counted  # type: ignore[method-assign]
    assert len(await store.list_user(user)) == store_module.USER_READ_PAGE * 2 + 1
    assert reads == [store_module.USER_READ_PAGE, store_module.USER_READ_PAGE, 1]


async def test_revoke_user_logs_out_everywhere_but_kept_device(
    async_store: AsyncSessionStore, user: str
) -> None:
    sessions = [await async_store.create({"i": i}, user_id=user) for i in range(4)]
    bystander = await async_store.create(user_id=user + "-bystander")
    assert await async_store.revoke_user(user, keep=sessions[1].id) == 3
    assert [s.handle for s in await async_store.list_user(user)] == [sessions[1].key]
    for index, session in enumerate(sessions):
        assert (await async_store.get(session.id) is not None) == (index == 1)
    assert await async_store.get(bystander.id) is not None
    assert await async_store.revoke_user(user) == 1
    assert await async_store.list_user(user) == []


async def test_revoke_by_handle(async_store: AsyncSessionStore, user: str) -> None:
    session = await async_store.create(user_id=user)
    (summary,) = await async_store.list_user(user)
    assert await async_store.revoke(summary.handle)
    assert await async_store.get(session.id) is None
    with pytest.raises(InvalidAttribute):
        await async_store.revoke("not-a-handle")


async def test_session_cap_revokes_the_oldest(async_backend, clock: ManualClock, user: str) -> None:
    store = AsyncSessionStore(
        async_backend, policy=SessionPolicy(max_sessions_per_user=2), clock=clock
    )
    first = await store.create(user_id=user)
    clock.advance(1)
    second = await store.create(user_id=user)
    clock.advance(1)
    third = await store.create(user_id=user)
    assert await store.get(first.id) is None
    assert await store.get(second.id) is not None
    assert await store.get(third.id) is not None
    assert [s.handle for s in await store.list_user(user)] == [second.key, third.key]


async def test_lifecycle_events_report_each_change_once_by_handle(
    async_backend, clock: ManualClock, user: str
) -> None:
    events: list[SessionEvent] = []
    store = AsyncSessionStore(
        async_backend,
        policy=SessionPolicy(max_sessions_per_user=3),
        clock=clock,
        on_event=events.append,
    )
    anonymous = await store.create({"cart": []})
    clock.advance(1)
    logged_in = await store.regenerate(anonymous, user_id=user)  # login
    clock.advance(1)
    phone = await store.create(user_id=user)
    clock.advance(1)
    tablet = await store.create(user_id=user)
    clock.advance(1)
    laptop = await store.create(user_id=user)  # a fourth: the oldest goes
    assert await store.revoke_user(user, keep=laptop) == 2
    ending = await store.create(user_id=user)
    ending.expire_at(clock.now() - 1)
    with pytest.raises(SessionNotFound):
        await store.save(ending)  # an end already passed: deleted
    assert await store.delete(laptop)
    assert not await store.delete(laptop)  # gone already: nothing to report
    assert not await store.revoke(phone.key)
    kind = SessionEventKind
    assert [(e.kind, e.handle, e.user_id, e.previous_handle) for e in events] == [
        (kind.CREATED, anonymous.key, None, None),
        (kind.REGENERATED, logged_in.key, user, anonymous.key),
        (kind.CREATED, phone.key, user, None),
        (kind.CREATED, tablet.key, user, None),
        (kind.CREATED, laptop.key, user, None),
        (kind.EVICTED, logged_in.key, user, None),
        (kind.REVOKED, phone.key, user, None),
        (kind.REVOKED, tablet.key, user, None),
        (kind.CREATED, ending.key, user, None),
        (kind.DELETED, ending.key, user, None),
        (kind.DELETED, laptop.key, user, None),
    ]
    assert [e.at for e in events[:3]] == [anonymous.created_at, clock.now() - 3, phone.created_at]
    ids = {anonymous.id, logged_in.id, phone.id, tablet.id, laptop.id, ending.id}
    assert not any(session_id in repr(event) for event in events for session_id in ids)
    assert dict(store.stats.events) == {
        kind.CREATED: 5,
        kind.REGENERATED: 1,
        kind.EVICTED: 1,
        kind.REVOKED: 2,
        kind.DELETED: 2,
    }


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), dt.datetime.now(tz=dt.UTC), 2**70, b"raw bytes"],
    ids=["set", "object", "datetime", "bigint", "bytes"],
)
async def test_unserializable_values_are_refused_and_nothing_is_written(
    async_store: AsyncSessionStore, value: object
) -> None:
    session = await async_store.create({"a": 1})
    session["a"] = 2
    session["bad"] = value
    with pytest.raises(InvalidAttribute, match="'bad'"):
        await async_store.save(session)
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded.to_dict() == {"a": 1}
    with pytest.raises(InvalidAttribute):
        await async_store.create({"bad": value})


async def test_attribute_names_must_be_strings(async_store: AsyncSessionStore) -> None:
    with pytest.raises(InvalidAttribute):
        await async_store.create({1: "x"})  # type: ignore[dict-item]
    with pytest.raises(InvalidAttribute):
        await async_store.create({"": "x"})
    with pytest.raises(InvalidAttribute):
        await async_store.create(user_id="")


async def test_text_without_a_utf8_form_is_refused_as_invalid_input(
    async_store: AsyncSessionStore, user: str
) -> None:
    """A lone surrogate (JSON's ``"\\ud800"`` decodes to one) is no store's to encode."""
    session = await async_store.create({"a": 1}, user_id=user)
    with pytest.raises(InvalidAttribute, match="lone surrogate"):
        await async_store.create({"\ud800": 1})
    with pytest.raises(InvalidAttribute, match="lone surrogate"):
        await async_store.create({"a": 1}, user_id=user + "\udfff")
    with pytest.raises(InvalidAttribute, match="lone surrogate"):
        await async_store.list_user(user + "\ud800")
    with pytest.raises(InvalidAttribute, match="lone surrogate"):
        await async_store.revoke_user(user + "\ud800")
    session["\ud800"] = 2
    with pytest.raises(InvalidAttribute, match="lone surrogate"):
        await async_store.save(session)
    assert [s.handle for s in await async_store.list_user(user)] == [session.key]


def _sized(user: str, filler: str, size: int) -> str:
    """Return `user` padded with `filler` (then ASCII) to exactly `size` bytes of UTF-8."""
    room = size - len(user.encode())
    width = len(filler.encode())
    return user + filler * (room // width) + "x" * (room % width)


async def test_user_ids_are_limited_to_1024_bytes_of_utf8_on_every_backend(
    async_store: AsyncSessionStore, user: str
) -> None:
    """One limit everywhere, within DynamoDB's 2048-byte index key: no migration refuses one."""
    for filler in ("u", "é", "😀"):
        longest = _sized(user, filler, 1024)
        await async_store.create(user_id=longest)
        assert len(await async_store.list_user(longest)) == 1
        with pytest.raises(InvalidAttribute, match="bytes in UTF-8, over the limit of 1024"):
            await async_store.create(user_id=_sized(user, filler, 1025))
    with pytest.raises(InvalidAttribute, match="2048 bytes in UTF-8"):
        await async_store.create(user_id="😀" * 512)  # 512 characters, 2048 bytes


async def test_oversized_sessions_are_refused_and_nothing_is_written(
    async_store: AsyncSessionStore,
) -> None:
    session = await async_store.create({"a": 1})
    # Random bytes in base64: zstd cannot shrink it below the limit.
    session["blob"] = base64.b64encode(os.urandom(400_000)).decode()
    with pytest.raises(SessionTooLarge) as caught:
        await async_store.save(session)
    assert caught.value.limit == async_store.codec.max_session_bytes
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded.to_dict() == {"a": 1}


async def test_large_compressible_values_fit_through_zstd(async_store: AsyncSessionStore) -> None:
    big = {"rows": [{"sku": "laptop-123", "qty": 2, "price": "999.99"}] * 20_000}
    session = await async_store.create({"big": big})
    loaded = await async_store.get(session.id)
    assert loaded is not None
    assert loaded["big"] == big


async def test_undecodable_records_read_as_none_and_are_kept(
    async_store: AsyncSessionStore, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    session_id = new_session_id()
    now = clock.now()
    record = SessionRecord(
        key=storage_key(session_id),
        version=1,
        user_id=None,
        created_at=now,
        last_access=now,
        idle_expires_at=now + 60,
        absolute_expires_at=now + 60,
        attributes={"broken": b"\x01\x00{not json"},
    )
    await async_store.backend.create(record)
    assert await async_store.get(session_id) is None
    assert async_store.stats.unreadable_records == 1
    assert session_id not in caplog.text
    assert storage_key(session_id)[:12] in caplog.text
    kept = await async_store.backend.get(record.key)
    assert kept is not None
    assert kept.attributes == {"broken": b"\x01\x00{not json"}


async def test_msgpack_and_json_records_read_each_other(async_backend, clock: ManualClock) -> None:
    json_store = AsyncSessionStore(async_backend, clock=clock, codec=Codec(format="json"))
    msgpack_store = AsyncSessionStore(async_backend, clock=clock, codec=Codec(format="msgpack"))
    value = {"nested": {"list": [1, 2.5, "x", None, True]}}
    written = await msgpack_store.create({"v": value})
    loaded = await json_store.get(written.id)
    assert loaded is not None
    assert loaded["v"] == value
    loaded["w"] = 1
    await json_store.save(loaded)
    again = await msgpack_store.get(written.id)
    assert again is not None
    assert again.to_dict() == {"v": value, "w": 1}
