"""The request pipeline of one node: policy -> key -> lookup -> decide -> fetch/serve.

Contract:
- :meth:`Node.try_fast` answers a plain fresh hit synchronously (no I/O, no task) or returns
  False; :meth:`Node.handle` runs everything else as a small state machine whose outcome is one
  :class:`Phase` (logged and counted).
- Only what is in the cache key is forwarded upstream (plus ``Via`` and validators).
- Responses are stored only when RFC 9111 sec. 3 allows it and the policy does not forbid it;
  bodies are streamed to the client and the store at once; a failed upstream transfer is never
  stored and the client's connection is cut, never ended as if complete.
- Concurrent misses for one key make one upstream request (in-process single flight; waiters are
  served from the stored entry with ``collapsed`` in their Cache-Status).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import os
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp
from multidict import CIMultiDict

from edgeproxy.accesslog import note_phase, note_upstream
from edgeproxy.cache.bans import BanList, expired_lifetime, read_ban_file
from edgeproxy.cache.entry import Entry
from edgeproxy.cache.key import (
    BadRequestTarget,
    CacheKey,
    build_key,
    normalize_path,
    split_target,
    vary_variant,
)
from edgeproxy.cache.store import UNWRITABLE_ERRNOS
from edgeproxy.config import Config, PolicyConfig
from edgeproxy.http import cors
from edgeproxy.http.cache_control import (
    CacheControl,
    parse_cache_control,
    request_no_cache,
    select_response_cache_control,
)
from edgeproxy.http.cache_status import append_cache_status, cache_status_member, sf_token_or_string
from edgeproxy.http.conditional import (
    if_range_allows_partial,
    not_modified_matches,
)
from edgeproxy.http.dates import format_http_date
from edgeproxy.http.encoding import (
    acceptable_codings,
    coding_of,
    decoded_headers,
    identity_headers,
    must_decode,
    negotiate,
    should_compress,
    variant_etag,
)
from edgeproxy.http.freshness import (
    Freshness,
    apply_policy_ttl,
    corrected_initial_age,
    decide,
    fields_to_strip,
    freshness_lifetime,
    stale_if_error_ok,
    storability,
)
from edgeproxy.http.headers import (
    connection_listed,
    same_origin_path,
    storable_headers,
    strip_hop_by_hop,
    update_stored_headers,
)
from edgeproxy.http.ranges import UNSATISFIABLE, parse_content_range, parse_range, slice_bounds
from edgeproxy.metrics import (
    REQUEST_MARK,
    TTFB_BUCKETS,
    RequestMark,
    Traffic,
    mark_phase,
    mark_request,
)
from edgeproxy.popularity import Popularity
from edgeproxy.presign import PresignVerifier
from edgeproxy.proxy.answers import answer_304
from edgeproxy.proxy.coalesce import (
    Bypass,
    Coalescer,
    Fill,
    FillHead,
    Follow,
    Lead,
    LocalFill,
    Outcome,
)
from edgeproxy.proxy.compress import decode_chunks
from edgeproxy.proxy.fillread import FillFailed, fill_chunks
from edgeproxy.proxy.s3 import map_s3_status, s3_error_code
from edgeproxy.proxy.server import PACED_BODY_MIN
from edgeproxy.proxy.slices import Slicer, same_version
from edgeproxy.proxy.upstream import NoSuchTarget, Upstream, UpstreamError
from edgeproxy.proxy.variants import Variants
from edgeproxy.signing import PARAMS, Refusal, parse_keys, strip_params
from edgeproxy.signing import verify as verify_signed_url
from edgeproxy.tls import viewer_answer

if TYPE_CHECKING:
    from edgeproxy.accesslog import AccessLog
    from edgeproxy.cache.epoch import SharedEpoch
    from edgeproxy.cache.store import BodyWriter, DiskStore
    from edgeproxy.proxy.server import HttpConnection, Request, ResponseWriter

log = logging.getLogger("edgeproxy.handler")


class FastRange(NamedTuple):
    """Where the bytes of a fast single-range hit are (see ``Node._fast_range_plan``)."""

    source: Entry  # the entry whose body holds them (the manifest's slice, or the entry)
    body: Any  # its body: bytes in RAM or the mapping
    offset: int  # of the first byte in ``body``
    first: int  # the range, in the whole representation (RFC 9110 sec. 14.1.1)
    last: int
    total: int  # the representation's length


# Request fields that take a request off the fast path (they need the full pipeline); a plain
# Range only when the fast path cannot answer it (Node._fast_range_plan).
FAST_BLOCKERS = frozenset(
    {
        "range",
        "if-none-match",
        "if-modified-since",
        "if-range",
        "if-match",
        "if-unmodified-since",
        "cache-control",
        "pragma",
        "authorization",
        "via",
    }
)
# Stored fields the cache regenerates itself on every answer.
NOT_STORED = frozenset({"age", "cache-status", "content-length", "set-cookie"})
BODY_READ = 1024 * 1024  # bytes of a stored body read per step when it is not mapped
# set once a request's stored body vanished under it (evicted): it is retried as a miss once
_RETRIED: contextvars.ContextVar[bool] = contextvars.ContextVar("edgeproxy_retried", default=False)
DECODE_READ = 256 * 1024  # bytes of a stored coded body read per step when decoding per request
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
WAIT_TIMEOUT = 30.0
FILL_READ_CHUNK = 256 * 1024
LEADER_PUBLISH_WAIT = 2.0
# uncacheable answers that make later requests for the key skip the queue for a while
HIT_FOR_MISS_REASONS = frozenset(
    {"private", "no-store", "set-cookie", "vary-star", "no-freshness", "too-large", "status"}
)
MAX_FAST_MEMO = 20_000
MISSED_PATHS = 10_000  # paths whose misses are counted (the report's evidence)


class Phase(enum.Enum):
    """What happened to one request (Pingora's CachePhase, in spirit)."""

    HIT = "hit"
    MISS = "miss"
    COLLAPSED = "collapsed"
    STALE_SERVED = "stale"
    REVALIDATED = "revalidated"
    EXPIRED = "expired"
    PASS = "pass"
    ERROR = "error"
    BAD_REQUEST = "bad-request"

    def as_str(self) -> str:
        return self.value


class Node:
    """One edgeproxy node: the cache pipeline behind the HTTP server."""

    def __init__(
        self,
        config: Config,
        store: DiskStore,
        upstream: Upstream,
        coalescer: Coalescer,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``environ`` (default ``os.environ``) holds the signed-URL keys of the policies."""
        self.config = config
        self.store = store
        self.upstream = upstream
        self.name = config.node.name
        self.sf_name = sf_token_or_string(self.name)
        self.via_value = f"1.1 {self.name}"
        self.coalescer = coalescer
        self.targeted = config.node.targeted_cache_control
        # RFC 9213 sec. 2.1: targeted fields are not sent on by the outermost tier
        self.not_downstream = (
            frozenset(name.lower() for name in self.targeted)
            if config.node.strip_targeted
            else frozenset()
        )
        self.slicer = Slicer(self)
        self.variants = Variants(self)
        self.epoch: SharedEpoch | None = None  # set on multi-process nodes
        self.seen_epoch = 0
        self.seen_bans = 0
        # invalidation bans (admin API); ``items`` empty = the hit path pays one attribute read
        self.bans = BanList()
        self.access_log: AccessLog | None = None  # set when node.access_log is not "off"
        self._memo: dict[str, tuple[PolicyConfig, CacheKey]] = {}
        self._forwarded_names: dict[str, frozenset[str]] = {}
        self.fast_hits = 0  # hits answered without a task (a share of the HIT phase)
        self.connections_refused = 0  # closed at accept by the server (max_connections)
        self.https_port = 443  # the TLS listener's port, named in redirect-to-https answers
        self.counters: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.popularity = Popularity()  # decayed requests per path (admin GET /popular)
        # metrics (edgeproxy.metrics): the hit path's own TTFB buckets, their sum, its body
        # bytes and its non-200 answers; the slow path's per-answer figures and missed paths
        self.fast_ttfb = [0] * (len(TTFB_BUCKETS) + 1)
        self.fast_ttfb_sum = 0.0
        self.fast_bytes = 0
        self.fast_odd_status: dict[int, int] = {}
        self.traffic = Traffic(Popularity(max_paths=MISSED_PATHS))
        # signed URLs: keys per environment variable (hmac), the presigned-URL verifier (S3),
        # refusals by reason code
        self.url_keys, self.presign = _url_verifiers(config, upstream, environ)
        self.refused: dict[str, int] = {}

    # ---- helpers ---------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Wait for background fills and refreshes (bounded); cancel what is left."""
        if self._background:
            _, pending = await asyncio.wait(set(self._background), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    def _count(self, phase: Phase) -> None:
        self.counters[phase.value] = self.counters.get(phase.value, 0) + 1
        mark_phase(phase.value, time.monotonic())  # the request's result and TTFB end
        if self.access_log is not None:
            note_phase(phase.value)

    def _policy_and_key(self, target: str, hdict: dict[str, str]) -> tuple[PolicyConfig, CacheKey]:
        """Policy (first match on the normalized path) and cache key; may raise BadRequest."""
        memo = self._memo.get(target)
        if memo is not None:  # only policies without keyed headers are memoized
            return memo
        path = normalize_path(split_target(target)[0])
        policy = self.config.policy_for(path)
        key = build_key(policy, target, hdict)
        if not policy.header_keys:
            if len(self._memo) >= MAX_FAST_MEMO:
                self._memo.clear()
            self._memo[target] = (policy, key)
        return policy, key

    def _loop_detected(self, via: str | None) -> bool:
        if not via:
            return False
        for hop in via.split(","):
            parts = hop.split()
            if len(parts) >= 2 and parts[1] == self.name:
                return True
        return False

    def _head_fields(self, entry: Entry, policy: PolicyConfig) -> list[tuple[str, str]]:
        fields = list(entry.headers)
        if self.not_downstream:
            fields = [f for f in fields if f[0].lower() not in self.not_downstream]
        fields.append(("Via", self.via_value))
        fields.extend(policy.response_headers)
        if policy.cors is not None:  # the stored Access-Control-* out, the static part in
            fields = cors.merge(policy.cors, fields, None)
        return fields

    # ---- fast path -------------------------------------------------------------------------

    def check_epoch(self) -> None:
        """Another worker removed entries: forget this process's view of the store; the ban
        list changed: re-read it (see :mod:`edgeproxy.cache.epoch`)."""
        epoch = self.epoch
        if epoch is not None:
            view, bans = epoch.values()
            if view != self.seen_epoch:
                self.seen_epoch = view
                self.seen_bans = bans
                self._reload_shared_state()
            elif bans != self.seen_bans:
                self.seen_bans = bans
                self._reload_bans()

    def _reload_shared_state(self) -> None:
        """After another process changed the store: forget the view, re-read the ban list
        (a small file, read at once so no request after the new epoch misses a ban)."""
        self.store.forget_all()
        self.bans = read_ban_file(self.config.store.path)[0]

    def _reload_bans(self) -> None:
        """Bans were added: re-read the list (they apply on lookup, the in-memory view stays).
        Retiring bans bumps the view epoch instead (see admin.Invalidations._persist)."""
        self.bans = read_ban_file(self.config.store.path)[0]

    def try_fast(self, req: Request, conn: HttpConnection) -> bool:
        """Answer a fresh, plain hit from RAM or a mapped body without a task; else False."""
        if self.epoch is not None:
            self.check_epoch()
        method = req.method
        if method != "GET" and method != "HEAD":
            return False
        hdict = req.hdict
        range_value = None
        for name in hdict:
            if name in FAST_BLOCKERS:
                if name != "range" or method != "GET":
                    return False
                range_value = hdict[name]  # a plain Range (no If-Range): see _fast_range
        try:
            policy, key = self._policy_and_key(req.target, hdict)
        except BadRequestTarget:
            return False
        if method not in policy.methods:
            return False
        if policy.viewer_protocol != "allow-all" and not req.tls:
            return False  # the slow path redirects or refuses it
        store = self.store
        entry = store.index.get(key.hex)
        if entry is None or not entry.verified or entry.cc.no_cache:
            return False
        if entry.sliced is not None and range_value is None:
            return False
        vary = entry.vary
        if vary is not None and not self._vary_matches_fast(vary, policy, hdict):
            return False
        plan = None
        if range_value is not None:  # cheap refusals first (before bans and signatures)
            plan = self._fast_range_plan(policy, key, entry, range_value, hdict)
            if plan is None:
                return False
        now = time.time()
        if now >= entry.fresh_until:
            return False
        bans = self.bans
        if bans.items and bans.match(entry.path, entry.response_time) is not None:
            return False  # invalidated: the slow path marks it stale or drops it
        if policy.signed_urls is not None and self._url_refusal(req, policy, key, now):
            return False  # the slow path answers 403
        if plan is not None:
            return self._fast_range(req, conn, policy, key, entry, plan, now)
        coded = entry.coded
        if coded is not None and must_decode(hdict.get("accept-encoding"), coded):
            return False  # the origin's coding is refused: the slow path decodes
        if policy.unacceptable_encoding == "406" and "accept-encoding" in hdict:
            return False  # the slow path checks that the answer's coding is acceptable
        if policy.compress:
            ok = entry.compress_ok
            if ok is None:
                if "accept-encoding" in hdict:
                    return False  # the slow path decides whether variants may be made
            elif ok:
                bucket = negotiate(hdict.get("accept-encoding"))
                if bucket == "br" or bucket == "gzip":
                    variant = self.variants.stored(
                        entry, self.variants.key_for(policy, key, bucket)
                    )
                    if variant is None or not variant.verified:
                        return False
                    store.touch(key.hex, now)
                    entry = variant  # same freshness as the identity entry it was made from
        body = store.ram.get(entry.key_hex)
        if body is None:
            body = entry.mapped
            if body is None or entry.size > PACED_BODY_MIN:
                return False
            store.served_mapped(entry)
        elif len(body) > PACED_BODY_MIN:
            return False  # (ram_object_max over 1 MiB) the writer sends it paced
        store.touch(entry.key_hex, now)
        head = self._hit_head(entry, policy, now)
        if not req.keep_alive:
            head = head[:-2] + b"Connection: close\r\n\r\n"
        elif req.version == "1.0":
            head = head[:-2] + b"Connection: keep-alive\r\n\r\n"
        cors_rules = policy.cors
        if cors_rules is not None and "origin" in hdict:  # the cached head has the static part
            head = head[:-2] + cors_rules.actual_block(hdict["origin"]) + b"\r\n"
        # small answers are written at the end of the loop turn (HttpConnection.write_soon);
        # larger ones at once (held, they measured slower: 100 KiB from RAM 22k vs 33k req/s)
        if method == "HEAD":
            conn.write_soon(head)
        elif len(body) <= 65536:
            conn.write_soon(head + body)
        elif (
            conn.sendfile_fd >= 0
            and len(body) <= conn.sendfile_max
            and body is entry.mapped
            and entry.handle is not None
        ):
            # the head, then the body straight from the page cache (sendfile)
            conn.send_body(entry.handle.fileno(), memoryview(body), head=head)
        else:
            conn.writelines([head, memoryview(body)])  # one writev
        self._fast_hit_done(req, key.path, entry.status, 0 if method == "HEAD" else len(body), now)
        return True

    def _fast_hit_done(self, req: Request, path: str, status: int, nbytes: int, now: float) -> None:
        """Account an answer of the fast path: the counters, TTFB, bytes, status and access
        log line the slow path's ``_count`` and ``handle`` give (without a request mark)."""
        counters = self.counters
        counters["hit"] = counters.get("hit", 0) + 1
        self.fast_hits += 1
        ttfb = time.monotonic() - req.received_at
        self.fast_ttfb[bisect_left(TTFB_BUCKETS, ttfb)] += 1
        self.fast_ttfb_sum += ttfb
        self.fast_bytes += nbytes
        if status != 200:
            odd = self.fast_odd_status
            odd[status] = odd.get(status, 0) + 1
        self.popularity.hit(path, now)
        if self.access_log is not None:
            self.access_log.write(req, status, nbytes, "hit", None, time.monotonic())

    def _fast_range_plan(
        self,
        policy: PolicyConfig,
        key: CacheKey,
        entry: Entry,
        value: str,
        hdict: dict[str, str],
    ) -> FastRange | None:
        """For a GET with one Range (RFC 9110 sec. 14.2) on ``entry``: where its bytes are
        when the fast path can send them, i.e. one satisfiable range of the stored body, or
        of the one slice of a slice manifest that holds the whole range, in RAM or mapped
        (at most 1 MiB from a mapping, as for whole hits: more goes out in drained chunks).
        None for anything else (several ranges, 416, bad syntax, a range across slices, a
        slice not held, an origin-coded entry): the slow path answers it."""
        if entry.coded is not None or entry.status != 200:
            return None
        if policy.unacceptable_encoding == "406" and "accept-encoding" in hdict:
            return None  # the slow path checks that identity is acceptable
        sliced = entry.sliced
        total = entry.size if sliced is None else sliced[0]
        ranges = parse_range(value, total)
        if not isinstance(ranges, list) or len(ranges) != 1:
            return None
        first, last = ranges[0]
        store = self.store
        source = entry
        offset = first
        if sliced is not None:
            slice_size = sliced[1]
            index = first // slice_size
            if last // slice_size != index:
                return None
            part = store.index.get(self.slicer.slice_key(policy, key, index).hex)
            start, end = slice_bounds(index, slice_size, total)
            if (
                part is None
                or not part.verified
                or part.size != end - start + 1
                or not same_version(entry, part.etag, part.last_modified)
            ):
                return None
            source, offset = part, first - start
        if last - first >= PACED_BODY_MIN:
            return None  # the writer sends it paced
        body = store.ram.get(source.key_hex)
        if body is None:
            body = source.mapped
            if body is None:
                return None
            store.served_mapped(source)
        return FastRange(source, body, offset, first, last, total)

    def _fast_range(
        self,
        req: Request,
        conn: HttpConnection,
        policy: PolicyConfig,
        key: CacheKey,
        entry: Entry,
        plan: FastRange,
        now: float,
    ) -> bool:
        """Send the 206 of :meth:`_fast_range_plan` (``entry`` checked fresh, not banned,
        its URL signature valid by :meth:`try_fast`): the same answer as the slow path
        (:meth:`_serve_entry`, :meth:`Slicer.serve`)."""
        source, body, offset, first, last, total = plan
        store = self.store
        store.touch(entry.key_hex, now)
        if source is not entry:
            store.touch(source.key_hex, now)
        prefix = self._hit_head(entry, policy, now, status=206)
        count = last - first + 1
        head = prefix + b"Content-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n" % (
            first,
            last,
            total,
            count,
        )
        if not req.keep_alive:
            head += b"Connection: close\r\n"
        elif req.version == "1.0":
            head += b"Connection: keep-alive\r\n"
        cors_rules = policy.cors
        if cors_rules is not None and "origin" in req.hdict:
            head += cors_rules.actual_block(req.hdict["origin"])
        head += b"\r\n"
        payload = memoryview(body)[offset : offset + count]
        if count <= 65536:
            conn.write_soon(head + payload)
        elif (
            conn.sendfile_fd >= 0
            and count <= conn.sendfile_max
            and body is source.mapped
            and source.handle is not None
        ):
            # the head, then the bytes straight from the page cache (sendfile)
            conn.send_body(source.handle.fileno(), payload, offset, head)
        else:
            conn.writelines([head, payload])  # one writev
        self._fast_hit_done(req, key.path, 206, count, now)
        return True

    def _vary_matches_fast(
        self, vary: dict[str, str | None], policy: PolicyConfig, hdict: dict[str, str]
    ) -> bool:
        """:meth:`_vary_matches` over the forwarded view, from the request's plain dict (S3
        answers carry ``Vary: Origin``: hits on them must stay on the fast path)."""
        forwarded = self._forwarded_names.get(policy.name)
        if forwarded is None:
            forwarded = frozenset((*policy.header_keys, *policy.forward_headers))
            self._forwarded_names[policy.name] = forwarded
        for name, stored in vary.items():
            if name == "*":
                return False
            value = hdict.get(name) if name in forwarded else None
            if (None if value is None else _normalize_vary_value([value])) != stored:
                return False
        return True

    def _hit_head(self, entry: Entry, policy: PolicyConfig, now: float, status: int = 0) -> bytes:
        """:meth:`_build_hit_head`, built at most once a second per entry (Age and the
        Cache-Status ttl change by the second): the 200's in ``head_cache``, the 206 prefix in
        ``range_head_cache``."""
        second = int(now)
        cached = entry.range_head_cache if status == 206 else entry.head_cache
        if cached is not None and cached[0] == second:
            return cached[1]
        head = self._build_hit_head(entry, policy, now, status)
        if status == 206:
            entry.range_head_cache = (second, head)
        else:
            entry.head_cache = (second, head)
        return head

    def _build_hit_head(
        self, entry: Entry, policy: PolicyConfig, now: float, status: int = 0
    ) -> bytes:
        """The head of a fresh hit on ``entry``, ended (Content-Length, blank line); with
        ``status`` 206 only up to the Cache-Status field (the caller adds Content-Range,
        Content-Length and the end)."""
        member = cache_status_member(self.sf_name, hit=True, ttl=entry.ttl(now))
        if status == 206:
            lines = ["HTTP/1.1 206 Partial Content\r\n"]
        else:
            lines = [f"HTTP/1.1 {entry.status} {entry.reason}\r\n"]
        for name, value in self._head_fields(entry, policy):
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Age: {int(entry.age(now))}\r\n")
        lines.append(f"Cache-Status: {member}\r\n")
        if status != 206:
            lines.append(f"Content-Length: {entry.size}\r\n\r\n")
        return "".join(lines).encode("latin-1")

    # ---- full pipeline ---------------------------------------------------------------------

    async def handle(self, req: Request, resp: ResponseWriter) -> None:
        mark = RequestMark()  # this answer's cache result and TTFB (edgeproxy.metrics)
        token = REQUEST_MARK.set(mark)
        try:
            await self._handle_logged(req, resp)
        finally:
            REQUEST_MARK.reset(token)
            self.traffic.answered(
                mark, resp.status, resp.bytes_sent, req.received_at, time.monotonic()
            )

    async def _handle_logged(self, req: Request, resp: ResponseWriter) -> None:
        access_log = self.access_log
        if access_log is None:
            await self._handle(req, resp)
            return
        begun = access_log.begin()
        failed = True
        try:
            await self._handle(req, resp)
            failed = False
        finally:
            access_log.end(begun, req, resp, failed)

    async def _handle(self, req: Request, resp: ResponseWriter) -> None:
        self.check_epoch()
        if self._loop_detected(req.hdict.get("via")):
            self._count(Phase.ERROR)
            await self._simple(
                resp,
                508,
                "request loop detected (this node is already in Via)",
                member=cache_status_member(self.sf_name, fwd="bypass", detail="loop"),
            )
            return
        try:
            policy, key = self._policy_and_key(req.target, req.hdict)
        except BadRequestTarget as exc:
            self._count(Phase.BAD_REQUEST)
            resp.keep_alive = False  # as nginx does: no more requests on a confused stream
            await self._simple(resp, 400, f"bad request target: {exc}")
            return
        if policy.viewer_protocol != "allow-all" and not req.tls:
            await self._viewer_protocol(req, resp, policy)
            return
        if policy.cors is not None:
            if cors.is_preflight(req.method, req.hdict):
                await self._preflight(req, resp, policy, policy.cors)
                return
            resp = _cors_response(resp, policy.cors, req.hdict.get("origin"))
        if policy.signed_urls is not None:  # before any lookup
            refusal = self._url_refusal(req, policy, key, time.time())
            if refusal is not None:
                if req.body is not None:
                    resp.keep_alive = False  # its body stays unread: say so, then close
                await self._refuse(resp, policy, refusal)
                return
        self.popularity.hit(key.path, time.time())
        mark_request(key.path, policy.name)
        if req.method in ("GET", "HEAD") and req.method in policy.methods:
            await self._cached_request(req, resp, policy, key)
            return
        if policy.other_methods == "refuse" or self.upstream.is_s3:
            allow = ", ".join(policy.methods)
            await self._simple(
                resp, 405, f"method {req.method} not allowed here", headers=[("Allow", allow)]
            )
            return
        await self._pass_through(req, resp, policy, key)

    async def _viewer_protocol(
        self, req: Request, resp: ResponseWriter, policy: PolicyConfig
    ) -> None:
        """A plain-HTTP request under a policy that wants HTTPS: 301 to the https:// URL, or
        403 (CloudFront's viewer protocol policy; see :func:`edgeproxy.tls.viewer_answer`)."""
        status, location, text = viewer_answer(
            policy.viewer_protocol, req.method, req.target, req.hdict.get("host"), self.https_port
        )
        if status == 400:
            self._count(Phase.BAD_REQUEST)  # no Host to redirect to
        headers = [("Location", location)] if location is not None else []
        member = cache_status_member(self.sf_name, fwd="bypass", detail="viewer-protocol")
        await self._simple(resp, status, text, headers=headers, member=member)

    def _url_refusal(
        self, req: Request, policy: PolicyConfig, key: CacheKey, now: float
    ) -> Refusal | None:
        """Why the policy's signed-URL check refuses ``req`` (None: it passes). The path
        checked is the normalized one that is keyed and fetched (``key.path``)."""
        signed = policy.signed_urls
        assert signed is not None
        query = req.target.partition("?")[2]
        if signed.type == "hmac":
            refusal = verify_signed_url(key.path, query, self.url_keys[signed.keys_env], now=now)
        elif self.presign is not None:
            refusal = self.presign.verify(req.method, key.path, query, req.hdict, now=now)
        else:  # the config requires origin credentials; never reached
            refusal = Refusal("signature-unverifiable", "no credentials to verify it with")
        if refusal is not None and not signed.required and refusal.code == "signature-missing":
            return None  # optional signatures: an unsigned request passes, a bad one does not
        return refusal

    async def _refuse(self, resp: ResponseWriter, policy: PolicyConfig, refusal: Refusal) -> None:
        """403 for a URL that is not (validly) signed; never stored downstream."""
        self.refused[refusal.code] = self.refused.get(refusal.code, 0) + 1
        await self._simple(
            resp,
            403,
            f"forbidden: {refusal.message}",
            headers=[("Cache-Control", "no-store"), *policy.response_headers],
            member=cache_status_member(self.sf_name, fwd="bypass", detail=refusal.code),
        )

    async def _preflight(
        self, req: Request, resp: ResponseWriter, policy: PolicyConfig, rules: cors.CorsRules
    ) -> None:
        """A CORS preflight, answered here and never forwarded: 204 or 403."""
        hdict = req.hdict
        answer = cors.preflight(
            rules,
            hdict["origin"],
            hdict["access-control-request-method"],
            hdict.get("access-control-request-headers"),
        )
        member = cache_status_member(self.sf_name, fwd="bypass", detail="cors-preflight")
        if answer.status == 204:
            fields = [*answer.fields, *policy.response_headers, ("Cache-Status", member)]
            resp.start(204, fields, content_length=None)
            return
        await self._simple(
            resp,
            answer.status,
            answer.reason or "CORS preflight refused",
            headers=[*answer.fields, *policy.response_headers],
            member=member,
        )

    async def _simple(
        self,
        resp: ResponseWriter,
        status: int,
        text: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        member: str | None = None,
    ) -> None:
        body = (text + "\n").encode()
        fields = [("Content-Type", "text/plain; charset=utf-8"), *headers]
        if member is None:
            member = cache_status_member(self.sf_name, fwd="bypass")
        fields.append(("Cache-Status", member))
        resp.start(status, fields, content_length=len(body))
        await resp.write(body)

    # ---- cacheable methods -----------------------------------------------------------------

    async def _cached_request(
        self, req: Request, resp: ResponseWriter, policy: PolicyConfig, key: CacheKey
    ) -> None:
        headers = req.headers
        if (
            policy.unacceptable_encoding == "406"
            and negotiate(req.hdict.get("accept-encoding")) is None
        ):
            await self._not_acceptable(resp)
            return
        req_cc = parse_cache_control(headers.getall("cache-control", []))
        pragma_no_cache = request_no_cache(req_cc, headers)
        entry = await self.store.lookup(key.hex)
        if entry is not None and self.bans.items:
            entry = await self._apply_ban(entry, policy, key)
        fwd = "uri-miss"
        if entry is not None and entry.vary is not None:
            view = _forwarded_view(policy, headers)
            if not self._vary_matches(entry, view):
                # RFC 9111 sec. 4.1: "a cache MAY store multiple responses for a target URI
                # with different selecting header values": the others live under a secondary
                # key made from the primary's Vary names and this request's values
                fwd = "vary-miss"
                key, entry = self._vary_key(policy, key, entry.vary, view), None
                if key.variant:
                    entry = await self.store.lookup(key.hex)
                    if entry is not None and self.bans.items:
                        entry = await self._apply_ban(entry, policy, key)
                    if entry is not None and not self._vary_matches(entry, view):
                        entry = None
        if entry is not None and not await self.store.ensure_readable(entry):
            entry = None
        now = time.time()
        if entry is None:
            self.store.record_miss(key.hex, 0, now)  # the admission filter learns demand
        if entry is not None:
            state = decide(
                now=now,
                response_time=entry.response_time,
                corrected_initial_age=entry.initial_age,
                lifetime=entry.lifetime,
                resp_cc=entry.cc,
                req_cc=req_cc,
                req_pragma_no_cache=pragma_no_cache,
                stale_while_revalidate_default=policy.stale_while_revalidate,
            )
            if state is Freshness.FRESH and entry.sliced is not None:
                self._count(Phase.HIT)
                member = cache_status_member(self.sf_name, hit=True, ttl=entry.ttl(now))
                await self.slicer.serve(req, resp, policy, key, entry, member)
                return
            if state is Freshness.FRESH and policy.compress and "range" not in headers:
                bucket = negotiate(headers.get("accept-encoding"))
                if (bucket == "br" or bucket == "gzip") and self.variants.compress_ok(
                    entry, policy
                ):
                    variant = await self.variants.get(policy, key, entry, bucket)
                    if variant is not None:
                        self._count(Phase.HIT)
                        member = cache_status_member(self.sf_name, hit=True, ttl=entry.ttl(now))
                        await self._serve_entry(req, resp, variant, policy, member)
                        return
            if state is Freshness.FRESH:
                self._count(Phase.HIT)
                await self._serve_entry(
                    req,
                    resp,
                    entry,
                    policy,
                    cache_status_member(self.sf_name, hit=True, ttl=entry.ttl(now)),
                )
                return
            if state is Freshness.STALE_WHILE_REVALIDATE and entry.sliced is None:
                self._count(Phase.STALE_SERVED)
                self._background_revalidate(entry, policy, key)
                await self._serve_entry(
                    req,
                    resp,
                    entry,
                    policy,
                    cache_status_member(
                        self.sf_name, hit=True, ttl=entry.ttl(now), detail="stale-while-revalidate"
                    ),
                )
                return
            # RFC 9211 sec. 2.2: "request" when the request's own directives forced the
            # forward (no-cache, Pragma, max-age/min-fresh on an entry that is still fresh)
            forced = req_cc.no_cache or pragma_no_cache
            if not forced and now < entry.fresh_until and not entry.cc.no_cache:
                forced = True
            fwd = "request" if forced else "stale"
        if req_cc.only_if_cached:
            await self._simple(
                resp,
                504,
                "not in cache (only-if-cached)",
                member=cache_status_member(self.sf_name, fwd="miss", detail="only-if-cached"),
            )
            return
        # slice mode: a Range request for an unknown object, or a stale manifest, is probed
        probe = policy.slice_size > 0 and (
            (entry is not None and entry.sliced is not None)
            or (entry is None and req.headers.get("range") is not None)
        )
        await self._fetch(req, resp, policy, key, entry, fwd, req_cc, probe=probe)

    async def _apply_ban(self, entry: Entry, policy: PolicyConfig, key: CacheKey) -> Entry | None:
        """An invalidation ban that matches ``entry``: soft -> it is stale from the ban's time
        (the request revalidates; stale-if-error still applies); hard -> it is deleted, with
        its variants and slices (None: a full miss)."""
        ban = self.bans.match(entry.path, entry.response_time)
        if ban is None:
            return entry
        if ban.hard:
            await self.store.drop(entry.key_hex)
            for bucket in ("br", "gzip", "identity"):
                await self.store.drop(self.variants.key_for(policy, key, bucket).hex)
            if entry.sliced is not None:
                await self.slicer.drop_slices(policy, key, entry)
            return None
        lifetime = expired_lifetime(entry.response_time, entry.initial_age, entry.lifetime, ban.at)
        if lifetime is not None:
            entry.lifetime = lifetime
            entry.set_headers(entry.headers)  # recomputes fresh_until, forgets the hit head
            await self.store.update_meta(entry)
        return entry

    def _vary_matches(self, entry: Entry, headers: CIMultiDict[str]) -> bool:
        """RFC 9111 sec. 4.1: selecting header fields of the request match the stored ones.

        ``headers`` is the request as forwarded (see :func:`_forwarded_view`): the "original
        request" that caused a response to be stored is the one the origin saw.
        """
        if entry.vary is None:
            return True
        for name, stored in entry.vary.items():
            if name == "*":
                return False
            values = headers.getall(name, [])
            current = _normalize_vary_value(values) if values else None
            if current != stored:
                return False
        return True

    async def _serve_entry(
        self,
        req: Request,
        resp: ResponseWriter,
        entry: Entry,
        policy: PolicyConfig,
        member: str,
        upstream_status: str | None = None,
    ) -> None:
        """Answer from a stored entry: 304, 206/416 or the whole body (a slice manifest is
        answered from its slices)."""
        if entry.sliced is not None:
            _, key = self._policy_and_key(req.target, req.hdict)
            await self.slicer.serve(req, resp, policy, key, entry, member, upstream_status)
            return
        if entry.coded is not None and must_decode(req.hdict.get("accept-encoding"), entry.coded):
            _, key = self._policy_and_key(req.target, req.hdict)
            if req.method == "HEAD":  # no decoding just for a head: a stored variant or none
                decoded = self.variants.stored(
                    entry, self.variants.key_for(policy, key, "identity")
                )
            else:
                decoded = await self.variants.get(policy, key, entry, "identity")
            if decoded is not None:
                entry = decoded  # stored once, served like any entry from here on
            elif self._refuses(req, policy, "identity"):
                await self._not_acceptable(resp)
                return
            else:
                await self._serve_decoding(req, resp, entry, policy, member, upstream_status)
                return
        if policy.unacceptable_encoding == "406" and self._refuses(
            req, policy, coding_of(CIMultiDict(entry.headers).get("content-encoding"))
        ):
            await self._not_acceptable(resp)
            return
        now = time.time()
        fields = self._head_fields(entry, policy)
        fields.append(("Age", str(int(entry.age(now)))))
        fields.append(("Cache-Status", append_cache_status(upstream_status, member)))
        headers = req.headers
        stored_date = entry.date
        if entry.status == 200 and answer_304(req, resp, entry, fields):
            return
        length = entry.size
        start, count, status = 0, length, entry.status
        range_value = headers.get("range") if entry.status == 200 else None
        if range_value is not None and req.method in ("GET", "HEAD"):
            if_range = headers.get("if-range")
            if if_range is None or if_range_allows_partial(
                if_range, entry.etag, entry.last_modified, date=stored_date
            ):
                ranges = parse_range(range_value, length)
                if ranges == UNSATISFIABLE:
                    fields.append(("Content-Range", f"bytes */{length}"))
                    resp.start(416, fields, content_length=0)
                    return
                if isinstance(ranges, list) and len(ranges) == 1:
                    first, last = ranges[0]
                    start, count, status = first, last - first + 1, 206
                    fields.append(("Content-Range", f"bytes {first}-{last}/{length}"))
                # several ranges: answered with the whole 200 (RFC 9110 sec. 14.2 allows
                # ignoring Range; a multipart answer is the ranges issue's work)
        body = self.store.ram_body(entry)
        fd: int | None = None
        if req.method != "HEAD" and count and body is None and entry.mapped is None:
            # open before answering: an eviction between the lookup and here took the file
            # (an open descriptor keeps the body readable whatever happens next)
            fd = await self.store.open_body(entry)
            if fd is None:
                await self.store.drop(entry.key_hex, only=entry)
                if _RETRIED.get():
                    raise ConnectionError(f"body of {entry.key_hex} vanished twice")
                token = _RETRIED.set(True)  # for this request only (a connection's task
                try:  # serves its next requests in the same context)
                    _, key = self._policy_and_key(req.target, req.hdict)
                    await self._cached_request(req, resp, policy, key)  # now a miss
                finally:
                    _RETRIED.reset(token)
                return
        resp.start(
            status,
            fields,
            content_length=count,
            reason=None if status != entry.status else entry.reason,
        )
        if req.method == "HEAD" or count == 0:
            return
        if body is not None:
            await resp.write(memoryview(body)[start : start + count])
        elif entry.mapped is not None:
            self.store.served_mapped(entry)
            view = memoryview(entry.mapped)[start : start + count]
            handle = entry.handle
            if handle is not None:
                await resp.write_file_view(handle.fileno(), view, start)
            else:
                await resp.write_view(view)
        else:
            assert fd is not None
            try:
                end = start + count
                while start < end:
                    chunk = await self.store.pread(fd, min(BODY_READ, end - start), start)
                    if not chunk:
                        raise ConnectionError(f"body of {entry.key_hex} shorter than stored")
                    start += len(chunk)
                    await resp.write(chunk)
            finally:
                await self.store.close_fd(fd)

    @staticmethod
    def _refuses(req: Request, policy: PolicyConfig, coding: str | None) -> bool:
        """The policy answers 406 and the client's Accept-Encoding excludes ``coding``."""
        if policy.unacceptable_encoding != "406":
            return False
        accept = req.hdict.get("accept-encoding")
        return accept is not None and (coding is None or coding not in acceptable_codings(accept))

    async def _not_acceptable(self, resp: ResponseWriter) -> None:
        """RFC 9110 sec. 15.5.7: none of the codings this cache can answer with is acceptable."""
        self._count(Phase.ERROR)
        await self._simple(
            resp,
            406,
            "none of the content codings br, gzip, identity is acceptable (Accept-Encoding)",
            headers=[("Vary", "Accept-Encoding")],
        )

    async def _serve_decoding(
        self,
        req: Request,
        resp: ResponseWriter,
        entry: Entry,
        policy: PolicyConfig,
        member: str,
        upstream_status: str | None,
    ) -> None:
        """Answer a client that refuses the origin's coding of a stored entry too large for a
        stored decoded variant: decode while streaming (length unknown, so chunked; Range is
        ignored, which RFC 9110 sec. 14.2 allows). A body that does not decode is cut."""
        coded = entry.coded
        assert coded is not None
        now = time.time()
        fields = decoded_headers(self._head_fields(entry, policy), coded)
        fields.append(("Age", str(int(entry.age(now)))))
        fields.append(("Cache-Status", append_cache_status(upstream_status, member)))
        etag = variant_etag(entry.etag, f"{coded}-identity")
        if entry.status == 200 and answer_304(req, resp, entry, fields, etag=etag):
            return
        resp.start(entry.status, fields, content_length=None, reason=entry.reason)
        if req.method == "HEAD":
            return
        store = self.store

        async def stored_chunks() -> AsyncIterator[bytes]:
            for offset in range(0, entry.size, DECODE_READ):
                yield await store.read_range(entry, offset, min(DECODE_READ, entry.size - offset))

        try:
            async for piece in decode_chunks(stored_chunks(), coded):
                await resp.write(piece)
        except ValueError as exc:
            log.warning("cutting %s: %s", req.target, exc)
            resp.abort()

    # ---- fetching --------------------------------------------------------------------------

    def _upstream_headers(
        self,
        key: CacheKey,
        entry: Entry | None,
        policy: PolicyConfig,
        req_headers: CIMultiDict[str] | None,
    ) -> list[tuple[str, str]]:
        """Keyed fields, the policy's forward-only fields, Via, and validators of ``entry``.

        Without a client request (background refresh), forward-only fields take the values
        the stored variant was selected with (RFC 9111 sec. 4.1).
        """
        fields = list(key.forwarded_headers)
        hop = connection_listed(req_headers) if req_headers is not None else frozenset()
        for name in policy.forward_headers:
            if name in hop:
                continue  # RFC 9110 sec. 7.6.1: named in Connection, so not forwarded
            if req_headers is not None:
                values = req_headers.getall(name, [])
                if values:
                    fields.append((name, ", ".join(values)))
            elif entry is not None and entry.vary and entry.vary.get(name) is not None:
                fields.append((name, entry.vary[name]))  # type: ignore[arg-type]
        # Via carries the hops so far, then ours (RFC 9110 sec. 7.6.3): loops are detectable
        received_via = req_headers.getall("via", []) if req_headers is not None else []
        fields.append(("Via", ", ".join([*received_via, self.via_value])))
        if entry is not None:
            if entry.etag:
                fields.append(("If-None-Match", entry.etag))
            if entry.last_modified:
                fields.append(("If-Modified-Since", entry.last_modified))
        return fields

    async def _fetch(
        self,
        req: Request,
        resp: ResponseWriter,
        policy: PolicyConfig,
        key: CacheKey,
        stale: Entry | None,
        fwd: str,
        req_cc: CacheControl,
        *,
        probe: bool = False,
    ) -> None:
        """Single flight (see coalesce.py): lead the fill, follow another's, or go alone."""
        bypass_queue = req_cc.no_store or fwd == "request"
        lead: LocalFill | None = None
        if not bypass_queue:
            retries = 1
            while True:
                try:
                    got = await self.coalescer.acquire(key.hex, now=time.time())
                except OSError as exc:  # no room for a lock file (disk full): go alone
                    if not self.store.note_write_error(exc):
                        log.warning("coalescing %s failed: %s", key.hex, exc)
                    break
                if isinstance(got, Lead):
                    lead = got.fill
                    break
                if isinstance(got, Bypass):
                    break
                outcome = await self._follow(req, resp, policy, key, got.fill, fwd)
                if outcome is None:
                    return  # answered from the fill
                head = got.fill.head
                view = _forwarded_view(policy, req.headers) if head is not None else None
                if (
                    outcome is Outcome.UNCACHEABLE
                    and head is not None
                    and head.vary
                    and view is not None
                    and head.vary != self._vary_of_names(head.vary, view)
                ):
                    # the fill is another variant of this URI (RFC 9111 sec. 4.1): queue for
                    # ours, under the secondary key its selecting fields give ours
                    vkey = self._vary_key(policy, key, head.vary, view)
                    if vkey.variant and vkey.hex != key.hex:
                        key, fwd = vkey, "vary-miss"
                        continue
                if outcome not in (Outcome.UPSTREAM_ERROR, Outcome.DANGLING) or not retries:
                    break  # uncacheable or timed out: go alone; an error: retry once
                retries -= 1
        try:
            await self._fetch_and_serve(
                req, resp, policy, key, stale, fwd, req_cc, lead, probe=probe
            )
        finally:
            if lead is not None and lead.outcome is None and not lead.handed_off:
                await lead.finish(Outcome.UPSTREAM_ERROR)  # never leave a lock behind

    async def _follow(
        self,
        req: Request,
        resp: ResponseWriter,
        policy: PolicyConfig,
        key: CacheKey,
        fill: Fill,
        fwd: str,
    ) -> Outcome | None:
        """Answer from another request's fill. None when answered; else why not."""
        fill.followers += 1
        try:
            has_head = await fill.wait_head(WAIT_TIMEOUT)
            if not has_head:
                if fill.outcome in (Outcome.DONE, Outcome.REVALIDATED):
                    entry = await self.store.lookup(key.hex)
                    if (
                        entry is not None
                        and self._vary_matches(entry, _forwarded_view(policy, req.headers))
                        and await self.store.ensure_readable(entry)
                    ):
                        self._count(Phase.COLLAPSED)
                        member = cache_status_member(
                            self.sf_name, fwd=fwd, collapsed=True, ttl=entry.ttl(time.time())
                        )
                        await self._serve_entry(req, resp, entry, policy, member)
                        return None
                return fill.outcome or Outcome.WAIT_TIMEOUT
            head = fill.head
            assert head is not None
            if head.vary is not None and head.vary != self._vary_of_names(
                head.vary, _forwarded_view(policy, req.headers)
            ):
                return Outcome.UNCACHEABLE  # another variant is being filled
            self._count(Phase.COLLAPSED)
            member = cache_status_member(self.sf_name, fwd=fwd, collapsed=True, ttl=head.ttl)
            await self._stream_fill(req, resp, key, fill, head, member)
            return None
        finally:
            fill.followers -= 1
            if fill.followers == 0:
                self.coalescer.forget_remote(fill)

    def _vary_key(
        self,
        policy: PolicyConfig,
        key: CacheKey,
        names: dict[str, str | None],
        view: CIMultiDict[str],
    ) -> CacheKey:
        """The key under which the response for this request's values of ``names`` (the
        primary entry's selecting fields) is stored; ``key`` itself for ``Vary: *``, which
        never matches and is never stored."""
        if "*" in names:
            return key
        headers = {name.lower(): value for name, value in key.forwarded_headers}
        variant = vary_variant(self._vary_of_names(names, view))
        return build_key(policy, key.upstream_target, headers, variant=variant)

    def _vary_of_names(
        self, stored: dict[str, str | None], view: CIMultiDict[str]
    ) -> dict[str, str | None]:
        result: dict[str, str | None] = {}
        for name in stored:
            got = view.getall(name, [])
            result[name] = _normalize_vary_value(got) if got else None
        return result

    async def _stream_fill(
        self,
        req: Request,
        resp: ResponseWriter,
        key: CacheKey,
        fill: Fill,
        head: FillHead,
        member: str,
        *,
        leader: bool = False,
        fields: list[tuple[str, str]] | None = None,
    ) -> None:
        """See :meth:`_stream_fill_body`. ``leader``: after the last byte, wait briefly until
        the fill is published, so the next request on this connection finds the entry.
        ``fields``: the requester's own header fields (the leader's), instead of the shared."""
        await self._stream_fill_body(req, resp, key, fill, head, member, fields)
        if leader and isinstance(fill, LocalFill) and not resp.conn.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fill.released.wait(), LEADER_PUBLISH_WAIT)

    async def _stream_fill_body(
        self,
        req: Request,
        resp: ResponseWriter,
        key: CacheKey,
        fill: Fill,
        head: FillHead,
        member: str,
        own_fields: list[tuple[str, str]] | None = None,
    ) -> None:
        """Read-while-writer: stream the growing part file as its bytes arrive.

        A single Range is answered from the growing file as soon as its bytes are there
        (when the length is known). A failed fill cuts the connection: never a short answer
        that looks complete.
        """
        fields = list(own_fields if own_fields is not None else head.headers)
        fields.append(("Cache-Status", append_cache_status(head.upstream_status, member)))
        decode = self._decode_for(req, fields)
        if decode is not None:
            fields = decoded_headers(fields, decode)
        length = head.content_length
        start, count, status, reason = 0, length, head.status, head.reason
        range_value = req.headers.get("range") if head.status == 200 else None
        if decode is not None:
            range_value, count = None, None  # decoded while streaming: whole, length unknown
        if range_value is not None and length is not None and "if-range" not in req.headers:
            ranges = parse_range(range_value, length)
            if ranges == UNSATISFIABLE:
                fields.append(("Content-Range", f"bytes */{length}"))
                resp.start(416, fields, content_length=0)
                return
            if isinstance(ranges, list) and len(ranges) == 1:
                first, last = ranges[0]
                start, count, status, reason = first, last - first + 1, 206, "Partial Content"
                fields.append(("Content-Range", f"bytes {first}-{last}/{length}"))
        if status != head.status and "; fwd=" in member and "fwd-status=" not in member:
            # RFC 9211 sec. 2.3: without it, fwd-status would default to the 206 we send
            at = next(i for i, f in enumerate(fields) if f[0] == "Cache-Status")
            fields[at] = (
                "Cache-Status",
                append_cache_status(head.upstream_status, _with_fwd_status(member, head.status)),
            )
        resp.start(status, fields, content_length=count, reason=reason)
        if req.method == "HEAD" or count == 0:
            return
        end = None if count is None else start + count
        chunks = fill_chunks(self.store, key.hex, fill, head, start, end)
        try:
            if decode is None:
                async for chunk in chunks:
                    await resp.write(chunk)
            else:
                async for piece in decode_chunks(chunks, decode):
                    await resp.write(piece)
        except (FillFailed, ValueError) as exc:
            log.info("cutting %s %s: %s", req.method, req.target, exc)
            resp.abort()

    @staticmethod
    def _decode_for(req: Request, fields: Iterable[tuple[str, str]]) -> str | None:
        """The origin's coding ("br"/"gzip") of an answer with these fields that this client
        refuses (it must be decoded for it), else None. RFC 9110 sec. 12.5.3."""
        accept = req.hdict.get("accept-encoding")
        if accept is None:
            return None
        for name, value in fields:
            if name.lower() == "content-encoding":
                coded = coding_of(value)
                if (coded == "br" or coded == "gzip") and must_decode(accept, coded):
                    return coded
                return None
        return None

    async def _fetch_and_serve(
        self,
        req: Request,
        resp: ResponseWriter,
        policy: PolicyConfig,
        key: CacheKey,
        stale: Entry | None,
        fwd: str,
        req_cc: CacheControl,
        lead: LocalFill | None,
        *,
        probe: bool = False,
    ) -> None:
        """Fetch from upstream; a storable answer is filled in the background and streamed
        from its part file to this client and every follower."""
        validators = stale if stale is not None and (stale.etag or stale.last_modified) else None
        request_time = time.time()
        fields = self._upstream_headers(key, validators, policy, req.headers)
        if probe:
            fields.append(("Range", "bytes=0-0"))  # learn the length: slice mode or whole
        try:
            upstream = await self.upstream.open("GET", key.upstream_target, fields)
        except NoSuchTarget:
            await self._simple(
                resp,
                404,
                "no such object",
                member=cache_status_member(self.sf_name, fwd=fwd, detail="no-bucket"),
            )
            return
        except UpstreamError as exc:
            log.warning("%s %s: %s", req.method, req.target, exc.reason)
            if stale is not None and self._stale_if_error(stale, req_cc, policy):
                await self._serve_stale(req, resp, stale, policy, None)
                return
            self._count(Phase.ERROR)
            await self._simple(
                resp,
                exc.status,
                exc.reason,
                member=cache_status_member(
                    self.sf_name, fwd=fwd, detail=exc.detail or "upstream-error"
                ),
            )
            return
        remaining: aiohttp.ClientResponse | None = upstream
        try:
            remaining = await self._handle_upstream(
                req,
                resp,
                policy,
                key,
                stale,
                validators,
                fwd,
                req_cc,
                upstream,
                request_time,
                lead,
                probe,
            )
        finally:
            if remaining is not None:
                remaining.release()

    async def _serve_stale(
        self,
        req: Request,
        resp: ResponseWriter,
        stale: Entry,
        policy: PolicyConfig,
        fwd_status: int | None,
    ) -> None:
        """Serve a stale entry because upstream failed (RFC 5861 sec. 4 stale-if-error)."""
        self._count(Phase.STALE_SERVED)
        member = cache_status_member(
            self.sf_name, fwd="stale", fwd_status=fwd_status, detail="stale-if-error"
        )
        await self._serve_entry(req, resp, stale, policy, member)

    def _stale_if_error(self, stale: Entry, req_cc: CacheControl, policy: PolicyConfig) -> bool:
        return stale_if_error_ok(
            now=time.time(),
            response_time=stale.response_time,
            corrected_initial_age=stale.initial_age,
            lifetime=stale.lifetime,
            resp_cc=stale.cc,
            req_cc=req_cc,
            default_window=policy.stale_if_error,
        )

    async def _handle_upstream(
        self,
        req: Request,
        resp: ResponseWriter,
        policy: PolicyConfig,
        key: CacheKey,
        stale: Entry | None,
        validators: Entry | None,
        fwd: str,
        req_cc: CacheControl,
        upstream: aiohttp.ClientResponse,
        request_time: float,
        lead: LocalFill | None,
        probe: bool = False,
    ) -> aiohttp.ClientResponse | None:
        """Answer from the upstream response. Returns the response if the caller must still
        release it, None when a background fill took it over."""
        response_time = time.time()
        if self.access_log is not None:
            note_upstream(response_time - request_time)  # time to the upstream's head
        status = upstream.status
        upstream_headers = CIMultiDict(
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in upstream.raw_headers
        )
        upstream_cs = upstream_headers.get("cache-status")
        # S3 errors: map and never store a refusal of our credentials.
        if self.upstream.is_s3 and status >= 400 and status not in (404, 410):
            raw = await upstream.read()
            client_status, reason = map_s3_status(status, s3_error_code(raw))
            log.warning("origin refused %s: %s", key.upstream_target, reason)
            if (
                stale is not None
                and client_status >= 500
                and self._stale_if_error(stale, req_cc, policy)
            ):
                await self._serve_stale(req, resp, stale, policy, status)
                return upstream
            self._count(Phase.ERROR)
            await self._simple(
                resp,
                client_status,
                reason,
                member=cache_status_member(self.sf_name, fwd=fwd, fwd_status=status),
            )
            return upstream
        if (
            status == 304
            and validators is not None
            and not not_modified_matches(
                validators.etag,
                validators.last_modified,
                upstream_headers.get("etag"),
                upstream_headers.get("last-modified"),
            )
        ):
            # RFC 9111 sec. 4.3.4: it names another representation: MUST NOT update ours;
            # ask again without validators
            upstream.release()
            await self._fetch_and_serve(
                req, resp, policy, key, None, fwd, req_cc, lead, probe=probe
            )
            return None
        if status == 304 and validators is not None:
            await self._apply_304(validators, policy, upstream_headers, request_time, response_time)
            if lead is not None:
                await lead.finish(Outcome.REVALIDATED)  # followers read the refreshed entry
            self._count(Phase.REVALIDATED)
            member = cache_status_member(
                self.sf_name, fwd=fwd, fwd_status=304, stored=True, ttl=validators.ttl(time.time())
            )
            # (a slice manifest is answered from its slices by _serve_entry)
            await self._serve_entry(req, resp, validators, policy, member, upstream_cs)
            return upstream
        if status >= 500 and stale is not None and self._stale_if_error(stale, req_cc, policy):
            await self._serve_stale(req, resp, stale, policy, status)
            return upstream
        # a probe's 206 stands for the whole object (its manifest), judged as a 200 would be
        effective_status = 200 if probe and status == 206 else status
        verdict = self._judge(
            req.headers, policy, req_cc, upstream_headers, effective_status, upstream, response_time
        )
        stored_headers, lifetime = verdict.stored_headers, verdict.lifetime
        no_store_detail = verdict.no_store_detail
        if probe and status == 206:
            span = parse_content_range(upstream_headers.get("content-range"))
            total = span[2] if span is not None else 0
            if (
                no_store_detail is None
                and span is not None
                and total > max(policy.slice_threshold, policy.slice_size)
                # slices of a coded body cannot be decoded one by one for a client that
                # refuses the coding: such an object is fetched and stored whole
                and coding_of(upstream_headers.get("content-encoding")) == "identity"
            ):
                manifest = self.slicer.manifest_from_probe(
                    policy,
                    key,
                    stored_headers,
                    total,
                    request_time,
                    response_time,
                    corrected_initial_age(upstream_headers, request_time, response_time),
                    lifetime,
                )
                await self.slicer.publish_manifest(policy, key, manifest, stale)
                if lead is not None:
                    await lead.finish(Outcome.REVALIDATED)  # followers read the manifest
                self._count(Phase.MISS)
                member = cache_status_member(
                    self.sf_name, fwd=fwd, stored=True, ttl=int(lifetime), detail="sliced"
                )
                await self.slicer.serve(req, resp, policy, key, manifest, member, upstream_cs)
                return upstream
            # small enough (or not storable): fetch the whole object, as any miss
            upstream.release()
            await self._fetch_and_serve(req, resp, policy, key, None, fwd, req_cc, lead)
            return None
        content_length = upstream.content_length
        if content_length is not None and not self.store.admits(content_length):
            no_store_detail = "too-large"
        if no_store_detail is None and not self.store.writable(content_length):
            no_store_detail = "store-unwritable"  # disk full or read-only: pass through
        vary = self._vary_of(upstream_headers, _forwarded_view(policy, req.headers))
        if vary is not None and "*" in vary:
            no_store_detail = no_store_detail or "vary-star"
        store = no_store_detail is None
        entry = None
        initial_age = corrected_initial_age(upstream_headers, request_time, response_time)
        ttl = int(lifetime - initial_age)  # RFC 9211 sec. 2.4: freshness left, age counted
        if store:
            entry = Entry(
                key_hex=key.hex,
                path=key.path,
                status=status,
                reason=upstream.reason or "",
                headers=list(stored_headers.items()),
                request_time=request_time,
                response_time=response_time,
                initial_age=initial_age,
                lifetime=lifetime,
                size=0,
                checksum="",
                body_file="",
                vary=vary,
            )
        member = cache_status_member(
            self.sf_name,
            fwd=fwd,
            fwd_status=status if status != 200 else None,
            stored=store,
            ttl=ttl if store else None,
            detail=None if store else no_store_detail,
        )
        # The requester gets every end-to-end field, including those a qualified private= or
        # no-cache= keeps out of the stored copy, and its own Set-Cookie (RFC 9111 sec. 5.2.2).
        out = list(self._client_fields(upstream_headers, response_time).items())
        if verdict.varies_on_encoding:
            out = identity_headers(out)
        out.append(("Via", self.via_value))
        out.extend(policy.response_headers)
        if entry is not None:
            out.append(("Age", str(int(entry.initial_age))))
        elif "age" in upstream_headers:
            out.append(("Age", upstream_headers["age"]))
        out.append(("Cache-Status", append_cache_status(upstream_cs, member)))
        self._count(Phase.MISS)
        if entry is not None:
            # storable: fill in the background; this client reads the part file like followers
            head = FillHead(
                status=status,
                reason=upstream.reason or "",
                # followers get the shareable view: the stored fields, never the requester's
                # own Set-Cookie or fields named by private=/no-cache= (RFC 9111 sec. 5.2.2)
                headers=(
                    *(f for f in stored_headers.items() if f[0].lower() not in self.not_downstream),
                    ("Via", self.via_value),
                    *policy.response_headers,
                    ("Age", str(int(entry.initial_age))),
                ),
                content_length=content_length,
                part_path="",
                ttl=ttl,
                upstream_status=upstream_cs,
                vary=vary,
            )
            if await self._lead_fill(req, resp, key, lead, upstream, entry, head, member, out):
                return None
        if lead is not None:
            await lead.finish(Outcome.UNCACHEABLE)
        if no_store_detail in HIT_FOR_MISS_REASONS:
            # hit-for-miss in every worker that sees it, not only in the one that led
            self.coalescer.remember_uncacheable(key.hex, time.time())
        return await self._relay(req, resp, key, upstream, out, content_length)

    async def _relay(
        self,
        req: Request,
        resp: ResponseWriter,
        key: CacheKey,
        upstream: aiohttp.ClientResponse,
        out: list[tuple[str, str]],
        content_length: int | None,
    ) -> aiohttp.ClientResponse:
        """Pass an answer that is not stored straight through (decoded for a client that
        refuses the origin's coding); a short or failed body cuts the connection, never ends
        it as a complete answer. Returns the response for the caller to release."""
        status = upstream.status
        client_ok = True
        decode = self._decode_for(req, out)
        if decode is not None:
            out, content_length = decoded_headers(out, decode), None
        try:
            resp.start(status, out, content_length=content_length, reason=upstream.reason)
            if req.method == "HEAD":
                return upstream
            if decode is None:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
            else:
                async for piece in decode_chunks(upstream.content.iter_any(), decode):
                    await resp.write(piece)
        except ConnectionError:
            client_ok = False
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("upstream body of %s failed: %s", key.upstream_target, exc)
            resp.abort()
            return upstream
        if client_ok and content_length is not None and resp.bytes_sent != content_length:
            resp.abort()
        return upstream

    async def _lead_fill(
        self,
        req: Request,
        resp: ResponseWriter,
        key: CacheKey,
        lead: LocalFill | None,
        upstream: aiohttp.ClientResponse,
        entry: Entry,
        head: FillHead,
        member: str,
        out: list[tuple[str, str]],
    ) -> bool:
        """Start the background fill of ``entry`` (its part file, then the task that copies
        the upstream body into it), announce ``head`` to the followers and stream the growing
        file to this client like to any of them. False (nothing started) when no part file
        can be created: the caller passes the answer through instead."""
        fill = lead or LocalFill(self.coalescer, key.hex, "private", shared=False)
        writer = self.store.new_writer(key.hex, streaming=True)
        try:
            await writer.open()
        except OSError as exc:
            log.warning("cannot create a part file for %s: %s", key.hex, exc)
            await writer.abort()
            return False
        head = replace(head, part_path=str(writer.tmp_path))
        fill.handed_off = True  # the fill task ends it, whatever this client does
        # the fill task is scheduled before the followers the announcement wakes: it puts the
        # first chunk in the ring before they look for it
        task = asyncio.get_running_loop().create_task(
            self._run_fill(fill, upstream, writer, entry, head.content_length)
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        await fill.announce(head)
        opener = asyncio.get_running_loop().create_task(self._open_reader(fill, head.part_path))
        self._background.add(opener)
        opener.add_done_callback(self._background.discard)
        try:
            await self._stream_fill(
                req, resp, key, fill, head, member, leader=True, fields=out[:-1]
            )
        except ConnectionError:
            resp.abort()  # our client left; the fill task owns the upstream answer
        return True

    async def _open_reader(self, fill: Fill, part_path: str) -> None:
        """Give the fill an open read handle on its part file, off the first byte's path
        (followers need it only once they fall RING_BYTES behind)."""
        with contextlib.suppress(OSError):  # already published: they read the entry
            fill.reader = await self.store.run_io(open, part_path, "rb", 0)

    def _judge(
        self,
        req_headers: CIMultiDict[str],
        policy: PolicyConfig,
        req_cc: CacheControl,
        upstream_headers: CIMultiDict[str],
        status: int,
        upstream: aiohttp.ClientResponse,
        response_time: float,
    ) -> _Verdict:
        """May this answer be stored (RFC 9111 sec. 3, plus the policy), for how long (sec.
        4.2.1, clamped by the policy's TTLs), with which header fields; and does every answer
        of the resource vary on Accept-Encoding (compressed here, or coded by the origin)."""
        resp_cc = select_response_cache_control(upstream_headers, self.targeted)
        reason = storability(
            "GET",
            status,
            req_headers,
            req_cc,
            upstream_headers,
            resp_cc,
            policy_default_ttl=policy.default_ttl,
        )
        no_store_detail: str | None = reason.as_str() if reason is not None else None
        if (
            no_store_detail is None
            and "set-cookie" in upstream_headers
            and "set-cookie" not in fields_to_strip(resp_cc)
        ):
            no_store_detail = "set-cookie"
        if no_store_detail is None and req_cc.no_store:
            no_store_detail = "request-no-store"
        stored_headers = self._headers_to_store(upstream_headers, resp_cc, response_time)
        compressible = should_compress(
            policy_compress=policy.compress,
            status=status,
            content_type=upstream_headers.get("content-type"),
            content_encoding=upstream_headers.get("content-encoding"),
            content_length=upstream.content_length,
            resp_cc_no_transform=resp_cc.no_transform,
            has_range=False,
            min_size=policy.compress_min_size,
            max_size=policy.compress_max_size,
        )
        origin_coded = coding_of(upstream_headers.get("content-encoding"))
        varies = compressible or origin_coded == "br" or origin_coded == "gzip"
        if varies:
            # every answer of a resource this cache compresses, or decodes for clients that
            # refuse the origin's coding, says so (RFC 9110 sec. 12.5.5)
            stored_headers = CIMultiDict(identity_headers(stored_headers.items()))
        lifetime = 0.0
        if no_store_detail is None:
            raw_lifetime, source = freshness_lifetime(
                status, upstream_headers, resp_cc, response_time=response_time
            )
            if upstream.status in (404, 410) and source in ("none", "heuristic"):
                lifetime = policy.error_ttl
            else:
                lifetime = apply_policy_ttl(
                    raw_lifetime,
                    source,
                    min_ttl=policy.min_ttl,
                    default_ttl=policy.default_ttl,
                    max_ttl=policy.max_ttl,
                )
            if lifetime <= 0 and not (
                stored_headers.get("etag") or stored_headers.get("last-modified")
            ):
                no_store_detail = "no-freshness"
        return _Verdict(stored_headers, lifetime, no_store_detail, varies)

    async def _run_fill(
        self,
        fill: LocalFill,
        upstream: aiohttp.ClientResponse,
        writer: BodyWriter,
        entry: Entry,
        content_length: int | None,
    ) -> None:
        """Upstream body -> part file, reporting progress; publish; end the fill. Runs on even
        if every client left (the cache still wants the object)."""
        outcome = Outcome.UPSTREAM_ERROR
        try:
            async for chunk in upstream.content.iter_any():
                # followers in this process read the chunk from the fill's ring: hand it to
                # them before the part-file write (an executor hop) rather than after it
                fill.advance(writer.size + len(chunk), chunk)
                await writer.write(chunk)
            if content_length is not None and writer.size != content_length:
                raise ConnectionError(f"short body: {writer.size} of {content_length} bytes")
            if await self.store.publish(writer, entry):
                fill.body_file = entry.body_file  # names the body for followers elsewhere
            outcome = Outcome.DONE
        except asyncio.CancelledError:
            await writer.abort()
            raise
        except Exception as exc:
            if not (isinstance(exc, OSError) and exc.errno in UNWRITABLE_ERRNOS):
                log.warning("fill of %s failed: %s", entry.path, exc)  # else the store logs
            await writer.abort()
        finally:
            upstream.release()
            fill.advance(writer.size)
            await fill.finish(outcome)

    async def _apply_304(
        self,
        entry: Entry,
        policy: PolicyConfig,
        fresh: CIMultiDict[str],
        request_time: float,
        response_time: float,
    ) -> None:
        """RFC 9111 sec. 4.3.4: a 304 updates the stored header fields and freshness."""
        merged = update_stored_headers(CIMultiDict(entry.headers), fresh)
        for name in NOT_STORED:
            merged.popall(name, None)
        resp_cc = select_response_cache_control(merged, self.targeted)
        raw_lifetime, source = freshness_lifetime(
            entry.status, merged, resp_cc, response_time=response_time
        )
        entry.request_time = request_time
        entry.response_time = response_time
        entry.initial_age = corrected_initial_age(fresh, request_time, response_time)
        entry.lifetime = apply_policy_ttl(
            raw_lifetime,
            source,
            min_ttl=policy.min_ttl,
            default_ttl=policy.default_ttl,
            max_ttl=policy.max_ttl,
        )
        entry.set_headers(list(merged.items()))
        await self.store.update_meta(entry)

    def _background_revalidate(self, entry: Entry, policy: PolicyConfig, key: CacheKey) -> None:
        """stale-while-revalidate (RFC 5861 sec. 3): one refresh per key, in the background,
        coalesced with any fill of the key (in this process or a sibling)."""

        async def refresh() -> None:
            try:
                got = await self.coalescer.acquire(key.hex, now=time.time())
            except OSError as exc:  # no room for a lock file: the stale entry stays
                self.store.note_write_error(exc)
                return
            if not isinstance(got, Lead):
                if isinstance(got, Follow) and got.fill.followers == 0:
                    self.coalescer.forget_remote(got.fill)  # not watched: close it
                return  # somebody is already fetching this key
            outcome = Outcome.UPSTREAM_ERROR
            try:
                upstream = await self.upstream.open(
                    "GET", key.upstream_target, self._upstream_headers(key, entry, policy, None)
                )
                try:
                    if await self._absorb(upstream, entry, policy, key):
                        outcome = Outcome.DONE
                finally:
                    upstream.release()
            except Exception as exc:  # a failed refresh leaves the stale entry in place
                log.info("background revalidation of %s failed: %s", key.upstream_target, exc)
            finally:
                await got.fill.finish(outcome)

        task = asyncio.get_running_loop().create_task(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _absorb(
        self, upstream: aiohttp.ClientResponse, entry: Entry, policy: PolicyConfig, key: CacheKey
    ) -> bool:
        """Store a background refresh's answer without a client."""
        response_time = time.time()
        fresh = CIMultiDict(
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in upstream.raw_headers
        )
        if upstream.status == 304:
            if not not_modified_matches(
                entry.etag, entry.last_modified, fresh.get("etag"), fresh.get("last-modified")
            ):
                return False  # RFC 9111 sec. 4.3.4: not ours to update
            await self._apply_304(entry, policy, fresh, response_time, response_time)
            return True
        if upstream.status != 200:
            return False
        # judged as a client's fetch would be (Vary: Accept-Encoding kept on coded answers),
        # with the request this refresh sent: the entry's selecting values (sec. 4.1)
        sent = CIMultiDict((n, v) for n, v in (entry.vary or {}).items() if v is not None)
        verdict = self._judge(
            sent, policy, parse_cache_control([]), fresh, 200, upstream, response_time
        )
        if (
            verdict.no_store_detail is not None
            or self._vary_of(fresh, sent) != entry.vary  # the selecting fields changed
            or not self.store.admits(upstream.content_length)
        ):
            return False
        new = Entry(
            key_hex=key.hex,
            path=key.path,
            status=200,
            reason=upstream.reason or "OK",
            headers=list(verdict.stored_headers.items()),
            request_time=response_time,
            response_time=response_time,
            initial_age=corrected_initial_age(fresh, response_time, response_time),
            lifetime=verdict.lifetime,
            size=0,
            checksum="",
            body_file="",
            vary=entry.vary,
        )
        writer = self.store.new_writer(key.hex)
        try:
            async for chunk in upstream.content.iter_any():
                await writer.write(chunk)
        except Exception:
            await writer.abort()
            raise
        if upstream.content_length is not None and writer.size != upstream.content_length:
            await writer.abort()
            return False
        return await self.store.publish(writer, new)

    def _client_fields(
        self, upstream_headers: CIMultiDict[str], response_time: float
    ) -> CIMultiDict[str]:
        fields = strip_hop_by_hop(upstream_headers)
        for name in self.not_downstream:
            fields.popall(name, None)
        for name in ("age", "cache-status", "content-length"):
            fields.popall(name, None)
        if "date" not in fields:
            fields["Date"] = format_http_date(response_time)
        return fields

    def _headers_to_store(
        self,
        upstream_headers: CIMultiDict[str],
        resp_cc: CacheControl,
        response_time: float,
    ) -> CIMultiDict[str]:
        """Hop-by-hop fields out (RFC 9111 sec. 3.1), qualified private/no-cache fields out,
        fields the cache regenerates out; a Date added if the origin sent none (RFC 9110
        sec. 6.6.1)."""
        stored = storable_headers(upstream_headers, resp_cc)  # RFC 9111 sec. 3.1
        for name in NOT_STORED:
            stored.popall(name, None)
        if "date" not in stored:
            stored["Date"] = format_http_date(response_time)
        return stored

    def _vary_of(
        self, upstream_headers: CIMultiDict[str], req_headers: CIMultiDict[str]
    ) -> dict[str, str | None] | None:
        """The selecting header values of the request (RFC 9111 sec. 4.1), normalized."""
        values = upstream_headers.getall("vary", [])
        if not values:
            return None
        names: list[str] = []
        for value in values:
            for name in value.split(","):
                name = name.strip().lower()
                if name and name not in names:
                    names.append(name)
        if not names:
            return None
        if "*" in names:
            return {"*": None}
        result: dict[str, str | None] = {}
        for name in sorted(names):
            got = req_headers.getall(name, [])
            result[name] = _normalize_vary_value(got) if got else None
        return result

    # ---- other methods ---------------------------------------------------------------------

    async def _pass_through(
        self, req: Request, resp: ResponseWriter, policy: PolicyConfig, key: CacheKey
    ) -> None:
        """Forward an unsafe or unknown method; invalidate the target URI on success
        (RFC 9111 sec. 4.4)."""
        fields = [
            (n, v)
            for n, v in strip_hop_by_hop(req.headers).items()
            if n.lower() not in ("host", "cookie", "content-length", "expect")
        ]
        fields.append(("Via", self.via_value))
        body = req.body.iter_chunks() if req.body is not None else None
        target = key.path + req.target[len(req.target.partition("?")[0]) :]
        signed = policy.signed_urls
        if signed is not None:  # the signature parameters never go upstream
            hmac_type = signed.type == "hmac"
            query = target.partition("?")[2]
            query = strip_params(query, PARAMS if hmac_type else frozenset(), amz=not hmac_type)
            target = key.path + ("?" + query if query else "")
        try:
            upstream = await self.upstream.open(req.method, target, fields, body=body)
        except NoSuchTarget:
            await self._simple(resp, 404, "no such object")
            return
        except UpstreamError as exc:
            await self._simple(resp, exc.status, exc.reason)
            return
        try:
            self._count(Phase.PASS)
            if upstream.status < 400 and req.method not in SAFE_METHODS:
                await self.invalidate_uri(key.path)
                for field_name in ("location", "content-location"):
                    value = upstream.headers.get(field_name)
                    path = (
                        same_origin_path(value, key.path, req.hdict.get("host"), req.tls)
                        if value
                        else None
                    )
                    if path is not None:
                        await self.invalidate_uri(path)
            out = list(
                strip_hop_by_hop(
                    CIMultiDict(
                        (n.decode("latin-1"), v.decode("latin-1")) for n, v in upstream.raw_headers
                    )
                ).items()
            )
            out = [(n, v) for n, v in out if n.lower() != "content-length"]
            out.append(("Via", self.via_value))
            out.append(
                (
                    "Cache-Status",
                    cache_status_member(self.sf_name, fwd="method", fwd_status=upstream.status),
                )
            )
            resp.start(
                upstream.status, out, content_length=upstream.content_length, reason=upstream.reason
            )
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("pass-through %s %s failed: %s", req.method, target, exc)
            resp.abort()
        finally:
            upstream.release()

    async def invalidate_uri(self, path: str) -> None:
        """Drop every entry stored for ``path`` under its policy (keyed params ignored), in
        every worker of this node (RFC 9111 sec. 4.4)."""
        try:
            norm = normalize_path(path)
        except BadRequestTarget:
            return
        policy = self.config.policy_for(norm)
        key = build_key(policy, norm, {})
        await self.store.drop(key.hex)
        for bucket in ("br", "gzip", "identity"):
            await self.store.drop(self.variants.key_for(policy, key, bucket).hex)
        for hex_key, entry in list(self.store.index.items()):
            if entry.path == norm and hex_key != key.hex:
                await self.store.drop(hex_key)
        if self.epoch is not None:
            if self.store.report is not None:
                self.store.report("i", norm, 0)  # the master bans the path in every worker
            before = self.seen_epoch
            self.seen_epoch = self.epoch.bump()
            if self.seen_epoch != before + 1:
                self._reload_shared_state()  # another process changed the store meanwhile


def _forwarded_view(policy: PolicyConfig, headers: CIMultiDict[str]) -> CIMultiDict[str]:
    """The request's fields as forwarded upstream: keyed and forward-only fields.

    Vary is evaluated against this view (RFC 9111 sec. 4.1 compares with the request that
    caused the response to be stored, i.e. what the origin saw). A field the node never
    forwards cannot have selected the origin's answer, so it never splits the stored variants;
    a forwarded one does, so a variant is never served to a request with another value.
    """
    view: CIMultiDict[str] = CIMultiDict()
    for name in policy.header_keys:
        for value in headers.getall(name, []):
            view.add(name, value)
    for name in policy.forward_headers:
        for value in headers.getall(name, []):
            view.add(name, value)
    return view


def _normalize_vary_value(values: list[str]) -> str:
    """Combine field lines and normalize whitespace around commas (RFC 9111 sec. 4.1)."""
    joined = ",".join(values)
    return ",".join(part.strip() for part in joined.split(","))


def _url_verifiers(
    config: Config, upstream: Upstream, environ: Mapping[str, str] | None
) -> tuple[dict[str, dict[str, bytes]], PresignVerifier | None]:
    """The signed-URL keys of every ``keys_env`` an hmac policy names (``ValueError`` when one
    is unset or malformed, as for missing S3 credentials: a node never starts open), and the
    presigned-URL verifier made with the origin's credentials (``[upstream.s3]``, else
    ``[upstream.fallback_s3]``)."""
    env = os.environ if environ is None else environ
    keys: dict[str, dict[str, bytes]] = {}
    presign: PresignVerifier | None = None
    for policy in config.policies:
        signed = policy.signed_urls
        if signed is None:
            continue
        if signed.type == "hmac" and signed.keys_env not in keys:
            text = env.get(signed.keys_env)
            if not text:
                raise ValueError(
                    f"environment variable {signed.keys_env} (signed-URL keys of policy "
                    f"{policy.name}) is not set"
                )
            try:
                keys[signed.keys_env] = parse_keys(text)
            except ValueError as err:
                raise ValueError(f"environment variable {signed.keys_env}: {err}") from None
        elif signed.type == "s3-presigned" and presign is None:
            for origin in (upstream.origin, upstream.fallback):
                if origin is not None and origin.signer is not None:
                    presign = PresignVerifier(origin.signer.credentials, origin.signer.region)
                    break
    return keys, presign


class _CorsResponse:
    """A :class:`ResponseWriter` whose head gets the policy's CORS fields (:func:`cors.merge`:
    the stored or upstream ``Access-Control-*`` out, the policy's in, per this request's
    ``Origin``), whichever path answers: hit, miss, follower, 304/206/416, slices, errors."""

    __slots__ = ("_origin", "_resp", "_rules")

    def __init__(self, resp: ResponseWriter, rules: cors.CorsRules, origin: str | None) -> None:
        self._resp = resp
        self._rules = rules
        self._origin = origin

    def start(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        *,
        content_length: int | None,
        reason: str | None = None,
    ) -> None:
        fields = cors.merge(self._rules, headers, self._origin)
        self._resp.start(status, fields, content_length=content_length, reason=reason)

    @property
    def keep_alive(self) -> bool:
        return self._resp.keep_alive

    @keep_alive.setter
    def keep_alive(self, value: bool) -> None:
        self._resp.keep_alive = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resp, name)


def _cors_response(
    resp: ResponseWriter, rules: cors.CorsRules, origin: str | None
) -> ResponseWriter:
    return _CorsResponse(resp, rules, origin)  # type: ignore[return-value]


def _with_fwd_status(member: str, status: int) -> str:
    """``member`` with ``fwd-status`` right after its ``fwd`` parameter (RFC 9211 sec. 2.3)."""
    parts = member.split("; ")
    for i, part in enumerate(parts):
        if part.startswith("fwd="):
            parts.insert(i + 1, f"fwd-status={status}")
            break
    return "; ".join(parts)


@dataclass(slots=True)
class _Verdict:
    """What :meth:`Node._judge` decided about an upstream answer."""

    stored_headers: CIMultiDict[str]
    lifetime: float  # freshness lifetime to store with (seconds)
    no_store_detail: str | None  # why it is not stored (Cache-Status detail), None: stored
    varies_on_encoding: bool  # every answer of the resource carries Vary: Accept-Encoding
