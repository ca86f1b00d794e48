"""Shared change counters of a multi-process node (edgeproxy/cache/epoch.py): a change of the
ban list makes a worker re-read it and forget only what a retired ban covered, not its whole
view; a removal elsewhere still makes it forget everything."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from aiohttp import web

from edgeproxy.cache.bans import Ban, BanList, dump_bans, write_ban_file
from edgeproxy.cache.epoch import SharedEpoch

pytestmark = pytest.mark.integration


def test_slots_are_independent_and_old_files_grow(tmp_path) -> None:
    (tmp_path / "epoch").write_bytes((7).to_bytes(8, "little"))  # an 8-byte file of old
    epoch = SharedEpoch(tmp_path)
    try:
        assert epoch.values() == (7, 0)
        assert epoch.bump_bans() == 1 and epoch.values() == (7, 1)
        assert epoch.bump() == 8 and epoch.values() == (8, 1)
        other = SharedEpoch(tmp_path)  # another process maps the same counters
        assert other.values() == (8, 1)
        other.bump_bans()
        assert epoch.values() == (8, 2)
        other.close()
    finally:
        epoch.close()
    assert os.path.getsize(tmp_path / "epoch") == 16


async def test_ban_changes_keep_the_view_and_retire_precisely(make_node, origin, client):
    async def body(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=request.path.encode() * 10, headers={"Cache-Control": "max-age=600"}
        )

    origin.routes["/a"] = origin.routes["/b"] = body
    node = await make_node({"parents": [origin.endpoint]})
    for path in ("/a", "/b"):
        async with client.get(f"http://127.0.0.1:{node.port}{path}") as r:
            assert r.status == 200
    for _ in range(200):
        if len(node.node.store.index) == 2:
            break
        await asyncio.sleep(0.01)
    index = node.node.store.index
    keys = {entry.path: key for key, entry in index.items()}
    root = node.config.store.path
    n = node.node
    n.epoch = SharedEpoch(root)  # as a worker of a multi-process node
    n.seen_epoch, n.seen_bans = n.epoch.values()
    try:
        ban = Ban(pattern="/a", at=time.time() + 1, hard=False)
        write_ban_file(root, dump_bans(BanList([ban])))
        n.epoch.bump_bans()  # the master added a ban
        n.check_epoch()
        assert [b.pattern for b in n.bans.items] == ["/a"]
        assert set(index) == set(keys.values())  # nothing forgotten: bans apply on lookup
        write_ban_file(root, dump_bans(BanList()))
        n.epoch.bump_bans()  # the ban retired after the master's walk
        n.check_epoch()
        assert not n.bans.items
        assert set(index) == {keys["/b"]}  # only what the retired ban covered
        n.epoch.bump()  # another process removed entries: the whole view goes
        n.check_epoch()
        assert not index
    finally:
        n.epoch.close()
        n.epoch = None
