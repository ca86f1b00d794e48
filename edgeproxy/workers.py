"""A node of N worker processes over one store, with one master (as nginx: master + workers +
cache manager).

Contract:
- The master cleans the store's temporary and in-flight files, holds the listening port (a bound
  SO_REUSEPORT socket that never accepts), starts N workers (``python -m edgeproxy.workers``),
  each accepting on its own SO_REUSEPORT socket on that port, and runs the cache manager (one
  byte budget and one eviction policy for the whole store) and the admin listener.
- Workers serve requests and report stores, accesses and drops to the master over a socket pair,
  in batches (every ``REPORT_INTERVAL``); misses are coalesced across workers by lock files.
  The same batches carry each worker's metrics figures and per-path request/miss tallies: the
  master's ``/metrics`` sums its workers, ``/popular`` is the master's merged popularity
  (persisted in the store), ``/warm`` fetches through the node's port (see
  :mod:`edgeproxy.metrics`).
- A worker that dies is restarted. SIGTERM/SIGINT: workers drain in-flight requests and stop,
  then the master stops. SIGHUP: the config file is read again; if valid, a new generation of
  workers starts and the old one drains and exits (listening sockets overlap, so no connection
  is refused); if not, the error is logged and the running workers stay. This is also how a
  renewed TLS certificate is taken up: the new workers load it (``load_config`` has checked
  it), connections established with the old workers keep theirs.
- The admin ``/healthz`` lists the started ``workers`` and, of those, the ``listening`` ones
  (a worker reports it right after it accepts connections); it answers 200 once one listens.
- ``node.tls_listen``: the master holds that port too and hands it to the workers.
  ``node.limits.max_connections`` applies per worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from edgeproxy.config import Config, ConfigError, load_config
from edgeproxy.metrics import WorkerFigures, worker_report_lines
from edgeproxy.popularity import Popularity, Tally
from edgeproxy.popularity import load_file as load_popularity
from edgeproxy.popularity import save_file as save_popularity

log = logging.getLogger("edgeproxy.master")

REPORT_INTERVAL = 0.1
LISTENING_LINE = "L"  # a worker's report: it accepts connections on the node's port(s)
ORPHAN_CHECK_INTERVAL = 0.5  # seconds between checks that the master is still there
RESTART_BACKOFF = 0.5


# ---- worker side ---------------------------------------------------------------------------


class Reporter:
    """Batches store events of one worker and sends them to the master."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lines: list[str] = []
        self.touched: set[str] = set()
        # the worker's Node: its path tallies and figures go along (edgeproxy.metrics)
        self.node: Any = None
        self._figures = [""]

    def __call__(self, kind: str, key: str, size: int) -> None:
        if kind == "a":
            self.touched.add(key)
        elif kind == "m" and len(self.lines) > 10_000:
            return  # best effort under a flood of misses: the budget lines matter more
        else:
            self.lines.append(f"{kind} {key} {size}\n")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            extra = worker_report_lines(self.node, self._figures) if self.node is not None else []
            if not self.lines and not self.touched and not extra:
                continue
            batch = [f"a {key}\n" for key in self.touched]  # one per key per batch
            batch.extend(self.lines)  # stores after accesses: a new entry starts most recent
            batch.extend(extra)
            self.touched.clear()
            self.lines = []
            try:
                await loop.sock_sendall(self.sock, "".join(batch).encode())
            except OSError:
                return  # the master is gone; we are being stopped


async def _worker_main(
    config: Config,
    port: int,
    report_fd: int,
    workers: int,
    tls_port: int | None = None,
    master_pid: int | None = None,
) -> None:
    from edgeproxy.app import RunningNode

    node = RunningNode(config, worker_of=workers)
    sock = socket.socket(fileno=report_fd)
    sock.setblocking(False)
    reporter = Reporter(sock)
    node.store.report = reporter
    reporter.node = node.node
    node.node.popularity = Tally()  # counted here, decayed and kept by the master
    node.node.traffic.missed = Tally()
    await node.start(listen_port=port, tls_listen_port=tls_port)
    # tell the master this worker listens (until then /healthz does not count it as listening)
    reporter.lines.append(f"{LISTENING_LINE}\n")
    task = asyncio.get_running_loop().create_task(reporter.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the master handles reloads
    loop.add_signal_handler(signal.SIGUSR1, node.reopen_logs)  # the master forwards it
    orphan_watch = loop.create_task(
        _stop_when_orphaned(master_pid if master_pid is not None else os.getppid(), stop)
    )
    await stop.wait()
    orphan_watch.cancel()
    await node.stop(drain_timeout=10.0)
    await asyncio.sleep(REPORT_INTERVAL * 1.5)  # let the last batch go out
    task.cancel()


async def _stop_when_orphaned(master_pid: int, stop: asyncio.Event) -> None:
    """A worker whose master died (kill -9) stops by itself: the next master of this store
    cleans its temporary files and locks at start, which must not happen under a live worker.
    The parent changes (re-parented to init or a subreaper) when the master is gone."""
    while not stop.is_set():
        await asyncio.sleep(ORPHAN_CHECK_INTERVAL)
        if os.getppid() != master_pid:
            log.warning("the master (pid %d) is gone: stopping this worker", master_pid)
            stop.set()


def worker_entry(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeproxy-worker")
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--tls-port", type=int, default=None)
    # the master's PID, given by the master itself: a worker started while its master dies
    # must not take init (or a container's PID 1 master) for its master
    parser.add_argument("--master-pid", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s worker-{os.getpid()} %(name)s: %(message)s",
    )
    import uvloop

    config = load_config(args.config)
    master_pid = args.master_pid if args.master_pid is not None else os.getppid()
    uvloop.run(
        _worker_main(config, args.port, args.report_fd, args.workers, args.tls_port, master_pid)
    )
    return 0


# ---- master side ---------------------------------------------------------------------------


class Master:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.workers: dict[int, asyncio.subprocess.Process] = {}
        self.listening: set[int] = set()  # workers that reported they accept connections
        self.generation = 0
        self.stopping = False
        self.port = 0
        self.tls_port = 0  # the held tls_listen port (0: none)
        self.restarts = 0
        self._holder: socket.socket | None = None
        self._tls_holder: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # the workers' figures and path tallies, summed (edgeproxy.metrics); the popularity
        # is kept here and persisted in the store (edgeproxy.popularity)
        self.popularity = Popularity()
        self.missed = Popularity(max_paths=10_000)
        self.figures = WorkerFigures(self.popularity, self.missed)
        self._readers: set[asyncio.Task[Any]] = set()
        self.manager: Any = None  # the StoreManager, once started
        self.invalidations: Any = None  # admin.Invalidations over the disk, once started

    @staticmethod
    def _bind_holder(host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        holder = socket.socket(family, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
        return holder  # bound, never listening: keeps the port, takes no connection

    def _hold_port(self) -> None:
        cfg = self.config.node
        self._holder = self._bind_holder(cfg.listen_host, cfg.listen_port)
        self.port = self._holder.getsockname()[1]
        if cfg.tls_listen_host is not None:
            self._tls_holder = self._bind_holder(cfg.tls_listen_host, cfg.tls_listen_port)
            self.tls_port = self._tls_holder.getsockname()[1]

    async def _spawn(self) -> None:
        parent, child = socket.socketpair()
        parent.setblocking(False)
        workers = self.config.node.workers
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edgeproxy.workers",
            "--config",
            self.config.file,
            "--port",
            str(self.port),
            "--report-fd",
            str(child.fileno()),
            "--workers",
            str(workers),
            *(("--tls-port", str(self.tls_port)) if self.tls_port else ()),
            "--master-pid",
            str(os.getpid()),
            pass_fds=(child.fileno(),),
        )
        child.close()
        self.workers[proc.pid] = proc
        generation = self.generation
        self._track(self._read_reports(parent, proc.pid))
        self._track(self._watch(proc, generation))

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_reports(self, sock: socket.socket, worker: int = 0) -> None:
        loop = asyncio.get_running_loop()
        buffer = b""
        reader = asyncio.current_task()
        if reader is not None:
            self._readers.add(reader)
        try:
            while True:
                data = await loop.sock_recv(sock, 65536)
                if not data:
                    return
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                now = time.time()
                for line in lines:
                    text = line.decode("ascii", "replace")
                    if text == LISTENING_LINE:
                        if worker in self.workers:
                            self.listening.add(worker)
                    elif text.startswith("i "):
                        self._invalidate_path(text.split()[1])
                    elif not self.figures.handle_line(worker, text, now):
                        self.manager.handle_line(text, now)
                await self.manager.enforce()
        finally:
            self.figures.retire(worker)
            self._readers.discard(reader)  # type: ignore[arg-type]
            sock.close()

    def _invalidate_path(self, path: str) -> None:
        """A worker invalidated a URI after an unsafe method (RFC 9111 sec. 4.4): it dropped
        what it knew; a hard ban for the exact path makes every worker drop what it holds,
        and the disk walk removes what none of them knew (another worker's Vary variants)."""
        if self.invalidations is None or "*" in path:
            return
        task = asyncio.get_running_loop().create_task(self._ban_path(path))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ban_path(self, path: str) -> None:
        from edgeproxy.admin import BadPattern

        try:
            await self.invalidations.create([path], True)
        except (BadPattern, OSError) as exc:
            log.warning("cannot ban %s after an unsafe method: %s", path, exc)

    async def _watch(self, proc: asyncio.subprocess.Process, generation: int) -> None:
        from edgeproxy.cache.store import remove_temporary_files_of

        code = await proc.wait()
        self.workers.pop(proc.pid, None)
        self.listening.discard(proc.pid)
        # what it was writing can never be published (a clean exit leaves nothing; a kill -9
        # leaves its part files); its PID is in their names
        removed = await asyncio.get_running_loop().run_in_executor(
            None, remove_temporary_files_of, self.config.store.path, proc.pid
        )
        if removed:
            log.info("removed %d temporary files of worker %d", removed, proc.pid)
        if self.stopping or generation != self.generation:
            return
        self.restarts += 1
        log.warning("worker %d exited with %s: restarting", proc.pid, code)
        await asyncio.sleep(RESTART_BACKOFF)
        if not self.stopping and generation == self.generation:
            await self._spawn()

    async def _wait_ready(self, timeout: float = 20.0) -> None:
        """Until a connection to the port is accepted (some worker listens)."""
        deadline = time.monotonic() + timeout
        host = self.config.node.listen_host
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(host, self.port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise RuntimeError("workers did not start listening")

    async def reload(self) -> None:
        try:
            config = load_config(self.config.file)
        except ConfigError as exc:
            log.error("reload refused, keeping the running workers: %s", exc)
            return
        old_cfg, new_cfg = self.config.node, config.node
        if (
            config.store.path != self.config.store.path
            or (new_cfg.listen_host, new_cfg.listen_port)
            != (old_cfg.listen_host, old_cfg.listen_port)
            or (new_cfg.tls_listen_host, new_cfg.tls_listen_port)
            != (old_cfg.tls_listen_host, old_cfg.tls_listen_port)
        ):
            log.error("reload refused: store.path, node.listen and tls_listen need a restart")
            return
        old = dict(self.workers)
        self.config = config
        self.generation += 1
        for _ in range(config.node.workers):
            await self._spawn()
        await asyncio.sleep(0.5)  # new sockets listen before the old ones close
        for proc in old.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        log.info("reloaded %s: generation %d", config.file, self.generation)

    async def stop(self) -> None:
        self.stopping = True
        procs = list(self.workers.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 15.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def _save_periodically(self) -> None:
        while not self.stopping:
            await asyncio.sleep(300.0)
            await self.manager.save_state()
            await self._save_popularity()

    def _signal_workers(self, sig: int) -> None:
        for proc in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)

    def _dropped(self, key_hex: str) -> None:
        """A hard invalidation deleted an entry: the manager forgets it."""
        if self.manager is not None:
            self.manager.handle_line(f"d {key_hex}", time.time())

    async def _save_popularity(self) -> None:
        state = self.popularity.dump(time.time())
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, save_popularity, state, self.config.store.path
            )
        except OSError as exc:
            log.warning("popularity not saved: %s", exc)

    def admin_app(self) -> web.Application:
        from edgeproxy.admin import listen_url_of, make_admin_app
        from edgeproxy.metrics import MasterCollector, registry_for

        async def healthz(_: web.Request) -> web.Response:
            listening = sorted(self.listening)
            return web.json_response(
                {
                    "status": "ok" if listening else "starting",
                    "node": self.config.node.name,
                    "role": self.config.node.role,
                    "workers": sorted(self.workers),  # started
                    "listening": listening,  # of those, the ones accepting connections
                },
                status=200 if listening else 503,
            )

        async def stats(_: web.Request) -> web.Response:
            m = self.manager
            return web.json_response(
                {
                    "node": self.config.node.name,
                    "workers": sorted(self.workers),
                    "worker_restarts": self.restarts,
                    "results": self.figures.total().results,
                    "store": {
                        "objects": len(m.sizes),
                        "bytes": m.used_bytes,
                        "max_bytes": m.max_size,
                        "evictions": m.evictions,
                    },
                }
            )

        collector = MasterCollector(
            config=lambda: self.config.node,
            manager=lambda: self.manager,
            workers=lambda: len(self.workers),
            restarts=lambda: self.restarts,
            invalidations=lambda: self.invalidations,
            figures=self.figures.total,
        )
        return make_admin_app(
            token_env=self.config.node.admin_token_env,
            environ=None,
            healthz=healthz,
            stats=stats,
            registry=registry_for(collector),
            invalidations=lambda: self.invalidations,
            popularity=lambda: self.popularity,
            missed=lambda: self.missed,
            # POST /warm fetches through the node's own port: the fill lands in the store
            listen_url=lambda: listen_url_of(self.config.node.listen_host, self.port),
            name=self.config.node.name,
        )

    async def run(self) -> None:
        from edgeproxy.cache.manager import StoreManager
        from edgeproxy.cache.store import DiskStore
        from edgeproxy.proxy.coalesce import Coalescer

        cfg = self.config
        # a fresh start of the node: temporary and in-flight files of a previous run go
        prep = DiskStore(cfg.store.path, max_size=1, ram_size=1, ram_object_max=1)
        await prep.run_io(prep._prepare_dirs)
        await prep.close()
        Coalescer(cfg.store.path).prepare(clean=True)
        self.manager = StoreManager(
            cfg.store.path,
            cfg.store.max_size,
            min_free=cfg.store.min_free,
            min_free_percent=cfg.store.min_free_percent,
            eviction=cfg.store.eviction,
            object_weight=cfg.store.object_weight,
        )
        await self.manager.start()
        from edgeproxy.admin import Invalidations, walk_disk
        from edgeproxy.cache.epoch import SharedEpoch

        # bans: the master writes <store>/bans.json and bumps the epoch; workers reload it
        root = cfg.store.path
        self.invalidations = Invalidations(
            root,
            lambda bans: walk_disk(root, bans, self._dropped),
            epoch=SharedEpoch(root),
        )
        await self.invalidations.start()
        await asyncio.get_running_loop().run_in_executor(
            None, load_popularity, self.popularity, root, time.time()
        )
        self._hold_port()
        for _ in range(cfg.node.workers):
            await self._spawn()
        await self._wait_ready()
        runner = web.AppRunner(self.admin_app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, cfg.node.admin_host, cfg.node.admin_port)
        await site.start()
        log.info(
            "node %s (%s): %d workers on %s://%s:%d/%s (admin http://%s:%d/healthz)",
            cfg.node.name,
            cfg.node.role,
            cfg.node.workers,
            "https" if cfg.node.tls_on_listen else "http",
            cfg.node.listen_host,
            self.port,
            f" and https://{cfg.node.tls_listen_host}:{self.tls_port}/" if self.tls_port else "",
            cfg.node.admin_host,
            site._server.sockets[0].getsockname()[1] if site._server else cfg.node.admin_port,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._track(self.reload()))
        loop.add_signal_handler(signal.SIGUSR1, lambda: self._signal_workers(signal.SIGUSR1))
        self._track(self._save_periodically())
        await stop.wait()
        log.info("node %s stopping", cfg.node.name)
        await self.stop()
        if self._readers:  # the workers' last reports (figures, tallies)
            await asyncio.wait(set(self._readers), timeout=2.0)
        await self._save_popularity()
        await runner.cleanup()
        await self.invalidations.close()
        await self.manager.save_state()
        self.manager.close()
        if self._holder is not None:
            self._holder.close()
        if self._tls_holder is not None:
            self._tls_holder.close()


def run_master(config: Config) -> None:
    import uvloop

    uvloop.run(Master(config).run())


if __name__ == "__main__":
    sys.exit(worker_entry())
