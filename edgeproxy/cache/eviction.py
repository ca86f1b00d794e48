"""Eviction policies: decide which keys enter and leave a store; never touch files (the store does).

Contract shared by every policy here (the store, or the manager process, is the executor):

- ``fits(size, budget)`` / ``admit(size, budget)``: may an object of ``size`` bytes enter a store
  of ``budget`` bytes at all? Objects larger than ``max_object_share`` of the budget pass
  through instead. ``fits`` is the pure size test (for the check before a fetch, on the
  Content-Length); ``admit`` is the decision at publish time and counts refusals.
- ``record_miss(key, size, now)``: a request for a key that is not stored (call it on every
  miss, before ``admit``/``insert``; waiters of a coalesced fetch are misses too).
- ``insert(key, size, now)``, ``touch(key, now)`` (every hit), ``remove(key)``.
- ``victims(bytes_over, now)``: keys to evict, least valuable first, until at least
  ``bytes_over`` bytes would be freed. The named keys are NOT removed by the call: the caller
  calls ``remove()`` for each (the policy has already detached them from its queues).
- ``dump_state() -> bytes`` / ``load_state(raw, now)``: persistence of what the policy learned
  (popularity); ``load_state`` runs at start, before the store re-inserts what it finds on disk.
- ``evictions`` and ``admissions_refused`` count; ``len(policy)`` and ``bytes_stored`` say what
  is stored.

Every call takes ``now`` from the caller (seconds); no policy reads a clock.

How a store drives a policy (``benchmarks/trace_replay.py`` does exactly this)::

    on a hit:      policy.touch(key, now)
    on a miss:     policy.record_miss(key, size, now)     # size: Content-Length, or 0 if unknown
    on publish:    if policy.admit(size, budget):           # else discard, pass through
                       policy.insert(key, size, now)
                       over = used - budget
                       if over > 0:
                           for victim in list(policy.victims(over, now)):
                               unlink victim; policy.remove(victim)
    on any drop:   policy.remove(key)                      # invalidation, corruption, replace
    at start:      policy.load_state(saved_bytes, now)      # then insert() what is on disk,
                   ...; policy.finish_load()               # then forget what was not found
    periodically and at shutdown: save policy.dump_state() (temp file + rename)

:class:`LruPolicy` is plain LRU, the baseline. :class:`PopularityPolicy` is the policy of issue 7
(popularity-aware, size-aware, scan-resistant; see its docstring for the design and the
evidence). ``benchmarks/trace_replay.py`` replays traces through both.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import OrderedDict
from collections.abc import Iterator

import xxhash

__all__ = ["FrequencySketch", "LruPolicy", "PopularityPolicy"]


class LruPolicy:
    """Least recently used; size-aware only through the byte accounting (the baseline)."""

    __slots__ = ("_order", "_used", "admissions_refused", "evictions", "max_object_share")

    def __init__(self, max_object_share: float = 0.5) -> None:
        self._order: OrderedDict[str, int] = OrderedDict()
        self._used = 0
        self.max_object_share = max_object_share
        self.evictions = 0
        self.admissions_refused = 0

    def __len__(self) -> int:
        return len(self._order)

    @property
    def bytes_stored(self) -> int:
        return self._used

    def fits(self, size: int, budget: int) -> bool:
        return size <= budget * self.max_object_share

    def admit(self, size: int, budget: int) -> bool:
        if size <= budget * self.max_object_share:
            return True
        self.admissions_refused += 1
        return False

    def record_miss(self, key: str, size: int, now: float) -> None:
        """LRU learns nothing from misses."""

    def insert(self, key: str, size: int, now: float) -> None:
        old = self._order.get(key)
        if old is not None:
            self._used -= old
        self._order[key] = size
        self._order.move_to_end(key)
        self._used += size

    def touch(self, key: str, now: float) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def remove(self, key: str) -> None:
        size = self._order.pop(key, None)
        if size is not None:
            self._used -= size

    def victims(self, bytes_over: int, now: float) -> Iterator[str]:
        """Oldest first, until ``bytes_over`` bytes are accounted for. Does not remove them."""
        freed = 0
        for key, size in self._order.items():
            if freed >= bytes_over:
                return
            freed += size
            self.evictions += 1
            yield key

    def dump_state(self) -> bytes:
        """Nothing to keep: the recency order is rebuilt from the store's file times."""
        return b""

    def load_state(self, raw: bytes, now: float) -> None:
        """Nothing to restore (see :meth:`dump_state`)."""


_HALVE = bytes(i >> 1 for i in range(256))


class FrequencySketch:
    """Count-min sketch of recent request frequency (TinyLFU's counting part).

    Einziger, Friedman, Manes, "TinyLFU: A Highly Efficient Cache Admission Policy", ACM ToS
    2017: 4 rows of counters, each saturating at 15 (4-bit semantics, one byte each here);
    conservative update (only the smallest counters grow), so estimates are upper bounds that
    stay tight; after ``sample_size`` increments every counter is halved (the "reset" that makes
    the frequency a decayed one, so yesterday's hits fade).

    The width per row is a power of two; :meth:`grow` doubles it by duplicating each row, which
    keeps every estimate unchanged (an index ``h mod 2w`` is ``h mod w`` in the old row).
    Hashing is xxh3-64 of the UTF-8 key, stable across processes and restarts.
    """

    __slots__ = ("_mask", "_table", "_width", "additions", "sample_size")

    MAX_WIDTH = 1 << 23

    def __init__(self, width: int = 1024, sample_size: int = 10_240) -> None:
        self._width = 1 << max(4, (max(width, 16) - 1).bit_length())
        self._mask = self._width - 1
        self._table = bytearray(4 * self._width)
        self.additions = 0
        self.sample_size = sample_size

    @property
    def width(self) -> int:
        return self._width

    def frequency(self, key: str) -> int:
        """The estimate for ``key`` (an upper bound of its decayed count, at most 15)."""
        h = xxhash.xxh3_64_intdigest(key.encode())
        lo = h & 0xFFFFFFFF
        hi = (h >> 32) | 1
        m = self._mask
        w = self._width
        t = self._table
        return min(
            t[lo & m],
            t[((lo + hi) & m) + w],
            t[((lo + 2 * hi) & m) + 2 * w],
            t[((lo + 3 * hi) & m) + 3 * w],
        )

    def increment(self, key: str) -> int:
        """Count one request for ``key``; returns the new estimate."""
        h = xxhash.xxh3_64_intdigest(key.encode())
        lo = h & 0xFFFFFFFF
        hi = (h >> 32) | 1
        m = self._mask
        w = self._width
        t = self._table
        a = lo & m
        b = ((lo + hi) & m) + w
        c = ((lo + 2 * hi) & m) + 2 * w
        d = ((lo + 3 * hi) & m) + 3 * w
        low = min(t[a], t[b], t[c], t[d])
        if low < 15:  # conservative update: raise only the smallest counters
            if t[a] == low:
                t[a] = low + 1
            if t[b] == low:
                t[b] = low + 1
            if t[c] == low:
                t[c] = low + 1
            if t[d] == low:
                t[d] = low + 1
            low += 1
        self.additions += 1
        if self.additions >= self.sample_size:
            self.halve()
        return low

    def halve(self) -> None:
        """Age every counter (TinyLFU's reset)."""
        self._table = bytearray(self._table.translate(_HALVE))
        self.additions //= 2

    def grow(self, min_width: int) -> None:
        """Widen each row to at least ``min_width`` counters (capped), keeping the estimates."""
        while self._width < min_width and self._width < self.MAX_WIDTH:
            w = self._width
            t = self._table
            self._table = bytearray().join(t[r * w : (r + 1) * w] * 2 for r in range(4))
            self._width = 2 * w
            self._mask = self._width - 1

    def to_bytes(self) -> bytes:
        return bytes(self._table)

    @classmethod
    def from_bytes(cls, raw: bytes, additions: int, sample_size: int) -> FrequencySketch:
        width = len(raw) // 4
        if width < 16 or width & (width - 1) or len(raw) != 4 * width:
            raise ValueError("sketch table length is not 4 x a power of two")
        sketch = cls(width, sample_size)
        sketch._table = bytearray(raw)
        sketch.additions = additions
        return sketch


# Each stored object's credit is one int: ``credit << 8 | gain``, both in quarter hits, so a hit
# is a few int operations on a dict value (no allocation beyond the int itself).
_UNIT = 4  # credit one hit on an object of the mean size earns; one pass of the hand costs it
_GAIN_MASK = 0xFF
_MAX_HITS_CREDITED = 3  # at most 3 hits' worth of credit is kept (S3-FIFO's 2-bit counter)
# Hits are counted in the sketch through a lossy log drained on the miss path (as Caffeine's
# read buffer): a hit only appends a key; when the log is full, further hits are not counted.
_HIT_LOG_MAX = 4096
# Counters per row per stored object. The "seen before?" test (an estimate of 2 or more) is
# sensitive to collisions: with 4 (Caffeine's density) bu_web's 1 % cell lost 0.01 of object hit
# ratio to false "seen" answers; 16 is within 0.001 of exact counting (64 bytes per object).
_SKETCH_WIDTH_PER_ENTRY = 16
_SAMPLES_PER_ENTRY = 10  # TinyLFU: counters are halved after 10 x (stored objects) requests
_MEAN_WINDOW = 65_536.0  # the mean object size is halved (sum and count) every this many inserts

_STATE_MAGIC = b"edgeproxy-popularity\n"
_STATE_VERSION = 1
_IN_MAIN = 0x80
_ENTRY = struct.Struct(">BHBH")  # flags (0x80: main queue), credit, gain, key length


class PopularityPolicy:
    """Popularity-aware, size-aware eviction with an admission filter ("popularity-LRU").

    Decides only: which objects stay, which go. Takes ``now`` from the caller, never touches a
    file, and holds what it has learned in memory (:meth:`dump_state` persists it).

    Structure. The budget is split between two FIFO queues as in S3-FIFO (Yang et al., "FIFO
    queues are all you need for cache eviction", SOSP 2023), plus a frequency sketch as in
    W-TinyLFU (Einziger, Friedman, Manes, "TinyLFU: A Highly Efficient Cache Admission
    Policy", ACM ToS 2017) and an ARC-style adaptive split (Megiddo and Modha, FAST 2003):

    1. **Probation is the admission filter.** A new object enters the small queue (10 % of the
       bytes at first). When it reaches the head it moves to the main queue if it was hit while
       there, otherwise it is evicted. One-hit wonders (83 % of the objects in the bu_web trace)
       and scans therefore only displace other unproven objects, never the proven set, and a
       huge object requested once costs at most the probation space. An object the sketch has
       seen before (a decayed count of 2 or more, this request included) enters the main queue
       directly: the sketch replaces S3-FIFO's ghost queue as the memory of past requests; it
       remembers longer (``10 x`` the stored objects in requests, then halved) and is what
       survives a restart.
    2. **Recency + decayed frequency + size in one credit.** The main queue is a CLOCK: each hit
       adds credit; when the hand reaches an object with a hit's worth of credit (``_UNIT``) it
       spends it and goes to the tail, otherwise it is evicted. At most 3 hits' worth is kept,
       so old popularity fades by one hit per pass. The credit of a hit is GDSF's value per byte
       (Cherkasova, "Improving WWW Proxies Performance with Greedy-Dual-Size-Frequency Caching
       Policy", HP Labs TR 98-69, 1998) for a cost that weighs an object hit and a byte hit
       alike: ``w(s) = (1 + m / s) / 2`` hits, ``m`` the decayed mean size of inserted objects,
       clamped to ``[size_floor, size_boost]``. Small objects, which cost little space per hit,
       stay longer (up to ``size_boost`` = 8 x); with ``size_floor = 1`` (disk) a large object is
       never credited less than one hit per hit, so the byte hit ratio is kept while the object
       hit ratio rises. Unclamped GDSF shows why the floor matters: on bu_web it has the best
       object hit ratio but a byte hit ratio below LRU's.
    3. **The probation share adapts.** Keys evicted from each queue are remembered in two ghost
       lists (keys and sizes only, ``ghost_share`` of the budget each). A miss on a key evicted
       from probation means probation was too short: its share grows by the object's share of
       the budget (times the ghost sizes' ratio, as in ARC); a miss on a key evicted from the
       main queue shrinks it. The share stays within ``[small_min, small_max]``.

    Evidence (``benchmarks/trace_replay.py``; tables in ``benchmarks/results/trace-*.md``): on
    bu_web it beats LRU, S3-FIFO, W-TinyLFU and ARC in object AND byte hit ratio at 0.1 %, 1 %
    and 10 % of the footprint. On the synthetic music, scan and shift traces (three seeds
    each) its object hit ratio is the best of those in every cell but shift at 10 % (ARC, by
    up to 0.002), and its byte hit ratio is within 0.01 of the best (usually the best at 1 %
    and 10 %). GDSF's object hit ratio is higher still, at a byte hit ratio below LRU's. The
    parameters are the papers' (10 % probation, 3 hits of credit, TinyLFU's 10 x sample) or
    bounds; varying the ghost and probation bounds moves the results by about 0.001.

    Costs. ``touch`` (every hit) is O(1): two dict operations, a few int operations and a list
    append, about 0.5 us. ``record_miss``, ``insert`` and ``remove`` are O(1) (one xxh3 hash
    per counted request, and the sketch counts of the hits logged since the last miss).
    ``victims`` is amortized O(1) per evicted object: each reinsertion spends credit a hit
    granted, and a hit grants at most ``size_boost`` hits' worth. Memory: about 300 bytes per
    stored object in CPython, the sketch included (it grows with the store, at most 32 MiB),
    plus the ghost keys. ``dump_state`` takes about 2.5 us per stored object.

    Budgets. ``max_size`` is the store's byte budget, updated by every ``admit(size, budget)``;
    an object larger than ``max_object_share`` of it is refused (it is passed through).

    Persistence. :meth:`dump_state` returns the sketch, both queues (order, credits), the
    probation share and the mean object size. :meth:`load_state` (at start, before the store
    re-inserts what it finds on disk) puts the saved keys back in their queues as *pending*;
    ``insert(key, ...)`` of a pending key keeps its queue, its place and its credit. Pending keys
    that are never re-inserted (files lost) are dropped when the hand reaches them, or at once
    by :meth:`finish_load`. The sketch is halved once per ``idle_half_life`` seconds between
    the dump and the load (at most 4 times): popularity from before a long outage fades.
    """

    __slots__ = (
        "_credit",
        "_ghost_main",
        "_ghost_main_bytes",
        "_ghost_small",
        "_ghost_small_bytes",
        "_hit_log",
        "_main",
        "_main_bytes",
        "_mean_bytes",
        "_mean_count",
        "_now",
        "_pending",
        "_sizes",
        "_small",
        "_small_bytes",
        "_small_share",
        "_used",
        "admissions_refused",
        "direct_admissions",
        "evictions",
        "ghost_share",
        "idle_half_life",
        "max_object_share",
        "max_size",
        "promotions",
        "size_boost",
        "size_floor",
        "sketch",
        "small_max",
        "small_min",
    )

    def __init__(
        self,
        max_size: int,
        *,
        max_object_share: float = 0.5,
        size_boost: float = 8.0,
        size_floor: float = 1.0,
        small_share: float = 0.1,
        small_min: float = 0.01,
        small_max: float = 0.5,
        ghost_share: float = 0.5,
        idle_half_life: float = 86_400.0,
    ) -> None:
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, got {max_size}")
        if not 0 < max_object_share <= 1:
            raise ValueError(f"max_object_share must be in (0, 1], got {max_object_share}")
        if not 0 < size_floor <= 1 <= size_boost <= 60:
            raise ValueError("need 0 < size_floor <= 1 <= size_boost <= 60")
        if not 0 < small_min <= small_share <= small_max < 1:
            raise ValueError("need 0 < small_min <= small_share <= small_max < 1")
        if ghost_share < 0:
            raise ValueError(f"ghost_share must be >= 0, got {ghost_share}")
        self.max_size = max_size
        self.max_object_share = max_object_share
        self.size_boost = size_boost
        self.size_floor = size_floor
        self.small_min = small_min
        self.small_max = small_max
        self.ghost_share = ghost_share
        self.idle_half_life = idle_half_life
        self._small_share = small_share
        self._sizes: dict[str, int] = {}  # stored objects (named victims until removed)
        self._credit: dict[str, int] = {}  # credit << 8 | gain (quarter hits)
        self._small: OrderedDict[str, None] = OrderedDict()  # probation, head = oldest
        self._main: OrderedDict[str, None] = OrderedDict()  # the CLOCK, head = the hand
        self._small_bytes = 0
        self._main_bytes = 0
        self._used = 0
        self._ghost_small: OrderedDict[str, int] = OrderedDict()
        self._ghost_main: OrderedDict[str, int] = OrderedDict()
        self._ghost_small_bytes = 0
        self._ghost_main_bytes = 0
        self._pending: dict[str, int] = {}  # loaded, not yet re-inserted: key -> credit|gain
        self._hit_log: list[str] = []
        self.sketch = FrequencySketch(1024, _SAMPLES_PER_ENTRY * 64)
        self._mean_bytes = 0.0
        self._mean_count = 0.0
        self._now = 0.0
        self.evictions = 0
        self.admissions_refused = 0
        self.promotions = 0
        self.direct_admissions = 0

    # ---- presets ---------------------------------------------------------------------------

    @classmethod
    def for_disk(cls, max_size: int, *, max_object_share: float = 0.5) -> PopularityPolicy:
        """For the disk store: object and byte hits both count; large objects are never
        credited less than one hit per hit, small ones up to 8."""
        return cls(max_size, max_object_share=max_object_share, size_boost=8.0, size_floor=1.0)

    @classmethod
    def for_ram(cls, max_size: int, *, max_object_share: float = 0.5) -> PopularityPolicy:
        """For the RAM layer: object hits count most (a RAM miss costs a disk read, not an
        origin fetch), so objects above the mean size earn down to half a hit per hit."""
        return cls(max_size, max_object_share=max_object_share, size_boost=8.0, size_floor=0.5)

    # ---- observers -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sizes)

    def __contains__(self, key: object) -> bool:
        return key in self._sizes

    @property
    def bytes_stored(self) -> int:
        """Bytes of the objects inserted and not yet removed."""
        return self._used

    @property
    def small_share(self) -> float:
        """The current probation target, as a share of ``max_size``."""
        return self._small_share

    @property
    def mean_object_size(self) -> float:
        """Decayed mean size of the objects inserted after a miss (the credit rule's scale)."""
        return self._mean_bytes / self._mean_count if self._mean_count else 0.0

    def stats(self) -> dict[str, float]:
        """Counters and gauges for the metrics module."""
        return {
            "evictions": self.evictions,
            "admissions_refused": self.admissions_refused,
            "promotions": self.promotions,
            "direct_admissions": self.direct_admissions,
            "objects": len(self._sizes),
            "bytes": self._used,
            "probation_bytes": self._small_bytes,
            "probation_share": self._small_share,
        }

    # ---- admission -------------------------------------------------------------------------

    def fits(self, size: int, budget: int) -> bool:
        """The size limit alone (the check before a fetch, on Content-Length): no state."""
        return size <= budget * self.max_object_share

    def admit(self, size: int, budget: int) -> bool:
        """May an object of ``size`` bytes be stored in a store of ``budget`` bytes?

        Only the size limit refuses (counted in ``admissions_refused``). Popularity filtering
        is probation's job (class docstring), so an admitted object is stored at least until
        it reaches the head of the probation queue.
        """
        self.max_size = budget
        if size <= budget * self.max_object_share:
            return True
        self.admissions_refused += 1
        return False

    def record_miss(self, key: str, size: int, now: float) -> None:
        """A request for ``key`` found nothing stored. Call on every miss, before ``insert``.

        Counts the request in the sketch and adapts the probation share when ``key`` was
        evicted recently (a ghost hit). ``size`` may be 0 when it is not known yet (a lookup
        miss before the fetch): this policy learns sizes from ``insert``.
        """
        if now > self._now:
            self._now = now
        if self._hit_log:
            self._drain_hit_log()
        self.sketch.increment(key)
        gsize = self._ghost_small.pop(key, None)
        if gsize is not None:
            self._ghost_small_bytes -= gsize
            ratio = max(1.0, self._ghost_main_bytes / max(self._ghost_small_bytes, 1))
            self._small_share = min(
                self.small_max, self._small_share + ratio * gsize / self.max_size
            )
            return
        gsize = self._ghost_main.pop(key, None)
        if gsize is not None:
            self._ghost_main_bytes -= gsize
            ratio = max(1.0, self._ghost_small_bytes / max(self._ghost_main_bytes, 1))
            self._small_share = max(
                self.small_min, self._small_share - ratio * gsize / self.max_size
            )

    def _drain_hit_log(self) -> None:
        increment = self.sketch.increment
        for key in self._hit_log:
            increment(key)
        self._hit_log.clear()

    # ---- the store's reports ---------------------------------------------------------------

    def insert(self, key: str, size: int, now: float) -> None:
        """``key`` (``size`` bytes) is stored now: a new object, or one re-found at start."""
        if now > self._now:
            self._now = now
        if key in self._sizes:  # reported twice without a remove(): fix the bytes
            self._resize(key, size)
            return
        self._sizes[key] = size
        self._used += size
        saved = self._pending.pop(key, None)
        if saved is not None:  # saved before a restart: keep its queue, place and credit
            self._credit[key] = saved
            if key in self._main:
                self._main_bytes += size
            else:
                self._small_bytes += size
        else:
            self._mean_bytes += size
            self._mean_count += 1.0
            if self._mean_count >= _MEAN_WINDOW:
                self._mean_bytes *= 0.5
                self._mean_count *= 0.5
            self._credit[key] = self._gain(size)
            if self.sketch.frequency(key) >= 2:  # seen before: skip probation
                self._main[key] = None
                self._main_bytes += size
                self.direct_admissions += 1
            else:
                self._small[key] = None
                self._small_bytes += size
        n = len(self._sizes)
        sketch = self.sketch
        if _SKETCH_WIDTH_PER_ENTRY * n > sketch.width:
            sketch.grow(_SKETCH_WIDTH_PER_ENTRY * n)
        if _SAMPLES_PER_ENTRY * n > sketch.sample_size:
            sketch.sample_size = _SAMPLES_PER_ENTRY * n

    def _resize(self, key: str, size: int) -> None:
        delta = size - self._sizes[key]
        self._sizes[key] = size
        self._used += delta
        if key in self._main:
            self._main_bytes += delta
        elif key in self._small:
            self._small_bytes += delta
        else:  # a named victim inserted again before its remove(): back on probation
            self._small[key] = None
            self._small_bytes += size

    def _gain(self, size: int) -> int:
        """Credit (quarter hits) one hit on an object of ``size`` bytes earns."""
        mean = self._mean_bytes / self._mean_count if self._mean_count else float(size)
        w = (1.0 + mean / (size if size > 0 else 1)) * 0.5
        if w > self.size_boost:
            w = self.size_boost
        elif w < self.size_floor:
            w = self.size_floor
        return int(w * _UNIT + 0.5)

    def touch(self, key: str, now: float) -> None:
        """A hit on ``key``. O(1) and allocation-light; ``now`` is not used (may be 0)."""
        value = self._credit.get(key)
        if value is None:
            return
        gain = value & _GAIN_MASK
        credit = (value >> 8) + gain
        cap = _MAX_HITS_CREDITED * gain
        self._credit[key] = (credit if credit < cap else cap) << 8 | gain
        if len(self._hit_log) < _HIT_LOG_MAX:
            self._hit_log.append(key)

    def remove(self, key: str) -> None:
        """``key`` left the store (evicted, invalidated, replaced, corrupt). Unknown: ignored."""
        size = self._sizes.pop(key, None)
        if size is None:
            if self._pending.pop(key, None) is not None:
                self._small.pop(key, None)
                self._main.pop(key, None)
            return
        del self._credit[key]
        self._used -= size
        if key in self._small:
            del self._small[key]
            self._small_bytes -= size
        elif key in self._main:
            del self._main[key]
            self._main_bytes -= size
        # else: a named victim, already off the queues

    # ---- eviction --------------------------------------------------------------------------

    def victims(self, bytes_over: int, now: float) -> Iterator[str]:
        """Keys to evict, least valuable first, until ``bytes_over`` bytes are accounted for.

        The named keys are taken off the queues at once (the ghost lists remember them) but
        stay counted until the caller calls ``remove()`` for each. Fewer bytes are named only
        when nothing else is left.
        """
        if now > self._now:
            self._now = now
        if self._hit_log:
            self._drain_hit_log()
        out: list[str] = []
        freed = 0
        small, main = self._small, self._main
        sizes, credit = self._sizes, self._credit
        spend = _UNIT << 8
        while freed < bytes_over:
            if small and (
                self._small_bytes > self._small_share * self.max_size or not self._main_bytes
            ):
                key = small.popitem(last=False)[0]
                size = sizes.get(key)
                if size is None:  # loaded but never re-inserted
                    self._pending.pop(key, None)
                    continue
                self._small_bytes -= size
                value = credit[key]
                if value > _GAIN_MASK:  # hit while on probation: proven, credit starts afresh
                    credit[key] = value & _GAIN_MASK
                    main[key] = None
                    self._main_bytes += size
                    self.promotions += 1
                    continue
                self._ghost(key, size, probation=True)
            elif main:
                key = main.popitem(last=False)[0]
                size = sizes.get(key)
                if size is None:
                    self._pending.pop(key, None)
                    continue
                value = credit[key]
                if value >= spend:  # spend one hit's worth, go round again
                    credit[key] = value - spend
                    main[key] = None
                    continue
                self._main_bytes -= size
                self._ghost(key, size, probation=False)
            else:
                break
            out.append(key)
            freed += size
        self.evictions += len(out)
        return iter(out)

    def _ghost(self, key: str, size: int, *, probation: bool) -> None:
        limit = self.ghost_share * self.max_size
        if probation:
            ghost = self._ghost_small
            ghost[key] = size
            self._ghost_small_bytes += size
            while self._ghost_small_bytes > limit and ghost:
                self._ghost_small_bytes -= ghost.popitem(last=False)[1]
        else:
            ghost = self._ghost_main
            ghost[key] = size
            self._ghost_main_bytes += size
            while self._ghost_main_bytes > limit and ghost:
                self._ghost_main_bytes -= ghost.popitem(last=False)[1]

    # ---- persistence -----------------------------------------------------------------------

    def dump_state(self) -> bytes:
        """What the policy learned, as bytes (write them to a temp file, then rename).

        Layout: a magic line, a JSON header line, then zlib(sketch table, entries); an entry is
        ``u8 flags (0x80: main queue), u16 credit, u8 gain, u16 key length, key (UTF-8)``
        (credit and gain in quarter hits), probation
        first, each queue from head to tail. Pending entries (loaded, not re-inserted yet) are
        kept; ghosts are not (they are short-term).
        """
        if self._hit_log:
            self._drain_hit_log()
        body = bytearray(self.sketch.to_bytes())
        pack = _ENTRY.pack
        count = 0
        for queue, flags in ((self._small, 0), (self._main, _IN_MAIN)):
            for key in queue:
                value = self._credit.get(key)
                if value is None:
                    value = self._pending.get(key)
                raw = key.encode()
                if value is None or len(raw) > 0xFFFF:
                    continue
                body += pack(flags, value >> 8, value & _GAIN_MASK, len(raw))
                body += raw
                count += 1
        header = {
            "version": _STATE_VERSION,
            "saved_at": self._now,
            "small_share": self._small_share,
            "mean_bytes": self._mean_bytes,
            "mean_count": self._mean_count,
            "sketch_width": self.sketch.width,
            "sketch_additions": self.sketch.additions,
            "sketch_sample_size": self.sketch.sample_size,
            "entries": count,
        }
        return b"".join(
            (
                _STATE_MAGIC,
                json.dumps(header, separators=(",", ":")).encode(),
                b"\n",
                zlib.compress(body, 1),
            )
        )

    def load_state(self, raw: bytes, now: float) -> None:
        """Restore :meth:`dump_state`'s bytes; call at start, before re-inserting entries.

        Raises ``ValueError`` when ``raw`` is not a complete state of this version (log it and
        start cold); nothing is changed then. Keys already stored are left as they are.
        """
        if not raw.startswith(_STATE_MAGIC):
            raise ValueError("not a popularity-policy state")
        try:
            line_end = raw.index(b"\n", len(_STATE_MAGIC))
            header = json.loads(raw[len(_STATE_MAGIC) : line_end])
            if not isinstance(header, dict) or header.get("version") != _STATE_VERSION:
                raise ValueError("unsupported popularity-policy state version")
            body = zlib.decompress(raw[line_end + 1 :])
            width = int(header["sketch_width"])
            sketch = FrequencySketch.from_bytes(
                body[: 4 * width],
                int(header["sketch_additions"]),
                int(header["sketch_sample_size"]),
            )
            entries: list[tuple[str, bool, int]] = []
            pos = 4 * width
            for _ in range(int(header["entries"])):
                flags, credit, gain, length = _ENTRY.unpack_from(body, pos)
                pos += _ENTRY.size
                if pos + length > len(body) or not gain:
                    raise ValueError("truncated or invalid entry")
                key = body[pos : pos + length].decode()
                entries.append((key, bool(flags & _IN_MAIN), credit << 8 | gain))
                pos += length
            if pos != len(body):
                raise ValueError("trailing bytes")
            small_share = float(header["small_share"])
            mean_bytes = float(header["mean_bytes"])
            mean_count = float(header["mean_count"])
            saved_at = float(header["saved_at"])
        except (KeyError, TypeError, struct.error, zlib.error, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt popularity-policy state: {exc}") from exc
        if self.idle_half_life > 0 and now > saved_at:
            for _ in range(min(4, int((now - saved_at) // self.idle_half_life))):
                sketch.halve()
        self.sketch = sketch
        self._small_share = min(self.small_max, max(self.small_min, small_share))
        self._mean_bytes, self._mean_count = mean_bytes, mean_count
        if now > self._now:
            self._now = now
        for key, in_main, value in entries:
            if key in self._sizes or key in self._pending:
                continue
            self._pending[key] = value
            (self._main if in_main else self._small)[key] = None

    def finish_load(self) -> int:
        """Forget loaded entries the store did not re-insert; returns how many there were."""
        lost, self._pending = self._pending, {}
        for key in lost:
            self._small.pop(key, None)
            self._main.pop(key, None)
        return len(lost)
