"""Running one node: store, upstream, client-facing server and admin listener on uvloop.

Contract: :func:`serve` runs until SIGINT/SIGTERM, then stops accepting, drains in-flight
requests (up to ``drain_timeout``) and closes everything it opened. :class:`RunningNode` is the
same for tests (start/stop inside an existing event loop).

TLS (``node.tls_cert``/``tls_key``): without ``tls_listen`` the listen port speaks HTTPS only;
with it, ``listen`` stays plain HTTP and ``tls_listen`` serves HTTPS, both through one server
(one connection limit). SIGHUP reads the certificate and key files again: new connections get
the new certificate, established ones keep theirs; a broken pair is logged and the old one
stays. (A multi-process node reloads its whole config on SIGHUP: see :mod:`edgeproxy.workers`.)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time

from aiohttp import web

from edgeproxy.accesslog import AccessLog
from edgeproxy.admin import Invalidations, build_admin_app, walk_index
from edgeproxy.cache import entry as entry_module
from edgeproxy.cache.bans import read_ban_file
from edgeproxy.cache.store import DiskStore
from edgeproxy.config import Config
from edgeproxy.popularity import load_file as load_popularity
from edgeproxy.popularity import save_file as save_popularity
from edgeproxy.proxy.coalesce import Coalescer
from edgeproxy.proxy.handler import Node
from edgeproxy.proxy.server import HttpServer
from edgeproxy.proxy.upstream import Upstream
from edgeproxy.tls import TlsContexts, TlsError

log = logging.getLogger("edgeproxy")

STATE_SAVE_INTERVAL = 300.0  # the eviction policy's popularity state, also saved at stop
SWEEP_INTERVAL = 30.0  # markers of finished fills older than coalesce.STALE_MARKER_AGE go


class RunningNode:
    """A node started inside the current event loop."""

    def __init__(
        self,
        config: Config,
        environ: dict[str, str] | None = None,
        *,
        worker_of: int = 1,
    ) -> None:
        """``worker_of`` > 1: one of that many worker processes over one store (the master
        cleans the store at start, runs the manager and the admin listener)."""
        self.config = config
        self.environ = environ
        self.worker = worker_of > 1
        entry_module.TARGETED_FIELDS = config.node.targeted_cache_control  # one node a process
        self.store = DiskStore(
            config.store.path,
            max_size=config.store.max_size,
            ram_size=max(config.store.ram_size // worker_of, config.store.ram_object_max),
            ram_object_max=config.store.ram_object_max,
            shared=self.worker,
            min_free=config.store.min_free,
            min_free_percent=config.store.min_free_percent,
            max_object_share=config.store.max_object_share,
            eviction=config.store.eviction,
            object_weight=config.store.object_weight,
        )
        self.upstream = Upstream(config.upstream, environ)
        # one process: no sibling to coordinate with, so no lock files on a miss's path
        self.coalescer = Coalescer(
            config.store.path, executor=self.store.executor, across_processes=self.worker
        )
        self.node = Node(config, self.store, self.upstream, self.coalescer, environ)
        self.server = HttpServer(self.node, config.node)
        self._admin_runner: web.AppRunner | None = None
        self._saver: asyncio.Task[None] | None = None
        self.invalidations: Invalidations | None = None  # multi-process: the master has it
        self.access_log: AccessLog | None = None
        self.tls: TlsContexts | None = None
        self.port = 0
        self.tls_port = 0  # the HTTPS port (= port when listen itself speaks TLS), 0: none
        self.admin_port = 0

    async def start(
        self, *, listen_port: int | None = None, tls_listen_port: int | None = None
    ) -> None:
        cfg = self.config.node
        if cfg.tls_cert is not None and cfg.tls_key is not None:
            self.tls = TlsContexts(cfg.tls_cert, cfg.tls_key)
        await self.store.start()
        await self.store.run_io(self.coalescer.prepare, not self.worker)
        await self.upstream.start()
        if cfg.access_log != "off":
            self.access_log = AccessLog(cfg.access_log, cfg.name)
            self.node.access_log = self.access_log
        root = self.config.store.path
        if self.worker:
            from edgeproxy.cache.epoch import SharedEpoch

            # the epoch first, then the bans: a ban added in between bumps the epoch again
            self.node.epoch = SharedEpoch(root)
            self.node.seen_epoch, self.node.seen_bans = self.node.epoch.values()
            self.node.bans = (await self.store.run_io(read_ban_file, root))[0]  # type: ignore[index]
        else:
            self.invalidations = Invalidations(root, functools.partial(walk_index, self.store))
            await self.invalidations.start()
            self.node.bans = self.invalidations.bans
            # what was hot before a restart (a multi-process node's master keeps it)
            await self.store.run_io(load_popularity, self.node.popularity, root, time.time())
        port = cfg.listen_port if listen_port is None else listen_port
        tls_ctx = self.tls.listener if self.tls is not None else None
        self.port = await self.server.start(
            cfg.listen_host,
            port,
            reuse_port=self.worker,
            ssl=tls_ctx if cfg.tls_on_listen else None,
        )
        if cfg.tls_on_listen:
            self.tls_port = self.port
        elif cfg.tls_listen_host is not None:
            self.tls_port = await self.server.start(
                cfg.tls_listen_host,
                cfg.tls_listen_port if tls_listen_port is None else tls_listen_port,
                reuse_port=self.worker,
                ssl=tls_ctx,
            )
        if self.tls_port:
            self.node.https_port = self.tls_port
        self._saver = asyncio.get_running_loop().create_task(self._save_periodically())
        if self.worker:
            return  # the master serves the admin API
        self._admin_runner = web.AppRunner(
            build_admin_app(self.node, self.invalidations, self.environ), access_log=None
        )
        await self._admin_runner.setup()
        site = web.TCPSite(self._admin_runner, cfg.admin_host, cfg.admin_port)
        await site.start()
        server = site._server
        self.admin_port = server.sockets[0].getsockname()[1] if server else cfg.admin_port

    async def _save_periodically(self) -> None:
        """Housekeeping: the policy state every few minutes, old in-flight markers."""
        elapsed = 0.0
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            elapsed += SWEEP_INTERVAL
            await self.store.run_io(self.coalescer.sweep, time.time())
            if elapsed >= STATE_SAVE_INTERVAL:
                elapsed = 0.0
                await self.store.save_state()
                await self.save_popularity()

    async def save_popularity(self) -> None:
        """The request popularity to ``<store>/popularity.json`` (not in a worker: its
        master keeps the node's). A failure is logged; serving goes on."""
        if self.worker:
            return
        state = self.node.popularity.dump(time.time())
        loop = asyncio.get_running_loop()
        try:  # the loop's executor: the store's may be shut down already
            await loop.run_in_executor(None, save_popularity, state, self.config.store.path)
        except OSError as exc:
            log.warning("popularity not saved: %s", exc)

    def reload_tls(self) -> bool:
        """SIGHUP: read the certificate and key again (new connections get them); on failure
        log it and keep serving the old pair. True when a new pair is in use."""
        if self.tls is None:
            return False
        try:
            self.tls.reload()
        except TlsError as exc:
            log.error("TLS reload refused, keeping the old certificate: %s: %s", exc.option, exc)
            return False
        log.info("TLS certificate reloaded from %s", self.tls.cert)
        return True

    def reopen_logs(self) -> None:
        """SIGUSR1: reopen the access log file (after it was renamed for rotation)."""
        if self.access_log is not None:
            self.access_log.reopen()

    async def stop(self, drain_timeout: float = 10.0) -> None:
        if self._saver is not None:
            self._saver.cancel()
        await self.server.stop(drain_timeout)
        await self.node.drain(drain_timeout)
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        if self.invalidations is not None:
            await self.invalidations.close()
        await self.upstream.close()
        await self.save_popularity()
        await self.store.close()
        if self.access_log is not None:
            self.node.access_log = None
            self.access_log.close()


async def _serve(config: Config) -> None:
    node = RunningNode(config)
    await node.start()
    log.info(
        "node %s (%s) serving %s://%s:%d/ (admin http://%s:%d/healthz)",
        config.node.name,
        config.node.role,
        "https" if config.node.tls_on_listen else "http",
        config.node.listen_host,
        node.port,
        config.node.admin_host,
        node.admin_port,
    )
    if config.node.tls_listen_host is not None:
        log.info(
            "node %s serving https://%s:%d/",
            config.node.name,
            config.node.tls_listen_host,
            node.tls_port,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, node.reopen_logs)
    loop.add_signal_handler(signal.SIGHUP, node.reload_tls)
    await stop.wait()
    log.info("node %s stopping", config.node.name)
    await node.stop()


def serve(config: Config) -> None:
    """Run a node on uvloop until SIGINT/SIGTERM (a master and workers when workers > 1)."""
    import uvloop

    from edgeproxy.cache.store import MAX_MAPPED
    from edgeproxy.fdlimit import fds_needed, raise_open_file_limit

    upstream = config.upstream.max_connections
    raise_open_file_limit(fds_needed(config.node.max_connections, upstream, MAX_MAPPED))
    if config.node.workers > 1:
        from edgeproxy.workers import run_master

        run_master(config)
        return
    uvloop.run(_serve(config))
