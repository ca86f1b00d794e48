"""Answers made from stored entries that more than one path needs (no I/O but the socket)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeproxy.cache.entry import Entry
from edgeproxy.http.conditional import not_modified

if TYPE_CHECKING:
    from edgeproxy.proxy.server import Request, ResponseWriter

# framing fields never sent with a 304 (RFC 9110 sec. 15.4.5)
NOT_IN_304 = frozenset({"content-length", "content-range", "transfer-encoding"})


def answer_304(
    req: Request,
    resp: ResponseWriter,
    entry: Entry,
    fields: list[tuple[str, str]],
    *,
    etag: str | None = None,
) -> bool:
    """Answer 304 Not Modified from a stored entry when the request's preconditions say so
    (RFC 9111 sec. 4.3.2, RFC 9110 sec. 13.1): ``fields`` minus the framing ones (RFC 9110
    sec. 15.4.5). ``etag``: the representation's own tag when it is not the entry's (a decoded
    variant). False when the full answer is due."""
    if not not_modified(
        req.method,
        req.headers,
        entry.etag if etag is None else etag,
        entry.last_modified,
        date=entry.date,
        received_at=entry.response_time,
    ):
        return False
    resp.start(304, [f for f in fields if f[0].lower() not in NOT_IN_304], content_length=None)
    return True
