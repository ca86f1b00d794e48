"""A scripted in-process HTTP origin for odd origin behaviour (the real origin is SeaweedFS).

Each test registers handlers per path; every request is recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RecordingOrigin:
    """What every test origin offers: its endpoint and the requests it saw (``seen``: method,
    target, headers), counted per path."""

    seen: list[tuple[str, str, CIMultiDict[str]]]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, path: str, method: str | None = None) -> int:
        return sum(
            1
            for m, target, _ in self.seen
            if target.partition("?")[0] == path and (method is None or m == method)
        )

    def last_headers(self, path: str) -> CIMultiDict[str]:
        for _, target, headers in reversed(self.seen):
            if target.partition("?")[0] == path:
                return headers
        raise KeyError(path)


@dataclass
class ScriptedOrigin(RecordingOrigin):
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[tuple[str, str, CIMultiDict[str]]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.raw_path, CIMultiDict(request.headers)))
        handler = self.routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="not scripted")
        return await handler(request)

    async def start(self) -> None:
        self._runner = web.ServerRunner(web.Server(self._dispatch))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
