"""The cache manager of a multi-process node: owns the byte budget and the eviction decisions.

Contract: workers report, in batches, what they stored (``p key size``), accessed (``a key``) and
dropped (``d key``); the manager keeps the eviction policy over the whole store (one budget for
all workers, as nginx's cache manager does), and deletes the victims' files (metadata first) in
its executor. It rebuilds its index from the disk at start. It never serves requests.

Budgets: ``max_size`` (bytes of bodies) and the ``min_free`` watermark (bytes, or a percent of
the file system, kept free): :meth:`StoreManager.enforce` evicts for whichever asks more. Free
space comes from ``statvfs`` (in the executor, at most once per :data:`FS_CHECK_INTERVAL`),
plus what was evicted since.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgeproxy.cache.entry import Entry
from edgeproxy.cache.eviction import LruPolicy, PopularityPolicy

log = logging.getLogger("edgeproxy.manager")

FS_CHECK_INTERVAL = 1.0  # seconds between statvfs calls


def watermark_deficit(free: int, total: int, min_free: int, min_free_percent: float) -> int:
    """Bytes to free so that ``free`` bytes of a ``total``-byte file system reach the
    watermark: ``min_free`` bytes or ``min_free_percent`` of ``total``, whichever is more
    (0 when no watermark is set, or when it is met). Pure."""
    want = max(min_free, int(total * min_free_percent / 100)) if min_free_percent else min_free
    return max(0, want - free)


class StoreManager:
    def __init__(
        self,
        root: str | os.PathLike[str],
        max_size: int,
        *,
        min_free: int = 0,
        min_free_percent: float = 0.0,
        eviction: str = "popularity",
        object_weight: float = 0.8,
    ) -> None:
        self.root = Path(root)
        self.max_size = max_size
        self.min_free = min_free
        self.min_free_percent = min_free_percent
        self._fs: tuple[int, int] | None = None  # (free, total) at the last statvfs
        self._fs_checked = float("-inf")
        self._freed_since_fs = 0
        self.watermark_evictions = 0
        self.sizes: dict[str, int] = {}
        self.used_bytes = 0
        self.policy: LruPolicy | PopularityPolicy = (
            LruPolicy() if eviction == "lru" else PopularityPolicy(max_size, alpha=object_weight)
        )
        self.state_path = self.root / "policy.state"
        self.evictions = 0
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="manager")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        now = time.time()
        try:
            raw = await loop.run_in_executor(self._executor, self.state_path.read_bytes)
            self.policy.load_state(raw, now)
        except (OSError, ValueError) as exc:
            log.info("no usable policy state (%s): starting cold", exc)
        found = await loop.run_in_executor(self._executor, self._scan)
        for key, size in found:
            self._add(key, size, now)
        self.policy.finish_load()
        await self.enforce()
        log.info("manager: %d entries, %d bytes", len(self.sizes), self.used_bytes)

    def _scan(self) -> list[tuple[str, int]]:
        items: list[tuple[float, str, int]] = []
        for meta in (self.root / "objects").glob("*/*/*.meta"):
            try:
                entry = Entry.from_json(meta.read_bytes())
                items.append((meta.stat().st_mtime, entry.key_hex, entry.size))
            except (OSError, ValueError):
                continue
        items.sort()
        return [(key, size) for _, key, size in items]

    def _add(self, key: str, size: int, now: float) -> None:
        old = self.sizes.get(key)
        if old is not None:
            self.used_bytes -= old
            self.policy.remove(key)
        self.sizes[key] = size
        self.used_bytes += size
        self.policy.insert(key, size, now)

    def _remove(self, key: str) -> None:
        size = self.sizes.pop(key, None)
        if size is not None:
            self.used_bytes -= size
            self.policy.remove(key)

    def handle_line(self, line: str, now: float) -> None:
        """One report line from a worker: ``p KEY SIZE`` | ``a KEY`` | ``d KEY``."""
        parts = line.split()
        if len(parts) < 2:
            return
        kind, key = parts[0], parts[1]
        if kind == "p" and len(parts) == 3:
            self._add(key, int(parts[2]), now)
        elif kind == "a":
            self.policy.touch(key, now)
        elif kind == "m" and len(parts) == 3:
            self.policy.record_miss(key, int(parts[2]), now)
        elif kind == "d":
            self._remove(key)

    async def enforce(self) -> None:
        over = self.used_bytes - self.max_size
        deficit = await self._watermark_deficit()
        by_watermark = deficit > over
        over = max(over, deficit)
        if over <= 0:
            return
        victims = list(self.policy.victims(over, time.time()))
        freed = 0
        for key in victims:
            freed += self.sizes.get(key, 0)
            self._remove(key)
            self.policy.remove(key)  # named victims always leave the policy
        self.evictions += len(victims)
        if by_watermark:
            self.watermark_evictions += len(victims)
        self._freed_since_fs += freed
        await asyncio.get_running_loop().run_in_executor(self._executor, self._delete, victims)

    async def _watermark_deficit(self) -> int:
        if not (self.min_free or self.min_free_percent):
            return 0
        now = time.monotonic()
        if now - self._fs_checked >= FS_CHECK_INTERVAL:
            self._fs_checked = now
            try:
                st = await asyncio.get_running_loop().run_in_executor(
                    self._executor, os.statvfs, self.root
                )
            except OSError as exc:
                log.warning("statvfs %s: %s", self.root, exc)
                return 0
            self._fs = (st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
            self._freed_since_fs = 0
        if self._fs is None:
            return 0
        free, total = self._fs
        return watermark_deficit(
            free + self._freed_since_fs, total, self.min_free, self.min_free_percent
        )

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            meta = self.root / "objects" / key[:2] / key[2:4] / f"{key}.meta"
            try:
                entry = Entry.from_json(meta.read_bytes())
                meta.unlink()
                (meta.parent / entry.body_file).unlink()
            except (OSError, ValueError):
                continue

    async def save_state(self) -> None:
        """Persist the popularity state (temp file + rename), off the event loop."""
        raw = self.policy.dump_state()

        def _write() -> None:
            tmp = self.state_path.with_name(f"policy.state.{os.getpid()}.tmp")
            tmp.write_bytes(raw)
            os.rename(tmp, self.state_path)

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, _write)
        except OSError as exc:
            log.warning("cannot save the policy state: %s", exc)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
