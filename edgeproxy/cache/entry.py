"""Stored metadata of one cached response, and its (de)serialisation.

Contract: an :class:`Entry` is what the store publishes for a key: status, stored header fields
(hop-by-hop fields already removed, RFC 9111 sec. 3.1), the times needed for the age calculation
(RFC 9111 sec. 4.2.3), the freshness lifetime after the cache policy was applied, the body's size
and xxh3-64 checksum, the body file's name, and the request header values that Vary selected
(RFC 9111 sec. 4.1). Runtime-only fields (parsed Cache-Control, pre-serialised header block, the
body mapped in memory) are never persisted.
"""

from __future__ import annotations

import json
from typing import Any

from multidict import CIMultiDict

from edgeproxy.http.cache_control import CacheControl, select_response_cache_control
from edgeproxy.http.encoding import coding_of

FORMAT_VERSION = 1

# RFC 9213 targeted fields obeyed by this process's node (set once at node start)
TARGETED_FIELDS: tuple[str, ...] = ("EdgeProxy-Cache-Control", "CDN-Cache-Control")


class Entry:
    """One stored response. Mutable only through the store (revalidation updates headers)."""

    __slots__ = (
        "body_file",
        "cc",
        "checksum",
        "coded",
        "compress_ok",
        "date",
        "etag",
        "fresh_until",
        "handle",
        "head_cache",
        "headers",
        "initial_age",
        "key_hex",
        "last_modified",
        "lifetime",
        "mapped",
        "path",
        "range_head_cache",
        "reason",
        "request_time",
        "response_time",
        "size",
        "sliced",
        "source",
        "status",
        "undecodable",
        "vary",
        "verified",
    )

    def __init__(
        self,
        *,
        key_hex: str,
        path: str,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        request_time: float,
        response_time: float,
        initial_age: float,
        lifetime: float,
        size: int,
        checksum: str,
        body_file: str,
        vary: dict[str, str | None] | None = None,
        verified: bool = True,
        sliced: tuple[int, int] | None = None,
        source: str | None = None,
    ) -> None:
        self.key_hex = key_hex
        self.path = path
        self.status = status
        self.reason = reason
        self.request_time = request_time
        self.response_time = response_time
        self.initial_age = initial_age
        self.lifetime = lifetime
        self.size = size
        self.checksum = checksum
        self.body_file = body_file
        self.vary = vary
        self.verified = verified
        # a slice manifest: (total length, slice size); its body is empty and the bytes live
        # in the slice entries (key variant "slice:N"), all of this version (same ETag)
        self.sliced = sliced
        # a compressed variant: the checksum of the identity body it was made from
        self.source = source
        self.compress_ok: bool | None = None  # runtime: may variants be made (per policy)
        # runtime: the origin-coded body did not decode into a stored variant (too large or
        # malformed): clients refusing the coding get it decoded while streaming
        self.undecodable = False
        self.mapped: Any = None  # mmap of the body, opened lazily by the store
        self.handle: Any = None  # the open body file next to ``mapped`` (for sendfile)
        self.head_cache: Any = None  # pre-serialised response head, built by the server
        self.range_head_cache: Any = None  # the same for a 206, up to its Content-Range
        self.set_headers(headers)

    def set_headers(self, headers: list[tuple[str, str]]) -> None:
        """Replace the stored header fields and everything derived from them."""
        self.headers = headers
        md = CIMultiDict(headers)
        self.cc: CacheControl = select_response_cache_control(md, TARGETED_FIELDS)
        self.etag: str | None = md.get("etag")
        self.date: str | None = md.get("date")
        self.last_modified: str | None = md.get("last-modified")
        # the origin's own coding ("br"/"gzip", RFC 9110 sec. 8.4) of a pre-compressed object:
        # served as is to clients that accept it (or say nothing), decoded for the others
        coded = coding_of(md.get("content-encoding")) if self.source is None else None
        self.coded: str | None = coded if coded == "br" or coded == "gzip" else None
        # RFC 9111 sec. 4.2.3: the response is fresh while current_age < lifetime, i.e. while
        # now - response_time + initial_age < lifetime.
        self.fresh_until = self.response_time - self.initial_age + self.lifetime
        self.head_cache = None
        self.range_head_cache = None

    def header_multidict(self) -> CIMultiDict[str]:
        return CIMultiDict(self.headers)

    def age(self, now: float) -> float:
        """current_age (RFC 9111 sec. 4.2.3): corrected initial age plus resident time."""
        return self.initial_age + max(0.0, now - self.response_time)

    def ttl(self, now: float) -> int:
        """Remaining freshness in seconds (RFC 9211 sec. 2.7 ``ttl``); negative when stale."""
        return int(self.fresh_until - now)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "v": FORMAT_VERSION,
                "key": self.key_hex,
                "path": self.path,
                "status": self.status,
                "reason": self.reason,
                "headers": self.headers,
                "request_time": self.request_time,
                "response_time": self.response_time,
                "initial_age": self.initial_age,
                "lifetime": self.lifetime,
                "size": self.size,
                "checksum": self.checksum,
                "body": self.body_file,
                "vary": self.vary,
                "sliced": list(self.sliced) if self.sliced else None,
                "source": self.source,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Entry:
        """Parse stored metadata; raises ValueError on anything malformed (the caller drops it)."""
        try:
            d = json.loads(raw)
            if d.get("v") != FORMAT_VERSION:
                raise ValueError(f"unknown metadata version {d.get('v')!r}")
            headers = [(str(n), str(v)) for n, v in d["headers"]]
            vary = d.get("vary")
            sliced = d.get("sliced")
            return cls(
                key_hex=str(d["key"]),
                path=str(d["path"]),
                status=int(d["status"]),
                reason=str(d["reason"]),
                headers=headers,
                request_time=float(d["request_time"]),
                response_time=float(d["response_time"]),
                initial_age=float(d["initial_age"]),
                lifetime=float(d["lifetime"]),
                size=int(d["size"]),
                checksum=str(d["checksum"]),
                body_file=str(d["body"]),
                vary=dict(vary) if vary is not None else None,
                verified=False,
                sliced=(int(sliced[0]), int(sliced[1])) if sliced else None,
                source=d.get("source"),
            )
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"bad entry metadata: {exc}") from exc
