"""RFC 9111 sec. 5.1 (Age) and sec. 1.2.2 (delta-seconds): how the node parses the Age field
of an upstream answer, end to end through a live node.

Each test quotes the requirement it checks. Every response here says ``max-age=3600``: an
Age the node uses makes it stale (a second origin request), an Age it ignores leaves it
fresh (a hit). The scripted origin records what reached it.
"""

from __future__ import annotations

import pytest

from tests.support.rfc import BODY, fetch, is_hit, node_url, respond

pytestmark = pytest.mark.integration

# cache-tests age-parse-* (http-tests/cache-tests, tests/age-parse.mjs)
INVALID_AGES = ["abc", "-7200", "7200.0", "1e9", "", "0x1C20"]


@pytest.mark.parametrize("age", INVALID_AGES)
async def test_invalid_age_is_ignored(make_node, origin, client, age) -> None:
    """Sec. 5.1: "If the field value (after discarding additional members, as per above) is
    invalid (e.g., it contains something other than a non-negative integer), a cache SHOULD
    ignore the field." Non-numeric, negative, decimal and hexadecimal values are ignored:
    the response stays fresh for its max-age, and the node never repeats the invalid value
    (sec. 4: "a cache MUST generate an Age header field ..., replacing any present in the
    response")."""
    origin.routes["/api/age"] = respond(headers={"Cache-Control": "max-age=3600", "Age": age})
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/age")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert is_hit(headers), headers["Cache-Status"]
    assert headers.getall("Age") == [headers["Age"]]
    assert headers["Age"].isdigit() and int(headers["Age"]) < 3600
    assert origin.count("/api/age") == 1


@pytest.mark.parametrize(
    ("ages", "fresh"),
    [
        (["7200, 0"], False),
        (["0, 7200"], True),
        (["7200", "0"], False),
        (["0", "7200"], True),
        (["0, 0"], True),
        (["7200, 7200"], False),
    ],
)
async def test_list_based_age_uses_its_first_member(make_node, origin, client, ages, fresh) -> None:
    """Sec. 5.1: "Although it is defined as a singleton header field, a cache encountering a
    message with a list-based Age field value SHOULD use the first member of the field value,
    discarding subsequent ones." Several field lines combine into one list (RFC 9110 sec.
    5.3), so the first line's first member counts."""
    fields = [("Cache-Control", "max-age=3600"), *(("Age", a) for a in ages)]
    origin.routes["/api/age"] = respond(headers=fields)
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/age")

    await fetch(client, url)
    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert is_hit(headers) is fresh, headers["Cache-Status"]
    assert origin.count("/api/age") == (1 if fresh else 2)


async def test_huge_age_is_capped_not_wrapped(make_node, origin, client) -> None:
    """Sec. 1.2.2: "If a cache receives a delta-seconds value greater than the greatest
    integer it can represent, or if any of its subsequent calculations overflows, the cache
    MUST consider the value to be 2147483648 (2^31) or the greatest positive integer it can
    conveniently represent." An Age of 99999999999 is huge, never negative or small: the
    response is stale at once, and the Age the node sends is at least 2^31."""
    origin.routes["/api/old"] = respond(
        headers={"Cache-Control": "max-age=3600", "Age": "99999999999"}
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/old")

    status, headers, body = await fetch(client, url)
    assert status == 200 and body == BODY
    assert int(headers["Age"]) >= 2**31
    status, headers, _ = await fetch(client, url)
    assert status == 200 and not is_hit(headers)
    assert origin.count("/api/old") == 2


async def test_age_added_by_upstream_is_not_repeated_but_replaced(
    make_node, origin, client
) -> None:
    """Sec. 5.1 / sec. 4: the Age a cache sends is its own estimate ("replacing any present in
    the response with a value equal to the stored response's current_age"): one Age line,
    never the upstream line next to the node's."""
    origin.routes["/api/aged"] = respond(
        headers=[("Cache-Control", "max-age=3600"), ("Age", "100"), ("Age", "5")]
    )
    node = await make_node({"parents": [origin.endpoint]})
    url = node_url(node, "/api/aged")

    for _ in range(2):
        _, headers, _ = await fetch(client, url)
        assert len(headers.getall("Age")) == 1
        assert 100 <= int(headers["Age"]) < 200
