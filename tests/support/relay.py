"""A counting HTTP relay in front of a real origin, so tests can prove what reached it.

It forwards method, target, headers (Host included, so SigV4 signatures stay valid) and body
verbatim to ``upstream`` and records ``(method, target, headers)`` of every request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}


@dataclass
class Seen:
    method: str
    target: str
    headers: CIMultiDict[str]


@dataclass
class CountingRelay:
    upstream: str  # e.g. "http://127.0.0.1:8333"
    seen: list[Seen] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str | None = None, path_prefix: str = "") -> int:
        return sum(
            1
            for s in self.seen
            if (method is None or s.method == method) and s.target.startswith(path_prefix)
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        self.seen.append(Seen(request.method, request.raw_path, CIMultiDict(request.headers)))
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP)
        body = await request.read()
        async with self._session.request(
            request.method,
            URL(self.upstream + request.raw_path, encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as up:
            out = CIMultiDict(
                (k, v) for k, v in up.headers.items() if k.lower() not in HOP | {"content-length"}
            )
            resp = web.StreamResponse(status=up.status, reason=up.reason, headers=out)
            if up.content_length is not None:
                resp.content_length = up.content_length
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False, skip_auto_headers=("Accept-Encoding", "User-Agent")
        )
        server = web.Server(self._handle)
        self._runner = web.ServerRunner(server)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
