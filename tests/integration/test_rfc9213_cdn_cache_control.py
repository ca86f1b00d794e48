"""RFC 9213 (Targeted HTTP Cache Control) through a live node, against a scripted origin."""

from __future__ import annotations

import pytest
from aiohttp import web

pytestmark = pytest.mark.integration


def _respond(headers: dict[str, str]):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=b"payload", headers=headers)

    return handler


async def _get(client, url):
    async with client.get(url) as r:
        return r.status, r.headers, await r.read()


async def test_targeted_field_overrides_cache_control(make_node, origin, client) -> None:
    """RFC 9213 sec. 2.1: "the cache MUST select the first (in target list order) field with a
    valid value and use its value to determine the caching policy for the response, and it
    MUST ignore the Cache-Control and Expires header fields in that response"."""
    origin.routes["/api/t"] = _respond(
        {"Cache-Control": "no-store", "CDN-Cache-Control": "max-age=600"}
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = f"http://127.0.0.1:{node.port}/api/t"
    await _get(client, url)
    _, headers, body = await _get(client, url)
    assert body == b"payload"
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/api/t") == 1
    # the browser still sees the origin's Cache-Control
    assert headers["Cache-Control"] == "no-store"


async def test_targeted_no_store_forbids_storing(make_node, origin, client) -> None:
    """RFC 9213 sec. 2.1: the targeted field's directives (here no-store) apply to this cache
    even when Cache-Control would allow storing."""
    origin.routes["/api/n"] = _respond(
        {"Cache-Control": "max-age=600", "CDN-Cache-Control": "no-store"}
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = f"http://127.0.0.1:{node.port}/api/n"
    await _get(client, url)
    await _get(client, url)
    assert origin.count("/api/n") == 2


async def test_invalid_targeted_field_falls_back_to_cache_control(
    make_node, origin, client
) -> None:
    """RFC 9213 sec. 2.1: "unless no valid value is available from the listed header fields":
    an invalid targeted field (a string where an Integer is required) is ignored."""
    origin.routes["/api/i"] = _respond(
        {"Cache-Control": "max-age=600", "CDN-Cache-Control": 'max-age="soon"'}
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = f"http://127.0.0.1:{node.port}/api/i"
    await _get(client, url)
    _, headers, _ = await _get(client, url)
    assert "hit" in headers["Cache-Status"]


async def test_first_field_in_target_list_wins_and_edge_strips_them(
    make_node, origin, client
) -> None:
    """RFC 9213 sec. 2.1 target list order: EdgeProxy-Cache-Control before CDN-Cache-Control.
    Sec. 2.1: a cache MAY (and the outermost one here does) not forward the targeted fields."""
    origin.routes["/api/o"] = _respond(
        {
            "Cache-Control": "max-age=600",
            "EdgeProxy-Cache-Control": "no-store",
            "CDN-Cache-Control": "max-age=600",
        }
    )
    node = await make_node({"parents": [origin.endpoint]})  # role edge: strips
    url = f"http://127.0.0.1:{node.port}/api/o"
    _, headers, _ = await _get(client, url)
    await _get(client, url)
    assert origin.count("/api/o") == 2
    assert "EdgeProxy-Cache-Control" not in headers
    assert "CDN-Cache-Control" not in headers


async def test_inner_tier_passes_targeted_fields_on(make_node, origin, client) -> None:
    """A regional node is not the outermost tier: the edge below must see the targeted field."""
    origin.routes["/api/r"] = _respond({"CDN-Cache-Control": "max-age=600"})
    node = await make_node({"parents": [origin.endpoint]}, role="regional", name="regional-t")
    url = f"http://127.0.0.1:{node.port}/api/r"
    _, headers, _ = await _get(client, url)
    assert headers["CDN-Cache-Control"] == "max-age=600"
    _, headers, _ = await _get(client, url)
    assert headers["CDN-Cache-Control"] == "max-age=600"
    assert "hit" in headers["Cache-Status"]
