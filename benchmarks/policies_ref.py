"""Reference eviction policies for ``trace_replay.py``: what edgeproxy's policy is compared to.

These are textbook implementations, byte-budgeted, behind the same interface as
``edgeproxy.cache.eviction`` (``admit(size, budget)``, ``record_miss``, ``insert``, ``touch``,
``remove``, ``victims(bytes_over, now)``, ``__len__``). They are independent of
edgeproxy's code on purpose (their own frequency sketch, their own queues), so a bug in the
policy under test cannot leak into the bar it is measured against. They are not tuned for any
trace: every parameter is the one the paper (or its reference implementation) recommends.

- :class:`S3FifoRef`: S3-FIFO, Yang et al., "FIFO queues are all you need for cache eviction",
  SOSP 2023. Small FIFO (10 % of the bytes), main FIFO with a 2-bit clock (reinsertion with
  frequency - 1), ghost FIFO of keys evicted from the small queue (90 % of the bytes, as in
  libCacheSim's defaults); an object leaves the small queue for the main one if it was hit
  there at least once (``move-to-main-threshold=1``).
- :class:`WTinyLfuRef`: W-TinyLFU, Einziger, Friedman, Manes, "TinyLFU: A Highly Efficient
  Cache Admission Policy", ACM ToS 2017, as in Caffeine: a 1 % LRU window, a segmented LRU main
  space (80 % protected), a 4-row count-min sketch of 4-bit counters, all halved after
  ``10 x entries`` samples; the window's LRU candidate enters the main space only if its
  estimated frequency beats that of the probation segment's LRU victim.
- :class:`GdsfRef`: GreedyDual-Size-Frequency, Cherkasova, "Improving WWW Proxies Performance
  with Greedy-Dual-Size-Frequency Caching Policy", HP Labs TR HPL-98-69, 1998:
  ``H = L + frequency x cost / size`` with cost 1 (the object-hit-ratio variant), ``L`` the
  priority of the last victim; a heap with lazy deletion (O(log n), a reference only).
- :class:`ArcRef`: ARC, Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead Replacement
  Cache", FAST 2003, with the sizes of T1/T2/B1/B2 and the target ``p`` counted in bytes
  (the adaptation step is the byte size of the ghost hit times the usual ratio).

Every policy refuses objects larger than ``max_object_share`` of the budget (default 1: only
what could never fit) and nothing else; ``evictions`` and ``admissions_refused`` count as in
edgeproxy's policy.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator

import xxhash

_HALVE = bytes(i >> 1 for i in range(256))


class _RefSketch:
    """Count-min sketch of 4-bit counters (4 rows), halved every ``10 x entries`` samples."""

    __slots__ = ("_additions", "_mask", "_table", "_width")

    def __init__(self, width: int) -> None:
        self._width = 1 << max(8, (width - 1).bit_length())
        self._mask = self._width - 1
        self._table = bytearray(4 * self._width)
        self._additions = 0

    def _indexes(self, key: str) -> tuple[int, int, int, int]:
        h = xxhash.xxh3_64_intdigest(key.encode())
        lo, hi = h & 0xFFFFFFFF, (h >> 32) | 1
        m, w = self._mask, self._width
        return (
            lo & m,
            ((lo + hi) & m) + w,
            ((lo + 2 * hi) & m) + 2 * w,
            ((lo + 3 * hi) & m) + 3 * w,
        )

    def frequency(self, key: str) -> int:
        t = self._table
        a, b, c, d = self._indexes(key)
        return min(t[a], t[b], t[c], t[d])

    def increment(self, key: str, sample_size: int) -> None:
        t = self._table
        for i in self._indexes(key):
            if t[i] < 15:
                t[i] += 1
        self._additions += 1
        if self._additions >= sample_size:
            self._table = bytearray(t.translate(_HALVE))
            self._additions //= 2


class _Base:
    """Shared bookkeeping: byte accounting, counters, the size limit."""

    def __init__(self, max_size: int, max_object_share: float = 1.0) -> None:
        self.max_size = max_size
        self.max_object_share = max_object_share
        self.evictions = 0
        self.admissions_refused = 0
        self.sizes: dict[str, int] = {}
        # victims named by victims() are detached from the queues at once and wait here for
        # the caller's remove() (the contract: victims() names, the caller removes)
        self._doomed: set[str] = set()

    def _forget_doomed(self, key: str) -> bool:
        if key in self._doomed:
            self._doomed.discard(key)
            self.sizes.pop(key, None)
            return True
        return False

    def _doom(self, key: str, out: list[str]) -> int:
        self._doomed.add(key)
        out.append(key)
        self.evictions += 1
        return self.sizes[key]

    def __len__(self) -> int:
        return len(self.sizes)

    def admit(self, size: int, budget: int) -> bool:
        self.max_size = budget
        if size > budget * self.max_object_share:
            self.admissions_refused += 1
            return False
        return True

    def record_miss(self, key: str, size: int, now: float) -> None:
        return None


class S3FifoRef(_Base):
    """S3-FIFO (Yang et al., SOSP'23), byte-budgeted. See the module docstring."""

    def __init__(
        self,
        max_size: int,
        max_object_share: float = 1.0,
        small_ratio: float = 0.1,
        ghost_ratio: float = 0.9,
    ) -> None:
        super().__init__(max_size, max_object_share)
        self.small_ratio = small_ratio
        self.ghost_ratio = ghost_ratio
        self._small: OrderedDict[str, None] = OrderedDict()
        self._main: OrderedDict[str, None] = OrderedDict()
        self._ghost: OrderedDict[str, int] = OrderedDict()
        self._freq: dict[str, int] = {}
        self._small_bytes = 0
        self._ghost_bytes = 0

    def insert(self, key: str, size: int, now: float) -> None:
        self.sizes[key] = size
        self._freq[key] = 0
        gsize = self._ghost.pop(key, None)
        if gsize is not None:
            self._ghost_bytes -= gsize
            self._main[key] = None
        else:
            self._small[key] = None
            self._small_bytes += size

    def touch(self, key: str, now: float) -> None:
        f = self._freq.get(key)
        if f is not None and f < 3:
            self._freq[key] = f + 1

    def remove(self, key: str) -> None:
        if self._forget_doomed(key):
            return
        size = self.sizes.pop(key, None)
        if size is None:
            return
        self._freq.pop(key, None)
        if key in self._small:
            del self._small[key]
            self._small_bytes -= size
        else:
            self._main.pop(key, None)

    def _to_ghost(self, key: str, size: int) -> None:
        self._ghost[key] = size
        self._ghost_bytes += size
        limit = self.ghost_ratio * self.max_size
        while self._ghost_bytes > limit and self._ghost:
            _, gsize = self._ghost.popitem(last=False)
            self._ghost_bytes -= gsize

    def victims(self, bytes_over: int, now: float) -> Iterator[str]:
        out: list[str] = []
        freed = 0
        small, main, freq, sizes = self._small, self._main, self._freq, self.sizes
        while freed < bytes_over and (small or main):
            if small and (self._small_bytes > self.small_ratio * self.max_size or not main):
                key, _ = small.popitem(last=False)
                size = sizes[key]
                self._small_bytes -= size
                if freq[key] >= 1:  # hit while in the small queue: on to the main queue
                    freq[key] = 0
                    main[key] = None
                    continue
                self._to_ghost(key, size)
            else:
                key, _ = main.popitem(last=False)
                f = freq[key]
                if f > 0:  # 2-bit clock: reinsert with one less
                    freq[key] = f - 1
                    main[key] = None
                    continue
            freq.pop(key, None)
            freed += self._doom(key, out)
        return iter(out)


class WTinyLfuRef(_Base):
    """W-TinyLFU (Einziger et al. 2017) as in Caffeine, byte-budgeted. See the module docstring."""

    def __init__(
        self,
        max_size: int,
        max_object_share: float = 1.0,
        window_ratio: float = 0.01,
        protected_ratio: float = 0.8,
    ) -> None:
        super().__init__(max_size, max_object_share)
        self.window_ratio = window_ratio
        self.protected_ratio = protected_ratio
        self._window: OrderedDict[str, None] = OrderedDict()
        self._probation: OrderedDict[str, None] = OrderedDict()
        self._protected: OrderedDict[str, None] = OrderedDict()
        self._window_bytes = 0
        self._protected_bytes = 0
        self._sketch = _RefSketch(max(256, max_size // 4096))

    def _sample_size(self) -> int:
        return 10 * max(len(self.sizes), 64)

    def record_miss(self, key: str, size: int, now: float) -> None:
        self._sketch.increment(key, self._sample_size())

    def insert(self, key: str, size: int, now: float) -> None:
        self.sizes[key] = size
        self._window[key] = None
        self._window_bytes += size

    def touch(self, key: str, now: float) -> None:
        self._sketch.increment(key, self._sample_size())
        if key in self._window:
            self._window.move_to_end(key)
        elif key in self._probation:
            del self._probation[key]
            self._protected[key] = None
            self._protected_bytes += self.sizes[key]
            limit = self.protected_ratio * (1 - self.window_ratio) * self.max_size
            while self._protected_bytes > limit and len(self._protected) > 1:
                demoted, _ = self._protected.popitem(last=False)
                self._protected_bytes -= self.sizes[demoted]
                self._probation[demoted] = None
        elif key in self._protected:
            self._protected.move_to_end(key)

    def remove(self, key: str) -> None:
        if self._forget_doomed(key):
            return
        size = self.sizes.pop(key, None)
        if size is None:
            return
        if key in self._window:
            del self._window[key]
            self._window_bytes -= size
        elif key in self._probation:
            del self._probation[key]
        elif key in self._protected:
            del self._protected[key]
            self._protected_bytes -= size

    def _pop_main_victim(self) -> str | None:
        if self._probation:
            return self._probation.popitem(last=False)[0]
        if self._protected:
            key = self._protected.popitem(last=False)[0]
            self._protected_bytes -= self.sizes[key]
            return key
        return None

    def victims(self, bytes_over: int, now: float) -> Iterator[str]:
        out: list[str] = []
        freed = 0
        sizes, window, probation = self.sizes, self._window, self._probation
        freq = self._sketch.frequency
        # the window's overflow (LRU end) are the candidates for the main space
        candidates: list[str] = []
        while self._window_bytes > self.window_ratio * self.max_size and len(window) > 1:
            key, _ = window.popitem(last=False)
            self._window_bytes -= sizes[key]
            candidates.append(key)
        ci = 0
        while freed < bytes_over:
            if ci < len(candidates):
                cand = candidates[ci]
                ci += 1
                victim = self._pop_main_victim()
                if victim is None:
                    probation[cand] = None
                    continue
                if freq(cand) > freq(victim):
                    probation[cand] = None
                    freed += self._doom(victim, out)
                else:
                    # the victim survives: back at the head of probation
                    probation[victim] = None
                    probation.move_to_end(victim, last=False)
                    freed += self._doom(cand, out)
            else:
                victim = self._pop_main_victim()
                if victim is None:
                    if not window:
                        break
                    victim, _ = window.popitem(last=False)
                    self._window_bytes -= sizes[victim]
                freed += self._doom(victim, out)
        for cand in candidates[ci:]:
            probation[cand] = None
        return iter(out)


class GdsfRef(_Base):
    """GreedyDual-Size-Frequency (Cherkasova 1998), cost 1. See the module docstring."""

    def __init__(self, max_size: int, max_object_share: float = 1.0) -> None:
        super().__init__(max_size, max_object_share)
        self._inflation = 0.0
        self._heap: list[tuple[float, int, str]] = []
        self._prio: dict[str, float] = {}
        self._freq: dict[str, int] = {}
        self._seq = 0

    def _push(self, key: str) -> None:
        prio = self._inflation + self._freq[key] / max(self.sizes[key], 1)
        self._prio[key] = prio
        self._seq += 1
        heapq.heappush(self._heap, (prio, self._seq, key))

    def insert(self, key: str, size: int, now: float) -> None:
        self.sizes[key] = size
        self._freq[key] = 1
        self._push(key)

    def touch(self, key: str, now: float) -> None:
        if key in self._prio:
            self._freq[key] += 1
            self._push(key)

    def remove(self, key: str) -> None:
        if self._forget_doomed(key):
            return
        if self.sizes.pop(key, None) is not None:
            self._freq.pop(key, None)
            self._prio.pop(key, None)

    def victims(self, bytes_over: int, now: float) -> Iterator[str]:
        out: list[str] = []
        freed = 0
        heap = self._heap
        while freed < bytes_over and heap:
            prio, _, key = heapq.heappop(heap)
            if self._prio.get(key) != prio:
                continue  # stale heap entry
            self._inflation = prio
            del self._prio[key]
            self._freq.pop(key, None)
            freed += self._doom(key, out)
        if len(heap) > 4 * len(self._prio) + 64:  # drop stale entries now and then
            self._heap = [item for item in heap if self._prio.get(item[2]) == item[0]]
            heapq.heapify(self._heap)
        return iter(out)


class ArcRef(_Base):
    """ARC (Megiddo and Modha, FAST'03) with byte-sized lists. See the module docstring."""

    def __init__(self, max_size: int, max_object_share: float = 1.0) -> None:
        super().__init__(max_size, max_object_share)
        self._t1: OrderedDict[str, None] = OrderedDict()
        self._t2: OrderedDict[str, None] = OrderedDict()
        self._b1: OrderedDict[str, int] = OrderedDict()
        self._b2: OrderedDict[str, int] = OrderedDict()
        self._t1_bytes = self._t2_bytes = self._b1_bytes = self._b2_bytes = 0
        self._p = 0.0
        self._last_ghost = 0  # 1: the last insert was a B1 hit, 2: a B2 hit

    def insert(self, key: str, size: int, now: float) -> None:
        self.sizes[key] = size
        self._last_ghost = 0
        if key in self._b1:
            ratio = max(1.0, self._b2_bytes / max(self._b1_bytes, 1))
            self._p = min(float(self.max_size), self._p + ratio * size)
            self._b1_bytes -= self._b1.pop(key)
            self._t2[key] = None
            self._t2_bytes += size
            self._last_ghost = 1
        elif key in self._b2:
            ratio = max(1.0, self._b1_bytes / max(self._b2_bytes, 1))
            self._p = max(0.0, self._p - ratio * size)
            self._b2_bytes -= self._b2.pop(key)
            self._t2[key] = None
            self._t2_bytes += size
            self._last_ghost = 2
        else:
            self._t1[key] = None
            self._t1_bytes += size

    def touch(self, key: str, now: float) -> None:
        if key in self._t1:
            del self._t1[key]
            size = self.sizes[key]
            self._t1_bytes -= size
            self._t2[key] = None
            self._t2_bytes += size
        elif key in self._t2:
            self._t2.move_to_end(key)

    def remove(self, key: str) -> None:
        if self._forget_doomed(key):
            return
        size = self.sizes.pop(key, None)
        if size is None:
            return
        if key in self._t1:
            del self._t1[key]
            self._t1_bytes -= size
        elif key in self._t2:
            del self._t2[key]
            self._t2_bytes -= size

    def victims(self, bytes_over: int, now: float) -> Iterator[str]:
        out: list[str] = []
        freed = 0
        sizes = self.sizes
        t1, t2 = self._t1, self._t2
        while freed < bytes_over and (t1 or t2):
            from_t1 = bool(t1) and (
                not t2
                or self._t1_bytes > self._p
                or (self._last_ghost == 2 and self._t1_bytes >= self._p)
            )
            if from_t1:
                key, _ = t1.popitem(last=False)
                size = sizes[key]
                self._t1_bytes -= size
                self._b1[key] = size
                self._b1_bytes += size
            else:
                key, _ = t2.popitem(last=False)
                size = sizes[key]
                self._t2_bytes -= size
                self._b2[key] = size
                self._b2_bytes += size
            freed += self._doom(key, out)
        c = self.max_size
        while self._b1 and self._t1_bytes + self._b1_bytes > c:
            self._b1_bytes -= self._b1.popitem(last=False)[1]
        while self._b2 and (
            self._t1_bytes + self._t2_bytes + self._b1_bytes + self._b2_bytes > 2 * c
        ):
            self._b2_bytes -= self._b2.popitem(last=False)[1]
        return iter(out)
