"""The admin API end to end: token, invalidations (soft, hard, prefix, variants, stale-if-error,
every worker of a multi-process node), metrics and the access log.

A scripted origin records every request it receives, so "revalidated", "full miss" and "hit"
are proven by what reached the origin (and its conditional headers), not by reading the store.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import brotli
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import node_config_dict
from tests.support.multinode import MultiNode

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-0123456789"
TOKEN_ENV = "EDGEPROXY_ADMIN_TOKEN"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY = b"version one of the object\n" * 4
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REPO = Path(__file__).resolve().parents[2]


# ---- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def admin_node(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Start single-process nodes with extra [node] keys and a chosen environment."""
    from edgeproxy.app import RunningNode
    from edgeproxy.config import parse_config

    started: list[RunningNode] = []

    async def factory(
        upstream: dict[str, Any],
        *,
        environ: dict[str, str] | None = None,
        node_extra: dict[str, Any] | None = None,
        store: Path | None = None,
        **kwargs: Any,
    ) -> RunningNode:
        data = node_config_dict(store or tmp_path / f"store-{len(started)}", upstream, **kwargs)
        data["node"].update(node_extra or {})
        config = parse_config(data, str(tmp_path / "test.toml"))
        env = {TOKEN_ENV: TOKEN} if environ is None else environ
        node = RunningNode(config, environ=env)
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


def url(node: Any, path: str) -> str:
    return f"http://127.0.0.1:{node.port}{path}"


def admin(node: Any, path: str) -> str:
    return f"http://127.0.0.1:{node.admin_port}{path}"


async def get(
    client: aiohttp.ClientSession, target: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, bytes]:
    async with client.get(target, headers=headers) as r:
        return r.status, r.headers.copy(), await r.read()


async def invalidate(
    client: aiohttp.ClientSession, node: Any, paths: list[str], hard: bool = False
) -> dict[str, Any]:
    async with client.post(
        admin(node, "/invalidations"), json={"paths": paths, "hard": hard}, headers=AUTH
    ) as r:
        assert r.status == 201, await r.text()
        return await r.json()


async def wait_completed(client: aiohttp.ClientSession, node: Any, ident: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        async with client.get(admin(node, f"/invalidations/{ident}"), headers=AUTH) as r:
            assert r.status == 200
            data = await r.json()
        if data["status"] == "Completed" or time.monotonic() > deadline:
            return data
        await asyncio.sleep(0.02)


def validating(
    body: bytes = BODY,
    *,
    etag: str = '"v1"',
    cache_control: str = "max-age=600",
    content_type: str = "text/plain",
) -> Handler:
    """200 with an ETag; 304 when the request's If-None-Match names it."""

    async def handler(request: web.Request) -> web.StreamResponse:
        fields = {"ETag": etag, "Cache-Control": cache_control}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=fields)
        fields["Content-Type"] = content_type
        return web.Response(body=body, headers=fields)

    return handler


def hold_walks(node: Any) -> None:
    """The background walk never runs: bans are only applied on lookup (what a large store
    sees until its walk reaches an entry)."""

    async def never(bans: Any) -> None:
        await asyncio.sleep(3600)

    node.invalidations.walk = never


def failing(status: int = 500) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="origin broken\n")

    return handler


def last_member(headers: Any) -> str:
    return headers.get("Cache-Status", "").split(",")[-1]


def conditional_requests(origin: Any, path: str) -> int:
    return sum(
        1 for _, target, h in origin.seen if target.split("?")[0] == path and "If-None-Match" in h
    )


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k == "result"))
            values[(sample.name, labels)] = sample.value
    return values


# ---- the token -------------------------------------------------------------------------------


async def test_protected_calls_need_the_bearer_token(admin_node: Any, origin: Any, client: Any):
    node = await admin_node({"parents": [origin.endpoint]})
    body = {"paths": ["/a"]}
    target = admin(node, "/invalidations")
    async with client.post(target, json=body) as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert TOKEN_ENV in (await r.json())["error"]
    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer "):
        async with client.post(target, json=body, headers={"Authorization": wrong}) as r:
            assert r.status == 401, wrong
    async with client.get(admin(node, "/invalidations")) as r:
        assert r.status == 401
    async with client.get(admin(node, "/no/such/thing")) as r:
        assert r.status == 401  # routes are not revealed without the token
    async with client.get(admin(node, "/no/such/thing"), headers=AUTH) as r:
        assert r.status == 404
        assert "error" in await r.json()
    async with client.delete(target, headers=AUTH) as r:
        assert r.status == 405
        assert "error" in await r.json()
        assert "POST" in r.headers["Allow"]
    async with client.post(target, json=body, headers=AUTH) as r:
        assert r.status == 201


async def test_unset_token_disables_protected_calls_with_a_hint(
    admin_node: Any, origin: Any, client: Any
):
    node = await admin_node(
        {"parents": [origin.endpoint]},
        environ={},
        node_extra={"admin_token_env": "EP_TEST_ADMIN"},
    )
    async with client.post(admin(node, "/invalidations"), json={"paths": ["/a"]}) as r:
        assert r.status == 503
        message = (await r.json())["error"]
        assert "EP_TEST_ADMIN" in message and "node.admin_token_env" in message
    async with client.post(
        admin(node, "/invalidations"), json={"paths": ["/a"]}, headers=AUTH
    ) as r:
        assert r.status == 503  # no token configured: no admin API, whatever is sent


async def test_healthz_metrics_and_stats_stay_open(admin_node: Any, origin: Any, client: Any):
    node = await admin_node({"parents": [origin.endpoint]}, environ={})
    async with client.get(admin(node, "/healthz")) as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with client.get(admin(node, "/metrics")) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        assert "edgeproxy_requests_total" in await r.text()
    async with client.get(admin(node, "/stats")) as r:
        assert r.status == 200 and "results" in await r.json()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("not json", "JSON"),
        ("[]", "object"),
        ('{"paths": []}', "non-empty"),
        ('{"paths": "/a"}', "list"),
        ('{"paths": [1]}', "strings"),
        ('{"paths": ["/a*/b"]}', "last character"),
        ('{"paths": ["a.mp3"]}', "'/'"),
        ('{"paths": ["/a?x=1"]}', "query"),
        ('{"paths": ["/a"], "hard": "yes"}', "true or false"),
        ('{"paths": ["/a"], "purge": true}', "purge"),
    ],
)
async def test_bad_invalidation_bodies_are_400(
    admin_node: Any, origin: Any, client: Any, body: str, fragment: str
):
    node = await admin_node({"parents": [origin.endpoint]})
    async with client.post(admin(node, "/invalidations"), data=body, headers=AUTH) as r:
        assert r.status == 400
        assert fragment in (await r.json())["error"]
    assert len(node.node.bans) == 0  # nothing half-added


# ---- invalidations ---------------------------------------------------------------------------


async def test_soft_invalidation_revalidates_the_next_request(
    admin_node: Any, origin: Any, client: Any
):
    origin.routes["/doc.txt"] = validating()
    node = await admin_node({"parents": [origin.endpoint]})
    for _ in range(2):
        status, _, body = await get(client, url(node, "/doc.txt"))
        assert (status, body) == (200, BODY)
    assert origin.count("/doc.txt") == 1  # the second one was a hit

    hold_walks(node)  # the ban is applied by the lookup, on the fast path's refusal
    result = await invalidate(client, node, ["/doc.txt"])
    assert result["paths"] == ["/doc.txt"] and result["hard"] is False
    assert result["status"] in ("InProgress", "Completed")

    status, headers, body = await get(client, url(node, "/doc.txt"))
    assert (status, body) == (200, BODY)
    assert origin.count("/doc.txt") == 2
    assert origin.last_headers("/doc.txt").get("If-None-Match") == '"v1"'  # conditional
    assert "fwd=stale" in last_member(headers) and "fwd-status=304" in last_member(headers)
    # revalidated: fresh again, served as a hit
    status, headers, body = await get(client, url(node, "/doc.txt"))
    assert (status, body) == (200, BODY)
    assert origin.count("/doc.txt") == 2
    assert "hit" in last_member(headers)


async def test_prefix_invalidation_covers_only_paths_under_it(
    admin_node: Any, origin: Any, client: Any
):
    paths = ["/api/a.json", "/api/v2/b.json", "/apix/c.json", "/other/d.json"]
    for path in paths:
        origin.routes[path] = validating(content_type="application/json")
    node = await admin_node({"parents": [origin.endpoint]})
    for path in paths:
        await get(client, url(node, path))
        await get(client, url(node, path + "?unkeyed=1"))
    assert [origin.count(p) for p in paths] == [1, 1, 1, 1]

    hold_walks(node)
    await invalidate(client, node, ["/api/*"])
    for path in paths:
        status, _, body = await get(client, url(node, path))
        assert (status, body) == (200, BODY)
    assert [conditional_requests(origin, p) for p in paths] == [1, 1, 0, 0]
    assert [origin.count(p) for p in paths] == [2, 2, 1, 1]


async def test_hard_invalidation_deletes(admin_node: Any, origin: Any, client: Any):
    origin.routes["/doc.txt"] = validating()
    node = await admin_node({"parents": [origin.endpoint]})
    await get(client, url(node, "/doc.txt"))
    hold_walks(node)
    await invalidate(client, node, ["/doc.txt"], hard=True)
    status, headers, body = await get(client, url(node, "/doc.txt"))
    assert (status, body) == (200, BODY)
    assert origin.count("/doc.txt") == 2
    assert "If-None-Match" not in origin.last_headers("/doc.txt")  # a full miss
    assert "fwd=uri-miss" in last_member(headers)


async def test_a_soft_invalidated_entry_still_covers_an_origin_error(
    admin_node: Any, origin: Any, client: Any
):
    cc = "max-age=600, stale-if-error=600"
    origin.routes["/doc.txt"] = validating(cache_control=cc)
    node = await admin_node({"parents": [origin.endpoint]})
    await get(client, url(node, "/doc.txt"))
    hold_walks(node)
    await invalidate(client, node, ["/doc.txt"])
    origin.routes["/doc.txt"] = failing(500)
    status, headers, body = await get(client, url(node, "/doc.txt"))
    assert (status, body) == (200, BODY)
    assert "stale-if-error" in last_member(headers)
    assert origin.count("/doc.txt") == 2  # it did ask the origin first


async def test_a_hard_invalidated_entry_does_not(admin_node: Any, origin: Any, client: Any):
    origin.routes["/doc.txt"] = validating(cache_control="max-age=600, stale-if-error=600")
    node = await admin_node({"parents": [origin.endpoint]})
    await get(client, url(node, "/doc.txt"))
    await invalidate(client, node, ["/doc.txt"], hard=True)
    origin.routes["/doc.txt"] = failing(500)
    status, _, _ = await get(client, url(node, "/doc.txt"))
    assert status == 500


JSON_POLICIES = [
    {
        "name": "api",
        "path": "/api/*",
        "default_ttl": "5m",
        "max_ttl": "1h",
        "compress": True,
    },
    {"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"},
]
JSON_BODY = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(80)])


def _decoded(headers: Any, body: bytes) -> bytes:
    coding = headers.get("Content-Encoding")
    if coding == "br":
        return brotli.decompress(body)
    if coding == "gzip":
        return gzip.decompress(body)
    return body


@pytest.mark.parametrize("hard", [False, True])
async def test_compressed_variants_go_with_their_entry(
    admin_node: Any, origin: Any, client: Any, hard: bool
):
    path = "/api/doc.json"
    origin.routes[path] = validating(JSON_BODY.encode(), content_type="application/json")
    node = await admin_node({"parents": [origin.endpoint]}, policies=JSON_POLICIES)
    await get(client, url(node, path))  # the miss stores the identity body
    for coding in ("br", "gzip", "br", "gzip"):
        status, headers, body = await get(client, url(node, path), {"Accept-Encoding": coding})
        assert status == 200 and headers["Content-Encoding"] == coding
        assert _decoded(headers, body) == JSON_BODY.encode()
    assert origin.count(path) == 1
    stored = [e for e in node.store.index.values() if e.path == path]
    assert len(stored) == 3  # identity, br, gzip

    result = await invalidate(client, node, [path], hard=hard)
    done = await wait_completed(client, node, result["id"])
    assert done["status"] == "Completed"
    now = time.time()
    left = [e for e in node.store.index.values() if e.path == path]
    if hard:
        assert left == []
    else:
        assert len(left) == 3 and all(e.fresh_until <= now for e in left)

    # a compressed answer is never served from before the invalidation
    status, headers, body = await get(client, url(node, path), {"Accept-Encoding": "br"})
    assert status == 200 and _decoded(headers, body) == JSON_BODY.encode()
    assert origin.count(path) == 2
    assert conditional_requests(origin, path) == (0 if hard else 1)


async def test_invalidation_status_reaches_completed(admin_node: Any, origin: Any, client: Any):
    origin.routes["/doc.txt"] = validating()
    node = await admin_node({"parents": [origin.endpoint]})
    await get(client, url(node, "/doc.txt"))
    result = await invalidate(client, node, ["/doc.txt", "/images/*", "/doc.txt"])
    assert result["paths"] == ["/doc.txt", "/images/*"]  # normalized, deduplicated
    assert result["id"].startswith("I")
    done = await wait_completed(client, node, result["id"])
    assert done["status"] == "Completed" and done["completed_at"] >= done["created_at"]
    assert len(node.node.bans) == 2  # applied, still active for fills that were in flight
    async with client.get(admin(node, "/invalidations"), headers=AUTH) as r:
        listed = (await r.json())["invalidations"]
        assert [i["id"] for i in listed] == [result["id"]]
    async with client.get(admin(node, "/invalidations/INOPE"), headers=AUTH) as r:
        assert r.status == 404 and "error" in await r.json()
    # the entry stays stale after its ban retired: the next request still revalidates
    await get(client, url(node, "/doc.txt"))
    assert conditional_requests(origin, "/doc.txt") == 1


async def test_bans_retire_after_their_linger(
    admin_node: Any, origin: Any, client: Any, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr("edgeproxy.admin.BAN_LINGER", 0.3)
    origin.routes["/doc.txt"] = validating()
    node = await admin_node({"parents": [origin.endpoint]})
    await get(client, url(node, "/doc.txt"))
    result = await invalidate(client, node, ["/doc.txt"])
    assert (await wait_completed(client, node, result["id"]))["status"] == "Completed"
    deadline = time.monotonic() + 5
    while len(node.node.bans) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(node.node.bans) == 0  # retired by a walk that started after the linger
    from edgeproxy.cache.bans import read_ban_file

    assert read_ban_file(node.config.store.path)[0].items == []
    await get(client, url(node, "/doc.txt"))  # the entry stays stale once its ban is gone
    assert conditional_requests(origin, "/doc.txt") == 1


async def test_a_fill_in_flight_at_the_invalidation_is_not_served_fresh(
    admin_node: Any, origin: Any, client: Any
):
    """The response head arrived before the ban, the body after the walk: the published
    entry is older than the ban, and the lingering ban catches it on lookup."""
    gate, half_sent = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(
                status=304, headers={"ETag": '"v1"', "Cache-Control": "max-age=600"}
            )
        resp = web.StreamResponse(headers={"ETag": '"v1"', "Cache-Control": "max-age=600"})
        resp.content_length = len(BODY)
        await resp.prepare(request)
        await resp.write(BODY[:10])
        half_sent.set()
        await gate.wait()
        await resp.write(BODY[10:])
        await resp.write_eof()
        return resp

    origin.routes["/slow"] = slow
    node = await admin_node({"parents": [origin.endpoint]})
    first = asyncio.create_task(get(client, url(node, "/slow")))
    await asyncio.wait_for(half_sent.wait(), 5)
    result = await invalidate(client, node, ["/slow"])
    assert (await wait_completed(client, node, result["id"]))["status"] == "Completed"
    gate.set()
    assert (await first)[2] == BODY
    deadline = time.monotonic() + 5
    while not any(e.path == "/slow" for e in node.store.index.values()):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    status, _, body = await get(client, url(node, "/slow"))
    assert (status, body) == (200, BODY)
    assert conditional_requests(origin, "/slow") == 1


async def test_bans_survive_a_restart(
    admin_node: Any, origin: Any, client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A ban persists in <store>/bans.json until a walk applied it: a node stopped before its
    walk finished honours it after the restart, and completes it."""
    from edgeproxy.cache.bans import read_ban_file

    origin.routes["/doc.txt"] = validating()
    store = tmp_path / "kept-store"
    node = await admin_node({"parents": [origin.endpoint]}, store=store)
    await get(client, url(node, "/doc.txt"))
    hold_walks(node)
    result = await invalidate(client, node, ["/doc.txt"])
    bans, records = read_ban_file(store)
    assert [b.pattern for b in bans.items] == ["/doc.txt"]
    assert records[0]["id"] == result["id"]
    await admin_node.stop(node)

    monkeypatch.setattr("edgeproxy.admin.BAN_LINGER", 0.0)
    again = await admin_node({"parents": [origin.endpoint]}, store=store)
    status, _, body = await get(client, url(again, "/doc.txt"))
    assert (status, body) == (200, BODY)
    assert conditional_requests(origin, "/doc.txt") == 1  # revalidated, not served as fresh
    done = await wait_completed(client, again, result["id"])
    assert done["status"] == "Completed"
    assert read_ban_file(store)[0].items == []


async def test_disk_walk_of_a_multi_process_master(
    admin_node: Any, origin: Any, client: Any, tmp_path: Path
):
    """The master has no index: it applies bans to the metadata files themselves."""
    from edgeproxy.admin import walk_disk
    from edgeproxy.cache.bans import BanList
    from edgeproxy.cache.entry import Entry

    paths = ["/soft/a.txt", "/hard/b.txt", "/keep/c.txt"]
    for path in paths:
        origin.routes[path] = validating()
    store = tmp_path / "walked"
    node = await admin_node({"parents": [origin.endpoint]}, store=store)
    for path in paths:
        await get(client, url(node, path))
    await admin_node.stop(node)

    def stored() -> dict[str, tuple[Path, Entry]]:
        found = {}
        for meta in (store / "objects").glob("*/*/*.meta"):
            entry = Entry.from_json(meta.read_bytes())
            found[entry.path] = (meta, entry)
        return found

    before = stored()
    assert sorted(before) == sorted(paths)
    now = time.time()
    bans = BanList()
    bans.add("/soft/*", now, hard=False)
    bans.add("/hard/b.txt", now, hard=True)
    dropped: list[str] = []
    await walk_disk(store, bans, dropped.append)
    after = stored()
    assert sorted(after) == ["/keep/c.txt", "/soft/a.txt"]
    assert dropped == [before["/hard/b.txt"][1].key_hex]
    hard_body = before["/hard/b.txt"][0].parent / before["/hard/b.txt"][1].body_file
    assert not hard_body.exists()
    soft = after["/soft/a.txt"][1]
    assert soft.response_time - soft.initial_age + soft.lifetime == pytest.approx(now)
    assert after["/keep/c.txt"][1].lifetime == before["/keep/c.txt"][1].lifetime
    assert not list((store / "tmp").glob("*.meta"))  # no temporary metadata left


# ---- metrics ---------------------------------------------------------------------------------


async def test_metrics_follow_the_requests(admin_node: Any, origin: Any, client: Any):
    origin.routes["/doc.txt"] = validating()
    node = await admin_node({"parents": [origin.endpoint]})

    async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with client.get(admin(node, "/metrics")) as r:
            return metric_values(await r.text())

    before = await scrape()
    await get(client, url(node, "/doc.txt"))  # miss
    await get(client, url(node, "/doc.txt"))  # hit (fast path)
    await get(client, url(node, "/doc.txt"), {"Range": "bytes=0-3"})  # hit (full pipeline)
    await invalidate(client, node, ["/doc.txt"])
    await get(client, url(node, "/doc.txt"))  # revalidated
    after = await scrape()

    def delta(name: str, result: str | None = None) -> float:
        key = (name, (("result", result),) if result else ())
        return after[key] - before.get(key, 0.0)

    assert delta("edgeproxy_requests_total", "miss") == 1
    assert delta("edgeproxy_requests_total", "hit") == 2
    assert delta("edgeproxy_requests_total", "revalidated") == 1
    assert delta("edgeproxy_upstream_requests_total") == 2
    assert delta("edgeproxy_invalidations_total") == 1
    assert after[("edgeproxy_store_objects", ())] == 1
    assert after[("edgeproxy_store_bytes", ())] == len(BODY)
    for name in (
        "edgeproxy_evictions_total",
        "edgeproxy_coalesced_total",
        "edgeproxy_compression_variants_total",
        "edgeproxy_compression_saved_bytes_total",
        "edgeproxy_slices_fetched_total",
    ):
        assert (name, ()) in after, name
    async with client.get(admin(node, "/metrics")) as r:
        text = await r.text()
    assert 'node="edge-t"' in text and 'role="edge"' in text and 'region="local"' in text


# ---- the access log --------------------------------------------------------------------------


async def test_access_log_lines_and_reopen(
    admin_node: Any, origin: Any, client: Any, tmp_path: Path
):
    log_path = tmp_path / "access.log"
    origin.routes["/doc.txt"] = validating()
    node = await admin_node(
        {"parents": [origin.endpoint]}, node_extra={"access_log": str(log_path)}
    )
    await get(client, url(node, "/doc.txt?x=secret"))  # miss
    await get(client, url(node, "/doc.txt"))  # hit, fast path
    node.access_log.flush()
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [(r["method"], r["path"], r["status"], r["cache"]) for r in lines] == [
        ("GET", "/doc.txt", 200, "miss"),
        ("GET", "/doc.txt", 200, "hit"),
    ]
    miss, hit = lines
    assert miss["bytes"] == hit["bytes"] == len(BODY)
    assert miss["upstream_ms"] is not None and miss["upstream_ms"] >= 0
    assert hit["upstream_ms"] is None
    assert miss["node"] == "edge-t" and miss["time"].endswith("Z")
    assert miss["duration_ms"] >= miss["upstream_ms"]

    rotated = tmp_path / "access.log.1"
    os.rename(log_path, rotated)
    node.reopen_logs()  # what SIGUSR1 does
    await get(client, url(node, "/doc.txt"))
    node.access_log.flush()
    assert len(rotated.read_text().splitlines()) == 2
    assert [json.loads(line)["cache"] for line in log_path.read_text().splitlines()] == ["hit"]


async def test_access_log_off_by_default(admin_node: Any, origin: Any):
    node = await admin_node({"parents": [origin.endpoint]})
    assert node.config.node.access_log == "off"
    assert node.node.access_log is None


# ---- a multi-process node --------------------------------------------------------------------


async def test_an_invalidation_reaches_every_worker(origin: Any, tmp_path: Path):
    """Both workers hold v1 in RAM; after the master's invalidation, no connection (whichever
    worker accepts it) is answered with v1."""
    versions = {"etag": '"v1"', "body": b"v1 " * 100}

    async def versioned(request: web.Request) -> web.StreamResponse:
        fields = {"ETag": versions["etag"], "Cache-Control": "max-age=600"}
        if request.headers.get("If-None-Match") == versions["etag"]:
            return web.Response(status=304, headers=fields)
        return web.Response(body=versions["body"], headers=fields)

    origin.routes["/obj"] = versioned
    node = MultiNode(tmp_path, origin.port, token=TOKEN)
    base, admin_base = node.base, node.admin_base
    try:
        await node.start()

        async def fetch_fresh_connections(n: int) -> list[bytes]:
            bodies = []
            for _ in range(n):  # a new connection each time: both workers take some
                connector = aiohttp.TCPConnector(force_close=True)
                async with (
                    aiohttp.ClientSession(connector=connector) as s,
                    s.get(base + "/obj") as r,
                ):
                    assert r.status == 200
                    bodies.append(await r.read())
            return bodies

        assert set(await fetch_fresh_connections(12)) == {b"v1 " * 100}
        versions.update(etag='"v2"', body=b"v2 " * 100)
        async with aiohttp.ClientSession() as s:
            async with s.post(
                admin_base + "/invalidations", json={"paths": ["/o*"]}, headers=AUTH
            ) as r:
                assert r.status == 201, await r.text()
                ident = (await r.json())["id"]
            assert set(await fetch_fresh_connections(12)) == {b"v2 " * 100}
            deadline = time.monotonic() + 10
            status = ""
            while status != "Completed" and time.monotonic() < deadline:
                async with s.get(admin_base + f"/invalidations/{ident}", headers=AUTH) as r:
                    status = (await r.json())["status"]
                await asyncio.sleep(0.05)
            assert status == "Completed"
            async with s.get(admin_base + "/metrics") as r:
                text = await r.text()
            assert "edgeproxy_invalidations_total" in text and "edgeproxy_store_objects" in text
        assert set(await fetch_fresh_connections(6)) == {b"v2 " * 100}
    finally:
        node.stop()
