"""Metrics that follow the requests (TTFB on fast hits too, upstream per parent, bytes served
and fetched), and a multi-process node's master: /metrics sums its workers, /popular merges
them, /warm fills the shared store; popularity survives a restart.

Origins are in-process scripted aiohttp servers: they record every request, so what went
upstream is proven by what the origin saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import node_config_dict
from tests.support import multinode

pytestmark = pytest.mark.integration

TOKEN = "metrics-test-token-0123456789"
TOKEN_ENV = "EDGEPROXY_ADMIN_TOKEN"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """(sample name, labels other than node/role/region) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(
                sorted((k, v) for k, v in s.labels.items() if k not in ("node", "role", "region"))
            )
            out[(s.name, labels)] = s.value
    return out


def total(values: Samples, name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in values.items()
        if n == name and all(dict(labels).get(k) == want for k, want in match.items())
    )


def body_of(path: str) -> bytes:
    return (path.encode() + b" ") * 40


def static(cache_control: str = "max-age=600") -> Callable[[web.Request], Awaitable[Any]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body_of(request.path),
            headers={"Cache-Control": cache_control, "Content-Type": "text/plain"},
        )

    return handler


@pytest.fixture
async def node_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    from edgeproxy.app import RunningNode
    from edgeproxy.config import parse_config

    started: list[RunningNode] = []

    async def factory(upstream: dict[str, Any], *, store: Path | None = None) -> RunningNode:
        data = node_config_dict(store or tmp_path / f"store-{len(started)}", upstream)
        data["node"]["region"] = "eu-west"
        node = RunningNode(parse_config(data, str(tmp_path / "t.toml")), environ={TOKEN_ENV: TOKEN})
        await node.start()
        started.append(node)
        return node

    async def stop(node: RunningNode) -> None:
        started.remove(node)
        await node.stop(drain_timeout=1.0)

    factory.stop = stop  # type: ignore[attr-defined]
    yield factory
    for node in started:
        await node.stop(drain_timeout=1.0)


def is_hit(cache_status: str) -> bool:
    """Whether this node's own (last) Cache-Status member says ``hit``."""
    params = [p.strip() for p in cache_status.split(",")[-1].split(";")]
    return "hit" in params[1:]


async def get(client: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with client.get(url) as r:
        return r.status, r.headers.get("Cache-Status", ""), await r.read()


async def stored(node: Any, path: str) -> None:
    """Until ``path`` is published in ``node``'s store (a fill publishes after its client got
    the last byte)."""
    deadline = time.monotonic() + 10
    while not any(e.path == path for e in node.store.index.values()):
        assert time.monotonic() < deadline, f"{path} never stored"
        await asyncio.sleep(0.01)


async def idle(node: Any) -> None:
    """Until no request handler runs (a miss's handler ends after its fill, when its client
    may already have the whole body; its answer is counted then)."""
    deadline = time.monotonic() + 10
    while node.server.tasks:
        assert time.monotonic() < deadline, "handlers still running"
        await asyncio.sleep(0.01)


async def scrape(client: aiohttp.ClientSession, admin_base: str) -> Samples:
    async with client.get(admin_base + "/metrics") as r:
        assert r.status == 200
        return samples(await r.text())


# ---- one process -----------------------------------------------------------------------------


async def test_counters_follow_requests_per_parent_with_ttfb_on_fast_hits(
    node_factory: Any, origin: Any, client: aiohttp.ClientSession
) -> None:
    from tests.support.origin import ScriptedOrigin

    other = ScriptedOrigin()
    await other.start()
    origins = {"p-a": origin, "p-b": other}
    paths = [f"/api/doc-{i}.json" for i in range(8)]
    for path in paths:
        origin.routes[path] = other.routes[path] = static()
    # two parents: rendezvous hashing splits the paths between them
    try:
        node = await node_factory(
            {"parents": [{"url": o.endpoint, "name": name} for name, o in origins.items()]}
        )
        await _per_parent(node, origins, paths, client)
    finally:
        await other.stop()


async def _per_parent(
    node: Any, origins: dict[str, Any], paths: list[str], client: aiohttp.ClientSession
) -> None:
    admin_base = f"http://127.0.0.1:{node.admin_port}"
    base = f"http://127.0.0.1:{node.port}"
    before = await scrape(client, admin_base)
    fast_before = node.node.fast_hits
    for path in paths:
        status, cs, body = await get(client, base + path)
        assert status == 200 and body == body_of(path)
        await stored(node.node, path)
    hits = 0
    for path in paths[:3]:
        for _ in range(2):
            status, cs, _ = await get(client, base + path)
            assert is_hit(cs), cs
            hits += 1
    await idle(node)
    after = await scrape(client, admin_base)

    def delta(name: str, **match: str) -> float:
        return total(after, name, **match) - total(before, name, **match)

    fast = node.node.fast_hits - fast_before
    assert fast == hits  # all answered on the hit path...
    # ...and every one of them is in the TTFB histogram, like the misses
    assert delta("edgeproxy_ttfb_seconds_count", result="hit") == hits
    assert delta("edgeproxy_ttfb_seconds_count", result="miss") == len(paths)
    assert delta("edgeproxy_ttfb_seconds_bucket", result="hit", le="+Inf") == hits
    assert delta("edgeproxy_requests_total", result="hit") == hits
    assert delta("edgeproxy_responses_total", result="hit", code="2xx") == hits
    assert delta("edgeproxy_served_bytes_total", result="hit") == sum(
        2 * len(body_of(p)) for p in paths[:3]
    )
    assert delta("edgeproxy_served_bytes_total", result="miss") == sum(
        len(body_of(p)) for p in paths
    )
    # upstream, per parent: the rendezvous choice of each path, its latency and its bytes
    chosen: dict[str, list[str]] = {"p-a": [], "p-b": []}
    for path in paths:
        chosen[node.upstream.ranked(path.encode())[0].name].append(path)
    assert chosen["p-a"] and chosen["p-b"], chosen  # eight paths: both parents get some
    for parent, mine in chosen.items():
        assert sum(origins[parent].count(p) for p in paths) == len(mine)
        assert delta("edgeproxy_upstream_requests_total", parent=parent) == len(mine)
        assert delta("edgeproxy_upstream_response_seconds_count", parent=parent) == len(mine)
        assert delta("edgeproxy_fetched_bytes_total", parent=parent) == sum(
            len(body_of(p)) for p in mine
        )
    assert delta("edgeproxy_upstream_requests_total") == len(paths)
    assert delta("edgeproxy_policy_misses_total", policy="api", result="miss") == len(paths)
    # the paths that missed, for the report's evidence
    async with client.get(admin_base + "/popular?of=misses&top=50", headers=AUTH) as r:
        assert r.status == 200
        missed = await r.json()
    assert missed["of"] == "misses"
    assert {p["path"] for p in missed["paths"]} == set(paths)
    async with client.get(admin_base + "/popular?of=nothing", headers=AUTH) as r:
        assert r.status == 400


async def test_popularity_survives_a_restart(
    node_factory: Any, origin: Any, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    origin.routes["/hot.txt"] = static()
    origin.routes["/cold.txt"] = static()
    store = tmp_path / "kept-store"
    node = await node_factory({"parents": [origin.endpoint]}, store=store)
    for path, n in (("/hot.txt", 5), ("/cold.txt", 1)):
        for _ in range(n):
            assert (await get(client, f"http://127.0.0.1:{node.port}{path}"))[0] == 200
    await node_factory.stop(node)  # a clean stop saves the counts
    assert (store / "popularity.json").exists()
    again = await node_factory({"parents": [origin.endpoint]}, store=store)
    top = again.node.popularity.top(5, time.time())
    assert [p.path for p in top] == ["/hot.txt", "/cold.txt"]
    assert top[0].count == pytest.approx(5.0, rel=0.01)


# ---- a multi-process node --------------------------------------------------------------------


def test_a_restarted_workers_figures_stay_in_the_masters_sum() -> None:
    """The master keeps a worker's last figures when it exits: a restart never makes a
    counter go back (Prometheus would read a reset)."""
    import json

    from edgeproxy.metrics import Figures, WorkerFigures
    from edgeproxy.popularity import Popularity

    def line(hits: int) -> str:
        fig = Figures(results={"hit": hits})
        return "S " + json.dumps(fig.as_json(), separators=(",", ":"))

    pop, missed = Popularity(), Popularity()
    agg = WorkerFigures(pop, missed)
    assert agg.handle_line(1, line(5), 0.0) and agg.handle_line(2, line(3), 0.0)
    assert agg.handle_line(1, line(7), 0.0)  # cumulative: the latest replaces
    assert agg.total().results == {"hit": 10}
    agg.retire(1)  # worker 1 exits; its replacement starts from zero
    assert agg.handle_line(3, line(1), 0.0)
    assert agg.total().results == {"hit": 11}
    assert agg.handle_line(2, "H 4 /a b.txt", 100.0) and agg.handle_line(2, "X 1 /m", 100.0)
    assert pop.counts_of("/a b.txt", 100.0) == pytest.approx((4.0, 4.0))
    assert missed.counts_of("/m", 100.0) == pytest.approx((1.0, 1.0))
    assert not agg.handle_line(2, "p 0123abcd 100", 0.0)  # the cache manager's line
    assert agg.handle_line(2, "S {not json", 0.0) and agg.bad_lines == 1


class MultiNode(multinode.MultiNode):
    """The shared 2-worker node, with this module's admin token."""

    def __init__(self, tmp_path: Path, origin_port: int) -> None:
        super().__init__(tmp_path, origin_port, token=TOKEN)


async def fresh(url: str) -> tuple[int, str, bytes]:
    """A GET on a new connection (so either worker may take it)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s, s.get(url) as r:
        return r.status, r.headers.get("Cache-Status", ""), await r.read()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.fixture
async def multi(tmp_path: Path, origin: Any) -> AsyncIterator[MultiNode]:
    node = MultiNode(tmp_path, origin.port)
    await node.start()
    try:
        yield node
    finally:
        node.stop()


async def test_a_master_sums_its_workers_and_merges_popularity(
    multi: MultiNode, origin: Any, client: aiohttp.ClientSession
) -> None:
    origin.routes["/obj.txt"] = static()
    n = 16
    for _ in range(n):
        status, _, body = await fresh(multi.base + "/obj.txt")
        assert status == 200 and body == body_of("/obj.txt")
    values: Samples = {}

    async def summed() -> bool:
        nonlocal values
        values = await scrape(client, multi.admin_base)
        # a miss's answer is counted when its handler ends (after its fill): wait for all
        return (
            total(values, "edgeproxy_requests_total") == n
            and total(values, "edgeproxy_ttfb_seconds_count") == n
            and total(values, "edgeproxy_responses_total", code="2xx") == n
            and total(values, "edgeproxy_served_bytes_total") == n * len(body_of("/obj.txt"))
        )

    await until(summed, "the master's sums never reached the requests made")
    assert total(values, "edgeproxy_upstream_requests_total") == origin.count("/obj.txt")
    assert total(values, "edgeproxy_fetched_bytes_total") == origin.count("/obj.txt") * len(
        body_of("/obj.txt")
    )
    assert total(values, "edgeproxy_workers") == 2

    popular: list[dict[str, Any]] = []

    async def merged() -> bool:
        nonlocal popular
        async with client.get(multi.admin_base + "/popular?top=5", headers=AUTH) as r:
            assert r.status == 200, await r.text()
            popular = (await r.json())["paths"]
        return bool(popular) and popular[0]["count"] >= n * 0.99

    await until(merged, "the master's /popular never merged the workers' counts")
    assert popular[0]["path"] == "/obj.txt"
    assert popular[0]["count"] == pytest.approx(n, rel=0.01)


async def test_warm_through_a_multi_process_node_then_hit(
    multi: MultiNode, origin: Any, client: aiohttp.ClientSession
) -> None:
    origin.routes["/warm-me.txt"] = static()
    async with client.post(
        multi.admin_base + "/warm", json={"paths": ["/warm-me.txt"]}, headers=AUTH
    ) as r:
        assert r.status == 200, await r.text()
        (result,) = (await r.json())["results"]
    assert result["status"] == 200 and result["bytes"] == len(body_of("/warm-me.txt"))
    assert origin.count("/warm-me.txt") == 1
    await asyncio.sleep(0.3)  # the fill publishes after its client got the last byte
    for _ in range(6):  # whichever worker takes the connection
        status, cs, body = await fresh(multi.base + "/warm-me.txt")
        assert status == 200 and body == body_of("/warm-me.txt")
        assert is_hit(cs), cs
    assert origin.count("/warm-me.txt") == 1


async def test_a_multi_process_node_keeps_its_popularity_across_a_restart(
    multi: MultiNode, origin: Any, client: aiohttp.ClientSession
) -> None:
    origin.routes["/kept.txt"] = static()
    for _ in range(6):
        assert (await fresh(multi.base + "/kept.txt"))[0] == 200
    await asyncio.sleep(0.3)  # the workers' tallies reach the master every 0.1 s
    await asyncio.to_thread(multi.stop)
    assert (multi.store / "popularity.json").exists(), multi.log.read_text()
    await multi.start()
    async with client.get(multi.admin_base + "/popular?top=5", headers=AUTH) as r:
        assert r.status == 200
        paths = (await r.json())["paths"]
    assert paths and paths[0]["path"] == "/kept.txt"
    assert paths[0]["count"] == pytest.approx(6.0, rel=0.02)
