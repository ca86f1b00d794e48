"""The ``Cache-Status`` response field (RFC 9211), one member per cache on the path.

Contract: :func:`cache_status_member` formats this node's member; a node appends it to the list
the upstream sent (RFC 9211 sec. 2: "the most recent cache ... last"), so a client of a 3-tier
path sees ``shield; fwd=uri-miss; stored, regional; fwd=uri-miss; stored, edge; hit``.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z:/]+$")


def sf_token_or_string(name: str) -> str:
    """RFC 9211 sec. 2: the cache's identifier is a Structured Field token or string."""
    if name and _TOKEN.match(name) and name[0].isalpha():
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cache_status_member(
    node: str,
    *,
    hit: bool = False,
    fwd: str | None = None,
    fwd_status: int | None = None,
    stored: bool = False,
    collapsed: bool = False,
    ttl: int | None = None,
    key: str | None = None,
    detail: str | None = None,
) -> str:
    """One Cache-Status list member (RFC 9211 sec. 2.1-2.8).

    ``node`` must already be a valid sf token/string (see :func:`sf_token_or_string`).
    ``fwd`` is one of bypass, method, uri-miss, vary-miss, miss, request, stale, partial.
    """
    parts = [node]
    if hit:
        parts.append("hit")
    if fwd is not None:
        parts.append("fwd=" + fwd)
        if fwd_status is not None:
            parts.append(f"fwd-status={fwd_status}")
    if stored:
        parts.append("stored")
    if collapsed:
        parts.append("collapsed")
    if ttl is not None:
        parts.append(f"ttl={ttl}")
    if key is not None:
        parts.append('key="' + key.replace("\\", "\\\\").replace('"', '\\"') + '"')
    if detail is not None:
        parts.append('detail="' + detail.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "; ".join(parts)


def append_cache_status(upstream_value: str | None, member: str) -> str:
    """Append this node's member after the upstream caches' members (RFC 9211 sec. 2)."""
    if upstream_value:
        return upstream_value + ", " + member
    return member
