"""Hit-for-miss (Varnish's term) across the worker processes of one node: a key one worker
found uncacheable skips the queue in the others too, for the same while."""

from __future__ import annotations

import asyncio
import time

from edgeproxy.proxy.coalesce import Bypass, Coalescer, Lead, Outcome


async def test_a_siblings_hit_for_miss_skips_the_queue(tmp_path) -> None:
    first = Coalescer(tmp_path, hit_for_miss_ttl=10.0)
    second = Coalescer(tmp_path, hit_for_miss_ttl=10.0)  # another worker of the node
    first.prepare(clean=True)
    key = "ab" * 16
    first.remember_uncacheable(key, time.time())
    for _ in range(100):  # the marker is written off the loop
        if (tmp_path / "inflight" / f"{key}.hfm").exists():
            break
        await asyncio.sleep(0.01)
    got = await second.acquire(key, now=time.time())
    assert isinstance(got, Bypass) and got.reason == "hit-for-miss"
    # remembered there too: no file-system trip for the next request
    assert key in second.uncacheable
    first.forget_uncacheable(key)
    second.forget_uncacheable(key)
    got = await second.acquire(key, now=time.time())
    assert isinstance(got, Lead)
    await got.fill.finish(Outcome.DONE)


async def test_an_expired_marker_is_ignored(tmp_path) -> None:
    coalescer = Coalescer(tmp_path)
    coalescer.prepare(clean=True)
    key = "cd" * 16
    (tmp_path / "inflight" / f"{key}.hfm").write_text("1.0")  # long past
    got = await coalescer.acquire(key, now=2.0)
    assert isinstance(got, Lead)
