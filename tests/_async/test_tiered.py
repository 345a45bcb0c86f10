"""The hybrid tier: promotion, demotion races, write-back and write-through, lifecycle states."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from sessionflow import (
    AsyncDynamoDBBackend,
    AsyncInstrumentedBackend,
    AsyncMemoryBackend,
    AsyncMemoryTierIndex,
    AsyncRedisBackend,
    AsyncRedisTierIndex,
    AsyncSessionStore,
    AsyncTieredBackend,
    BackendError,
    BackendMetrics,
    ConfigError,
    CorruptRecord,
    Durability,
    HotTierHealth,
    InvalidAttribute,
    Lifecycle,
    ManualClock,
    TierCollector,
)
from tests.clients import async_dynamodb_client_at
from tests.conftest import POLICY, TABLE

HOUR = 3600.0


def _tier(clock: ManualClock, durability: Durability, hot: Any = None, cold: Any = None):
    backend = AsyncTieredBackend(
        hot or AsyncMemoryBackend(clock),
        cold or AsyncMemoryBackend(clock),
        AsyncMemoryTierIndex(),
        durability=durability,
        demote_after=300,
        active_window=60,
        clock=clock,
    )
    return backend, AsyncSessionStore(backend, policy=POLICY, clock=clock)


class _RacingHot:
    """A hot tier that runs `before_evict` (a request arriving) just before an eviction."""

    def __init__(self, inner: AsyncMemoryBackend) -> None:
        self.inner = inner
        self.before_evict: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def evict(self, key: str, *, version: int, last_access: float) -> bool:
        if self.before_evict is not None:
            action, self.before_evict = self.before_evict, None
            await action()
        return await self.inner.evict(key, version=version, last_access=last_access)


class _FailingHot(_RacingHot):
    """A hot tier whose every call fails, as when its Redis is down."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*_: Any, **__: Any) -> Any:
            raise BackendError("hot tier down")

        return fail


class _SwitchableHot(_RacingHot):
    """A hot tier that fails every call while `down` is set, as when its Redis stops."""

    def __init__(self, inner: AsyncMemoryBackend) -> None:
        super().__init__(inner)
        self.down = False
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.down:
                raise BackendError("hot tier down")
            return await attribute(*args, **kwargs)

        return call


class _Monotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _switchable_tier(clock: ManualClock, durability: Durability):
    hot = _SwitchableHot(AsyncMemoryBackend(clock))
    monotonic = _Monotonic()
    backend = AsyncTieredBackend(
        hot,  # type: ignore[arg-type]
        AsyncMemoryBackend(clock),
        AsyncMemoryTierIndex(),
        durability=durability,
        clock=clock,
        health=HotTierHealth(retry_after=5, verify_for=60, monotonic=monotonic),
    )
    return backend, hot, monotonic, AsyncSessionStore(backend, policy=POLICY, clock=clock)


class _FailingCold:
    def __init__(self, inner: AsyncMemoryBackend) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                raise BackendError("cold tier down")
            return await attribute(*args, **kwargs)

        return call


async def test_a_cold_session_is_promoted_on_use(clock: ManualClock) -> None:
    backend, store = _tier(clock, Durability.WRITE_THROUGH)
    cold_store = AsyncSessionStore(backend.cold, policy=POLICY, clock=clock)
    session = await cold_store.create({"cart": ["sku-1"]})
    assert await backend.lifecycle(session.key) is Lifecycle.COLD

    loaded = await store.get(session.id)

    assert loaded is not None
    assert loaded["cart"] == ["sku-1"]
    assert backend.stats.promotions == 1
    assert await backend.hot.get(session.key) is not None
    assert await backend.lifecycle(session.key) is Lifecycle.HOT


async def test_promotion_never_overwrites_a_fresher_hot_copy(clock: ManualClock) -> None:
    backend, store = _tier(clock, Durability.WRITE_BACK)
    session = await store.create({"n": 1})
    await backend.flush()
    stale = await backend.cold.get(session.key)
    session["n"] = 2
    await store.save(session)  # write-back: the cold tier still holds n=1
    assert stale is not None

    promoted = await backend._promote(stale)

    assert promoted.version == session.version
    current = await store.get(session.id)
    assert current is not None
    assert current["n"] == 2


async def test_promotion_carries_over_a_cold_write_that_landed_meanwhile(
    clock: ManualClock,
) -> None:
    backend, _ = _tier(clock, Durability.WRITE_THROUGH)
    cold_store = AsyncSessionStore(backend.cold, policy=POLICY, clock=clock)
    session = await cold_store.create({"n": 1})
    read_before = await backend.cold.get(session.key)
    session["n"] = 2
    await cold_store.save(session)  # e.g. a repair writing the cold tier directly
    assert read_before is not None

    promoted = await backend._promote(read_before)

    assert promoted.version == session.version
    assert (await backend.hot.get(session.key)).version == session.version  # type: ignore[union-attr]


async def test_without_the_recheck_a_promotion_can_miss_a_cold_write_that_landed_meanwhile(
    clock: ManualClock,
) -> None:
    # The trade-off recheck_promotions=False makes (docs/tiering.md): one cold read less,
    # and a cold write racing the promotion stays behind the hot copy.
    backend, _ = _tier(clock, Durability.WRITE_THROUGH)
    backend.recheck_promotions = False
    cold_store = AsyncSessionStore(backend.cold, policy=POLICY, clock=clock)
    session = await cold_store.create({"n": 1})
    read_before = await backend.cold.get(session.key)
    session["n"] = 2
    await cold_store.save(session)
    assert read_before is not None

    promoted = await backend._promote(read_before)

    assert promoted.version == read_before.version < session.version


async def test_the_sweeper_demotes_only_sessions_unused_for_the_threshold(
    clock: ManualClock,
) -> None:
    backend, store = _tier(clock, Durability.WRITE_BACK)
    idle = await store.create({"who": "idle"})
    busy = await store.create({"who": "busy"})
    clock.advance(backend.demote_after + 60)
    assert await store.get(busy.id) is not None  # touched: used just now

    report = await backend.sweep(batch_size=10)

    assert (report.examined, report.demoted) == (1, 1)
    assert await backend.hot.get(idle.key) is None
    assert (await backend.cold.get(idle.key)).attributes  # type: ignore[union-attr]
    assert await backend.hot.get(busy.key) is not None
    back = await store.get(idle.id)
    assert back is not None
    assert back["who"] == "idle"
    assert backend.stats.promotions == 1
    assert await backend.index.sizes() == (2, 1)  # both hot again; busy not flushed yet


async def test_a_session_saved_while_it_is_demoted_stays_hot_and_keeps_the_save(
    clock: ManualClock,
) -> None:
    hot = _RacingHot(AsyncMemoryBackend(clock))
    backend, store = _tier(clock, Durability.WRITE_BACK, hot=hot)
    session = await store.create({"n": 1})
    clock.advance(backend.demote_after + 1)

    async def request() -> None:
        current = await store.get(session.id, touch=False)
        assert current is not None
        current["n"] = 2
        await store.save(current)

    hot.before_evict = request
    report = await backend.sweep()

    assert (report.demoted, report.left_hot) == (0, 1)
    current = await store.get(session.id)
    assert current is not None
    assert current["n"] == 2
    await backend.flush()
    flushed = await AsyncSessionStore(backend.cold, policy=POLICY, clock=clock).get(session.id)
    assert flushed is not None
    assert flushed["n"] == 2


async def test_a_session_deleted_while_it_is_demoted_stays_deleted(clock: ManualClock) -> None:
    hot = _RacingHot(AsyncMemoryBackend(clock))
    backend, store = _tier(clock, Durability.WRITE_BACK, hot=hot)
    session = await store.create({"n": 1})
    clock.advance(backend.demote_after + 1)

    async def logout() -> None:
        current = await store.get(session.id, touch=False)
        assert current is not None
        await store.delete(current)

    hot.before_evict = logout
    await backend.sweep()

    assert await store.get(session.id) is None
    cold = await backend.cold.get(session.key)
    assert cold is not None
    assert cold.tombstone
    await backend.sweep()
    assert await store.get(session.id) is None


async def test_write_back_reaches_the_cold_tier_on_flush_and_bounds_the_loss(
    clock: ManualClock,
) -> None:
    backend, store = _tier(clock, Durability.WRITE_BACK)
    session = await store.create({"n": 1})
    assert await backend.cold.get(session.key) is None
    assert await backend.lifecycle(session.key) is Lifecycle.CREATING
    clock.advance(30)
    report = await backend.flush(batch_size=100)
    assert report.flushed == 1
    assert backend.stats.flush_lag_max == pytest.approx(30)
    session["n"] = 2
    await store.save(session)
    assert await backend.index.sizes() == (1, 1)

    # The hot tier is lost before the next flush: the change since the flush is the loss.
    survivor = AsyncTieredBackend(
        AsyncMemoryBackend(clock), backend.cold, AsyncMemoryTierIndex(), clock=clock
    )
    after_loss = await AsyncSessionStore(survivor, policy=POLICY, clock=clock).get(session.id)
    assert after_loss is not None
    assert after_loss["n"] == 1


async def test_touches_stay_hot_under_write_back_and_reach_cold_under_write_through(
    clock: ManualClock,
) -> None:
    for durability, reaches_cold in (
        (Durability.WRITE_BACK, False),
        (Durability.WRITE_THROUGH, True),
    ):
        backend, store = _tier(clock, durability)
        session = await store.create({"n": 1})
        await backend.flush()
        before = await backend.cold.get(session.key)
        clock.advance(POLICY.touch_interval + 1)
        assert await store.get(session.id) is not None
        after = await backend.cold.get(session.key)
        assert before is not None
        assert after is not None
        assert (after.idle_expires_at > before.idle_expires_at) is reaches_cold


async def test_deletes_reach_the_cold_tier_under_write_back(clock: ManualClock) -> None:
    backend, store = _tier(clock, Durability.WRITE_BACK)
    session = await store.create({"n": 1})
    await backend.flush()
    await store.delete(session)
    cold = await backend.cold.get(session.key)
    assert cold is not None
    assert cold.tombstone


async def test_write_through_fails_loudly_and_queues_when_the_cold_tier_is_down(
    clock: ManualClock,
) -> None:
    cold = _FailingCold(AsyncMemoryBackend(clock))
    backend, store = _tier(clock, Durability.WRITE_THROUGH, cold=cold)
    session = await store.create({"n": 1})
    cold.down = True
    session["n"] = 2
    with pytest.raises(BackendError):
        await store.save(session)
    assert backend.stats.cold_write_failures == 1
    cold.down = False
    assert (await backend.flush()).flushed == 1
    copied = await AsyncSessionStore(cold.inner, policy=POLICY, clock=clock).get(session.id)
    assert copied is not None
    assert copied["n"] == 2


async def test_reads_fall_back_to_the_cold_tier_when_the_hot_tier_is_down(
    clock: ManualClock,
) -> None:
    backend, store = _tier(clock, Durability.WRITE_THROUGH)
    session = await store.create({"n": 1})
    down = AsyncTieredBackend(
        _FailingHot(AsyncMemoryBackend(clock)),
        backend.cold,
        AsyncMemoryTierIndex(),
        clock=clock,
    )
    loaded = await AsyncSessionStore(down, policy=POLICY, clock=clock).get(session.id, touch=False)
    assert loaded is not None
    assert loaded["n"] == 1
    assert down.stats.degraded_reads == 1


async def test_lifecycle_states_per_session_and_counted(clock: ManualClock) -> None:
    backend, store = _tier(clock, Durability.WRITE_BACK)
    creating = await store.create({"s": "creating"})
    hot = await store.create({"s": "hot"})
    active = await store.create({"s": "active"})
    inactive = await store.create({"s": "inactive"})
    cold = await store.create({"s": "cold"})
    expired = await store.create({"s": "expired"})
    await store.delete(expired)
    await backend.flush()
    clock.advance(backend.demote_after + 1)
    for session in (hot, active, inactive):
        await backend.index.accessed(session.key, clock.now())  # keep them from demotion
    await backend.sweep()  # demotes `cold` and `creating`
    assert await backend.lifecycle(cold.key) is Lifecycle.COLD
    clock.advance(POLICY.touch_interval + 1)
    assert await store.get(active.id) is not None
    assert await store.get(inactive.id) is not None
    clock.advance(backend.active_window + 1)
    assert await store.get(active.id) is not None
    unflushed = await store.create({"s": "created after the flush"})

    assert await backend.lifecycle(unflushed.key) is Lifecycle.CREATING
    assert await backend.lifecycle(hot.key) is Lifecycle.HOT
    assert await backend.lifecycle(active.key) is Lifecycle.ACTIVE
    assert await backend.lifecycle(inactive.key) is Lifecycle.INACTIVE
    assert await backend.lifecycle(expired.key) is Lifecycle.EXPIRED
    assert await backend.lifecycle(creating.key) is Lifecycle.COLD
    assert await backend.lifecycle("0" * 64) is None

    read: list[int] = []
    counts = await backend.count_lifecycle(page_size=2, progress=read.append)
    in_tiers = await _records_in(backend.hot) + await _records_in(backend.cold)
    assert read[-1] == in_tiers  # every page reported, both tiers together
    assert read == sorted(set(read))
    assert len(read) >= in_tiers // 2
    with pytest.raises(ConfigError, match="page_size must be a whole number"):
        await backend.count_lifecycle(page_size=0)
    assert counts[Lifecycle.CREATING] == 1
    assert counts[Lifecycle.HOT] == 1
    assert counts[Lifecycle.ACTIVE] == 1
    assert counts[Lifecycle.INACTIVE] == 1
    assert counts[Lifecycle.COLD] == 2
    assert counts[Lifecycle.EXPIRED] == 1
    assert backend.stats.lifecycle["cold"] == 2


async def test_lifecycle_counts_see_every_unflushed_change_however_many(
    clock: ManualClock,
) -> None:
    """The count read at most 1,000,000 dirty marks up front (and held them all in memory):
    past them, a session the cold tier lacks was counted as already in it."""
    backend, store = _tier(clock, Durability.WRITE_BACK)
    for i in range(1_000_000):  # changes of sessions other processes hold, not flushed yet
        await backend.index.changed(f"{i:064x}", 1)
    unflushed = await store.create({"s": "not in the cold tier yet"})
    assert await backend.lifecycle(unflushed.key) is Lifecycle.CREATING
    counts = await backend.count_lifecycle()
    assert counts[Lifecycle.CREATING] == 1
    assert await backend.index.dirty_versions([unflushed.key, "f" * 64]) == [
        unflushed.version,
        None,
    ]


async def test_bad_tier_settings_are_refused(clock: ManualClock) -> None:
    with pytest.raises(ConfigError, match="evict"):
        AsyncTieredBackend(object(), AsyncMemoryBackend(clock), AsyncMemoryTierIndex())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="positive"):
        AsyncTieredBackend(
            AsyncMemoryBackend(clock),
            AsyncMemoryBackend(clock),
            AsyncMemoryTierIndex(),
            demote_after=0,
        )


@pytest.mark.parametrize(
    ("sizes", "reason"),
    [
        ({"batch_size": 0}, "batch_size must be a whole number from 1 to 10,000, not 0"),
        ({"batch_size": 10**12}, "batch_size must be a whole number from 1 to 10,000"),
        ({"concurrency": 257}, "concurrency must be a whole number from 1 to 256"),
        ({"batch_size": -3}, "batch_size must be"),
        ({"batch_size": 2.5}, "batch_size must be"),
        ({"batch_size": True}, "batch_size must be"),
        ({"max_batches": 0}, "max_batches must be"),
        ({"concurrency": 0}, "concurrency must be"),
    ],
)
async def test_bad_job_sizes_are_refused_before_the_tiers_are_touched(
    clock: ManualClock, sizes: dict[str, Any], reason: str
) -> None:
    """A zero batch divided by zero in the flush; a negative one took nothing and said so."""
    backend, store = _tier(clock, Durability.WRITE_BACK)
    await store.create({"n": 1})
    for job in (backend.sweep, backend.flush):
        with pytest.raises(ConfigError, match=reason):
            await job(**sizes)
    assert await backend.index.sizes() == (1, 1)


async def test_redis_hot_dynamodb_cold_sweep_and_flush(
    servers: Any, clock: ManualClock, prefix: str
) -> None:
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(AsyncRedis(port=servers.redis.port))
        ddb = await stack.enter_async_context(
            async_dynamodb_client_at(servers.dynamodb.endpoint_url)
        )
        backend = AsyncTieredBackend(
            AsyncRedisBackend(client, prefix=prefix),
            AsyncDynamoDBBackend(ddb, table_name=TABLE),
            AsyncRedisTierIndex(client, prefix=prefix),
            durability=Durability.WRITE_BACK,
            demote_after=300,
            clock=clock,
        )
        store = AsyncSessionStore(backend, policy=POLICY, clock=clock)
        sessions = [await store.create({"i": i}) for i in range(30)]
        assert (await backend.flush(batch_size=7, max_batches=1)).flushed == 7
        assert (await backend.flush(batch_size=7)).flushed == 23  # every batch, in one run
        assert await backend.index.sizes() == (30, 0)
        clock.advance(backend.demote_after + 1)
        keep = sessions[0]
        await backend.index.accessed(keep.key, clock.now())
        report = await backend.sweep(batch_size=7, max_batches=2)
        assert report.demoted == 14
        report = await backend.sweep(batch_size=100)
        assert report.demoted == 15
        assert await backend.index.sizes() == (1, 0)
        assert await client.exists(backend.hot.redis_key(sessions[1].key)) == 0  # type: ignore[attr-defined]
        for session in sessions:
            loaded = await store.get(session.id, touch=False)
            assert loaded is not None
            assert loaded["i"] == sessions.index(session)


@pytest.mark.parametrize("durability", list(Durability))
async def test_requests_are_served_by_the_cold_tier_while_the_hot_tier_is_down(
    clock: ManualClock, durability: Durability
) -> None:
    backend, hot, _, store = _switchable_tier(clock, durability)
    kept = await store.create({"n": 1})
    await backend.flush()
    hot.down, hot.calls = True, 0

    created = await store.create({"made": "while down"})
    loaded = await store.get(kept.id)
    assert loaded is not None
    loaded["n"] = 2
    await store.save(loaded)
    assert await store.delete(created.id)

    assert backend.stats.hot_outages == 1
    assert backend.stats.degraded_writes == 3
    assert hot.calls == 1  # the breaker kept every later request off the dead hot tier
    again = await store.get(kept.id, touch=False)
    assert again is not None
    assert again["n"] == 2
    assert await store.get(created.id) is None


async def test_hot_copies_older_than_the_outage_writes_are_replaced_when_it_returns(
    clock: ManualClock,
) -> None:
    backend, hot, monotonic, store = _switchable_tier(clock, Durability.WRITE_THROUGH)
    session = await store.create({"n": 1})
    other = await store.create({"n": 1})
    hot.down = True
    session["n"] = 2
    await store.save(session)  # the hot tier still holds n=1: it comes back stale
    hot.down = False
    monotonic.now += 5  # the retry is due

    assert await store.get(other.id, touch=False) is not None  # the probe that succeeds

    assert backend.stats.outage_repairs == 1
    repaired = await backend.hot.get(session.key)
    assert repaired is not None
    assert repaired.version == session.version
    loaded = await store.get(session.id)
    assert loaded is not None
    assert loaded["n"] == 2


async def test_after_an_outage_a_hot_copy_is_checked_against_the_cold_tier(
    clock: ManualClock,
) -> None:
    # A write acknowledged by a Redis that then lost it (a replica promoted before it had
    # the write): the process did not write it through the cold tier alone, but it doubts
    # every hot copy for a while after the outage.
    backend, hot, monotonic, store = _switchable_tier(clock, Durability.WRITE_THROUGH)
    session = await store.create({"n": 1})
    stale = await backend.hot.get(session.key)
    session["n"] = 2
    await store.save(session)
    await hot.inner.evict(session.key, version=session.version, last_access=session.last_access)
    assert stale is not None
    await hot.inner.put_guarded(stale)  # what the promoted replica holds
    hot.down = True
    assert await store.get(session.id, touch=False) is not None  # served by the cold tier
    hot.down = False
    monotonic.now += 5

    loaded = await store.get(session.id, touch=False)

    assert loaded is not None
    assert loaded["n"] == 2
    monotonic.now += 61  # the doubt window is over: hot hits are trusted again
    assert not backend.health.doubted()


async def test_a_write_through_save_checked_against_a_stale_hot_copy_is_not_lost(
    clock: ManualClock,
) -> None:
    backend, store = _tier(clock, Durability.WRITE_THROUGH)
    session = await store.create({"mine": 0})
    elsewhere = AsyncSessionStore(backend.cold, policy=POLICY, clock=clock)
    theirs = await elsewhere.get(session.id, touch=False)
    assert theirs is not None
    theirs["theirs"] = 1
    await elsewhere.save(theirs)  # another region's write: this hot copy is now stale

    session["mine"] = 1
    await store.save(session)  # refused by the cold tier, reloaded and merged by the store

    assert backend.stats.stale_writes == 1
    loaded = await store.get(session.id)
    assert loaded is not None
    assert loaded.to_dict() == {"mine": 1, "theirs": 1}
    cold = await elsewhere.get(session.id, touch=False)
    assert cold is not None
    assert cold.to_dict() == {"mine": 1, "theirs": 1}


async def test_a_delete_checked_against_a_stale_hot_copy_still_deletes(
    clock: ManualClock,
) -> None:
    backend, store = _tier(clock, Durability.WRITE_THROUGH)
    session = await store.create({"n": 1})
    elsewhere = AsyncSessionStore(backend.cold, policy=POLICY, clock=clock)
    theirs = await elsewhere.get(session.id, touch=False)
    assert theirs is not None
    theirs["n"] = 2
    await elsewhere.save(theirs)

    assert await store.delete(session.id)

    assert await store.get(session.id) is None
    assert await elsewhere.get(session.id) is None


@pytest.mark.parametrize("durability", list(Durability))
async def test_a_session_used_in_another_region_is_taken_over_with_its_latest_changes(
    clock: ManualClock, durability: Durability
) -> None:
    cold = AsyncMemoryBackend(clock)
    hots = [AsyncMemoryBackend(clock) for _ in range(3)]
    regions = [
        AsyncTieredBackend(
            hot,
            cold,
            AsyncMemoryTierIndex(),
            durability=durability,
            clock=clock,
            peers=[peer for peer in hots if peer is not hot],
        )
        for hot in hots
    ]
    us, eu, _ = (AsyncSessionStore(r, policy=POLICY, clock=clock) for r in regions)
    session = await us.create({"cart": ["sku-1"]})
    session["cart"] = ["sku-1", "sku-2"]
    await us.save(session)  # under write-back, only the us hot tier has this

    travelled = await eu.get(session.id)

    assert travelled is not None
    assert travelled["cart"] == ["sku-1", "sku-2"]
    assert regions[1].stats.handoffs == 1
    assert await hots[0].get(session.key) is None  # one region holds it hot
    assert await hots[1].get(session.key) is not None
    in_cold = await cold.get(session.key)
    assert in_cold is not None
    assert in_cold.version == session.version
    travelled["cart"] = ["sku-3"]
    await eu.save(travelled)
    back_home = await us.get(session.id)
    assert back_home is not None
    assert back_home["cart"] == ["sku-3"]


async def test_a_region_whose_peer_is_down_promotes_from_the_cold_tier(
    clock: ManualClock,
) -> None:
    cold = AsyncMemoryBackend(clock)
    dead = _FailingHot(AsyncMemoryBackend(clock))
    here = AsyncTieredBackend(
        AsyncMemoryBackend(clock),
        cold,
        AsyncMemoryTierIndex(),
        clock=clock,
        peers=[dead],  # type: ignore[list-item]
    )
    session = await AsyncSessionStore(cold, policy=POLICY, clock=clock).create({"n": 1})

    loaded = await AsyncSessionStore(here, policy=POLICY, clock=clock).get(session.id)

    assert loaded is not None
    assert here.stats.peer_failures == 1
    assert here.stats.promotions == 1


async def test_the_breaker_lets_one_request_probe_per_retry_interval() -> None:
    monotonic = _Monotonic()
    health = HotTierHealth(retry_after=2, verify_for=10, monotonic=monotonic)
    assert health.should_try()
    assert health.failed()
    assert not health.failed()  # already known to be down
    assert not health.should_try()
    monotonic.now = 2
    assert health.should_try()
    assert not health.should_try()  # the probe is under way; the others keep off
    assert health.answered()
    assert health.doubted()
    monotonic.now = 12.5
    assert not health.doubted()
    with pytest.raises(ConfigError):
        HotTierHealth(retry_after=-1)


class _RefusingCold:
    """A cold tier that refuses guarded copies of one key (a corrupt item in the way)."""

    def __init__(self, inner: AsyncMemoryBackend) -> None:
        self.inner = inner
        self.refused: str | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_guarded(self, record: Any) -> Any:
        if record.key == self.refused:
            raise CorruptRecord(record.key[:12], "the cold item is not a session")
        return await self.inner.put_guarded(record)


async def test_a_session_the_cold_tier_refuses_stays_hot_and_the_sweep_finishes(
    clock: ManualClock,
) -> None:
    cold = _RefusingCold(AsyncMemoryBackend(clock))
    backend, store = _tier(clock, Durability.WRITE_BACK, cold=cold)
    sessions = [await store.create({"i": i}) for i in range(5)]
    cold.refused = sessions[2].key
    clock.advance(backend.demote_after + 1)

    report = await backend.sweep(batch_size=2)

    assert (report.demoted, report.failed) == (4, 1)
    assert await backend.hot.get(sessions[2].key) is not None
    flushed = await backend.flush()
    assert flushed.failed == 1  # still dirty: the next flush tries again
    assert await backend.index.dirty(10) == [(sessions[2].key, sessions[2].version)]
    cold.refused = None
    assert (await backend.sweep()).demoted == 1


async def test_a_flush_takes_every_change_in_batches_and_leaves_failures_for_the_next(
    clock: ManualClock,
) -> None:
    """The loss window under write-back is the sync interval only if each run takes them all."""
    cold = _RefusingCold(AsyncMemoryBackend(clock))
    backend, store = _tier(clock, Durability.WRITE_BACK, cold=cold)
    sessions = [await store.create({"i": i}) for i in range(9)]
    cold.refused = sessions[4].key  # fails for now, at every try of this run

    report = await backend.flush(batch_size=2)

    assert (report.examined, report.flushed, report.failed) == (9, 8, 1)
    assert await backend.index.dirty(10) == [(sessions[4].key, sessions[4].version)]
    for session in sessions[:4] + sessions[5:]:
        assert await cold.inner.get(session.key) is not None
    cold.refused = None
    assert (await backend.flush(batch_size=2)).flushed == 1


async def test_a_flush_stops_at_the_first_batch_when_the_cold_tier_does_not_answer(
    clock: ManualClock,
) -> None:
    """Trying every waiting change against a store that is down only makes the run longer."""
    cold = _FailingCold(AsyncMemoryBackend(clock))
    backend, store = _tier(clock, Durability.WRITE_BACK, cold=cold)
    for i in range(9):
        await store.create({"i": i})
    cold.down = True
    calls = 0
    dirty = backend.index.dirty

    async def counted(limit: int) -> list[tuple[str, int]]:
        nonlocal calls
        calls += 1
        return await dirty(limit)

    backend.index.dirty = counted  # type: ignore[method-assign]

    with pytest.raises(BackendError, match="cold tier down"):
        await backend.flush(batch_size=2)

    assert calls == 1
    assert (await backend.index.sizes())[1] == 9
    cold.down = False
    assert (await backend.flush(batch_size=2)).flushed == 9


async def _records_in(tier: Any) -> int:
    """Records a full scan of one tier returns (tombstones and unreadable ones included)."""
    count, cursor = 0, None
    while True:
        page = await tier.scan(cursor, count=100)
        count += len(page.records)
        cursor = page.cursor
        if cursor is None:
            return count


def _over_long_user_id(record: Any) -> Any:
    """A session written before user ids were limited: DynamoDB's user index refuses it."""
    return record._replace(user_id="😀" * 600)  # 2,400 bytes in UTF-8


async def test_sessions_the_cold_tier_refuses_for_good_are_quarantined_not_retried_forever(
    servers: Any, async_dynamodb_client: Any, prefix: str, clock: ManualClock
) -> None:
    async with AsyncRedis(port=servers.redis.port) as client:
        await _refused_for_good(client, async_dynamodb_client, prefix, clock)


async def _refused_for_good(
    async_redis: Any, async_dynamodb_client: Any, prefix: str, clock: ManualClock
) -> None:
    hot = AsyncRedisBackend(async_redis, prefix=prefix)
    backend = AsyncTieredBackend(
        hot,
        AsyncDynamoDBBackend(async_dynamodb_client, table_name=TABLE),
        AsyncRedisTierIndex(async_redis, prefix=prefix),
        durability=Durability.WRITE_BACK,
        demote_after=300,
        clock=clock,
    )
    store = AsyncSessionStore(backend, policy=POLICY, clock=clock)
    legacy, legacy_sessions = [], []
    for n in range(2):
        legacy_sessions.append(await store.create({"legacy": n}))
        made = await hot.get(legacy_sessions[-1].key)
        assert made is not None
        legacy.append(_over_long_user_id(made))
        await async_redis.delete(hot.redis_key(made.key))
        await hot.put_guarded(legacy[-1])
    for n in range(3):
        fresh = await store.create({"fresh": n})
        fresh["saved"] = True
        await store.save(fresh)  # dirty at version 2: behind the legacy marks at 1

    # The legacy changes are the oldest dirty marks: a batch of two used to fail on them
    # at every run, and the fresh changes behind them never reached the cold tier.
    first = await backend.flush(batch_size=2, max_batches=1)
    assert (first.flushed, first.failed, first.quarantine.total) == (0, 0, 2)
    assert {e["key"] for e in first.quarantine.entries} == {r.key[:12] for r in legacy}
    assert "2048 bytes DynamoDB takes in an index key" in first.quarantine.entries[0]["reason"]
    assert (await backend.flush(batch_size=2, max_batches=1)).flushed == 2
    assert (await backend.flush(batch_size=2)).flushed == 1
    assert await backend.index.sizes() == (5, 0)
    assert backend.stats.cold_refusals == 2

    clock.advance(backend.demote_after + 1)
    swept = await backend.sweep(batch_size=2)
    assert (swept.demoted, swept.failed, swept.quarantine.total) == (3, 0, 2)
    assert await backend.index.sizes() == (0, 0)  # not examined again by every sweep
    for record in legacy:  # kept where they were, and still served
        kept = await hot.get(record.key)
        assert kept is not None
        assert kept.user_id == record.user_id
    again = await backend.sweep()
    assert (again.examined, again.quarantine.total) == (0, 0)
    used = await store.get(legacy_sessions[0].id)  # used again: back in the sweep's list
    assert used is not None
    assert used["legacy"] == 0
    clock.advance(backend.demote_after + 1)
    assert (await backend.sweep()).quarantine.total == 1
    assert backend.stats.cold_refusals == 5
    registry = CollectorRegistry()
    registry.register(TierCollector(backend.stats))
    assert registry.get_sample_value("sessionflow_tier_cold_refusals_total") == 5


async def test_write_through_refuses_a_change_the_cold_tier_would_refuse_before_the_hot_has_it(
    servers: Any, async_dynamodb_client: Any, prefix: str, clock: ManualClock
) -> None:
    async with AsyncRedis(port=servers.redis.port) as client:
        hot = AsyncRedisBackend(client, prefix=prefix)
        index = AsyncRedisTierIndex(client, prefix=prefix)
        cold = AsyncInstrumentedBackend(  # the wrapper passes the cold store's check on
            AsyncDynamoDBBackend(async_dynamodb_client, table_name=TABLE),
            name="cold",
            metrics=BackendMetrics(CollectorRegistry()),
        )
        backend = AsyncTieredBackend(
            hot, cold, index, durability=Durability.WRITE_THROUGH, clock=clock
        )
        store = AsyncSessionStore(backend, policy=POLICY, clock=clock)
        session = await store.create({"n": 1})
        made = await hot.get(session.key)
        assert made is not None
        legacy = _over_long_user_id(made)
        await client.delete(hot.redis_key(made.key))
        await hot.put_guarded(legacy)  # the cold tier could not take its user id
        cold_copy = await backend.cold.get(session.key)
        marks = await index.sizes()

        loaded = await store.get(session.id)
        assert loaded is not None
        loaded["n"] = 2
        with pytest.raises(InvalidAttribute, match="2048 bytes"):
            await store.save(loaded)

        # Refused before the hot tier took it: the caller's error means nothing changed.
        kept = await hot.get(session.key)
        assert kept == legacy
        assert await backend.cold.get(session.key) == cold_copy
        assert await index.sizes() == marks
        assert backend.stats.cold_refusals == 1
        again = await store.get(session.id)
        assert again is not None
        assert again["n"] == 1


async def test_the_tier_metrics_follow_what_the_tier_did(clock: ManualClock) -> None:
    backend, hot, _, store = _switchable_tier(clock, Durability.WRITE_BACK)
    backend.demote_after = 300  # within the policy's idle timeout
    registry = CollectorRegistry()
    registry.register(TierCollector(backend.stats))
    session = await store.create({"n": 1})
    await store.get(session.id)
    await backend.flush()
    clock.advance(backend.demote_after + 1)
    await backend.sweep()
    await store.get(session.id)  # promoted again
    hot.down = True
    await store.create({"made": "while down"})

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("sessionflow_tier_reads_total", found="hot") == 1
    assert value("sessionflow_tier_reads_total", found="cold") == 1
    assert value("sessionflow_tier_promotions_total") == 1
    assert value("sessionflow_tier_demotions_total") == 1
    assert value("sessionflow_tier_flushed_total") == 1
    assert value("sessionflow_tier_hot_outages_total") == 1
    assert value("sessionflow_tier_degraded_writes_total") == 1
    assert value("sessionflow_tier_dirty_sessions") == 0


async def test_a_hot_tier_replaced_without_an_error_is_noticed_by_its_instance(
    clock: ManualClock,
) -> None:
    # A failover the client followed by itself: no request failed, but the server holding
    # the hot copies is another one, with an older copy of a session.
    backend, hot, monotonic, store = _switchable_tier(clock, Durability.WRITE_THROUGH)
    instance = {"id": "redis-a"}

    async def current_instance() -> str:
        return instance["id"]

    hot.instance = current_instance  # type: ignore[method-assign]
    session = await store.create({"n": 1})
    stale = await backend.hot.get(session.key)
    session["n"] = 2
    await store.save(session)
    assert stale is not None
    await hot.inner.evict(session.key, version=session.version, last_access=session.last_access)
    await hot.inner.put_guarded(stale)  # what the new server holds
    instance["id"] = "redis-b"
    monotonic.now += 1  # the next instance check is due

    loaded = await store.get(session.id, touch=False)

    assert backend.stats.hot_outages == 1
    assert loaded is not None
    assert loaded["n"] == 2
    monotonic.now += 2
    assert await store.get(session.id, touch=False) is not None
    assert backend.stats.hot_outages == 1  # the same instance again: nothing new


async def test_a_redis_instance_is_its_run_id_and_a_cluster_names_every_master(
    servers: Any,
) -> None:
    async with AsyncRedis(port=servers.redis.port) as client:
        one = await AsyncRedisBackend(client).instance()
        assert one == (await client.info("server"))["run_id"]
    async with AsyncRedisCluster(host="127.0.0.1", port=servers.cluster_port) as cluster:
        masters = (await AsyncRedisBackend(cluster).instance()).split(",")
        assert len(set(masters)) == 3


# The async tier answers a cold read before promoting it; the sync one promotes first.
ANSWERS_FIRST = "Async" in AsyncTieredBackend.__name__


def _background_tier(clock: ManualClock, hot: Any = None):
    backend, store = _tier(clock, Durability.WRITE_BACK, hot=hot)
    backend.background_promotions = True
    cold_store = AsyncSessionStore(backend.cold, policy=POLICY, clock=clock)
    return backend, store, cold_store


async def test_a_background_promotion_answers_first_and_promotes_after(
    clock: ManualClock,
) -> None:
    backend, _, cold_store = _background_tier(clock)
    session = await cold_store.create({"cart": ["sku-1"]})

    record = await backend.get(session.key)

    assert record is not None
    assert record.version == session.version
    assert (backend.stats.promotions == 0) is ANSWERS_FIRST
    await backend.settle()
    assert backend.stats.promotions == 1
    assert await backend.lifecycle(session.key) is Lifecycle.HOT


async def test_a_save_racing_a_background_promotion_is_kept(clock: ManualClock) -> None:
    backend, store, cold_store = _background_tier(clock)
    session = await cold_store.create({"n": 1, "other": "x"})

    loaded = await store.get(session.id)  # promotion still in flight (async)
    assert loaded is not None
    loaded["n"] = 2
    await store.save(loaded)  # finds no hot copy yet: promotes itself, then saves
    await backend.settle()  # the first promotion lands on a newer hot copy: refused

    again = await store.get(session.id)
    assert again is not None
    assert (again["n"], again["other"]) == (2, "x")
    assert (await backend.hot.get(session.key)).version == again.version  # type: ignore[union-attr]


async def test_a_background_promotion_that_fails_never_reaches_the_caller(
    clock: ManualClock,
) -> None:
    hot = _SwitchableHot(AsyncMemoryBackend(clock))
    backend, store, cold_store = _background_tier(clock, hot=hot)
    session = await cold_store.create({"n": 1})

    record = await backend.get(session.key)
    hot.down = True  # Redis goes away before the promotion runs (async)
    await backend.settle()
    hot.down = False

    assert record is not None
    assert backend.stats.hot_outages == (1 if ANSWERS_FIRST else 0)
    assert (await store.get(session.id)) is not None  # served all along


@pytest.mark.parametrize("on_cluster", [False, True])
async def test_the_redis_index_reads_the_dirty_marks_of_a_page_in_one_command(
    servers: Any, prefix: str, on_cluster: bool
) -> None:
    client: Any = (
        AsyncRedisCluster(host="127.0.0.1", port=servers.cluster_port)
        if on_cluster
        else AsyncRedis(port=servers.redis.port)
    )
    async with client:
        index = AsyncRedisTierIndex(client, prefix=prefix)
        await index.changed("a" * 64, 3)
        await index.changed("b" * 64, 7)
        await index.flushed("b" * 64, 7)
        assert await index.dirty_versions(["a" * 64, "b" * 64, "c" * 64]) == [3, None, None]
        assert await index.dirty_versions([]) == []
