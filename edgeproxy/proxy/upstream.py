"""The upstream side: parents (other nodes or any HTTP origin) or an S3 origin, via aiohttp.

Contract: :meth:`Upstream.open` sends one request for a normalized target and returns the open
``aiohttp.ClientResponse`` (the caller streams and releases it). It sends only what it is given
(the cache key's forwarded headers plus validators/Via chosen by the handler), never adds
``Accept-Encoding``, signs S3 requests with SigV4 when credentials are configured, and maps
connection failures to :class:`UpstreamError` (502) and timeouts to 504.

With parents (``[upstream] parents``):

* **Selection.** The parents are ranked per request by weighted rendezvous hashing of
  ``hash_key`` (the cache key's digest; the target when the caller passes none), so every node
  of a tier sends one object to the same parent (:mod:`edgeproxy.proxy.rendezvous`). Parents
  that are out (:mod:`edgeproxy.health`) are skipped: only their keys move, each to its next
  parent in its own order.
* **Retry.** A request without a body that fails on its parent (connection error, timeout, or
  a 500/502/503/504 answer) is sent once more, to the next available parent, before
  :meth:`open` returns, i.e. before any byte reached the client. A timeout or a 5xx is only
  retried for idempotent methods (a POST may have been processed); a connection error always
  is. When the retry fails too, the 5xx answer (if any) is returned, else UpstreamError.
* **Passive health.** Every failure above counts against the parent; every other answer
  clears its count (see :class:`~edgeproxy.health.ParentHealth`).
* **Every parent out.** With ``[upstream.fallback_s3]``, a GET or HEAD whose parents are all
  out, or all failed, goes to that S3 origin ("go direct", signed, errors mapped as for an S3
  node: a refusal of our credentials or an S3 5xx is UpstreamError 502, never passed to the
  client). Without it, one attempt still goes to the key's first parent (panic routing: a
  node whose checks all failed for its own reasons keeps serving); when that fails too, the
  answer is UpstreamError(502 or 504, ..., detail="all-parents-down"), which the handler turns
  into stale-if-error or an error answer.

The route a response took is readable with :func:`route_of` ("parent", "retry", "direct");
:attr:`UpstreamError.detail` is a short token for the Cache-Status ``detail`` parameter.
Every request sent is counted per target in :attr:`Upstream.figures` (requests, failures,
latency to the response head, complete body bytes; see :mod:`edgeproxy.metrics`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from edgeproxy.config import ParentConfig, S3OriginConfig, UpstreamConfig
from edgeproxy.health import CheckTarget, HealthChecker, ParentHealth
from edgeproxy.metrics import UpstreamFigures
from edgeproxy.proxy.rendezvous import Candidate, rendezvous_order
from edgeproxy.proxy.s3 import (
    Credentials,
    S3Target,
    SigV4Signer,
    map_drop_in,
    map_fixed_bucket,
    map_s3_status,
    object_url,
    s3_error_code,
)

#: Methods that may be sent twice (RFC 9110 sec. 9.2.2): retried after a timeout or a 5xx.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
#: Answers that count as a failure of the parent (RFC 5861 sec. 4's list of errors).
FAILURE_STATUSES = frozenset({500, 502, 503, 504})
#: S3 answers passed to the handler as they are when going direct (mapped ones are errors).
_DIRECT_PASS = frozenset({200, 206, 304, 404, 410, 412, 416})
_ROUTE_ATTR = "edgeproxy_route"


class UpstreamError(Exception):
    """No usable answer from upstream. ``status`` is what the client gets (502 or 504);
    ``detail`` a short token for Cache-Status (``parent-unreachable``, ``parent-timeout``,
    ``all-parents-down``, ``go-direct-failed``, ...) or None."""

    def __init__(self, status: int, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.detail = detail


class NoSuchTarget(Exception):
    """The target maps to no object upstream (e.g. a bucket not allow-listed): answer 404."""


def route_of(response: aiohttp.ClientResponse) -> str | None:
    """How :meth:`Upstream.open` got ``response``: "parent" (first choice), "retry" (the next
    parent after a failure), "direct" (go direct to the fallback S3 origin), "origin" (an S3
    node's origin); None for a response it did not make."""
    return getattr(response, _ROUTE_ATTR, None)


@dataclass(slots=True)
class Parent:
    """A parent node as the upstream side tracks it."""

    spec: ParentConfig
    candidate: Candidate
    health: ParentHealth
    requests: int = 0
    failures: int = 0

    @property
    def name(self) -> str:
        return self.spec.ident


class _Origin:
    """An S3 origin: URL mapping and the SigV4 signer (None = anonymous)."""

    def __init__(self, s3: S3OriginConfig, env: Mapping[str, str]) -> None:
        self.config = s3
        self.signer: SigV4Signer | None = None
        if s3.access_key_env and s3.secret_key_env:
            access = env.get(s3.access_key_env)
            secret = env.get(s3.secret_key_env)
            if not access or not secret:
                missing = s3.access_key_env if not access else s3.secret_key_env
                raise ValueError(f"environment variable {missing} (S3 credentials) is not set")
            token = env.get(s3.session_token_env) if s3.session_token_env else None
            self.signer = SigV4Signer(Credentials(access, secret, token), s3.region)

    def url_for(self, target: str) -> str:
        path, _, query = target.partition("?")
        mapped: S3Target | None
        if self.config.bucket is not None:
            mapped = map_fixed_bucket(path, self.config.bucket)
        else:
            mapped = map_drop_in(path, self.config.buckets)
        if mapped is None:
            raise NoSuchTarget(path)
        return object_url(self.config.endpoint, mapped, query)

    def headers(
        self, method: str, url: str, headers: Sequence[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """``headers`` plus the SigV4 fields (when signing)."""
        send = list(headers)
        if self.signer is not None:
            signed = self.signer.sign(method, url, dict(send), now=time.time())
            send.extend(signed.items())
        return send


class _Failed(Exception):
    """One failed attempt: the UpstreamError to report and whether the request never left."""

    def __init__(self, error: UpstreamError, not_sent: bool) -> None:
        super().__init__(error.reason)
        self.error = error
        self.not_sent = not_sent


class Upstream:
    """Where misses go. One aiohttp session with pooled keep-alive connections.

    ``clock`` (monotonic seconds) drives the health state; tests may pass their own.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self.session: aiohttp.ClientSession | None = None
        self.is_s3 = config.s3 is not None
        env = os.environ if environ is None else environ
        self.origin = _Origin(config.s3, env) if config.s3 is not None else None
        self.signer: SigV4Signer | None = self.origin.signer if self.origin else None
        self.fallback = (
            _Origin(config.fallback_s3, env)
            if config.fallback_s3 is not None and config.s3 is None
            else None
        )
        self.parents: list[Parent] = [
            Parent(
                spec=spec,
                candidate=Candidate(spec.ident.encode("utf-8"), spec.weight),
                health=ParentHealth(spec.ident, config.health),
            )
            for spec in (config.parent_list() if config.s3 is None else ())
        ]
        self._candidates = [p.candidate for p in self.parents]
        self.checker = HealthChecker(
            [CheckTarget(p.health, p.spec.health_url) for p in self.parents if p.spec.health_url],
            config.health,
            clock=clock,
        )
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )
        self.requests_sent = 0
        # per target (parent ident, "origin", "direct"): requests, failures, latency to the
        # response head, complete body bytes (edgeproxy.metrics)
        self.figures: dict[str, UpstreamFigures] = {}
        self.retries = 0
        self.direct_requests = 0
        self.panics = 0  # requests sent although every parent was out

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=self.timeout,
        )
        await self.checker.start()

    async def close(self) -> None:
        await self.checker.stop()
        if self.session is not None:
            await self.session.close()

    # ---- selection (pure given the health state) --------------------------------------------

    def ranked(self, hash_key: bytes) -> list[Parent]:
        """Every parent, best first for ``hash_key`` (health not considered)."""
        return [self.parents[i] for i in rendezvous_order(hash_key, self._candidates)]

    def choose(self, hash_key: bytes, now: float | None = None) -> list[Parent]:
        """The available parents, best first for ``hash_key``."""
        when = self.clock() if now is None else now
        return [p for p in self.ranked(hash_key) if p.health.available(when)]

    def url_for(self, target: str) -> str:
        """Absolute upstream URL for a normalized origin-form target (path plus query): the
        S3 object URL, or the target on the first parent in the target's hash order."""
        if self.origin is not None:
            return self.origin.url_for(target)
        return self.ranked(target.encode("utf-8", "surrogateescape"))[0].spec.url + target

    def stats(self) -> dict[str, object]:
        """A JSON-able view: counters and each parent's health."""
        now = self.clock()
        return {
            "requests": self.requests_sent,
            "retries": self.retries,
            "direct_requests": self.direct_requests,
            "panics": self.panics,
            "parents": [
                {
                    "name": p.name,
                    "url": p.spec.url,
                    "weight": p.spec.weight,
                    "health_url": p.spec.health_url,
                    "requests": p.requests,
                    "failures": p.failures,
                    **p.health.snapshot(now),
                }
                for p in self.parents
            ],
        }

    # ---- requests ---------------------------------------------------------------------------

    async def open(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterable[bytes] | None = None,
        *,
        hash_key: bytes | None = None,
    ) -> aiohttp.ClientResponse:
        """Send the request; return the response with its body unread.

        ``hash_key`` picks the parent (rendezvous); None hashes ``target``. Raises
        :class:`UpstreamError` or :class:`NoSuchTarget`; see the module docstring for the
        retry and go-direct rules.
        """
        assert self.session is not None, "Upstream.start() was not awaited"
        if self.origin is not None:
            url = self.origin.url_for(target)
            send = self.origin.headers(method, url, headers)
            try:
                response = await self._send(method, url, send, body, who="origin")
            except _Failed as failed:
                raise failed.error from failed.__cause__
            setattr(response, _ROUTE_ATTR, "origin")
            return response
        key = hash_key if hash_key is not None else target.encode("utf-8", "surrogateescape")
        return await self._open_parents(method, target, headers, body, key)

    async def _open_parents(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterable[bytes] | None,
        key: bytes,
    ) -> aiohttp.ClientResponse:
        now = self.clock()
        candidates = self.choose(key, now)
        idempotent = method in IDEMPOTENT
        max_attempts = 2 if body is None else 1  # a streamed body cannot be sent twice
        panic = not candidates
        if panic:
            if self.fallback is not None and method in ("GET", "HEAD"):
                return await self._go_direct(method, target, headers)
            # Every parent is out. Health is an opinion: one attempt still goes to the key's
            # first parent (Envoy's panic routing), so checks that failed for this node's own
            # reasons (an overloaded event loop, a partitioned admin network) never turn into
            # refusing every request on their own.
            candidates, max_attempts = self.ranked(key)[:1], 1
            self.panics += 1
        held: aiohttp.ClientResponse | None = None  # a 5xx kept while the retry runs
        last: UpstreamError | None = None
        for attempt, parent in enumerate(candidates[:max_attempts]):
            if attempt:
                self.retries += 1
            parent.requests += 1
            try:
                response = await self._send(
                    method, parent.spec.url + target, headers, body, label=parent.name
                )
            except _Failed as failed:
                self._mark_failed(parent, failed.error.reason)
                last = failed.error
                if not (failed.not_sent or idempotent):
                    break
                continue
            if response.status in FAILURE_STATUSES:
                self._mark_failed(parent, f"answered {response.status}")
                if held is not None:
                    held.release()
                held = response
                setattr(response, _ROUTE_ATTR, "retry" if attempt else "parent")
                if not idempotent:
                    break
                continue
            parent.health.request_succeeded()
            if held is not None:
                held.release()
            setattr(response, _ROUTE_ATTR, "retry" if attempt else "parent")
            return response
        if self.fallback is not None and method in ("GET", "HEAD"):
            if held is not None:
                held.release()
            return await self._go_direct(method, target, headers)
        if held is not None:
            return held
        if panic and last is not None:
            reason = f"{self._all_out_reason(now)}; last try: {last.reason}"
            raise UpstreamError(last.status, reason, detail="all-parents-down")
        if last is not None:
            raise last
        raise UpstreamError(502, self._all_out_reason(now), detail="all-parents-down")

    def _mark_failed(self, parent: Parent, error: str) -> None:
        parent.failures += 1
        parent.health.request_failed(self.clock(), error)

    def _all_out_reason(self, now: float) -> str:
        why = "; ".join(f"{p.name}: {p.health.why_out(now) or 'out'}" for p in self.parents)
        return f"every parent is out ({why})"

    async def _go_direct(
        self, method: str, target: str, headers: Sequence[tuple[str, str]]
    ) -> aiohttp.ClientResponse:
        """The fallback S3 origin; S3 refusals and errors become UpstreamError."""
        assert self.fallback is not None
        url = self.fallback.url_for(target)
        self.direct_requests += 1
        send = self.fallback.headers(method, url, headers)
        try:
            response = await self._send(method, url, send, who="origin", label="direct")
        except _Failed as failed:
            error = failed.error
            raise UpstreamError(
                error.status, f"go direct: {error.reason}", "go-direct-failed"
            ) from failed.__cause__
        if response.status not in _DIRECT_PASS:
            try:
                raw = await response.read() if method != "HEAD" else b""
            except (aiohttp.ClientError, TimeoutError):
                raw = b""
            finally:
                response.release()
            status, reason = map_s3_status(response.status, s3_error_code(raw))
            if status in _DIRECT_PASS:  # e.g. NoSuchBucket -> 404 with no body to pass on
                status = 502
            raise UpstreamError(status, f"go direct: {reason}", "go-direct-failed")
        setattr(response, _ROUTE_ATTR, "direct")
        return response

    async def _send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterable[bytes] | None = None,
        *,
        who: str = "parent",
        label: str = "origin",
    ) -> aiohttp.ClientResponse:
        """:meth:`_send_once`, counted under ``label`` (a parent's ident, "origin" or
        "direct"): the request, its latency to the response head, a failure (no answer or a
        5xx), and the body's bytes once it has been received completely."""
        figures = self.figures.get(label)
        if figures is None:
            figures = self.figures[label] = UpstreamFigures()
        figures.requests += 1
        began = time.monotonic()
        try:
            response = await self._send_once(method, url, headers, body, who=who)
        except _Failed:
            figures.failures += 1
            raise
        figures.latency.observe(time.monotonic() - began)
        if response.status >= 500:
            figures.failures += 1
        content = response.content
        content.on_eof(lambda: figures.add_body(content))
        return response

    async def _send_once(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterable[bytes] | None = None,
        *,
        who: str = "parent",
    ) -> aiohttp.ClientResponse:
        """One request; aiohttp's failures become UpstreamError (wrapped in _Failed for the
        parent loop, which needs to know whether the request left)."""
        assert self.session is not None
        self.requests_sent += 1
        try:
            return await self.session.request(
                method,
                URL(url, encoded=True),
                headers=CIMultiDict(headers),
                data=body,
                allow_redirects=False,
                compress=None,
            )
        except aiohttp.ConnectionTimeoutError as exc:
            error = UpstreamError(504, f"upstream connect timed out: {url}", f"{who}-timeout")
            raise _Failed(error, not_sent=True) from exc
        except TimeoutError as exc:
            error = UpstreamError(504, f"upstream timed out: {url}", f"{who}-timeout")
            raise _Failed(error, not_sent=False) from exc
        except asyncio.CancelledError:
            raise
        except aiohttp.ClientConnectorError as exc:
            error = UpstreamError(502, f"upstream unreachable: {exc}", f"{who}-unreachable")
            raise _Failed(error, not_sent=True) from exc
        except aiohttp.ClientError as exc:
            error = UpstreamError(502, f"upstream unreachable: {exc}", f"{who}-unreachable")
            raise _Failed(error, not_sent=False) from exc
