"""Compressed variants (br, gzip) of stored entries: produced once, stored, served many times.

Contract:
- The identity entry is stored once (key variant ""); a br or gzip variant is produced on the
  first request that needs it, coalesced (one compression per variant and process), stored
  next to it under the key variant "br"/"gzip", and served like any stored entry, on the fast
  path too.
- A variant records the identity body it was made from (``Entry.source`` = its checksum) and
  shares its freshness: it is served only while the identity entry is fresh and unchanged;
  a new identity body, or a revalidated identity entry, makes a new variant.
- An origin answer that is already coded (Content-Encoding from the origin, e.g. objects
  stored gzip-compressed in S3) is stored as the origin sent it, under the plain key
  (``Entry.coded``), and served as is to every client that accepts its coding or sends no
  Accept-Encoding (so tiers pass it on coded); it is never coded twice. For a client that
  refuses the coding, its decoded form is the ``"identity"`` variant (key variant
  ``"identity"``), produced once like the compressed ones when the coded body is at most
  :data:`DECODE_STORE_LIMIT` and decodes to at most :data:`DECODED_LIMIT`; larger ones are
  decoded while streaming, per request (see ``Node._serve_entry``).
- What may be compressed is decided by :func:`edgeproxy.http.encoding.should_compress` (policy,
  media type, size, status, no-transform, no Content-Encoding); compression of anything but a
  small body runs in the executor.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from edgeproxy.cache.entry import Entry
from edgeproxy.cache.key import CacheKey, build_key
from edgeproxy.config import PolicyConfig
from edgeproxy.http.encoding import decoded_headers, should_compress, variant_headers
from edgeproxy.proxy.compress import INLINE_LIMIT, SingleFlight, compress_bytes, decompress_limited

if TYPE_CHECKING:
    from edgeproxy.proxy.handler import Node

log = logging.getLogger("edgeproxy.variants")

MAX_MEMO = 20_000
DECODE_STORE_LIMIT = 10 * 1024 * 1024  # coded bodies up to this get a stored decoded variant
DECODED_LIMIT = 64 * 1024 * 1024  # ... when they decode to at most this


class Variants:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.flight: SingleFlight[str, Entry | None] = SingleFlight()
        self._keys: dict[tuple[str, str], CacheKey] = {}
        self.produced = 0
        self.bytes_saved = 0

    def compress_ok(self, entry: Entry, policy: PolicyConfig) -> bool:
        """Whether variants of this stored entry may be produced (cached on the entry)."""
        ok = entry.compress_ok
        if ok is None:
            headers = CIMultiDict(entry.headers)
            ok = entry.sliced is None and should_compress(
                policy_compress=policy.compress,
                status=entry.status,
                content_type=headers.get("content-type"),
                content_encoding=headers.get("content-encoding"),
                content_length=entry.size,
                resp_cc_no_transform=entry.cc.no_transform,
                has_range=False,
                min_size=policy.compress_min_size,
                max_size=policy.compress_max_size,
            )
            entry.compress_ok = ok
        return ok

    def key_for(self, policy: PolicyConfig, key: CacheKey, bucket: str) -> CacheKey:
        memo_key = (key.hex, bucket)
        vkey = self._keys.get(memo_key)
        if vkey is None:
            headers = {name.lower(): value for name, value in key.forwarded_headers}
            # a secondary Vary variant's coded forms are keyed apart from the primary's
            variant = f"{key.variant}|{bucket}" if key.variant else bucket
            vkey = build_key(policy, key.upstream_target, headers, variant=variant)
            if len(self._keys) >= MAX_MEMO:
                self._keys.clear()
            self._keys[memo_key] = vkey
        return vkey

    def stored(self, identity: Entry, vkey: CacheKey) -> Entry | None:
        """The stored variant made from this identity body, if any (no I/O)."""
        variant = self.node.store.index.get(vkey.hex)
        if variant is not None and _made_from(variant, identity):
            return variant
        return None

    async def get(
        self, policy: PolicyConfig, key: CacheKey, identity: Entry, bucket: str
    ) -> Entry | None:
        """The variant, from the store or produced now (coalesced); None if it cannot be."""
        vkey = self.key_for(policy, key, bucket)
        store = self.node.store
        variant = await store.lookup(vkey.hex)
        if (
            variant is not None
            and _made_from(variant, identity)
            and await store.ensure_readable(variant)
        ):
            return variant
        made = await self.flight.run(vkey.hex, lambda: self._produce(vkey, identity, bucket))
        # a shared production may have started from another (older or newer) identity body
        return made if made is not None and _made_from(made, identity) else None

    async def _produce(self, vkey: CacheKey, identity: Entry, bucket: str) -> Entry | None:
        store = self.node.store
        if not await store.ensure_readable(identity):
            return None
        body = store.ram_body(identity)
        if body is None:
            body = identity.mapped
        if body is None:
            try:
                body = await store.read_range(identity, 0, identity.size)
            except FileNotFoundError:
                return None  # evicted meanwhile: the caller serves (or refetches) the entry
        if bucket == "identity":
            decoded = await self._decode(identity, body)
            if decoded is None:
                return None
            coded, headers = decoded, decoded_headers(identity.headers, identity.coded or "")
        else:
            coded = await compress_bytes(body, bucket, executor=store.executor)
            if len(coded) >= identity.size:
                identity.compress_ok = False  # incompressible after all: serve identity
                return None
            headers = variant_headers(identity.headers, bucket)  # type: ignore[arg-type]
        variant = Entry(
            key_hex=vkey.hex,
            path=identity.path,
            status=identity.status,
            reason=identity.reason,
            headers=headers,
            request_time=identity.request_time,
            response_time=identity.response_time,
            initial_age=identity.initial_age,
            lifetime=identity.lifetime,
            size=0,
            checksum="",
            body_file="",
            vary=identity.vary,
            source=identity.checksum,
        )
        writer = store.new_writer(vkey.hex)
        await writer.write(coded)
        if not await store.publish(writer, variant):
            return None
        if bucket != "identity":
            self.produced += 1
            self.bytes_saved += identity.size - len(coded)
        return variant

    async def _decode(self, coded_entry: Entry, body: bytes | memoryview) -> bytes | None:
        """The decoded body of an origin-coded entry; None when too large to store or when
        the origin's bytes do not decode (then the caller decodes while streaming, and cuts
        the connection if the stream is bad)."""
        coding = coded_entry.coded
        if coding is None or coded_entry.size > DECODE_STORE_LIMIT or coded_entry.undecodable:
            return None
        try:
            if coded_entry.size <= INLINE_LIMIT:
                decoded = decompress_limited(body, coding, DECODED_LIMIT)
            else:
                loop = asyncio.get_running_loop()
                decoded = await loop.run_in_executor(
                    self.node.store.executor, decompress_limited, body, coding, DECODED_LIMIT
                )
            if decoded is None:  # larger than DECODED_LIMIT once decoded
                coded_entry.undecodable = True
            return decoded
        except ValueError as exc:
            log.warning("cannot decode %s (%s from the origin): %s", coded_entry.path, coding, exc)
            coded_entry.undecodable = True  # not again for this version: decoded per request
            return None


def _made_from(variant: Entry, identity: Entry) -> bool:
    """The variant was made from this identity body, and shares its current freshness (after
    a revalidation of the identity entry, a new variant is made with the new header fields)."""
    return variant.source == identity.checksum and variant.response_time == identity.response_time
