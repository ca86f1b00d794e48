"""One node in front of the real S3 origin (SeaweedFS, SigV4 enforced): the foundation's
"done when" list, proven through a counting relay in front of the origin."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import BUCKET, CATALOG, s3_upstream

pytestmark = pytest.mark.integration

TRACK = "/audio/track-000.mp3"


def _cache_status(resp) -> str:
    return resp.headers.get("Cache-Status", "")


async def test_miss_then_hit_then_restart_still_hit(make_node, relay, client, tmp_path) -> None:
    store = tmp_path / "store"
    node = await make_node(s3_upstream(relay.endpoint), store=store)
    url = f"http://127.0.0.1:{node.port}{TRACK}"
    expected = CATALOG[TRACK[1:]][1]

    async with client.get(url) as r:
        body = await r.read()
        assert r.status == 200
        status = _cache_status(r)
    assert body == expected
    assert "fwd=uri-miss" in status and "stored" in status
    assert relay.count("GET", f"/{BUCKET}{TRACK}") == 1

    async with client.get(url) as r:
        assert r.status == 200
        assert await r.read() == expected
        assert _cache_status(r).startswith("edge-t; hit")
        assert int(r.headers["Age"]) >= 0
        assert r.headers["Via"].endswith("edge-t")
    assert relay.count("GET", f"/{BUCKET}{TRACK}") == 1

    await node.stop()
    node2 = await make_node(s3_upstream(relay.endpoint), store=store)
    async with client.get(f"http://127.0.0.1:{node2.port}{TRACK}") as r:
        assert r.status == 200
        assert await r.read() == expected
        assert "hit" in _cache_status(r)
    assert relay.count("GET", f"/{BUCKET}{TRACK}") == 1


async def test_wrong_credentials_give_502_and_a_logged_reason(
    make_node, seaweed, client, caplog
) -> None:
    node = await make_node(
        s3_upstream(seaweed.endpoint),
        environ={"EP_TEST_ACCESS": "edgeproxy-test", "EP_TEST_SECRET": "wrong-secret"},
    )
    with caplog.at_level(logging.WARNING):
        async with client.get(f"http://127.0.0.1:{node.port}/api/tracks/0.json") as r:
            assert r.status == 502
            await r.read()
    assert any("SignatureDoesNotMatch" in rec.getMessage() for rec in caplog.records)
    # a refusal is never cached: the next request asks again
    async with client.get(f"http://127.0.0.1:{node.port}/api/tracks/0.json") as r:
        assert r.status == 502
        assert "hit" not in _cache_status(r)


async def test_missing_object_is_negative_cached(make_node, relay, client) -> None:
    node = await make_node(s3_upstream(relay.endpoint))
    url = f"http://127.0.0.1:{node.port}/images/does-not-exist.webp"
    async with client.get(url) as r:
        assert r.status == 404
        await r.read()  # the whole answer: the next request then finds the stored entry
    async with client.get(url) as r:
        assert r.status == 404
        assert "hit" in _cache_status(r)
    assert relay.count("GET", f"/{BUCKET}/images/does-not-exist.webp") == 1


async def test_only_keyed_query_params_reach_the_origin(make_node, relay, client) -> None:
    node = await make_node(s3_upstream(relay.endpoint))
    base = f"http://127.0.0.1:{node.port}{TRACK}"
    async with client.get(base + "?utm_source=x&quality=high&X-Amz-Signature=abc") as r:
        assert r.status == 200
        await r.read()
    seen = [s.target for s in relay.seen if s.target.startswith(f"/{BUCKET}{TRACK}")]
    assert seen == [f"/{BUCKET}{TRACK}?quality=high"]
    # a request differing only in unkeyed params is a hit on the same entry
    async with client.get(base + "?quality=high&utm_source=other") as r:
        assert "hit" in _cache_status(r)
    assert relay.count("GET", f"/{BUCKET}{TRACK}") == 1


async def test_conditional_get_and_head_from_cache(make_node, relay, client) -> None:
    node = await make_node(s3_upstream(relay.endpoint))
    url = f"http://127.0.0.1:{node.port}/images/album-000.webp"
    async with client.get(url) as r:
        etag = r.headers["ETag"]
        length = len(await r.read())
    async with client.get(url, headers={"If-None-Match": etag}) as r:
        assert r.status == 304
        assert r.headers["ETag"] == etag
        assert await r.read() == b""
    async with client.head(url) as r:
        assert r.status == 200
        assert int(r.headers["Content-Length"]) == length
        assert "hit" in _cache_status(r)
    assert relay.count(None, f"/{BUCKET}/images/album-000.webp") == 1


async def test_range_from_cached_object(make_node, relay, client) -> None:
    node = await make_node(s3_upstream(relay.endpoint))
    url = f"http://127.0.0.1:{node.port}{TRACK}"
    expected = CATALOG[TRACK[1:]][1]
    async with client.get(url) as r:
        await r.read()
    async with client.get(url, headers={"Range": "bytes=100-199"}) as r:
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(expected)}"
        assert await r.read() == expected[100:200]
    async with client.get(url, headers={"Range": f"bytes={len(expected)}-"}) as r:
        assert r.status == 416
        assert r.headers["Content-Range"] == f"bytes */{len(expected)}"


async def test_corrupt_body_after_restart_is_a_miss(make_node, relay, client, tmp_path) -> None:
    store = tmp_path / "store"
    node = await make_node(s3_upstream(relay.endpoint), store=store)
    url = f"http://127.0.0.1:{node.port}/images/album-001.webp"
    expected = CATALOG["images/album-001.webp"][1]
    async with client.get(url) as r:
        assert await r.read() == expected
    await node.stop()
    bodies = list((store / "objects").rglob("*.body"))
    assert len(bodies) == 1
    raw = bytearray(bodies[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size, different bytes
    bodies[0].write_bytes(bytes(raw))

    node2 = await make_node(s3_upstream(relay.endpoint), store=store)
    async with client.get(f"http://127.0.0.1:{node2.port}/images/album-001.webp") as r:
        assert await r.read() == expected
        assert "hit" not in _cache_status(r)
    assert relay.count("GET", f"/{BUCKET}/images/album-001.webp") == 2


async def test_unsafe_methods_are_refused_in_front_of_s3(make_node, relay, client) -> None:
    node = await make_node(s3_upstream(relay.endpoint))
    async with client.put(f"http://127.0.0.1:{node.port}/audio/new.mp3", data=b"x") as r:
        assert r.status == 405
        assert "GET" in r.headers["Allow"]
    assert relay.count("PUT") == 0


async def test_drop_in_bucket_mapping(make_node, relay, client) -> None:
    upstream = s3_upstream(relay.endpoint)
    del upstream["s3"]["bucket"]
    upstream["s3"]["buckets"] = [BUCKET]
    node = await make_node(upstream)
    async with client.get(f"http://127.0.0.1:{node.port}/{BUCKET}/api/tracks/1.json") as r:
        assert r.status == 200
        assert await r.read() == CATALOG["api/tracks/1.json"][1]
    async with client.get(f"http://127.0.0.1:{node.port}/other-bucket/api/tracks/1.json") as r:
        assert r.status == 404
    assert relay.count(None, "/other-bucket") == 0


async def test_hits_on_s3_answers_take_the_fast_path(make_node, relay, client) -> None:
    """S3 answers carry ``Vary: Origin`` (CORS); Origin is not forwarded, so it never selects
    a variant, and hits on such entries are answered synchronously (no task per request)."""
    node = await make_node(s3_upstream(relay.endpoint))
    url = f"http://127.0.0.1:{node.port}/small/one-kib.bin"
    async with client.get(url) as r:
        await r.read()
        assert "origin" in r.headers.get("Vary", "").lower()
    before = node.node.fast_hits
    for origin_value in (None, "https://a.example", "https://b.example"):
        headers = {"Origin": origin_value} if origin_value else {}
        async with client.get(url, headers=headers) as r:
            assert await r.read() == CATALOG["small/one-kib.bin"][1]
            assert "hit" in _cache_status(r)
    assert node.node.fast_hits == before + 3
    assert relay.count("GET", f"/{BUCKET}/small/one-kib.bin") == 1
