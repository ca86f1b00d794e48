"""Operator commands over tiers: invalidate (shield first), warm, /popular (edgeproxy.ops).

Nodes run in-process (RunningNode) on fixed loopback ports (``POST /warm`` fetches through the
node's own listen address), the shield talks to SeaweedFS through a CountingRelay. The
commands are synchronous (urllib), so they run in a thread; one runs as a real subprocess.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgeproxy import ops
from edgeproxy.app import RunningNode
from edgeproxy.seaweed import free_ports
from tests.conftest import BUCKET, S3_ENV, s3_upstream
from tests.integration.test_tiers import FAST_HEALTH, Tiers, members

pytestmark = pytest.mark.integration

TOKEN = "ops-test-token-0123456789abcdef"
ENV = {"EDGEPROXY_ADMIN_TOKEN": TOKEN}
HOT = "/api/tracks/0.json"
WARM = "/api/tracks/1.json"
COOL = "/api/tracks/2.json"
SMALL = "/small/one-kib.bin"


@pytest.fixture
async def topo(tmp_path: Path, relay: Any) -> AsyncIterator[dict[str, RunningNode]]:
    """shield-1 <- regional-1 <- edge-1, edge-2; every node has the admin token."""
    tiers = Tiers(tmp_path)
    ports = iter(free_ports(4))
    try:
        shield = await tiers.start(
            "shield-1", "shield", s3_upstream(relay.endpoint), {**S3_ENV, **ENV}, next(ports)
        )
        regional = await tiers.start(
            "regional-1", "regional", {"parents": [Tiers.parent(shield)]}, dict(ENV), next(ports)
        )
        upstream = {"parents": [Tiers.parent(regional)], "health": dict(FAST_HEALTH)}
        nodes = {"shield-1": shield, "regional-1": regional}
        for name in ("edge-1", "edge-2"):
            nodes[name] = await tiers.start(name, "edge", upstream, dict(ENV), next(ports))
        yield nodes
    finally:
        await tiers.stop_all()


def targets_of(nodes: dict[str, RunningNode]) -> list[ops.Target]:
    # edges listed first on purpose: the command must order the tiers itself
    return [
        ops.Target(name, n.config.node.role, f"http://127.0.0.1:{n.admin_port}")
        for name, n in reversed(nodes.items())
    ]


async def get(session: aiohttp.ClientSession, node: RunningNode, path: str) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{node.port}{path}") as r:
        await r.read()
        return r.status, r.headers.get("Cache-Status", "")


def own(cache_status: str) -> str:
    """The last Cache-Status member (the answering node's)."""
    return [m.strip() for m in cache_status.split(",") if m.strip()][-1]


async def settled(relay: Any) -> None:
    await asyncio.sleep(0.3)  # a node publishes after the last byte went to its client


async def test_invalidate_goes_shield_first_and_every_tier_revalidates_once(
    topo: dict[str, RunningNode], relay: Any
) -> None:
    edge1, edge2 = topo["edge-1"], topo["edge-2"]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for node in (edge1, edge2):
            assert (await get(session, node, HOT))[0] == 200
        await settled(relay)
        status, cs = await get(session, edge1, HOT)
        assert "hit" in own(cs).split("; ")
        assert relay.count("GET", f"/{BUCKET}{HOT}") == 1

        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            ops.invalidate, targets_of(topo), [HOT], TOKEN, wait=10.0, out=out, err=err
        )
        assert code == 0, err.getvalue()
        lines = out.getvalue().splitlines()
        assert [line.split()[1] for line in lines][:2] == ["shield-1", "regional-1"]
        assert {line.split()[1] for line in lines[2:]} == {"edge-1", "edge-2"}
        assert all(line.endswith("s") and "Completed" in line for line in lines), lines

        # the next request is a revalidation at every tier; the origin sees it once
        status, cs = await get(session, edge1, HOT)
        assert status == 200
        chain = [m.strip() for m in cs.split(",")]
        assert members(cs)[-1] == "edge-1", cs
        for member in chain:
            assert "hit" not in member.split("; "), cs
        assert members(cs)[0] == "shield-1", cs
        assert relay.count("GET", f"/{BUCKET}{HOT}") == 2
        # edge-2 revalidates too, but from the regional, now fresh: no origin request
        status, cs = await get(session, edge2, HOT)
        assert status == 200 and "hit" not in own(cs).split("; "), cs
        assert relay.count("GET", f"/{BUCKET}{HOT}") == 2
        await settled(relay)
        status, cs = await get(session, edge2, HOT)
        assert "hit" in own(cs).split("; "), cs


async def test_invalidate_reports_a_refusing_or_unreachable_node_and_stops(
    topo: dict[str, RunningNode],
) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        ops.invalidate, targets_of(topo), [HOT], "wrong-token", out=out, err=err
    )
    assert code == 1
    assert "shield-1" in err.getvalue() and "401" in err.getvalue()
    assert "EDGEPROXY_ADMIN_TOKEN" in err.getvalue()
    assert "not invalidated" in err.getvalue() and "edge-1" in err.getvalue()
    assert out.getvalue() == ""
    (dead,) = free_ports(1)
    gone = [*targets_of(topo), ops.Target("shield-9", "shield", f"http://127.0.0.1:{dead}")]
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(ops.invalidate, gone, [HOT], TOKEN, out=out, err=err)
    assert code == 1 and "shield-9" in err.getvalue() and "unreachable" in err.getvalue()
    assert "shield-1" in out.getvalue() and "edge-1" not in out.getvalue()


async def test_popular_lists_paths_hottest_first_and_warm_makes_edges_hit(
    topo: dict[str, RunningNode], relay: Any, tmp_path: Path
) -> None:
    edge1, edge2, shield = topo["edge-1"], topo["edge-2"], topo["shield-1"]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for path, n in ((HOT, 4), (SMALL, 2), (COOL, 1)):
            for _ in range(n):
                assert (await get(session, edge1, path))[0] == 200
        await settled(relay)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        admin = f"http://127.0.0.1:{edge1.admin_port}"
        async with session.get(f"{admin}/popular?top=10", headers=headers) as r:
            assert r.status == 200
            data = await r.json()
        assert [p["path"] for p in data["paths"]] == [HOT, SMALL, COOL]
        assert data["paths"][0]["count"] == pytest.approx(4.0, rel=0.01)
        assert data["paths"][0]["trend"] == "rising"
        async with session.get(f"{admin}/popular?top=10") as r:
            assert r.status == 401
        async with session.get(f"{admin}/popular?top=zero", headers=headers) as r:
            assert r.status == 400

        # warm WARM everywhere from a given list; the edges then hit
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            ops.warm, targets_of(topo), [WARM, "/api/none.json"], TOKEN, out=out, err=err
        )
        assert code == 0, err.getvalue()
        assert "edge-1" in out.getvalue() and "edge-2" in out.getvalue()
        assert "1 4xx" in out.getvalue(), out.getvalue()
        await settled(relay)
        for node in (edge1, edge2):
            status, cs = await get(session, node, WARM)
            assert status == 200 and "hit" in own(cs).split("; "), cs
        assert relay.count("GET", f"/{BUCKET}{WARM}") == 1

        # `edgeproxy warm --nodes FILE --from shield`: the shield's hottest paths, as a CLI
        nodes = {"nodes": [t.__dict__ for t in targets_of(topo)]}
        listing = tmp_path / "nodes.json"
        listing.write_text(json.dumps(nodes))
        shield_top = await asyncio.to_thread(
            ops.popular_paths, targets_of(topo), "shield", 10, TOKEN
        )
        assert set(shield_top) >= {WARM, HOT, SMALL, COOL}, shield_top
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edgeproxy.cli",
            "warm",
            "--nodes",
            str(listing),
            "--from",
            "shield",
            "--top",
            "10",
            env={"EDGEPROXY_ADMIN_TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "NO_PROXY": "*"},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()
        assert "from the popularity of shield" in stderr.decode()
        assert "warming:" in stderr.decode()
        assert "edge-2" in stdout.decode() and "0 failed" in stdout.decode()
        for path in (HOT, SMALL, COOL):
            status, cs = await get(session, edge2, path)
            assert "hit" in own(cs).split("; "), (path, cs)
        assert len(shield.node.popularity) >= 4  # the shield counted too
