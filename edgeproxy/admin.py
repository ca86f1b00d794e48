"""The admin listener (aiohttp): health and stats on their own, loopback-by-default port.

Contract: ``GET /healthz`` answers 200 ``{"status": "ok", ...}`` once the node serves (also while
the store index is still loading, which it reports); ``GET /stats`` reports counters and store
figures. Token-protected operations (invalidation, warm-up) belong to the operations issue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from edgeproxy.proxy.handler import Node


def build_admin_app(node: Node) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "node": node.name,
                "role": node.config.node.role,
                "store_loading": node.store.loading,
            }
        )

    async def stats(_: web.Request) -> web.Response:
        store = node.store
        return web.json_response(
            {
                "node": node.name,
                "results": dict(node.counters),
                "store": {
                    "objects": len(store.index),
                    "bytes": store.used_bytes,
                    "max_bytes": store.max_size,
                    "ram_bytes": int(store.ram.currsize),
                    "evictions": store.evictions,
                    "corrupt_dropped": store.corrupt_dropped,
                },
                "upstream_requests": node.upstream.requests_sent,
            }
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    return app
