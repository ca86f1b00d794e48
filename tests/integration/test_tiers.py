"""Tiers: edges -> regionals (rendezvous-hashed, health-checked) -> shield -> S3 (SeaweedFS).

Nodes run in-process (RunningNode) on loopback; the shield talks to SeaweedFS through a
CountingRelay, so every claim about origin traffic is counted. Every test is bounded in time
and stops the nodes it started. The last test starts ``edgeproxy topology up`` itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edgeproxy.app import RunningNode
from edgeproxy.config import parse_config
from edgeproxy.seaweed import SeaweedServer, free_ports
from tests.conftest import BUCKET, S3_ENV, node_config_dict, s3_upstream

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
OBJECTS = 64  # small objects uploaded once for this module: /tiers/obj-000.bin ...
# Quick, but not twitchy: every node of a test shares one event loop, so under load a check
# may wait behind hundreds of requests.
FAST_HEALTH = {
    "interval": "500ms",
    "timeout": "500ms",
    "healthy_threshold": 1,
    "unhealthy_threshold": 2,
    "fail_threshold": 2,
    "retry_time": "30s",
}


def obj_path(i: int) -> str:
    return f"/tiers/obj-{i:03d}.bin"


def obj_body(i: int) -> bytes:
    return random.Random(i).randbytes(2048 + 97 * i)


@pytest.fixture(scope="module")
def tier_objects(seaweed: SeaweedServer) -> list[str]:
    paths = []
    for i in range(OBJECTS):
        seaweed.put_object(BUCKET, obj_path(i)[1:], obj_body(i), "application/octet-stream")
        paths.append(obj_path(i))
    seaweed.put_object(
        BUCKET,
        "tiers/stale.json",
        b'{"stale": true}',
        "application/json",
        headers={"Cache-Control": "max-age=1, stale-if-error=600"},
    )
    return paths


class Tiers:
    """Nodes of one test; :meth:`stop` stops each exactly once."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.nodes: dict[str, RunningNode] = {}
        self.stopped: set[str] = set()

    async def start(
        self,
        name: str,
        role: str,
        upstream: dict[str, Any],
        environ: dict[str, str] | None = None,
        listen: int = 0,
    ) -> RunningNode:
        data = node_config_dict(self.tmp_path / "stores" / name, upstream, name=name, role=role)
        data["node"]["listen"] = f"127.0.0.1:{listen}"
        config = parse_config(data, str(self.tmp_path / f"{name}.toml"))
        node = RunningNode(config, environ=environ if environ is not None else {})
        await node.start()
        self.nodes[name] = node
        return node

    async def stop(self, name: str) -> None:
        if name not in self.stopped:
            self.stopped.add(name)
            await self.nodes[name].stop(drain_timeout=2.0)

    async def stop_all(self) -> None:
        for name in reversed(list(self.nodes)):
            await self.stop(name)

    @staticmethod
    def parent(node: RunningNode) -> dict[str, Any]:
        return {
            "url": f"http://127.0.0.1:{node.port}",
            "name": node.config.node.name,
            "health_url": f"http://127.0.0.1:{node.admin_port}/healthz",
        }

    async def build(
        self,
        origin: str,
        *,
        regionals: int = 2,
        edges: int = 2,
        edge_upstream: dict[str, Any] | None = None,
        edge_environ: dict[str, str] | None = None,
    ) -> tuple[RunningNode, list[RunningNode], list[RunningNode]]:
        """shield-1 (S3 credentials: the only node that has them) <- regional-N <- edge-N."""
        shield = await self.start("shield-1", "shield", s3_upstream(origin), dict(S3_ENV))
        regs = [
            await self.start(f"regional-{i + 1}", "regional", {"parents": [self.parent(shield)]})
            for i in range(regionals)
        ]
        upstream = {"parents": [self.parent(r) for r in regs], "health": dict(FAST_HEALTH)}
        upstream.update(edge_upstream or {})
        eds = [
            await self.start(f"edge-{i + 1}", "edge", upstream, edge_environ) for i in range(edges)
        ]
        return shield, regs, eds

    def paths_on(self, name: str) -> set[str]:
        return {entry.path for entry in self.nodes[name].store.index.values()}


@pytest.fixture
async def tiers(tmp_path: Path) -> AsyncIterator[Tiers]:
    t = Tiers(tmp_path)
    try:
        yield t
    finally:
        await t.stop_all()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as s:
        yield s


async def get(
    session: aiohttp.ClientSession, node: RunningNode, path: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with session.get(f"http://127.0.0.1:{node.port}{path}", headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


def members(cache_status: str) -> list[str]:
    """The cache names in a Cache-Status value, in order (upstream first)."""
    return [m.split(";")[0].strip() for m in cache_status.split(",") if m.strip()]


def holders(tiers: Tiers, regionals: list[RunningNode], path: str) -> list[str]:
    return [r.config.node.name for r in regionals if path in tiers.paths_on(r.config.node.name)]


async def settle(tiers: Tiers, regionals: list[RunningNode], paths: list[str]) -> None:
    """Wait until every path is stored on some regional: a node publishes an object after
    its last byte went to the client, so the store may lag the client by a moment."""
    await _until(lambda: all(holders(tiers, regionals, p) for p in paths))


# ---- the whole path ---------------------------------------------------------------------------


async def test_100_concurrent_cold_requests_per_object_reach_the_origin_once(
    tiers: Tiers, relay: Any, session: aiohttp.ClientSession, tier_objects: list[str]
) -> None:
    """2 edges x 2 regionals x 1 shield: 100 concurrent cold requests for each of 8 objects,
    spread over both edges, make one origin request per object; each object then lives on
    exactly one regional (both edges picked the same one)."""
    _, regs, edges = await tiers.build(relay.endpoint)
    chosen = list(range(8))

    async def one(i: int, n: int) -> tuple[int, bytes, str]:
        status, headers, body = await get(session, edges[n % 2], obj_path(i))
        return status, body, headers.get("Cache-Status", "")

    results = await asyncio.wait_for(
        asyncio.gather(*(one(i, n) for i in chosen for n in range(100))), 60
    )
    for k, (status, body, _) in enumerate(results):
        assert status == 200, results[k]
        assert body == obj_body(chosen[k // 100])
    await settle(tiers, regs, [obj_path(i) for i in chosen])
    for i in chosen:
        assert relay.count("GET", f"/{BUCKET}{obj_path(i)}") == 1, obj_path(i)
        assert len(holders(tiers, regs, obj_path(i))) == 1, obj_path(i)
    assert relay.count() == len(chosen)


async def test_each_object_lives_on_exactly_one_regional_and_capacity_adds_up(
    tiers: Tiers, relay: Any, session: aiohttp.ClientSession, tier_objects: list[str]
) -> None:
    """Every object through both edges, one after the other: each lands on exactly one
    regional (the edges agree on every key) and both regionals hold a share."""
    _, regs, edges = await tiers.build(relay.endpoint)
    for n, path in enumerate(tier_objects):
        for edge in edges:
            status, _, body = await get(session, edge, path)
            assert status == 200 and body == obj_body(n)
    await settle(tiers, regs, tier_objects)
    per_regional = {r.config.node.name: 0 for r in regs}
    for path in tier_objects:
        where = holders(tiers, regs, path)
        assert len(where) == 1, (path, where)
        per_regional[where[0]] += 1
    # both regionals hold a share (64 keys: 32 +- 12 with overwhelming probability)
    assert all(20 <= count <= 44 for count in per_regional.values()), per_regional
    assert sum(per_regional.values()) == len(tier_objects)


async def test_cache_status_lists_every_tier_in_order_and_only_keyed_fields_travel(
    tiers: Tiers, relay: Any, session: aiohttp.ClientSession, tier_objects: list[str]
) -> None:
    _, regs, edges = await tiers.build(relay.endpoint)
    path = obj_path(3)
    status, headers, _ = await get(
        session, edges[0], path, Cookie="session=secret", **{"X-Debug": "1"}
    )
    assert status == 200
    cs = headers["Cache-Status"]
    regional = members(cs)[1]
    assert members(cs) == ["shield-1", regional, "edge-1"], cs
    assert regional in ("regional-1", "regional-2")
    for member in cs.split(","):
        assert "fwd=uri-miss" in member and "stored" in member, cs
    # the second edge: a miss at the edge, a hit at the home regional; the shield is not asked
    await settle(tiers, regs, [path])
    status, headers, _ = await get(session, edges[1], path)
    cs = headers["Cache-Status"]
    assert members(cs) == [regional, "edge-2"], cs
    first, second = cs.split(",")
    assert "hit" in first or "collapsed" in first, cs
    assert "fwd=uri-miss" in second, cs
    # forwarded = keyed: the origin saw neither the cookie nor the custom field; Via is there
    seen = [s for s in relay.seen if s.target.startswith(f"/{BUCKET}{path}")]
    assert len(seen) == 1
    assert "cookie" not in seen[0].headers and "x-debug" not in seen[0].headers
    assert "shield-1" in seen[0].headers.get("Via", "")


# ---- failures ---------------------------------------------------------------------------------


async def test_stopping_a_regional_mid_load_gives_no_client_error_and_moves_only_its_keys(
    tiers: Tiers, relay: Any, session: aiohttp.ClientSession, tier_objects: list[str]
) -> None:
    """3 regionals (with 2 the claim "only its keys move" is trivially true). First every
    object once through edge-1, which shows each object's home regional. Then 192 requests
    (each object 3 times, 24 at a time) through edge-2, whose cache is cold, and regional-2
    is stopped after a third of them. Every request succeeds with the right body; the other
    regionals' objects stay where they were; regional-2's objects move, each to one other
    regional; the shield absorbs the moves (one origin request per object in all)."""
    _, regs, edges = await tiers.build(relay.endpoint, regionals=3)
    victim = "regional-2"

    async def run(work: list[tuple[int, RunningNode]], stop_after: int | None) -> list[str]:
        queue: asyncio.Queue[tuple[int, RunningNode]] = asyncio.Queue()
        for item in work:
            queue.put_nowait(item)
        failures: list[str] = []
        done = 0

        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                i, edge = queue.get_nowait()
                try:
                    status, _, body = await get(session, edge, obj_path(i))
                    if status != 200 or body != obj_body(i):
                        failures.append(f"{obj_path(i)}: {status}")
                except aiohttp.ClientError as exc:
                    failures.append(f"{obj_path(i)}: {exc!r}")
                done += 1
                if done == stop_after:
                    await tiers.stop(victim)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(24))), 90)
        return failures

    assert await run([(i, edges[0]) for i in range(OBJECTS)], None) == []
    await settle(tiers, regs, tier_objects)
    homes = {}
    for path in tier_objects:
        where = holders(tiers, regs, path)
        assert len(where) == 1, (path, where)
        homes[path] = where[0]
    victims = [p for p in tier_objects if homes[p] == victim]
    assert len(victims) >= 5, homes  # 64 keys over 3 regionals: about 21 each

    work = [(i, edges[1]) for i in range(OBJECTS) for _ in range(3)]
    random.Random(9).shuffle(work)
    assert await run(work, len(work) // 3) == []
    assert victim in tiers.stopped
    await settle(tiers, regs, tier_objects)
    moved = 0
    for path in tier_objects:
        where = set(holders(tiers, regs, path))
        if homes[path] != victim:
            assert where == {homes[path]}, (path, where)  # did not move
        else:
            assert victim in where and len(where - {victim}) <= 1, (path, where)
            moved += len(where - {victim})
        # the shield absorbed the moves: one origin request per object, whatever happened
        assert relay.count("GET", f"/{BUCKET}{path}") == 1, path
    assert moved >= 1
    out = [p.name for p in edges[1].upstream.parents if not p.health.available(time.monotonic())]
    assert out == [victim]


async def test_every_parent_down_answers_502_with_a_cache_status_detail(
    tiers: Tiers, relay: Any, session: aiohttp.ClientSession, tier_objects: list[str]
) -> None:
    _, regs, edges = await tiers.build(relay.endpoint, edges=1)
    for r in regs:
        await tiers.stop(r.config.node.name)
    started = time.monotonic()
    for _ in range(3):  # a connection error, then a passive mark, then "all parents out"
        status, headers, body = await get(session, edges[0], obj_path(5))
        assert status in (502, 504), (status, body)
        cs = headers.get("Cache-Status", "")
        assert members(cs) == ["edge-1"] and "detail=" in cs, cs
    assert time.monotonic() - started < 10
    assert b"every parent is out" in body or b"unreachable" in body, body
    assert relay.count() == 0


async def test_every_parent_down_goes_direct_when_configured(
    tiers: Tiers, relay: Any, session: aiohttp.ClientSession, tier_objects: list[str]
) -> None:
    """ATS's go_direct: [upstream.fallback_s3] on the edge (which then needs credentials)."""
    fallback = s3_upstream(relay.endpoint)["s3"]
    _, regs, edges = await tiers.build(
        relay.endpoint,
        edges=1,
        edge_upstream={"fallback_s3": fallback},
        edge_environ=dict(S3_ENV),
    )
    for r in regs:
        await tiers.stop(r.config.node.name)
    for i in (6, 7):
        status, headers, body = await get(session, edges[0], obj_path(i))
        assert status == 200 and body == obj_body(i), (status, body)
        assert members(headers["Cache-Status"]) == ["edge-1"]
        seen = [s for s in relay.seen if s.target == f"/{BUCKET}{obj_path(i)}"]
        assert len(seen) == 1 and seen[0].headers["Via"] == "1.1 edge-1"
    assert edges[0].upstream.direct_requests == 2


async def test_every_parent_down_serves_stale_when_the_object_allows_it(
    tiers: Tiers, relay: Any, session: aiohttp.ClientSession, tier_objects: list[str]
) -> None:
    _, regs, edges = await tiers.build(relay.endpoint, edges=1)
    status, _, body = await get(session, edges[0], "/tiers/stale.json")
    assert status == 200
    await asyncio.sleep(1.2)  # max-age=1: now stale, within stale-if-error=600
    for r in regs:
        await tiers.stop(r.config.node.name)
    status, headers, stale = await get(session, edges[0], "/tiers/stale.json")
    assert status == 200 and stale == body
    assert "stale-if-error" in headers["Cache-Status"]


# ---- retry and health, against scripted parents ----------------------------------------------


def _handler(status: int, body: bytes = b"ok") -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers={"Cache-Control": "max-age=60"})

    return handle


async def test_a_failing_parent_is_retried_once_on_the_next_before_answering(
    tiers: Tiers, session: aiohttp.ClientSession
) -> None:
    """Parent "a" answers 503, "b" 200. A key whose first choice is "a" is retried on "b"
    inside Upstream.open, so the client gets b's 200; after fail_threshold (2) failures "a"
    is out and its keys go to "b" directly."""
    from tests.support.origin import ScriptedOrigin

    a, b = ScriptedOrigin(), ScriptedOrigin()
    await a.start()
    await b.start()
    try:
        upstream = {
            "parents": [{"url": a.endpoint, "name": "a"}, {"url": b.endpoint, "name": "b"}],
            "health": {"fail_threshold": 2, "retry_time": "30s"},
        }
        edge = await tiers.start("edge-1", "edge", upstream)
        paths = [f"/api/r{i}" for i in range(12)]
        for path in paths:
            a.routes[path] = _handler(503, b"busy")
            b.routes[path] = _handler(200, b"from b")
        for path in paths:
            status, _, body = await get(session, edge, path)
            assert (status, body) == (200, b"from b"), path
            assert b.count(path) == 1
        tried_a = [p for p in paths if a.count(p)]
        assert 1 <= len(tried_a) <= 2, tried_a  # then "a" was out
        assert edge.upstream.retries == len(tried_a)
        if len(tried_a) == 2:
            assert not edge.upstream.parents[0].health.available(time.monotonic())
    finally:
        await a.stop()
        await b.stop()


async def test_active_checks_take_a_parent_out_and_put_it_back(
    tiers: Tiers, session: aiohttp.ClientSession
) -> None:
    from tests.support.origin import ScriptedOrigin

    a, b = ScriptedOrigin(), ScriptedOrigin()
    await a.start()
    await b.start()
    healthy = {"a": True}

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200 if healthy["a"] else 503)

    a.routes["/healthz"] = health
    try:
        upstream = {
            "parents": [
                {"url": a.endpoint, "name": "a", "health_url": a.endpoint + "/healthz"},
                {"url": b.endpoint, "name": "b"},
            ],
            "health": {
                "interval": "100ms",
                "timeout": "100ms",
                "healthy_threshold": 2,
                "unhealthy_threshold": 2,
            },
        }
        edge = await tiers.start("edge-1", "edge", upstream)

        async def served_by(phase: str) -> set[bytes]:
            bodies = set()
            for i in range(12):
                path = f"/api/{phase}{i}"
                a.routes[path] = _handler(200, b"from a")
                b.routes[path] = _handler(200, b"from b")
                bodies.add((await get(session, edge, path))[2])
            return bodies

        assert await served_by("up") == {b"from a", b"from b"}
        healthy["a"] = False
        await _until(lambda: not edge.upstream.parents[0].health.available(time.monotonic()))
        assert await served_by("out") == {b"from b"}
        healthy["a"] = True
        await _until(lambda: edge.upstream.parents[0].health.available(time.monotonic()))
        assert await served_by("back") == {b"from a", b"from b"}
        stats = edge.upstream.stats()
        assert stats["parents"][0]["available"] is True  # type: ignore[index]
    finally:
        await a.stop()
        await b.stop()


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# ---- loops --------------------------------------------------------------------------------------


async def test_a_request_that_already_passed_this_node_is_refused(
    tiers: Tiers, relay: Any, session: aiohttp.ClientSession
) -> None:
    _, _, edges = await tiers.build(relay.endpoint, edges=1)
    status, headers, _ = await get(session, edges[0], obj_path(1), Via="1.1 other, 1.1 edge-1")
    assert status == 508
    assert 'detail="loop"' in headers["Cache-Status"]
    assert relay.count() == 0


async def test_a_two_node_loop_is_refused(tiers: Tiers, session: aiohttp.ClientSession) -> None:
    """a -> b -> a: the config cannot see it (each node only knows its own address), so Via
    must: b forwards the Via it received plus its own, and a finds itself in it (508)."""
    port_a, port_b = free_ports(2)
    a = await tiers.start(
        "loop-a", "regional", {"parents": [f"http://127.0.0.1:{port_b}"]}, listen=port_a
    )
    await tiers.start(
        "loop-b", "regional", {"parents": [f"http://127.0.0.1:{port_a}"]}, listen=port_b
    )
    status, headers, _ = await asyncio.wait_for(get(session, a, "/api/loop"), 5)
    assert status == 508, headers
    assert 'detail="loop"' in headers.get("Cache-Status", "")


# ---- topology up: the one-command local topology ----------------------------------------------


SMOKE_TOPOLOGY = """
[topology]
name = "smoke"
workdir = "work"
startup_timeout = "60s"
log_level = "WARNING"

[origin]
bucket = "music"
tracks = 0
images = 1
api_docs = 2

[health]
interval = "500ms"
timeout = "500ms"

[roles.edge]
policies = "{conf}/edge.toml"
max_size = "64MiB"
ram_size = "16MiB"

[roles.regional]
policies = "{conf}/regional.toml"
max_size = "64MiB"
ram_size = "16MiB"

[roles.shield]
policies = "{conf}/shield.toml"
max_size = "64MiB"
ram_size = "16MiB"

[[node]]
name = "shield-1"
role = "shield"
port = 0

[[node]]
name = "regional-1"
role = "regional"
port = 0
parents = ["shield-1"]

[[node]]
name = "regional-2"
role = "regional"
port = 0
parents = ["shield-1"]

[[node]]
name = "edge-1"
role = "edge"
port = 0
parents = ["regional-1", "regional-2"]

[[node]]
name = "edge-2"
role = "edge"
port = 0
parents = [{{name = "regional-1", weight = 1}}, {{name = "regional-2", weight = 1}}]
"""


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """One line of the process's stdout within ``timeout`` seconds (b"" on EOF)."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    while not buffer.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not selector.select(left):
            raise TimeoutError(f"no line from topology up within {timeout:g}s")
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
    return buffer


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeproxy.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_topology_up_json_then_a_get_through_an_edge_then_down(tmp_path: Path) -> None:
    """`edgeproxy topology up FILE --json`: one JSON line once everything is healthy; a GET
    through an edge crosses every tier; `topology down` from another process stops every
    process it started (by PID) and `up` exits 0."""
    from edgeproxy.topology import pid_alive

    spec = tmp_path / "smoke.toml"
    spec.write_text(SMOKE_TOPOLOGY.format(conf=REPO / "conf"))
    stderr = (tmp_path / "up.stderr").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeproxy.cli", "topology", "up", str(spec), "--json"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    info: dict[str, Any] = {}
    try:
        line = _read_line(process, 120)
        assert line, (tmp_path / "up.stderr").read_text()
        info = json.loads(line)
        nodes = {n["name"]: n for n in info["nodes"]}
        assert set(nodes) == {"shield-1", "regional-1", "regional-2", "edge-1", "edge-2"}
        assert {n["role"] for n in nodes.values()} == {"shield", "regional", "edge"}
        origin = info["origin"]
        assert origin["bucket"] == "music" and origin["endpoint"].startswith("http://127.0.0.1:")
        assert origin["access_key"] and origin["secret_key"]
        for node in nodes.values():
            assert node["url"].startswith("http://127.0.0.1:")
            assert node["metrics_url"] == node["admin_url"] + "/metrics"
            assert node["health_url"] == node["admin_url"] + "/healthz"
        # the credentials are in the shield's environment only
        for name, node in nodes.items():
            environ = Path(f"/proc/{node['pid']}/environ").read_bytes().split(b"\0")
            has = any(v.startswith(b"EDGEPROXY_S3_SECRET_KEY=") for v in environ)
            assert has == (name == "shield-1"), name
        path = next(p for p in origin["objects"] if p.startswith("/api/"))
        with urllib.request.urlopen(nodes["edge-2"]["url"] + path, timeout=20) as r:
            assert r.status == 200
            body = r.read()
            chain = members(r.headers["Cache-Status"])
        assert body.startswith(b"{")
        assert chain[0] == "shield-1" and chain[1].startswith("regional-") and chain[2] == "edge-2"
        status = _cli("topology", "status", str(spec), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["healthy"] is True
        down = _cli("topology", "down", str(spec))
        assert down.returncode == 0, down.stdout + down.stderr
        assert process.wait(60) == 0
        pids = [(n["pid"], n["start"]) for n in nodes.values()]
        pids.append((origin["pid"], origin["start"]))
        assert not [p for p in pids if pid_alive(*p)]
        assert not (tmp_path / "work" / "topology.json").exists()
        status = _cli("topology", "status", str(spec))
        assert status.returncode == 3
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for node in [*info.get("nodes", []), info.get("origin", {})]:
            if node.get("pid") and pid_alive(node["pid"], node.get("start")):
                os.kill(node["pid"], signal.SIGKILL)
        stderr.close()
