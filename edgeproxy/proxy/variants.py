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
  stored gzip-compressed in S3) is stored and served as the origin sent it, like the origin
  itself would answer any client; it is never coded twice.
- What may be compressed is decided by :func:`edgeproxy.http.encoding.should_compress` (policy,
  media type, size, status, no-transform, no Content-Encoding); compression of anything but a
  small body runs in the executor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from multidict import CIMultiDict

from edgeproxy.cache.entry import Entry
from edgeproxy.cache.key import CacheKey, build_key
from edgeproxy.config import PolicyConfig
from edgeproxy.http.encoding import should_compress, variant_headers
from edgeproxy.proxy.compress import SingleFlight, compress_bytes

if TYPE_CHECKING:
    from edgeproxy.proxy.handler import Node

log = logging.getLogger("edgeproxy.variants")

MAX_MEMO = 20_000


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
            )
            entry.compress_ok = ok
        return ok

    def key_for(self, policy: PolicyConfig, key: CacheKey, bucket: str) -> CacheKey:
        memo_key = (key.hex, bucket)
        vkey = self._keys.get(memo_key)
        if vkey is None:
            headers = {name.lower(): value for name, value in key.forwarded_headers}
            vkey = build_key(policy, key.upstream_target, headers, variant=bucket)
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
            body = await store.read_range(identity, 0, identity.size)
        coded = await compress_bytes(body, bucket, executor=store.executor)
        if len(coded) >= identity.size:
            identity.compress_ok = False  # incompressible after all: serve identity
            return None
        variant = Entry(
            key_hex=vkey.hex,
            path=identity.path,
            status=identity.status,
            reason=identity.reason,
            headers=variant_headers(identity.headers, bucket),  # type: ignore[arg-type]
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
        self.produced += 1
        self.bytes_saved += identity.size - len(coded)
        return variant


def _made_from(variant: Entry, identity: Entry) -> bool:
    """The variant was made from this identity body, and shares its current freshness (after
    a revalidation of the identity entry, a new variant is made with the new header fields)."""
    return variant.source == identity.checksum and variant.response_time == identity.response_time
