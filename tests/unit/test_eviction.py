"""Eviction policies: budget, admission, newcomers, size awareness, persistence, the sketch.

The tests drive the policies the way the store does (``_Store`` below): a miss is reported with
``record_miss``, an admitted object with ``insert``, a hit with ``touch``, and after an insert
the store evicts what ``victims`` names, calling ``remove`` for each.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeproxy.cache.entry import Entry
from edgeproxy.cache.eviction import FrequencySketch, LruPolicy, PopularityPolicy
from edgeproxy.cache.store import DiskStore


class _Store:
    """A store without files: executes a policy's decisions and checks its contract."""

    def __init__(self, policy: PopularityPolicy | LruPolicy, budget: int) -> None:
        self.policy = policy
        self.budget = budget
        self.stored: dict[str, int] = {}
        self.used = 0
        self.now = 0.0
        self.hits = 0

    def request(self, key: str, size: int) -> bool:
        """One request; returns True for a hit."""
        self.now += 1.0
        if key in self.stored:
            self.policy.touch(key, self.now)
            self.hits += 1
            return True
        self.policy.record_miss(key, size, self.now)
        if self.policy.admit(size, self.budget):
            self.policy.insert(key, size, self.now)
            self.stored[key] = size
            self.used += size
            self.enforce()
        return False

    def enforce(self) -> None:
        if self.used <= self.budget:
            return
        named = list(self.policy.victims(self.used - self.budget, self.now))
        assert len(set(named)) == len(named), "a victim named twice"
        assert len(self.policy) == len(self.stored), "victims() must not remove"
        for key in named:
            assert key in self.stored, f"victim {key!r} is not stored"
            self.policy.remove(key)
            self.used -= self.stored.pop(key)
        assert self.used <= self.budget


def _policy(budget: int, **kw: float) -> PopularityPolicy:
    return PopularityPolicy(budget, **kw)


# ---- budget --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    budget=st.integers(min_value=1_000, max_value=200_000),
    requests=st.lists(
        st.tuples(st.integers(min_value=0, max_value=300), st.integers(1, 60_000)),
        min_size=1,
        max_size=600,
    ),
    ram=st.booleans(),
)
def test_budget_is_never_exceeded_and_accounting_matches(
    budget: int, requests: list[tuple[int, int]], ram: bool
) -> None:
    policy = PopularityPolicy.for_ram(budget) if ram else PopularityPolicy.for_disk(budget)
    store = _Store(policy, budget)
    sizes: dict[int, int] = {}
    for obj, size in requests:
        size = sizes.setdefault(obj, size)  # an object keeps its size
        store.request(f"k{obj}", size)
        assert store.used <= budget
        assert policy.bytes_stored == store.used
        assert len(policy) == len(store.stored)
        assert set(store.stored) == {k for k in store.stored if k in policy}


@settings(max_examples=30, deadline=None)
@given(
    budget=st.integers(min_value=500, max_value=50_000),
    requests=st.lists(
        st.tuples(st.integers(min_value=0, max_value=100), st.integers(1, 20_000)),
        min_size=1,
        max_size=400,
    ),
)
def test_lru_budget_is_never_exceeded(budget: int, requests: list[tuple[int, int]]) -> None:
    store = _Store(LruPolicy(), budget)
    sizes: dict[int, int] = {}
    for obj, size in requests:
        store.request(f"k{obj}", sizes.setdefault(obj, size))
        assert store.used <= budget
        assert store.policy.bytes_stored == store.used


def test_victims_does_not_remove_and_names_enough_bytes() -> None:
    policy = _policy(1000)
    for i in range(10):
        policy.record_miss(f"k{i}", 100, i)
        policy.insert(f"k{i}", 100, i)
    named = list(policy.victims(250, 10.0))
    assert sum(100 for _ in named) >= 250
    assert len(policy) == 10 and policy.bytes_stored == 1000  # still counted until remove()
    for key in named:
        policy.remove(key)
    assert len(policy) == 10 - len(named)
    assert policy.bytes_stored == 1000 - 100 * len(named)
    assert policy.evictions == len(named)


def test_victims_of_nothing_names_nothing() -> None:
    policy = _policy(1000)
    assert list(policy.victims(0, 0.0)) == []
    assert list(policy.victims(100, 0.0)) == []  # empty: nothing to name
    policy.insert("a", 10, 0.0)
    assert list(policy.victims(0, 0.0)) == []


def test_victims_name_least_priority_first_and_the_clock_rises() -> None:
    policy = _policy(1000)
    for i in range(10):
        policy.record_miss(f"k{i}", 100, i)
        policy.insert(f"k{i}", 100, i)
    policy.touch("k0", 10.0)
    named = list(policy.victims(300, 10.0))
    assert "k0" not in named and len(named) == 3
    assert policy.clock > 0  # the priority of the last victim: what is not hit ages


def test_touch_and_remove_of_unknown_keys_are_ignored() -> None:
    policy = _policy(1000)
    policy.touch("nope", 0.0)
    policy.remove("nope")
    assert len(policy) == 0 and policy.bytes_stored == 0


def test_insert_twice_without_remove_fixes_the_bytes() -> None:
    policy = _policy(1000)
    policy.insert("a", 100, 0.0)
    policy.insert("a", 300, 1.0)
    assert len(policy) == 1 and policy.bytes_stored == 300
    policy.remove("a")
    assert policy.bytes_stored == 0


def test_a_named_victim_inserted_again_stays_consistent() -> None:
    policy = _policy(1000)
    for i in range(5):
        policy.insert(f"k{i}", 100, i)
    (first,) = list(policy.victims(100, 5.0))
    policy.insert(first, 100, 6.0)  # defensive: the store always removes first
    assert first in policy
    named = list(policy.victims(500, 7.0))
    assert first in named
    for key in named:
        policy.remove(key)
    assert len(policy) == 0 and policy.bytes_stored == 0


# ---- admission and size limits -------------------------------------------------------------


def test_objects_over_the_share_are_refused_and_counted() -> None:
    policy = _policy(1000, max_object_share=0.25)
    assert policy.admit(250, 1000)
    assert not policy.admit(251, 1000)
    assert policy.admissions_refused == 1
    assert policy.fits(250, 1000) and not policy.fits(251, 1000)
    assert policy.admissions_refused == 1  # fits() counts nothing
    assert not policy.admit(300, 1000)
    assert policy.admissions_refused == 2


def test_admit_follows_the_budget_it_is_given() -> None:
    policy = _policy(1000, max_object_share=0.5)
    assert not policy.admit(600, 1000)
    assert policy.admit(600, 2000)
    assert policy.max_size == 2000


def test_lru_keeps_its_interface() -> None:
    policy = LruPolicy(max_object_share=0.5)
    assert policy.admit(50, 100) and not policy.admit(51, 100)
    assert policy.admissions_refused == 1 and policy.fits(50, 100)
    for key in "abc":
        policy.record_miss(key, 10, 0.0)
        policy.insert(key, 10, 0.0)
    policy.touch("a", 1.0)
    assert list(policy.victims(15, 2.0)) == ["b", "c"]
    assert policy.evictions == 2
    assert policy.dump_state() == b""
    policy.load_state(b"", 3.0)


@pytest.mark.parametrize("bad", [0, -1])
def test_constructor_rejects_bad_budgets(bad: int) -> None:
    with pytest.raises(ValueError):
        PopularityPolicy(bad)


def test_constructor_rejects_bad_shares() -> None:
    with pytest.raises(ValueError):
        PopularityPolicy(1000, max_object_share=1.5)
    with pytest.raises(ValueError):
        PopularityPolicy(1000, alpha=1.5)
    with pytest.raises(ValueError):
        PopularityPolicy(1000, delta=0.9, delta_max=0.5)
    with pytest.raises(ValueError):
        PopularityPolicy(1000, delta_max=1.0)


# ---- popularity: newcomers, one-hit wonders, scans -----------------------------------------


def test_one_hit_wonders_do_not_flush_the_hot_set() -> None:
    store = _Store(PopularityPolicy.for_disk(100 * 1000), 100 * 1000)
    hot = [f"hot{i}" for i in range(50)]  # half the budget
    for _ in range(4):
        for key in hot:
            store.request(key, 1000)
    # a scan 4x the budget, every object requested once: newcomers age the clock by 1 - delta
    # (0.5) hit per budget's worth, so objects with 4 hits outlive a scan of up to 8 budgets
    for i in range(400):
        store.request(f"scan{i}", 1000)
    assert all(key in store.stored for key in hot)
    lru = _Store(LruPolicy(), 100 * 1000)
    for _ in range(4):
        for key in hot:
            lru.request(key, 1000)
    for i in range(400):
        lru.request(f"scan{i}", 1000)
    assert not any(key in lru.stored for key in hot)


def test_a_huge_object_does_not_evict_the_popular_small_ones() -> None:
    budget = 1_000_000
    store = _Store(PopularityPolicy.for_disk(budget), budget)
    small = [f"s{i}" for i in range(600)]  # 600 KB of popular 1 KB objects
    for _ in range(3):
        for key in small:
            store.request(key, 1000)
    store.request("huge", 450_000)  # within the 0.5 share; seen once
    store.request("next", 1000)
    survivors = sum(key in store.stored for key in small)
    assert survivors == len(small)
    assert "huge" in store.stored or store.policy.evictions > 0


def test_an_object_seen_before_comes_back_with_its_popularity() -> None:
    policy = _policy(10_000)
    for _ in range(3):
        policy.record_miss("a", 100, 0.0)
    policy.insert("a", 100, 0.0)
    assert policy.hits("a") == 3  # the sketch's count, not 1
    policy.record_miss("b", 100, 0.0)
    policy.insert("b", 100, 0.0)
    assert policy.hits("b") == 1
    assert (policy.priority("a") or 0) > (policy.priority("b") or 0)


def test_a_newcomer_leaves_before_an_object_hit_once() -> None:
    policy = _policy(1000, delta=0.5)
    for key in ("old", "new"):
        policy.record_miss(key, 100, 0.0)
        policy.insert(key, 100, 0.0)
    policy.touch("old", 1.0)
    assert list(policy.victims(1, 2.0)) == ["new"]


def test_scan_resistance_beats_lru_on_a_mixed_trace() -> None:
    rng = random.Random(5)
    budget = 200 * 2000
    ours = _Store(PopularityPolicy.for_disk(budget), budget)
    lru = _Store(LruPolicy(), budget)
    scan = 0
    for i in range(30_000):
        if (i // 1000) % 2:  # every other thousand requests: a scan of one-time objects
            key = f"scan{scan}"
            scan += 1
        else:  # a working set of 150 objects, 3/4 of the budget
            key = f"hot{rng.randrange(150)}"
        ours.request(key, 2000)
        lru.request(key, 2000)
    hot_requests = 15_000
    assert ours.hits >= hot_requests - 2 * 150  # the working set is fetched about once
    assert lru.hits <= hot_requests - 14 * 150  # LRU fetches it again after every scan


# ---- size awareness ------------------------------------------------------------------------


def test_the_value_of_a_hit_mixes_object_and_byte_hits() -> None:
    disk = PopularityPolicy.for_disk(10**9)
    ram = PopularityPolicy.for_ram(10**9)
    bytes_only = _policy(10**9, alpha=0.0)
    for policy in (disk, ram, bytes_only):
        for i in range(100):
            policy.insert(f"m{i}", 10_000, i)
    assert disk.mean_object_size == pytest.approx(10_000)
    a = disk.alpha
    assert disk._value(10_000) == pytest.approx(1.0)  # a hit at the mean size: one hit
    assert disk._value(1_000) == pytest.approx(10 * a + 1 - a)
    assert disk._value(10**7) == pytest.approx(a / 1000 + 1 - a)  # large: about 1 - alpha
    assert ram._value(10**7) == pytest.approx(1 / 1000)  # RAM: object hits only (GDSF)
    assert bytes_only._value(100) == bytes_only._value(10**7) == 1.0  # LFU by bytes


def test_small_popular_objects_outlive_large_ones_with_the_same_hits() -> None:
    policy = _policy(10**7)
    for i in range(200):  # a mean object size of 10 KB
        policy.insert(f"x{i}", 10_000, 0.0)
    for key, size in (("big", 100_000), ("small", 1_000)):
        policy.record_miss(key, size, 1.0)
        policy.record_miss(key, size, 1.0)
        policy.insert(key, size, 1.0)
        policy.touch(key, 2.0)
    order = list(policy.victims(10**9, 3.0))
    assert order.index("big") < order.index("small")


# ---- adaptation ----------------------------------------------------------------------------


def _evict_to(policy: PopularityPolicy, budget: int, now: float) -> None:
    for key in list(policy.victims(policy.bytes_stored - budget, now)):
        policy.remove(key)


def test_the_newcomer_discount_adapts_to_ghost_hits() -> None:
    budget = 10_000
    policy = _policy(budget, delta=0.5)
    for i in range(30):  # newcomers only: they leave as newcomers
        policy.record_miss(f"n{i}", 1000, i)
        policy.insert(f"n{i}", 1000, i)
        _evict_to(policy, budget, i)
    gone = [f"n{i}" for i in range(30) if f"n{i}" not in policy]
    before = policy.delta
    policy.record_miss(gone[-1], 1000, 40.0)  # a newcomer came back: it left too early
    lowered = policy.delta
    assert lowered < before
    for i in range(30):  # established objects (hit once), pushed out by more of them
        policy.record_miss(f"e{i}", 1000, 50 + i)
        policy.insert(f"e{i}", 1000, 50 + i)
        policy.touch(f"e{i}", 50 + i)
        _evict_to(policy, budget, 50 + i)
    recent = [f"e{i}" for i in range(30) if f"e{i}" in policy._ghost_est]
    assert recent
    policy.record_miss(recent[-1], 1000, 90.0)  # an established one came back: raise it
    assert policy.delta > lowered
    assert 0 <= policy.delta <= policy.delta_max


# ---- persistence ---------------------------------------------------------------------------


def _warm(policy: PopularityPolicy, budget: int, seed: int = 3) -> _Store:
    rng = random.Random(seed)
    store = _Store(policy, budget)
    for _ in range(5000):
        rank = min(int(rng.paretovariate(0.8)), 3000)
        store.request(f"obj{rank}", 500 + 37 * rank % 4000)
    return store


def test_persistence_round_trip_keeps_order_priorities_and_counts() -> None:
    budget = 200_000
    before = _warm(PopularityPolicy.for_disk(budget), budget)
    policy = before.policy
    assert isinstance(policy, PopularityPolicy)
    raw = policy.dump_state()

    restored = PopularityPolicy.for_disk(budget)
    restored.load_state(raw, before.now)
    entries = list(before.stored.items())
    random.Random(9).shuffle(entries)  # the store re-inserts in its own (file) order
    for key, size in entries:
        restored.insert(key, size, before.now)
    assert restored.finish_load() == 0
    assert len(restored) == len(policy) and restored.bytes_stored == policy.bytes_stored
    assert restored.delta == policy.delta
    assert restored.mean_object_size == pytest.approx(policy.mean_object_size)
    for key in [f"obj{i}" for i in range(50)] + ["never"]:
        assert restored.sketch.frequency(key) == policy.sketch.frequency(key)
    for key in before.stored:
        assert restored.hits(key) == policy.hits(key)
        assert (restored.priority(key) or 0) - restored.clock == pytest.approx(
            (policy.priority(key) or 0) - policy.clock
        )
    assert list(restored.victims(budget, 1e9)) == list(policy.victims(budget, 1e9))


def test_loaded_popularity_decides_where_a_key_lands() -> None:
    policy = _policy(10_000)
    for _ in range(3):
        policy.record_miss("popular", 100, 0.0)
    restored = _policy(10_000)
    restored.load_state(policy.dump_state(), 0.0)
    restored.record_miss("popular", 100, 1.0)
    restored.insert("popular", 100, 1.0)
    assert restored.hits("popular") == 4  # remembered across the restart


def test_entries_not_reinserted_are_forgotten() -> None:
    budget = 100_000
    before = _warm(PopularityPolicy.for_disk(budget), budget)
    raw = before.policy.dump_state()
    keys = list(before.stored)
    lost = set(keys[::2])

    lazy = PopularityPolicy.for_disk(budget)
    lazy.load_state(raw, before.now)
    for key in keys:
        if key not in lost:
            lazy.insert(key, before.stored[key], before.now)
    assert len(lazy) == len(keys) - len(lost)
    lazy.finish_load()
    named = list(lazy.victims(10**9, before.now))
    assert not lost & set(named)
    assert sorted(named) == sorted(set(keys) - lost)

    eager = PopularityPolicy.for_disk(budget)
    eager.load_state(raw, before.now)
    assert eager.finish_load() == len(keys)
    assert list(eager.victims(10**9, before.now)) == []
    eager.dump_state()  # still consistent


def test_state_of_an_empty_policy_round_trips() -> None:
    restored = _policy(1000)
    restored.load_state(_policy(1000).dump_state(), 5.0)
    assert len(restored) == 0


def test_a_long_outage_fades_the_counts() -> None:
    policy = _policy(10_000, idle_half_life=100.0)
    for _ in range(8):
        policy.record_miss("a", 10, 0.0)
    raw = policy.dump_state()
    fresh = _policy(10_000, idle_half_life=100.0)
    fresh.load_state(raw, 50.0)
    assert fresh.sketch.frequency("a") == 8
    faded = _policy(10_000, idle_half_life=100.0)
    faded.load_state(raw, 250.0)  # two half-lives
    assert faded.sketch.frequency("a") == 2


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"edgeproxy-popularity\nnot json\n",
        b'edgeproxy-popularity\n{"version": 99}\n',
        b'edgeproxy-popularity\n{"version": 1}\n',
        b'edgeproxy-popularity\n{"version": 2}\nnot zlib',
    ],
)
def test_a_corrupt_state_is_refused_and_changes_nothing(raw: bytes) -> None:
    policy = _policy(1000)
    policy.record_miss("a", 10, 0.0)
    policy.insert("a", 10, 0.0)
    with pytest.raises(ValueError):
        policy.load_state(raw, 1.0)
    assert len(policy) == 1 and policy.sketch.frequency("a") == 1


def test_a_truncated_state_is_refused() -> None:
    budget = 50_000
    raw = _warm(PopularityPolicy.for_disk(budget), budget).policy.dump_state()
    with pytest.raises(ValueError):
        _policy(budget).load_state(raw[:-20], 0.0)


# ---- the sketch ----------------------------------------------------------------------------


def test_sketch_counts_saturates_and_halves() -> None:
    sketch = FrequencySketch(1024, sample_size=10**9)
    for expected in range(1, 16):
        assert sketch.increment("k") == expected
    assert sketch.increment("k") == 15
    assert sketch.frequency("other") == 0
    sketch.halve()
    assert sketch.frequency("k") == 7


def test_sketch_resets_after_its_sample() -> None:
    sketch = FrequencySketch(1024, sample_size=100)
    for _ in range(10):
        sketch.increment("k")
    for i in range(90):
        sketch.increment(f"x{i}")
    assert sketch.frequency("k") == 5
    assert sketch.additions == 50


def test_sketch_grow_keeps_every_estimate() -> None:
    sketch = FrequencySketch(64, sample_size=10**9)
    keys = [f"k{i}" for i in range(300)]
    for i, key in enumerate(keys):
        for _ in range(i % 7):
            sketch.increment(key)
    before = [sketch.frequency(key) for key in keys]
    sketch.grow(4096)
    assert sketch.width == 4096
    assert [sketch.frequency(key) for key in keys] == before


def test_sketch_rejects_a_bad_table() -> None:
    with pytest.raises(ValueError):
        FrequencySketch.from_bytes(b"\0" * 100, 0, 10)


def test_hits_are_counted_in_the_sketch_by_the_next_miss() -> None:
    policy = _policy(10_000)
    policy.record_miss("a", 10, 0.0)
    policy.insert("a", 10, 0.0)
    for _ in range(5):
        policy.touch("a", 0.0)
    policy.record_miss("b", 10, 1.0)  # drains the hit log
    assert policy.sketch.frequency("a") == 6


def test_sizes_are_learned_from_inserts_not_misses() -> None:
    policy = _policy(10_000)
    policy.record_miss("a", 0, 0.0)  # a lookup miss: size not known yet
    assert policy.sketch.frequency("a") == 1 and policy.mean_object_size == 0
    policy.insert("a", 1000, 1.0)
    assert policy.mean_object_size == 1000


def test_stats_report_the_counters() -> None:
    budget = 50_000
    store = _warm(PopularityPolicy.for_disk(budget), budget)
    stats = store.policy.stats()  # type: ignore[union-attr]
    assert stats["evictions"] == store.policy.evictions > 0
    assert stats["objects"] == len(store.stored)
    assert stats["bytes"] == store.used


# ---- the executors: the store's RAM layer and budgets --------------------------------------


def test_ram_layer_keeps_popular_bodies_within_its_budget() -> None:
    from edgeproxy.cache.store import RamLayer

    ram = RamLayer(10_000)
    for _ in range(3):
        ram.put("hot", b"h" * 1000, 0.0)
    for _ in range(5):
        assert ram.get("hot") is not None
    for i in range(100):  # one-time bodies, 10x the budget
        ram.put(f"once{i}", b"x" * 1000, float(i))
        assert ram.currsize <= 10_000
        assert ram.currsize == sum(len(ram._data[k]) for k in ram._data)
    assert "hot" in ram and ram.evictions > 0
    assert ram.pop("hot") == b"h" * 1000 and "hot" not in ram
    assert not ram.put("huge", b"y" * 20_000, 300.0)  # larger than the budget: not kept
    assert ram.refused >= 1
    ram.clear()
    assert len(ram) == 0 and ram.currsize == 0


def _entry(key: str) -> Entry:
    return Entry(
        key_hex=key,
        path="/a",
        status=200,
        reason="OK",
        headers=[("Cache-Control", "max-age=60")],
        request_time=0.0,
        response_time=0.0,
        initial_age=0.0,
        lifetime=60.0,
        size=0,
        checksum="",
        body_file="",
    )


async def _publish(store: DiskStore, key: str, body: bytes) -> bool:
    writer = store.new_writer(key)
    await writer.write(body)
    return await store.publish(writer, _entry(key))


async def test_store_refuses_objects_over_its_share_and_counts_them(tmp_path: Path) -> None:
    store = DiskStore(
        tmp_path, max_size=10_000, ram_size=1000, ram_object_max=100, max_object_share=0.25
    )
    await store.start()
    await store.wait_loaded()
    assert not store.admits(2_501) and store.admits(2_500)
    assert not await _publish(store, "aa" * 16, b"x" * 2_501)
    assert store.admissions_refused == 1 and not store.index
    assert await _publish(store, "bb" * 16, b"x" * 2_500)
    await store.close()


async def test_store_evicts_to_keep_the_free_space_watermark(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, max_size=10**12, ram_size=1000, ram_object_max=100)
    await store.start()
    await store.wait_loaded()
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    keys = [f"{i:02x}" * 16 for i in range(5)]
    for key in keys:
        assert await _publish(store, key, b"z" * 4096)
    assert len(store.index) == 5 and store.evictions == 0
    # a watermark 8 KiB above what is free now: the next publish must free about that much
    store.min_free = free + 8192
    store._fs_checked_at = -1e9  # take a fresh statvfs
    assert await _publish(store, "ff" * 16, b"z" * 4096)
    assert store.evictions >= 3 and store.watermark_evictions == store.evictions
    assert store.used_bytes <= 3 * 4096
    store.min_free = 0
    assert store.watermark_deficit() == 0
    await store.close()


async def test_store_saves_and_reloads_what_is_popular(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, max_size=10**6, ram_size=1000, ram_object_max=100)
    await store.start()
    await store.wait_loaded()
    key = "ab" * 16
    for _ in range(5):
        store.record_miss(key, 0, 0.0)
    assert await _publish(store, key, b"p" * 500)
    hits = store.policy.hits(key)  # type: ignore[union-attr]
    assert hits >= 5
    await store.close()  # saves policy.state
    again = DiskStore(tmp_path, max_size=10**6, ram_size=1000, ram_object_max=100)
    await again.start()
    await again.wait_loaded()
    assert key in again.index
    assert again.policy.hits(key) == hits  # type: ignore[union-attr]
    await again.close()
