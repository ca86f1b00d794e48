"""Decayed popularity counts per normalized path (pure: ``now`` is always passed in).

Contract:
- :meth:`Popularity.hit` counts one request for a path at time ``now``. Each path holds two
  exponentially decayed counts, one with a short half-life (default 5 min) and one with a long
  one (default 1 h): a request adds 1 to both, and a count halves every half-life.
- Cheap on the hot path: the counts are stored scaled by ``2 ** ((now - t0) / half_life)``
  against a common reference time ``t0``, so a hit is one dict lookup, two float multiplies
  (the scale factors are recomputed at most once per ``resolution`` seconds) and two adds;
  no per-path timestamps. When the scale grows large every stored count is rescaled once
  (O(paths), every few hundred half-lives).
- Bounded: above ``max_paths`` paths the coldest (by the long count) are evicted down to
  ``low_water`` of the limit, so a flood of one-hit paths costs O(log n) amortized per path.
- :meth:`top` lists the hottest paths by the long count with their decayed counts and a
  :func:`trend`: ``rising`` when the short-term rate is clearly above the long-term rate,
  ``falling`` when clearly below, else ``steady``.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

SHORT_HALF_LIFE = 300.0
LONG_HALF_LIFE = 3600.0
MAX_PATHS = 100_000
LOW_WATER = 0.9  # after an eviction, this share of max_paths remains
RESOLUTION = 1.0  # seconds between recomputations of the scale factors
RESCALE_POWER = 64.0  # stored counts are rebased when the short scale passes 2 ** this
TREND_MARGIN = 0.25  # a rate 25% above/below the long-term rate is a trend


def decayed(count: float, elapsed: float, half_life: float) -> float:
    """``count`` after ``elapsed`` seconds of exponential decay with ``half_life``."""
    return count * 0.5 ** (elapsed / half_life)


def trend(
    short: float,
    long: float,
    short_half_life: float = SHORT_HALF_LIFE,
    long_half_life: float = LONG_HALF_LIFE,
    margin: float = TREND_MARGIN,
) -> str:
    """``rising``, ``falling`` or ``steady``: compare the request rates the two counts imply.

    A decayed count under a steady rate ``r`` tends to ``r * half_life / ln 2``, so each count
    divided by its half-life estimates the same rate when nothing changes.
    """
    rate_short = short / short_half_life
    rate_long = long / long_half_life
    if rate_long <= 0.0:
        return "rising" if rate_short > 0.0 else "steady"
    ratio = rate_short / rate_long
    if ratio > 1.0 + margin:
        return "rising"
    if ratio < 1.0 - margin:
        return "falling"
    return "steady"


@dataclass(frozen=True)
class Popular:
    path: str
    count: float  # decayed with the long half-life
    recent: float  # decayed with the short half-life
    trend: str

    def as_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "count": round(self.count, 3),
            "recent": round(self.recent, 3),
            "trend": self.trend,
        }


class Popularity:
    """Decayed request counts per path; see the module docstring."""

    __slots__ = (
        "_inc_long",
        "_inc_short",
        "_until",
        "counts",
        "evicted",
        "long_half_life",
        "low_water",
        "max_paths",
        "resolution",
        "short_half_life",
        "t0",
    )

    def __init__(
        self,
        *,
        short_half_life: float = SHORT_HALF_LIFE,
        long_half_life: float = LONG_HALF_LIFE,
        max_paths: int = MAX_PATHS,
        low_water: float = LOW_WATER,
        resolution: float = RESOLUTION,
    ) -> None:
        if not 0 < short_half_life < long_half_life:
            raise ValueError("need 0 < short_half_life < long_half_life")
        if max_paths < 1:
            raise ValueError("max_paths must be at least 1")
        self.short_half_life = short_half_life
        self.long_half_life = long_half_life
        self.max_paths = max_paths
        self.low_water = low_water
        self.resolution = resolution
        # path -> [short, long], both scaled by the increments at t0 (see _scale)
        self.counts: dict[str, list[float]] = {}
        self.t0: float | None = None
        self._until = -math.inf  # the increments are valid before this time
        self._inc_short = 1.0
        self._inc_long = 1.0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.counts)

    def hit(self, path: str, now: float) -> None:
        """Count one request for ``path`` at ``now`` (the hot path)."""
        if now >= self._until:
            self._scale(now)
        pair = self.counts.get(path)
        if pair is not None:
            pair[0] += self._inc_short
            pair[1] += self._inc_long
            return
        self.counts[path] = [self._inc_short, self._inc_long]
        if len(self.counts) > self.max_paths:
            self._evict()

    def _scale(self, now: float) -> None:
        """Recompute the increments for ``now`` (valid for ``resolution`` seconds)."""
        if self.t0 is None:
            self.t0 = now
        elapsed = now - self.t0
        power_short = elapsed / self.short_half_life
        power_long = elapsed / self.long_half_life
        if power_short > RESCALE_POWER or elapsed < 0:
            # rebase every stored count on t0 = now (also when the clock went back); the
            # factors underflow to 0 gracefully where 2 ** power would overflow
            down_short = 0.5**power_short
            down_long = 0.5**power_long
            for pair in self.counts.values():
                pair[0] *= down_short
                pair[1] *= down_long
            self.t0 = now
            power_short = power_long = 0.0
        inc_short = 2.0**power_short
        inc_long = 2.0**power_long
        self._inc_short = inc_short
        self._inc_long = inc_long
        self._until = now + self.resolution

    def _evict(self) -> None:
        keep = max(1, int(self.max_paths * self.low_water))
        drop = len(self.counts) - keep
        if drop <= 0:
            return
        for path in heapq.nsmallest(drop, self.counts, key=lambda p: self.counts[p][1]):
            del self.counts[path]
        self.evicted += drop

    def counts_of(self, path: str, now: float) -> tuple[float, float]:
        """(short, long) decayed counts of ``path`` at ``now``; (0, 0) when unknown."""
        pair = self.counts.get(path)
        if pair is None or self.t0 is None:
            return 0.0, 0.0
        elapsed = now - self.t0
        return (
            pair[0] * 0.5 ** (elapsed / self.short_half_life),
            pair[1] * 0.5 ** (elapsed / self.long_half_life),
        )

    def top(self, n: int, now: float) -> list[Popular]:
        """The ``n`` hottest paths by the long count, hottest first (ties by path)."""
        if n <= 0 or self.t0 is None:
            return []
        elapsed = now - self.t0
        short_factor = 0.5 ** (elapsed / self.short_half_life)
        long_factor = 0.5 ** (elapsed / self.long_half_life)
        best = heapq.nsmallest(n, self.counts.items(), key=lambda kv: (-kv[1][1], kv[0]))
        result = []
        for path, (short, long) in best:
            s, l_ = short * short_factor, long * long_factor
            result.append(
                Popular(path, l_, s, trend(s, l_, self.short_half_life, self.long_half_life))
            )
        return result
