"""Shared change counters of a multi-process node (edgeproxy/cache/epoch.py): an added ban
makes a worker re-read the ban list and keep its in-memory view (bans apply on lookup); a
retired ban, or a removal elsewhere, makes it forget the view."""

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


async def test_added_bans_keep_the_view_retired_ones_drop_it(make_node, origin, client):
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
        # the ban retires after the master's walk: the master bumps the view epoch, so a
        # worker that never looked the entry up during the ban cannot serve its old copy
        write_ban_file(root, dump_bans(BanList()))
        n.epoch.bump()
        n.check_epoch()
        assert not n.bans.items
        assert not index  # forgotten: re-read from the disk (where the walk acted) on demand
    finally:
        n.epoch.close()
        n.epoch = None


async def test_the_master_bumps_the_view_epoch_when_bans_retire(tmp_path) -> None:
    from edgeproxy.admin import Invalidations

    async def walk(bans: BanList) -> None:
        return None

    epoch = SharedEpoch(tmp_path)
    inv = Invalidations(tmp_path, walk, epoch=epoch)
    try:
        await inv._persist()  # a ban added
        assert epoch.values() == (0, 1)
        await inv._persist(bans_changed=True, retired=True)  # bans retired
        assert epoch.values() == (1, 1)
    finally:
        epoch.close()
