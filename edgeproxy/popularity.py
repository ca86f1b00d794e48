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
- Persistence: :meth:`Popularity.dump` gives the counts decayed to ``now`` (JSON-able) and
  :meth:`Popularity.load` adds such a dump back, decayed again from its ``saved_at`` to ``now``
  (so a restart neither forgets nor freezes what is hot). :func:`save_file` and
  :func:`load_file` are the shell's side: ``<store>/popularity.json``, written to a temporary
  file and renamed into place (a crash leaves the old file or the new one, never half of one);
  a missing or unreadable file loads nothing.
- A worker of a multi-process node counts into a :class:`Tally` (per-path integers since the
  last drain, cheaper than decaying), which its master adds into its own :class:`Popularity`
  with :meth:`Popularity.add`.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("edgeproxy.popularity")

SHORT_HALF_LIFE = 300.0
LONG_HALF_LIFE = 3600.0
MAX_PATHS = 100_000
LOW_WATER = 0.9  # after an eviction, this share of max_paths remains
RESOLUTION = 1.0  # seconds between recomputations of the scale factors
RESCALE_POWER = 64.0  # stored counts are rebased when the short scale passes 2 ** this
TREND_MARGIN = 0.25  # a rate 25% above/below the long-term rate is a trend
FILE_NAME = "popularity.json"
STATE_VERSION = 1
TALLY_MAX_PATHS = 50_000  # distinct paths a worker tallies between two drains


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

    def add(self, path: str, now: float, n: float = 1.0) -> None:
        """Count ``n`` requests for ``path`` at ``now`` (a worker's tally, a merged count)."""
        if now >= self._until:
            self._scale(now)
        pair = self.counts.get(path)
        if pair is not None:
            pair[0] += n * self._inc_short
            pair[1] += n * self._inc_long
            return
        self.counts[path] = [n * self._inc_short, n * self._inc_long]
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

    # ---- persistence -----------------------------------------------------------------------

    def dump(self, now: float) -> dict[str, Any]:
        """Every count decayed to ``now`` (O(paths), no sort): ``{"version", "saved_at",
        "short_half_life", "long_half_life", "paths": [[path, short, long], ...]}``."""
        paths: list[list[Any]] = []
        if self.t0 is not None:
            elapsed = now - self.t0
            fs = 0.5 ** (elapsed / self.short_half_life)
            fl = 0.5 ** (elapsed / self.long_half_life)
            paths = [[p, s * fs, l_ * fl] for p, (s, l_) in self.counts.items()]
        return {
            "version": STATE_VERSION,
            "saved_at": now,
            "short_half_life": self.short_half_life,
            "long_half_life": self.long_half_life,
            "paths": paths,
        }

    def load(self, state: Mapping[str, Any], now: float, scale: float = 1.0) -> int:
        """Add the counts of a :meth:`dump` (times ``scale``), decayed from its ``saved_at``
        to ``now`` (a clock that went back decays nothing). Returns the paths added; raises
        ValueError on a dump of another version or shape, before adding any."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError("not a popularity dump of this version")
        saved_at = state.get("saved_at")
        paths = state.get("paths")
        if not isinstance(saved_at, int | float) or not isinstance(paths, list):
            raise ValueError("a popularity dump needs saved_at and paths")
        rows = []
        for row in paths[: self.max_paths]:
            if (
                not isinstance(row, list)
                or len(row) != 3
                or not isinstance(row[0], str)
                or not all(isinstance(x, int | float) and x >= 0 for x in row[1:])
            ):
                raise ValueError(f"bad popularity row {row!r}")
            rows.append(row)
        elapsed = max(0.0, now - float(saved_at))
        fs = scale * 0.5 ** (elapsed / self.short_half_life)
        fl = scale * 0.5 ** (elapsed / self.long_half_life)
        self._scale(now)
        for path, short, long in rows:
            pair = self.counts.setdefault(path, [0.0, 0.0])
            pair[0] += short * fs * self._inc_short
            pair[1] += long * fl * self._inc_long
        if len(self.counts) > self.max_paths:
            self._evict()
        return len(rows)


class Tally:
    """Requests per path since the last :meth:`drain` (a worker's share; its master decays).

    The same ``hit(path, now)`` as :class:`Popularity`, one dict update; past ``max_paths``
    distinct paths between two drains, new paths are dropped (counted in ``dropped``).
    """

    __slots__ = ("counts", "dropped", "max_paths")

    def __init__(self, max_paths: int = TALLY_MAX_PATHS) -> None:
        self.counts: dict[str, int] = {}
        self.max_paths = max_paths
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.counts)

    def hit(self, path: str, now: float) -> None:
        counts = self.counts
        n = counts.get(path)
        if n is not None:
            counts[path] = n + 1
        elif len(counts) < self.max_paths:
            counts[path] = 1
        else:
            self.dropped += 1

    def drain(self) -> dict[str, int]:
        counts, self.counts = self.counts, {}
        return counts


# ---- the file (the shell's side) ---------------------------------------------------------------


def save_file(state: Mapping[str, Any], root: str | os.PathLike[str]) -> Path:
    """Write a :meth:`Popularity.dump` to ``<root>/popularity.json`` atomically (temporary
    file, fsync, rename). The dump is taken on the event loop (the counts change under it);
    this part may run in an executor."""
    path = Path(root) / FILE_NAME
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    data = json.dumps(state, separators=(",", ":")).encode()
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def load_file(pop: Popularity, root: str | os.PathLike[str], now: float, scale: float = 1.0) -> int:
    """Add ``<root>/popularity.json`` into ``pop``; the paths loaded (0 when the file is
    missing; an unreadable or corrupt file is logged and loads nothing)."""
    path = Path(root) / FILE_NAME
    try:
        state = json.loads(path.read_bytes())
        return pop.load(state, now, scale)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        log.warning("%s: popularity not loaded: %s", path, exc)
        return 0
