"""The multi-process cache manager keeps both budgets: max_size and the min_free watermark."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest

from edgeproxy.cache import manager as manager_module
from edgeproxy.cache.manager import StoreManager, watermark_deficit

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("free", "total", "min_free", "percent", "expected"),
    [
        (10 * MiB, 100 * MiB, 0, 0.0, 0),  # no watermark
        (10 * MiB, 100 * MiB, 4 * MiB, 0.0, 0),  # met
        (1 * MiB, 100 * MiB, 4 * MiB, 0.0, 3 * MiB),
        (1 * MiB, 100 * MiB, 0, 5.0, 4 * MiB),  # 5 % of 100 MiB
        (1 * MiB, 100 * MiB, 8 * MiB, 5.0, 7 * MiB),  # the larger of the two
    ],
)
def test_watermark_deficit(free, total, min_free, percent, expected) -> None:
    assert watermark_deficit(free, total, min_free, percent) == expected


async def test_manager_evicts_for_the_watermark_once(tmp_path, monkeypatch) -> None:
    """Under max_size but short of free space: the manager evicts what the watermark asks,
    counts it, and does not evict again for the same shortage before the next statvfs."""
    calls = []

    def fake_statvfs(path):
        calls.append(path)
        return SimpleNamespace(f_bavail=1 * MiB // 4096, f_frsize=4096, f_blocks=100 * MiB // 4096)

    monkeypatch.setattr(manager_module.os, "statvfs", fake_statvfs)
    manager = StoreManager(tmp_path, max_size=1000 * MiB, min_free=4 * MiB)
    try:
        now = time.time()
        for i in range(10):
            manager.handle_line(f"p {i:032x} {MiB}", now)
        await manager.enforce()
        assert manager.watermark_evictions == manager.evictions == 3  # 3 MiB short
        assert manager.used_bytes == 7 * MiB
        await manager.enforce()  # same statvfs figure, but 3 MiB were freed since
        assert manager.evictions == 3
        assert len(calls) == 1
    finally:
        manager.close()


async def test_manager_without_watermark_never_calls_statvfs(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(manager_module.os, "statvfs", lambda p: pytest.fail("statvfs called"))
    manager = StoreManager(tmp_path, max_size=2 * MiB)
    try:
        now = time.time()
        for i in range(3):
            manager.handle_line(f"p {i:032x} {MiB}", now)
        await manager.enforce()
        assert manager.used_bytes <= 2 * MiB and manager.evictions == 1
        assert manager.watermark_evictions == 0
    finally:
        manager.close()
    assert os.path.isdir(tmp_path)
