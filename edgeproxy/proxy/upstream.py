"""The upstream side: parents (other nodes or any HTTP origin) or an S3 origin, via aiohttp.

Contract: :meth:`Upstream.open` sends one request for a normalized target and returns the open
``aiohttp.ClientResponse`` (the caller streams and releases it). It sends only what it is given
(the cache key's forwarded headers plus validators/Via chosen by the handler), never adds
``Accept-Encoding``, signs S3 requests with SigV4 when credentials are configured, and maps
connection failures to :class:`UpstreamError` (502) and timeouts to 504.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterable, Sequence

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from edgeproxy.config import UpstreamConfig
from edgeproxy.proxy.s3 import (
    Credentials,
    S3Target,
    SigV4Signer,
    map_drop_in,
    map_fixed_bucket,
    object_url,
)


class UpstreamError(Exception):
    """No usable answer from upstream. ``status`` is what the client gets (502 or 504)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class NoSuchTarget(Exception):
    """The target maps to no object upstream (e.g. a bucket not allow-listed): answer 404."""


class Upstream:
    """Where misses go. One aiohttp session with pooled keep-alive connections."""

    def __init__(self, config: UpstreamConfig, environ: dict[str, str] | None = None) -> None:
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self.signer: SigV4Signer | None = None
        self.is_s3 = config.s3 is not None
        env = os.environ if environ is None else environ
        s3 = config.s3
        if s3 is not None and s3.access_key_env and s3.secret_key_env:
            access = env.get(s3.access_key_env)
            secret = env.get(s3.secret_key_env)
            if not access or not secret:
                missing = s3.access_key_env if not access else s3.secret_key_env
                raise ValueError(f"environment variable {missing} (S3 credentials) is not set")
            token = env.get(s3.session_token_env) if s3.session_token_env else None
            self.signer = SigV4Signer(Credentials(access, secret, token), s3.region)
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.connect_timeout, sock_read=config.read_timeout
        )
        self.requests_sent = 0

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

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def url_for(self, target: str) -> str:
        """Absolute upstream URL for a normalized origin-form target (path plus query)."""
        s3 = self.config.s3
        if s3 is None:
            return self.config.parents[0] + target
        path, _, query = target.partition("?")
        mapped: S3Target | None
        if s3.bucket is not None:
            mapped = map_fixed_bucket(path, s3.bucket)
        else:
            mapped = map_drop_in(path, s3.buckets)
        if mapped is None:
            raise NoSuchTarget(path)
        return object_url(s3.endpoint, mapped, query)

    async def open(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterable[bytes] | None = None,
    ) -> aiohttp.ClientResponse:
        """Send the request; return the response with its body unread."""
        assert self.session is not None, "Upstream.start() was not awaited"
        url = self.url_for(target)
        send = list(headers)
        if self.signer is not None:
            signed = self.signer.sign(method, url, dict(send), now=time.time())
            send.extend(signed.items())
        self.requests_sent += 1
        try:
            return await self.session.request(
                method,
                URL(url, encoded=True),
                headers=CIMultiDict(send),
                data=body,
                allow_redirects=False,
                compress=None,
            )
        except TimeoutError as exc:
            raise UpstreamError(504, f"upstream timed out: {url}") from exc
        except asyncio.CancelledError:
            raise
        except aiohttp.ClientError as exc:
            raise UpstreamError(502, f"upstream unreachable: {exc}") from exc
