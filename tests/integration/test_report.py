"""`edgeproxy report` over real nodes: shield-1 (SeaweedFS behind a counting relay) <- edge-1
(eu-west), edge-2 (us-east). A known sequence of misses and hits; the report's figures must be
the ones that sequence implies, its text and CLI must say them, and its page must render in
headless Chromium with its charts.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgeproxy import ops
from edgeproxy.app import RunningNode
from edgeproxy.config import parse_config
from edgeproxy.report import GB, build_report
from tests.conftest import BUCKET, CATALOG, S3_ENV, node_config_dict, s3_upstream
from tests.integration.test_tiers import FAST_HEALTH

pytestmark = pytest.mark.integration

TOKEN = "report-test-token-0123456789abcdef"
ENV = {"EDGEPROXY_ADMIN_TOKEN": TOKEN}
A = "/api/tracks/0.json"  # policy "api"
B = "/small/one-kib.bin"  # policy "default"
PRICE = 0.09


def size(path: str) -> int:
    return len(CATALOG[path.lstrip("/")][1])


@pytest.fixture
async def topo(tmp_path: Path, relay: Any) -> AsyncIterator[dict[str, RunningNode]]:
    nodes: dict[str, RunningNode] = {}

    async def start(
        name: str, role: str, region: str, upstream: dict[str, Any], env: dict[str, str]
    ) -> RunningNode:
        data = node_config_dict(tmp_path / "stores" / name, upstream, name=name, role=role)
        data["node"]["region"] = region
        node = RunningNode(parse_config(data, str(tmp_path / f"{name}.toml")), environ=env)
        await node.start()
        nodes[name] = node
        return node

    try:
        shield = await start(
            "shield-1", "shield", "us-east", s3_upstream(relay.endpoint), {**S3_ENV, **ENV}
        )
        parent = {
            "url": f"http://127.0.0.1:{shield.port}",
            "name": "shield-1",
            "health_url": f"http://127.0.0.1:{shield.admin_port}/healthz",
        }
        upstream = {"parents": [parent], "health": dict(FAST_HEALTH)}
        await start("edge-1", "edge", "eu-west", upstream, dict(ENV))
        await start("edge-2", "edge", "us-east", upstream, dict(ENV))
        yield nodes
    finally:
        for node in reversed(list(nodes.values())):
            await node.stop(drain_timeout=1.0)


def targets_of(nodes: dict[str, RunningNode]) -> list[ops.Target]:
    return [
        ops.Target(name, n.config.node.role, f"http://127.0.0.1:{n.admin_port}")
        for name, n in nodes.items()
    ]


async def stored(node: RunningNode, path: str) -> None:
    deadline = time.monotonic() + 10
    while not any(e.path == path for e in node.store.index.values()):
        assert time.monotonic() < deadline, f"{path} never stored on {node.config.node.name}"
        await asyncio.sleep(0.01)


async def fetch(session: aiohttp.ClientSession, node: RunningNode, path: str, own: str) -> None:
    """GET ``path`` from ``node``; its own Cache-Status member must say ``own``."""
    async with session.get(f"http://127.0.0.1:{node.port}{path}") as r:
        assert r.status == 200
        body = await r.read()
        member = r.headers["Cache-Status"].split(",")[-1]
    assert body == CATALOG[path.lstrip("/")][1]
    params = [p.strip() for p in member.split(";")][1:]
    assert ("hit" in params) == (own == "hit"), member


async def play(topo: dict[str, RunningNode]) -> None:
    """edge-1: A and B, a miss then 3 hits each; edge-2: A, a miss (a hit at the shield) and
    a hit. Each fill is published before the next request (no collapsed requests)."""
    edge1, edge2, shield = topo["edge-1"], topo["edge-2"], topo["shield-1"]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for path in (A, B):
            await fetch(session, edge1, path, "miss")
            await stored(edge1, path)
            await stored(shield, path)
            for _ in range(3):
                await fetch(session, edge1, path, "hit")
        await fetch(session, edge2, A, "miss")
        await stored(edge2, A)
        await fetch(session, edge2, A, "hit")
    # a miss's answer is counted when its handler ends (after its fill): until all have
    deadline = time.monotonic() + 10
    while any(node.server.tasks for node in topo.values()):
        assert time.monotonic() < deadline, "handlers still running"
        await asyncio.sleep(0.01)


async def test_the_report_figures_are_the_requests_made(
    topo: dict[str, RunningNode], relay: Any
) -> None:
    await play(topo)
    assert relay.count("GET", f"/{BUCKET}{A}") == 1 and relay.count("GET", f"/{BUCKET}{B}") == 1
    scrapes = await asyncio.to_thread(ops.scrape, targets_of(topo), TOKEN, 10)
    assert all(s.error is None for s in scrapes), scrapes
    report = build_report(scrapes, PRICE, min_requests=5)
    a, b = size(A), size(B)
    edge, shield = report.tiers
    assert (edge.role, shield.role) == ("edge", "shield")
    assert sorted(edge.nodes) == ["edge-1", "edge-2"]
    assert edge.cacheable == 10 and edge.hits == 7
    assert edge.hit_ratio == pytest.approx(0.7) and edge.rating == "poor"
    assert edge.served_bytes == 6 * a + 4 * b
    assert edge.byte_hit_ratio == pytest.approx((4 * a + 3 * b) / (6 * a + 4 * b))
    assert edge.fetched_bytes == 2 * a + b
    assert edge.upstream_requests == 3
    assert shield.cacheable == 3 and shield.hits == 1
    assert shield.fetched_bytes == a + b
    # the topology: clients at the edges, the origin behind the shield
    assert report.client_tier == "edge"
    assert report.origin_requests == 2 and report.origin_bytes == a + b
    assert report.origin_fetchers == ["shield-1"]
    assert report.origin_request_offload == pytest.approx(0.8)
    assert report.origin_offload == pytest.approx(1 - (a + b) / (6 * a + 4 * b))
    assert report.saved_bytes == 5 * a + 3 * b
    assert report.saved_cost == pytest.approx((5 * a + 3 * b) / GB * PRICE)
    assert report.origin_latency.count == 2
    # TTFB per tier and region: every answer counted once, fast hits included
    regions = {(r.role, r.region): r.ttfb.count for r in report.regions}
    assert regions == {("edge", "eu-west"): 8, ("edge", "us-east"): 2, ("shield", "us-east"): 3}
    assert edge.ttfb.p50 is not None and edge.ttfb.p99 is not None
    assert edge.ttfb.p50 <= edge.ttfb.p99
    # popularity and the misses behind the advice
    assert [(p.path, round(p.count)) for p in edge.top_paths] == [(A, 6), (B, 4)]
    assert {p.path: round(p.count) for p in edge.missed_paths} == {A: 2, B: 1}
    assert edge.policy_misses == {"api": {"miss": 2.0}, "default": {"miss": 1.0}}
    advice = next(r for r in report.recommendations if r.title.startswith("edge hit ratio"))
    assert advice.severity == "critical"
    assert "TTLs" in advice.advice and "key whitelists" in advice.advice
    assert advice.evidence[0].startswith("policy api: 2 miss")
    assert any(A in e for e in advice.evidence)


async def test_the_report_command_prints_and_writes_a_page_that_renders(
    topo: dict[str, RunningNode], tmp_path: Path
) -> None:
    await play(topo)
    out, err = io.StringIO(), io.StringIO()
    page = tmp_path / "report.html"
    code = await asyncio.to_thread(
        ops.report,
        targets_of(topo),
        TOKEN,
        price_per_gb=PRICE,
        html=str(page),
        min_requests=5,
        out=out,
        err=err,
    )
    assert code == 0, err.getvalue()
    text = out.getvalue()
    lines = text.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("-----"))) + 1 :]
    table = table[: table.index("")]
    tier_lines = {line.split()[0]: line.split() for line in table}
    assert tier_lines["edge"][1:4] == ["2", "10", "70.0%"], text
    assert tier_lines["shield"][1:4] == ["1", "3", "33.3%"], text
    assert "origin offload:" in text and "80.0% of requests" in text
    assert "[critical] edge hit ratio 70.0%" in text
    assert page.exists() and not Path(f"{page}.tmp").exists()

    # the CLI, as an operator runs it (a node list instead of a running topology's state)
    listing = tmp_path / "nodes.json"
    listing.write_text(json.dumps({"nodes": [t.__dict__ for t in targets_of(topo)]}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgeproxy.cli",
        "report",
        "--nodes",
        str(listing),
        "--price-per-gb",
        "0.09",
        "--min-requests",
        "5",
        env={"EDGEPROXY_ADMIN_TOKEN": TOKEN, "PATH": "/usr/bin:/bin", "NO_PROXY": "*"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    assert "70.0%" in stdout.decode() and "recommendations" in stdout.decode()

    # the page in a real browser: its charts are in the rendered DOM
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    dom = await asyncio.to_thread(
        subprocess.run,
        [*common, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert 'id="hit-ratio-chart"' in rendered and 'id="ttfb-chart"' in rendered
    assert rendered.count('class="bar"') == 4  # requests and bytes, for edge and shield
    assert 'data-tier="edge" data-kind="requests"' in rendered
    assert rendered.count('class="bucket"') == 2 * 14  # two tiers, 13 buckets and +Inf
    assert "edge hit ratio 70.0%" in rendered
    shot = tmp_path / "report.png"
    run = await asyncio.to_thread(
        subprocess.run,
        [*common, "--window-size=1200,1400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_an_unreachable_node_is_named_and_the_rest_reported(
    topo: dict[str, RunningNode],
) -> None:
    from edgeproxy.seaweed import free_ports

    (dead,) = free_ports(1)
    targets = [*targets_of(topo), ops.Target("edge-9", "edge", f"http://127.0.0.1:{dead}")]
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(ops.report, targets, TOKEN, out=out, err=err)
    assert code == 1
    assert "edge-9" in err.getvalue() and "unreachable" in err.getvalue()
    assert "[warning] edge-9 was not scraped" in out.getvalue()
    assert "shield" in out.getvalue()
