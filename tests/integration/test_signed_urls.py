"""Signed URLs through a real node in front of SeaweedFS (through a counting relay): edgeproxy's
HMAC URLs (``edgeproxy sign``) and S3 presigned URLs verified with the origin's credentials."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from aiohttp import web

from edgeproxy import cli
from edgeproxy.signing import sign_url
from tests.conftest import ACCESS_KEY, BUCKET, CATALOG, SECRET_KEY, s3_upstream
from tests.unit.test_presign import presign_query

pytestmark = pytest.mark.integration

KEYS_ENV = "EP_TEST_URL_KEYS"
SECRET_1 = "k1-secret-0123456789abcdef"
SECRET_2 = "k2-secret-fedcba9876543210"
KEYS = f"k2:{SECRET_2},k1:{SECRET_1}"
TRACK = "/audio/track-000.mp3"
SMALL = "/small/one-kib.bin"


def _policies(required: bool = True) -> list[dict]:
    signed = {"keys_env": KEYS_ENV, "required": required}
    return [
        {
            "name": "audio",
            "path": "/audio/*",
            "default_ttl": "1d",
            "query_keys": ["quality"],
            "signed_urls": signed,
        },
        {"name": "small", "path": "/small/*", "default_ttl": "1d", "signed_urls": signed},
        {"name": "default", "path": "*", "default_ttl": "1h"},
    ]


def _cli_sign(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> str:
    capsys.readouterr()
    assert cli.main(["sign", url, "--keys-env", KEYS_ENV, *args]) == 0
    return capsys.readouterr().out.strip()


async def _get(client, url: str, **kwargs) -> tuple[int, bytes, dict[str, str]]:
    async with client.get(url, **kwargs) as r:
        return r.status, await r.read(), dict(r.headers)


@pytest.fixture
def url_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS_ENV, KEYS)


async def test_signed_urls_required(make_node, relay, client, url_keys, capsys) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=_policies())
    base = f"http://127.0.0.1:{node.port}"
    expected = CATALOG[TRACK[1:]][1]

    status, body, headers = await _get(client, base + TRACK)
    assert status == 403 and b"must be signed" in body
    assert 'detail="signature-missing"' in headers["Cache-Status"]
    assert headers["Cache-Control"] == "no-store"

    good = _cli_sign(capsys, base + TRACK + "?quality=high", "--expires", "1h")
    assert "ep_sig=" in good
    refusals = {
        good.replace("ep_key=k2", "ep_key=k7"): b"unknown key id",
        good.replace("ep_key=k2", "ep_key=k1"): b"does not match",
        good.replace("/track-000", "/track-001"): b"does not match",
        good[:-3] + ("xyz" if not good.endswith("xyz") else "abc"): b"does not match",
        sign_url(base + TRACK, SECRET_2.encode(), "k2", int(time.time()) - 5): b"expired",
    }
    for url, reason in refusals.items():
        status, body, _ = await _get(client, url)
        assert (status, reason in body) == (403, True), url
    assert relay.count(None, f"/{BUCKET}{TRACK}") == 0  # refused before any lookup or fetch

    status, body, headers = await _get(client, good)
    assert status == 200 and body == expected
    assert "stored" in headers["Cache-Status"]
    # the keyed parameter is forwarded; the signature never is
    assert [s.target for s in relay.seen] == [f"/{BUCKET}{TRACK}?quality=high"]

    # another valid signature (other key id, other expiry) is the same cache entry
    other = sign_url(
        base + TRACK + "?quality=high", SECRET_1.encode(), "k1", int(time.time()) + 600
    )
    status, body, headers = await _get(client, other)
    assert status == 200 and body == expected
    assert headers["Cache-Status"].startswith("edge-t; hit")
    status, _, headers = await _get(client, other, headers={"Range": "bytes=0-99"})
    assert status == 206 and "hit" in headers["Cache-Status"]
    assert relay.count(None, f"/{BUCKET}{TRACK}") == 1

    # stored, but still never served without a valid signature
    for url in (base + TRACK + "?quality=high", list(refusals)[1]):
        status, _, _ = await _get(client, url)
        assert status == 403
    assert node.node.refused["signature-missing"] >= 2

    # a policy without signed_urls is not affected
    status, _, _ = await _get(client, base + "/api/tracks/0.json")
    assert status == 200


async def test_fast_path_hits_check_the_signature(make_node, relay, client, url_keys) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=_policies())
    base = f"http://127.0.0.1:{node.port}"
    now = int(time.time())
    first = sign_url(base + SMALL, SECRET_1.encode(), "k1", now + 60)
    second = sign_url(base + SMALL, SECRET_2.encode(), "k2", now + 120)
    status, body, _ = await _get(client, first)
    assert status == 200 and body == CATALOG[SMALL[1:]][1]
    fast = node.node.fast_hits
    status, body, _ = await _get(client, second)
    assert status == 200 and body == CATALOG[SMALL[1:]][1]
    assert node.node.fast_hits == fast + 1  # a RAM hit answered by Node.try_fast
    for url in (base + SMALL, second.replace("ep_key=k2", "ep_key=k1"), second + "&ep_sig=x"):
        status, _, _ = await _get(client, url)
        assert status == 403, url
    assert node.node.fast_hits == fast + 1
    assert relay.count(None, f"/{BUCKET}{SMALL}") == 1


async def test_prefix_signature(make_node, relay, client, url_keys, capsys) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=_policies())
    base = f"http://127.0.0.1:{node.port}"
    signed = _cli_sign(capsys, base + TRACK, "--prefix", "/audio/track-000", "--key-id", "k1")
    query = signed.partition("?")[2]
    status, body, _ = await _get(client, f"{base}{TRACK}?{query}")
    assert status == 200 and body == CATALOG[TRACK[1:]][1]
    status, body, headers = await _get(client, f"{base}/audio/track-001.mp3?{query}")
    assert status == 403 and b"covers '/audio/track-000'" in body
    assert 'detail="signature-scope"' in headers["Cache-Status"]
    # dot segments are resolved before the check: what is verified is what is fetched
    status, _, _ = await _get(client, f"{base}/audio/track-000/../track-001.mp3?{query}")
    assert status == 403


async def test_optional_signatures(make_node, relay, client, url_keys) -> None:
    node = await make_node(s3_upstream(relay.endpoint), policies=_policies(required=False))
    base = f"http://127.0.0.1:{node.port}"
    status, _, _ = await _get(client, base + SMALL)
    assert status == 200
    status, body, _ = await _get(client, base + SMALL + "?ep_expires=1&ep_key=k1&ep_sig=x")
    assert status == 403 and b"does not match" in body


async def test_passed_through_methods_are_checked_and_stripped(
    make_node, origin, client, url_keys
) -> None:
    async def accept(request: web.Request) -> web.Response:
        return web.Response(status=201, text="ok")

    origin.routes["/audio/upload"] = accept
    node = await make_node({"parents": [origin.endpoint]}, policies=_policies())
    url = f"http://127.0.0.1:{node.port}/audio/upload?name=a"
    async with client.post(url, data=b"x") as r:
        assert r.status == 403
    signed = sign_url(url, SECRET_1.encode(), "k1", int(time.time()) + 60)
    async with client.post(signed, data=b"x") as r:
        assert r.status == 201
    assert [target for method, target, _ in origin.seen] == ["/audio/upload?name=a"]


async def test_missing_keys_stop_the_node_from_starting(make_node, relay, monkeypatch) -> None:
    monkeypatch.delenv(KEYS_ENV, raising=False)
    with pytest.raises(ValueError, match=KEYS_ENV):
        await make_node(s3_upstream(relay.endpoint), policies=_policies())


# ---- S3 presigned URLs --------------------------------------------------------------------


def _presigned(host: str, path: str, *, signed_at: float | None = None, **kwargs) -> str:
    query = presign_query(
        "GET",
        host,
        path,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        signed_at=time.time() if signed_at is None else signed_at,
        **kwargs,
    )
    return f"{quote(path, safe='/-_.~')}?{query}"


async def test_presigned_urls_in_front_of_seaweed(make_node, seaweed, relay, client) -> None:
    path = f"/{BUCKET}{SMALL}"
    expected = CATALOG[SMALL[1:]][1]
    # the test's presigner is right: SeaweedFS itself accepts its URLs
    seaweed_host = seaweed.endpoint.partition("://")[2]
    status, body, _ = await _get(client, seaweed.endpoint + _presigned(seaweed_host, path))
    assert (status, body) == (200, expected)

    upstream = s3_upstream(relay.endpoint)
    upstream["s3"] = {**upstream["s3"], "bucket": None, "buckets": [BUCKET]}
    del upstream["s3"]["bucket"]
    policies = [
        {
            "name": "music",
            "path": f"/{BUCKET}/*",
            "default_ttl": "1d",
            "signed_urls": {"type": "s3-presigned"},
        }
    ]
    node = await make_node(upstream, policies=policies)
    host = f"127.0.0.1:{node.port}"
    base = f"http://{host}"

    status, body, headers = await _get(
        client, base + _presigned(host, path, signed_at=time.time() - 60)
    )
    assert (status, body) == (200, expected)
    assert "stored" in headers["Cache-Status"]
    seen = [s for s in relay.seen if s.target.startswith(path)]
    assert [s.target for s in seen] == [path]  # no X-Amz-* upstream: the node signs itself
    assert seen[0].headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=")

    # another presigned URL for the same object: the same cache entry, on the fast path
    fast = node.node.fast_hits
    status, body, headers = await _get(client, base + _presigned(host, path))
    assert (status, body) == (200, expected)
    assert headers["Cache-Status"].startswith("edge-t; hit")
    assert node.node.fast_hits == fast + 1
    assert relay.count(None, path) == 1

    good = _presigned(host, path)
    other = f"/{BUCKET}/api/tracks/0.json"
    refused = {
        base + path: "signature-missing",
        base + good.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200"): "bad-signature",
        base + good.replace(quote(path, safe="/-_.~"), other): "bad-signature",
        base + _presigned(seaweed_host, path): "bad-signature",  # signed for another host
        base + _presigned(host, path, signed_at=time.time() - 7200): "signature-expired",
        base + _presigned(host, path, region="eu-west-1"): "signature-scope",
    }
    for url, code in refused.items():
        status, body, headers = await _get(client, url)
        assert status == 403, url
        assert f'detail="{code}"' in headers["Cache-Status"], (url, body)
    tampered_key = presign_query(
        "GET", host, path, access_key=ACCESS_KEY, secret_key="not-the-secret", signed_at=time.time()
    )
    status, _, _ = await _get(client, f"{base}{path}?{tampered_key}")
    assert status == 403
    assert relay.count(None, path) == 1 and relay.count(None, other) == 0
