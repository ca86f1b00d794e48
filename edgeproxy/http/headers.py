"""Header-section rules for a proxy cache: hop-by-hop fields (RFC 9110 sec. 7.6.1), what is
stored (RFC 9111 sec. 3.1) and how a stored header section is updated by a 304 or a HEAD
response (RFC 9111 sec. 3.2, 4.3.4, 4.3.5). Pure; inputs are never mutated.
"""

from __future__ import annotations

from typing import Any

from multidict import CIMultiDict

from edgeproxy.http.cache_control import fields_to_strip, parse_cache_control

__all__ = [
    "HOP_BY_HOP",
    "NOT_UPDATED",
    "PROXY_SPECIFIC",
    "connection_listed",
    "same_origin_path",
    "storable_headers",
    "strip_hop_by_hop",
    "update_stored_headers",
]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Lower-case names that only apply to one connection (RFC 9110 sec. 7.6.1 lists Connection,
Proxy-Connection, Keep-Alive, TE, Transfer-Encoding and Upgrade; Trailer only describes the
framing of this message)."""

PROXY_SPECIFIC = frozenset(
    {"proxy-authenticate", "proxy-authentication-info", "proxy-authorization"}
)
"""RFC 9111 sec. 3.1: "Header fields that are specific to the proxy that a cache uses when
forwarding a request MUST NOT be stored"."""

NOT_UPDATED = frozenset({"content-length", "content-encoding", "content-range"})
"""Fields a 304/HEAD never overwrites in a stored response (RFC 9111 sec. 3.2): Content-Length
(named by the RFC), Content-Encoding (the stored body bytes depend on it: "Header fields that
the cache's stored response depends upon") and Content-Range ("automatically processed ...
Implementations MAY automatically omit such header fields from updates")."""


def connection_listed(headers: Any) -> frozenset[str]:
    """Lower-case field names listed in the Connection field(s) (RFC 9110 sec. 7.6.1)."""
    names: set[str] = set()
    for line in headers.getall("Connection", ()):
        for part in line.split(","):
            name = part.strip(" \t").lower()
            if name:
                names.add(name)
    return frozenset(names)


def _without(headers: Any, drop: frozenset[str] | set[str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in drop:
            out.add(name, value)
    return out


def strip_hop_by_hop(headers: Any) -> CIMultiDict[str]:
    """Copy of ``headers`` without hop-by-hop fields (RFC 9110 sec. 7.6.1).

    Drops Connection, every field named in Connection, and Keep-Alive, Proxy-Connection, TE,
    Trailer, Transfer-Encoding, Upgrade. Every other field, including unknown ones, is kept
    with its original name spelling and in the original order.
    """
    listed = connection_listed(headers)
    drop = HOP_BY_HOP | listed if listed else HOP_BY_HOP
    return _without(headers, drop)


def storable_headers(headers: Any, resp_cc: Any | None = None) -> CIMultiDict[str]:
    """The header section a shared cache stores for a response (RFC 9111 sec. 3.1).

    "Caches MUST include all received response header fields -- including unrecognized ones
    -- when storing a response", except hop-by-hop fields and those listed in Connection,
    the proxy-specific fields (Proxy-Authenticate, Proxy-Authentication-Info,
    Proxy-Authorization), and the fields named by ``private="..."`` / ``no-cache="..."``
    (see ``cache_control.fields_to_strip``). ``resp_cc`` defaults to the parsed
    Cache-Control of ``headers``.
    """
    if resp_cc is None:
        resp_cc = parse_cache_control(headers.getall("Cache-Control", ()))
    drop = set(HOP_BY_HOP | PROXY_SPECIFIC | connection_listed(headers))
    drop.update(fields_to_strip(resp_cc))
    return _without(headers, drop)


def update_stored_headers(stored: Any, fresh: Any) -> CIMultiDict[str]:
    """Stored header section updated by a 304 (RFC 9111 sec. 4.3.4) or HEAD (sec. 4.3.5).

    RFC 9111 sec. 3.2: "the cache MUST add each header field in the provided response to the
    stored response, replacing field values that are already present, with the following
    exceptions": fields excepted from storage in sec. 3.1 (hop-by-hop, Connection-listed,
    proxy-specific), and ``NOT_UPDATED`` (Content-Length, Content-Encoding, Content-Range).
    All lines of a replaced field are replaced at the position of its first stored line; new
    fields are appended. Finally, fields named by ``private="..."``/``no-cache="..."`` in the
    resulting Cache-Control are removed (sec. 3.1). Neither input is mutated.
    """
    fresh_usable = storable_headers(fresh, resp_cc=parse_cache_control(()))
    replacements: dict[str, list[tuple[str, str]]] = {}
    for name, value in fresh_usable.items():
        key = name.lower()
        if key in NOT_UPDATED:
            continue
        replacements.setdefault(key, []).append((name, value))
    out: CIMultiDict[str] = CIMultiDict()
    emitted: set[str] = set()
    for name, value in stored.items():
        key = name.lower()
        new = replacements.get(key)
        if new is None:
            out.add(name, value)
        elif key not in emitted:
            emitted.add(key)
            for new_name, new_value in new:
                out.add(new_name, new_value)
    for key, new in replacements.items():
        if key not in emitted:
            for new_name, new_value in new:
                out.add(new_name, new_value)
    strip = fields_to_strip(parse_cache_control(out.getall("Cache-Control", ())))
    if strip:
        out = _without(out, set(strip))
    return out


def same_origin_path(
    value: str, request_path: str, authority: str | None, tls: bool = False
) -> str | None:
    """The path a ``Location``/``Content-Location`` value names on this origin, for
    invalidation (RFC 9111 sec. 4.4: "only if the host part is the same as in the target
    URI"); None for another origin or an unusable value.

    A relative reference is resolved against the request's path (RFC 3986 sec. 5.2): ``list``
    after ``/api/items`` is ``/api/list``; an absolute ``http(s)://`` URI counts when its
    authority equals the request's ``Host`` (``authority``, case-insensitive, default ports
    made explicit) and its scheme is the request's. The query is dropped (invalidation
    covers every keyed variant of the path). Pure.
    """
    from urllib.parse import urljoin, urlsplit

    value = value.strip()
    if not value:
        return None
    try:
        parts = urlsplit(value)
        if parts.scheme or parts.netloc:
            if parts.scheme.lower() not in ("http", "https") or authority is None:
                return None
            if parts.scheme.lower() != ("https" if tls else "http"):
                return None
            default = "443" if tls else "80"

            def canonical(hostport: str) -> str:
                hostport = hostport.lower()
                return hostport if ":" in hostport.rsplit("]", 1)[-1] else f"{hostport}:{default}"

            if canonical(parts.netloc) != canonical(authority.strip()):
                return None
            path = parts.path or "/"
        else:
            path = urlsplit(urljoin(request_path, value)).path or "/"
    except ValueError:
        return None
    return path if path.startswith("/") else None
