"""RFC 9111 sec. 5.4 (Pragma), end to end through a live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import pytest

from tests.support.rfc import (
    BODY,
    fetch,
    is_hit,
    node_url,
    own_status,
    respond,
    validating,
)

pytestmark = pytest.mark.integration


async def test_pragma_no_cache_without_cache_control_is_revalidated(
    make_node, origin, client
) -> None:
    """RFC 7234 sec. 5.4: "When the Cache-Control header field is not present in a request,
    caches MUST consider the no-cache request pragma-directive as having the same effect as if
    "Cache-Control: no-cache" were present" (RFC 9111 sec. 5.4 deprecates Pragma but keeps it
    for HTTP/1.0 clients); when Cache-Control is present, Pragma is ignored."""
    origin.routes["/api/pragma"] = validating(cache_control="max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/pragma")

    await fetch(client, url)
    status, headers, body = await fetch(client, url, {"Pragma": "no-cache"})
    assert status == 200 and body == BODY
    assert origin.count("/api/pragma") == 2
    assert origin.last_headers("/api/pragma").get("If-None-Match") == '"v1"'
    assert "hit" not in headers["Cache-Status"]

    status, headers, _ = await fetch(
        client, url, {"Pragma": "no-cache", "Cache-Control": "max-stale=10"}
    )
    assert status == 200 and "hit" in headers["Cache-Status"]
    assert origin.count("/api/pragma") == 2


@pytest.mark.parametrize(
    ("pragma", "validated"),
    [("no-cache", True), ("foo, No-Cache", True), ("x-no-cache", False), ("foo=bar", False)],
)
async def test_request_pragma_members(make_node, origin, client, pragma, validated) -> None:
    """RFC 7234 sec. 5.4 (kept by RFC 9111 sec. 5.4 for HTTP/1.0 clients): "Pragma =
    1#pragma-directive", "When the Cache-Control header field is not present in a request,
    caches MUST consider the no-cache request pragma-directive as having the same effect as
    if "Cache-Control: no-cache" were present"; other pragma directives are ignored. The
    validation is forced by the request, so RFC 9211 says ``fwd=request``."""
    origin.routes["/api/p"] = validating(cache_control="max-age=600")
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/p")

    await fetch(client, url)
    _, headers, body = await fetch(client, url, {"Pragma": pragma})
    assert body == BODY
    assert is_hit(headers) is not validated, headers["Cache-Status"]
    if validated:
        assert own_status(headers["Cache-Status"]).get("fwd") == "request"
    assert origin.count("/api/p") == (2 if validated else 1)


async def test_pragma_no_cache_in_a_response_is_not_a_cache_directive(
    make_node, origin, client
) -> None:
    """RFC 9111 sec. 5.4: "Because the meaning of "Pragma: no-cache" in responses was never
    specified, it does not provide a reliable replacement for "Cache-Control: no-cache" in
    them." A response with max-age and Pragma: no-cache is reused (and the field kept,
    sec. 3.1)."""
    origin.routes["/api/rp"] = respond(
        headers={"Cache-Control": "max-age=600", "Pragma": "no-cache"}
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/rp")

    await fetch(client, url)
    _, headers, _ = await fetch(client, url)
    assert is_hit(headers), headers["Cache-Status"]
    assert headers["Pragma"] == "no-cache"
    assert origin.count("/api/rp") == 1
