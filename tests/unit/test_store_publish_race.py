"""Two publishes of one key finishing together (two fills that bypassed the queue): the later
replaces the earlier; the budget counts the stored body once and no orphan body is left."""

from __future__ import annotations

import asyncio
import os
import time

from edgeproxy.cache.entry import Entry
from edgeproxy.cache.store import DiskStore


def _entry(key: str) -> Entry:
    now = time.time()
    return Entry(
        key_hex=key,
        path="/x",
        status=200,
        reason="OK",
        headers=[("Content-Type", "text/plain")],
        request_time=now,
        response_time=now,
        initial_age=0,
        lifetime=60,
        size=0,
        checksum="",
        body_file="",
    )


async def test_concurrent_publishes_of_one_key(tmp_path) -> None:
    store = DiskStore(tmp_path, max_size=10_000_000, ram_size=1_000_000, ram_object_max=100_000)
    await store.start()
    await store.wait_loaded()
    key = "ab" * 16
    try:

        async def publish(body: bytes) -> bool:
            writer = store.new_writer(key)
            await writer.write(body)
            return await store.publish(writer, _entry(key))

        assert await asyncio.gather(publish(b"a" * 1000), publish(b"b" * 2000)) == [True, True]
        for _ in range(100):  # the replaced body is unlinked in the background
            bodies = [n for _, _, fs in os.walk(tmp_path / "objects") for n in fs]
            if sum(n.endswith(".body") for n in bodies) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(store.index) == 1
        assert store.index[key].size in (1000, 2000)
        assert store.used_bytes == store.index[key].size  # the one stored, counted once
        assert sum(n.endswith(".body") for n in bodies) == 1
    finally:
        await store.close()
