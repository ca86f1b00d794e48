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

import heapq
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


_HIT_LOG_MAX = 4096  # hits are counted in the sketch through a lossy log drained on the miss path
# Counters per row per stored object. The "seen before?" test is sensitive to collisions: with 4
# (Caffeine's density) bu_web's 1 % cell lost 0.01 of object hit ratio; 16 is within 0.001 of
# exact counting (64 bytes per object).
_SKETCH_WIDTH_PER_ENTRY = 16
_SAMPLES_PER_ENTRY = 20  # counters are halved after 20 x (stored objects) requests
_MEAN_WINDOW = 65_536.0  # the mean object size is halved (sum and count) every this many inserts
_MAX_HITS = 0xFFFF  # the hit count of a stored object saturates here
_STATE_MAGIC = b"edgeproxy-popularity\n"
_STATE_VERSION = 2
_ENTRY = struct.Struct(">HdH")  # hits, credit left above the clock (priority - clock), key length


class PopularityPolicy:
    """Popularity-aware, size-aware eviction with an adaptive admission discount.

    Decides only: which objects stay, which go. Takes ``now`` from the caller, never touches a
    file, and holds what it has learned in memory (:meth:`dump_state` persists it).

    Structure: GreedyDual-Size-Frequency (Cherkasova, "Improving WWW Proxies Performance with
    Greedy-Dual-Size-Frequency Caching Policy", HP Labs TR 98-69, 1998) with three changes.

    1. **Priority.** Every stored object has ``H = clock + hits x value(size)``; the victim is
       the object of least ``H``, and the clock becomes its ``H`` (so what is not hit ages
       relative to newcomers: recency). A hit sets ``H = clock + (hits + 1) x value``.
    2. **Frequency with a memory.** ``hits`` starts at the estimate of a count-min sketch of
       recent requests (TinyLFU's: Einziger, Friedman, Manes, ACM ToS 2017; 4-bit counters
       halved every ``20 x`` stored objects requests), not at 1: an object evicted and
       requested again comes back with its popularity, and the sketch survives a restart.
    3. **Value of a hit mixes object and byte hits.** ``value(s) = alpha x m / s + (1 - alpha)``
       per byte-of-mean-size, ``m`` the decayed mean size of inserted objects: ``alpha = 1`` is
       GDSF (object hits only: small objects win), ``alpha = 0`` is LFU with dynamic aging in
       bytes (byte hits only). Disk: ``alpha = 0.8``; RAM: ``alpha = 1`` (a RAM miss costs a
       disk read, not an origin fetch, so only object hits count).
    4. **Admission by discount, adapted online.** A newcomer (the sketch has not seen it before:
       a first request) enters with ``hits = 1 - delta``: one-hit wonders (83 % of bu_web's
       objects) and scans leave first, without a separate probation queue. ``delta`` adapts as
       ARC's target does (Megiddo and Modha, FAST 2003): keys evicted as newcomers and keys
       evicted as established objects are remembered in two ghost lists (keys and sizes,
       ``ghost_share`` of the budget each); a miss on a newcomer ghost (newcomers were dropped
       too early) lowers ``delta`` by the object's share of the budget (times the ghost sizes'
       ratio), a miss on an established ghost raises it, within ``[0, delta_max]``.

    Evidence (``benchmarks/trace_replay.py``, ``benchmarks/results/trace-*.md``): on bu_web at
    1 % and 10 % of the footprint its object hit ratio is above GDSF's and its byte hit ratio
    above S3-FIFO's, W-TinyLFU's and ARC's. On traces dominated by large objects (the synthetic
    music trace) it keeps more object hits than the FIFO family and fewer byte hits: ``alpha``
    is the knob (:meth:`for_disk`'s argument).

    Costs. ``touch`` (every hit) is O(1): two dict writes and a list append; the heap entry is
    refreshed lazily (a touched object's entry is re-pushed when it reaches the top, with its
    current priority, which can only have grown). ``insert`` is O(log n), ``victims`` amortized
    O(log n) per evicted or re-evaluated object. Memory: one heap entry per stored object (stale
    entries are compacted away when they exceed the live ones), the sketch (16 counters a row
    per stored object, at most 32 MiB) and the ghost keys.

    Budgets. ``max_size`` is the store's byte budget, updated by every ``admit(size, budget)``;
    an object larger than ``max_object_share`` of it is refused (it is passed through).

    Persistence. :meth:`dump_state` returns the sketch, every stored key's hit count and its
    priority relative to the clock, ``delta`` and the mean size. :meth:`load_state` (at start,
    before the store re-inserts what it finds on disk) keeps them as *pending*; ``insert`` of a
    pending key restores its hits and priority. :meth:`finish_load` forgets the pending keys
    that were not re-inserted. The sketch is halved once per ``idle_half_life`` seconds between
    the dump and the load (at most 4 times): popularity from before a long outage fades.
    """

    __slots__ = (
        "_base",
        "_clock",
        "_delta",
        "_ghost_est",
        "_ghost_est_bytes",
        "_ghost_new",
        "_ghost_new_bytes",
        "_heap",
        "_hit_log",
        "_hits",
        "_mean_bytes",
        "_mean_count",
        "_now",
        "_pending",
        "_pushed",
        "_sizes",
        "_used",
        "admissions_refused",
        "alpha",
        "delta_max",
        "evictions",
        "ghost_share",
        "idle_half_life",
        "max_object_share",
        "max_size",
        "sketch",
    )

    def __init__(
        self,
        max_size: int,
        *,
        alpha: float = 0.8,
        max_object_share: float = 0.5,
        delta: float = 0.5,
        delta_max: float = 0.95,
        ghost_share: float = 0.5,
        idle_half_life: float = 86_400.0,
    ) -> None:
        if max_size <= 0:
            raise ValueError(f"max_size must be positive, got {max_size}")
        if not 0 < max_object_share <= 1:
            raise ValueError(f"max_object_share must be in (0, 1], got {max_object_share}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if not 0 <= delta <= delta_max < 1:
            raise ValueError("need 0 <= delta <= delta_max < 1")
        if ghost_share < 0:
            raise ValueError(f"ghost_share must be >= 0, got {ghost_share}")
        self.max_size = max_size
        self.max_object_share = max_object_share
        self.alpha = alpha
        self.delta_max = delta_max
        self.ghost_share = ghost_share
        self.idle_half_life = idle_half_life
        self._delta = delta
        self._sizes: dict[str, int] = {}  # stored objects (named victims until removed)
        self._hits: dict[str, int] = {}  # popularity: sketch estimate at insert + hits since
        self._base: dict[str, float] = {}  # the clock at the last insert or hit
        self._pushed: dict[str, float] = {}  # the priority of the key's live heap entry
        self._heap: list[tuple[float, str]] = []
        self._clock = 0.0
        self._used = 0
        self._ghost_new: OrderedDict[str, int] = OrderedDict()
        self._ghost_est: OrderedDict[str, int] = OrderedDict()
        self._ghost_new_bytes = 0
        self._ghost_est_bytes = 0
        self._pending: dict[str, tuple[int, float]] = {}  # loaded: key -> (hits, credit)
        self._hit_log: list[str] = []
        self.sketch = FrequencySketch(1024, _SAMPLES_PER_ENTRY * 64)
        self._mean_bytes = 0.0
        self._mean_count = 0.0
        self._now = 0.0
        self.evictions = 0
        self.admissions_refused = 0

    # ---- presets ---------------------------------------------------------------------------

    @classmethod
    def for_disk(cls, max_size: int, *, max_object_share: float = 0.5) -> PopularityPolicy:
        """For the disk store: object hits weigh 0.8, byte hits 0.2 (class docstring)."""
        return cls(max_size, alpha=0.8, max_object_share=max_object_share)

    @classmethod
    def for_ram(cls, max_size: int, *, max_object_share: float = 0.5) -> PopularityPolicy:
        """For the RAM layer: only object hits count (a RAM miss is a disk read)."""
        return cls(max_size, alpha=1.0, max_object_share=max_object_share)

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
    def delta(self) -> float:
        """The current newcomer discount (hits a first request is short of)."""
        return self._delta

    @property
    def clock(self) -> float:
        """GreedyDual's inflation value: the priority of the last victim."""
        return self._clock

    @property
    def mean_object_size(self) -> float:
        """Decayed mean size of the objects inserted (the value rule's scale)."""
        return self._mean_bytes / self._mean_count if self._mean_count else 0.0

    def hits(self, key: str) -> int:
        """The popularity count of a stored key (0 if not stored)."""
        return self._hits.get(key, 0)

    def priority(self, key: str) -> float | None:
        """The current priority ``H`` of a stored key (None if not stored)."""
        if key not in self._sizes:
            return None
        return self._priority(key)

    def stats(self) -> dict[str, float]:
        """Counters and gauges for the metrics module."""
        return {
            "evictions": self.evictions,
            "admissions_refused": self.admissions_refused,
            "objects": len(self._sizes),
            "bytes": self._used,
            "newcomer_discount": self._delta,
        }

    # ---- admission -------------------------------------------------------------------------

    def fits(self, size: int, budget: int) -> bool:
        """The size limit alone (the check before a fetch, on Content-Length): no state."""
        return size <= budget * self.max_object_share

    def admit(self, size: int, budget: int) -> bool:
        """May an object of ``size`` bytes be stored in a store of ``budget`` bytes?

        Only the size limit refuses (counted in ``admissions_refused``); popularity filtering
        is the newcomer discount's job (class docstring).
        """
        self.max_size = budget
        if size <= budget * self.max_object_share:
            return True
        self.admissions_refused += 1
        return False

    def record_miss(self, key: str, size: int, now: float) -> None:
        """A request for ``key`` found nothing stored. Call on every miss, before ``insert``.

        Counts the request in the sketch and adapts ``delta`` when ``key`` was evicted recently
        (a ghost hit). ``size`` may be 0 when it is not known yet (this policy learns sizes
        from ``insert``).
        """
        if now > self._now:
            self._now = now
        if self._hit_log:
            self._drain_hit_log()
        self.sketch.increment(key)
        gsize = self._ghost_new.pop(key, None)
        if gsize is not None:
            self._ghost_new_bytes -= gsize
            ratio = max(1.0, self._ghost_est_bytes / max(self._ghost_new_bytes, 1))
            self._delta = max(0.0, self._delta - ratio * gsize / self.max_size)
            return
        gsize = self._ghost_est.pop(key, None)
        if gsize is not None:
            self._ghost_est_bytes -= gsize
            ratio = max(1.0, self._ghost_new_bytes / max(self._ghost_est_bytes, 1))
            self._delta = min(self.delta_max, self._delta + ratio * gsize / self.max_size)

    def _drain_hit_log(self) -> None:
        increment = self.sketch.increment
        for key in self._hit_log:
            increment(key)
        self._hit_log.clear()

    # ---- the store's reports ---------------------------------------------------------------

    def _value(self, size: int) -> float:
        """What one hit on an object of ``size`` bytes is worth per byte (times the mean)."""
        mean = self._mean_bytes / self._mean_count if self._mean_count else float(size)
        return self.alpha * mean / (size if size > 0 else 1) + (1.0 - self.alpha)

    def _priority(self, key: str) -> float:
        hits = self._hits[key]
        count = hits - self._delta if hits <= 1 else float(hits)
        return self._base[key] + count * self._value(self._sizes[key])

    def _push(self, key: str, priority: float) -> None:
        self._pushed[key] = priority
        heapq.heappush(self._heap, (priority, key))

    def insert(self, key: str, size: int, now: float) -> None:
        """``key`` (``size`` bytes) is stored now: a new object, or one re-found at start."""
        if now > self._now:
            self._now = now
        if key in self._sizes:  # reported twice without a remove(): fix the bytes
            self._used += size - self._sizes[key]
            self._sizes[key] = size
            if key not in self._pushed:  # a named victim inserted again: back in the heap
                self._push(key, self._priority(key))
            return
        self._sizes[key] = size
        self._used += size
        saved = self._pending.pop(key, None)
        if saved is not None:  # saved before a restart: its popularity and priority
            hits, credit = saved
            self._hits[key] = hits
            self._base[key] = self._clock + credit - self._priority_count(hits) * self._value(size)
            self._push(key, self._clock + credit)
        else:
            self._mean_bytes += size
            self._mean_count += 1.0
            if self._mean_count >= _MEAN_WINDOW:
                self._mean_bytes *= 0.5
                self._mean_count *= 0.5
            self._hits[key] = max(1, self.sketch.frequency(key))
            self._base[key] = self._clock
            self._push(key, self._priority(key))
        n = len(self._sizes)
        sketch = self.sketch
        if _SKETCH_WIDTH_PER_ENTRY * n > sketch.width:
            sketch.grow(_SKETCH_WIDTH_PER_ENTRY * n)
        if _SAMPLES_PER_ENTRY * n > sketch.sample_size:
            sketch.sample_size = _SAMPLES_PER_ENTRY * n

    def _priority_count(self, hits: int) -> float:
        return hits - self._delta if hits <= 1 else float(hits)

    def touch(self, key: str, now: float) -> None:
        """A hit on ``key``. O(1); ``now`` is not used (may be 0)."""
        hits = self._hits.get(key)
        if hits is None:
            return
        if hits < _MAX_HITS:
            self._hits[key] = hits + 1
        self._base[key] = self._clock
        if len(self._hit_log) < _HIT_LOG_MAX:
            self._hit_log.append(key)

    def remove(self, key: str) -> None:
        """``key`` left the store (evicted, invalidated, replaced, corrupt). Unknown: ignored."""
        size = self._sizes.pop(key, None)
        if size is None:
            self._pending.pop(key, None)
            return
        self._used -= size
        del self._hits[key]
        del self._base[key]
        self._pushed.pop(key, None)  # its heap entry, if any, is stale from now on

    # ---- eviction --------------------------------------------------------------------------

    def victims(self, bytes_over: int, now: float) -> Iterator[str]:
        """Keys to evict, least priority first, until at least ``bytes_over`` bytes.

        The named keys leave the heap at once (the ghost lists remember them) but stay counted
        until the caller calls ``remove()`` for each. Fewer bytes are named only when nothing
        else is left.
        """
        if now > self._now:
            self._now = now
        if self._hit_log:
            self._drain_hit_log()
        out: list[str] = []
        freed = 0
        heap, pushed, sizes = self._heap, self._pushed, self._sizes
        pop, push = heapq.heappop, heapq.heappush
        while freed < bytes_over and heap:
            priority, key = pop(heap)
            if pushed.get(key) != priority:
                continue  # stale: removed, re-pushed or already named
            current = self._priority(key)
            if current > priority:  # hit (or valued higher) since pushed: look again later
                pushed[key] = current
                push(heap, (current, key))
                continue
            del pushed[key]
            if current > self._clock:
                self._clock = current
            size = sizes[key]
            self._ghost(key, size, newcomer=self._hits[key] <= 1)
            out.append(key)
            freed += size
        if len(heap) > 2 * len(pushed) + 1024:  # drop stale entries now and then
            self._heap = [(p, k) for k, p in pushed.items()]
            heapq.heapify(self._heap)
        self.evictions += len(out)
        return iter(out)

    def _ghost(self, key: str, size: int, *, newcomer: bool) -> None:
        limit = self.ghost_share * self.max_size
        if newcomer:
            ghost = self._ghost_new
            ghost[key] = size
            self._ghost_new_bytes += size
            while self._ghost_new_bytes > limit and ghost:
                self._ghost_new_bytes -= ghost.popitem(last=False)[1]
        else:
            ghost = self._ghost_est
            ghost[key] = size
            self._ghost_est_bytes += size
            while self._ghost_est_bytes > limit and ghost:
                self._ghost_est_bytes -= ghost.popitem(last=False)[1]

    # ---- persistence -----------------------------------------------------------------------

    def dump_state(self) -> bytes:
        """What the policy learned, as bytes (write them to a temp file, then rename).

        Layout: a magic line, a JSON header line, then zlib(sketch table, entries); an entry is
        ``u16 hits, f64 credit (priority - clock), u16 key length, key (UTF-8)``. Pending
        entries (loaded, not re-inserted yet) are kept; ghosts are not (they are short-term).
        """
        if self._hit_log:
            self._drain_hit_log()
        body = bytearray(self.sketch.to_bytes())
        pack = _ENTRY.pack
        count = 0
        clock = self._clock
        items: list[tuple[str, int, float]] = [
            (key, self._hits[key], self._priority(key) - clock) for key in self._sizes
        ]
        items.extend((key, hits, credit) for key, (hits, credit) in self._pending.items())
        for key, hits, credit in items:
            raw = key.encode()
            if len(raw) > 0xFFFF:
                continue
            body += pack(hits, credit, len(raw))
            body += raw
            count += 1
        header = {
            "version": _STATE_VERSION,
            "saved_at": self._now,
            "delta": self._delta,
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
            entries: list[tuple[str, int, float]] = []
            pos = 4 * width
            for _ in range(int(header["entries"])):
                hits, credit, length = _ENTRY.unpack_from(body, pos)
                pos += _ENTRY.size
                if pos + length > len(body) or not hits or credit != credit:
                    raise ValueError("truncated or invalid entry")
                entries.append((body[pos : pos + length].decode(), hits, credit))
                pos += length
            if pos != len(body):
                raise ValueError("trailing bytes")
            delta = float(header["delta"])
            mean_bytes = float(header["mean_bytes"])
            mean_count = float(header["mean_count"])
            saved_at = float(header["saved_at"])
        except (KeyError, TypeError, struct.error, zlib.error, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt popularity-policy state: {exc}") from exc
        if self.idle_half_life > 0 and now > saved_at:
            for _ in range(min(4, int((now - saved_at) // self.idle_half_life))):
                sketch.halve()
        self.sketch = sketch
        self._delta = min(self.delta_max, max(0.0, delta))
        self._mean_bytes, self._mean_count = mean_bytes, mean_count
        if now > self._now:
            self._now = now
        for key, hits, credit in entries:
            if key not in self._sizes:
                self._pending[key] = (hits, credit)

    def finish_load(self) -> int:
        """Forget loaded entries the store did not re-insert; returns how many there were."""
        lost, self._pending = self._pending, {}
        return len(lost)
