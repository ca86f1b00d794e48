"""RFC 9111 sec. 3.5 (Storing Responses to Authenticated Requests), end to end through a
live node.

Each test quotes the requirement it checks. The scripted origin records what reached it, so
"stored" and "not stored" are proven by origin hits, never by reading the store.
"""

from __future__ import annotations

import pytest

from tests.support.rfc import (
    BODY,
    fetch,
    node_url,
    respond,
)

pytestmark = pytest.mark.integration


async def test_response_to_authorized_request_is_not_reused(make_node, origin, client) -> None:
    """RFC 9111 sec. 3.5: "A shared cache MUST NOT use a cached response to a request with an
    Authorization header field ... to satisfy any subsequent request unless the response
    contains a Cache-Control field with a response directive ... that allows it to be stored by
    a shared cache" (must-revalidate, public, s-maxage). A plain max-age is not such a
    directive."""
    origin.routes["/api/me"] = respond(headers={"Cache-Control": "max-age=60"})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/me")
    auth = {"Authorization": "Bearer alice"}

    status, headers, _ = await fetch(client, url, auth)
    assert status == 200 and "stored" not in headers["Cache-Status"]
    status, headers, _ = await fetch(client, url, auth)
    assert status == 200 and "hit" not in headers["Cache-Status"]
    status, headers, _ = await fetch(client, url)
    assert status == 200 and "hit" not in headers["Cache-Status"]
    assert origin.count("/api/me") == 3


@pytest.mark.parametrize(
    "cache_control", ["public, max-age=60", "s-maxage=60", "must-revalidate, max-age=60"]
)
async def test_response_to_authorized_request_is_reused_when_explicitly_shared(
    make_node, origin, client, cache_control
) -> None:
    """RFC 9111 sec. 3.5: "In this specification, the following response directives have such
    an effect: must-revalidate ..., public ..., and s-maxage" - a response to an authorized
    request carrying one of them may be stored and reused."""
    origin.routes["/api/catalog"] = respond(headers={"Cache-Control": cache_control})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/catalog")
    auth = {"Authorization": "Bearer alice"}

    await fetch(client, url, auth)
    status, headers, body = await fetch(client, url, auth)
    assert status == 200 and body == BODY
    assert "hit" in headers["Cache-Status"]
    assert origin.count("/api/catalog") == 1
