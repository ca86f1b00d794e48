"""The admin listener (aiohttp) on its own, loopback-by-default port: health, stats, metrics,
invalidations.

Contract:
- Every call needs ``Authorization: Bearer <token>``, the token being the value of the
  environment variable named by ``node.admin_token_env`` (default ``EDGEPROXY_ADMIN_TOKEN``),
  compared in constant time. Without it: 401; when the variable is unset or empty: 503 with a
  message saying how to set it (no token means no admin API, never an open one).
- Open without a token, read-only: ``GET /healthz`` (liveness/readiness probes cannot carry
  secrets), ``GET /metrics`` (Prometheus scrapes; the figures are aggregate counters, no object
  names), and ``GET /stats`` (the same aggregate figures as JSON; the benchmarks read it). What
  changes state or names objects (``/invalidations``) is protected.
- JSON in, JSON out; errors are ``{"error": "..."}`` with 400, 401, 404, 405 or 503.

API:
- ``GET /healthz`` -> ``{"status": "ok", "node", "role", "store_loading"}``
- ``GET /stats`` -> counters and store figures
- ``GET /metrics`` -> Prometheus text format (see :mod:`edgeproxy.metrics`)
- ``POST /invalidations {"paths": ["/audio/a.mp3", "/images/*"], "hard": false}`` -> 201
  ``{"id", "status": "InProgress"|"Completed", "paths": [normalized], "hard", "created_at",
  "completed_at"}``. Paths are exact or end with ``*`` (a prefix, CloudFront's rule). Soft (the
  default): entries are marked stale, so the next request revalidates with a conditional request
  and stale-if-error still protects the origin; ``hard``: entries are deleted. Bans are recorded
  at once (no store scan on the request) and applied on lookup; a background walk applies them
  to the whole store in batches, then the invalidation is ``Completed``. A ban stays active for
  ``BAN_LINGER`` seconds more (a fill in flight at the invalidation publishes an older response
  later), and is retired by the next walk after that.
- On a multi-process node the master serves this API: it writes ``<store>/bans.json`` and bumps
  the shared epoch; every worker then re-reads the ban list (and forgets its in-memory view).
- ``GET /invalidations`` -> ``{"invalidations": [...]}`` (newest first);
  ``GET /invalidations/{id}`` -> one, or 404.
- ``GET /popular?top=N`` (default 100, at most 10000) -> ``{"node", "of", "paths": [{"path",
  "count", "recent", "trend"}]}``, hottest first: decayed request counts per normalized path
  (:mod:`edgeproxy.popularity`; ``count`` with the long half-life, ``recent`` the short one,
  ``trend`` rising/steady/falling). ``of=misses``: the same for the requests that went
  upstream (miss, expired, revalidated): the paths that miss most. On a multi-process node the
  master answers from its workers' tallies, merged (see :mod:`edgeproxy.metrics`).
- ``POST /warm {"paths": ["/a.mp3", ...]}`` -> 200 ``{"node", "results": [{"path", "status",
  "cache_status", "bytes"} | {"path", "error"}]}``: each path is fetched with a GET through
  this node's own listener (at most ``WARM_CONCURRENCY`` at a time, each within
  ``WARM_TIMEOUT``), so it is stored here and in every tier above. 503 when the node's
  listen address is not known (listen port 0 without a ``listen_url``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from edgeproxy.cache.bans import (
    BadPattern,
    BanList,
    dump_bans,
    expired_lifetime,
    normalize_pattern,
    read_ban_file,
    write_ban_file,
)
from edgeproxy.cache.entry import Entry
from edgeproxy.metrics import NodeCollector, exposition, registry_for

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from edgeproxy.cache.epoch import SharedEpoch
    from edgeproxy.cache.store import DiskStore
    from edgeproxy.popularity import Popularity
    from edgeproxy.proxy.handler import Node

log = logging.getLogger("edgeproxy.admin")

# (method, path) answered without a token; see the module docstring for why
OPEN = frozenset(
    (method, path) for method in ("GET", "HEAD") for path in ("/healthz", "/metrics", "/stats")
)
MAX_PATHS = 1000  # per invalidation or warm request
MAX_TOP = 10_000  # GET /popular?top=N
WARM_CONCURRENCY = 8
WARM_TIMEOUT = 120.0  # seconds per warmed path
MAX_RECORDS = 1000  # invalidation records kept for GET /invalidations/{id}
WALK_BATCH = 256  # entries (index walk) per batch before yielding to the event loop
WALK_DIRS = 32  # object directories (disk walk) per executor call
RETRY_WALK = 5.0  # seconds before a failed walk is tried again
# A ban stays active this long after it was added, and is retired only by a walk that started
# after that: a fill that was in flight at the ban (its response older than the ban) and is
# published after the first walk is still caught, on lookup or by that later walk.
BAN_LINGER = 60.0

Walk = Callable[[BanList], Awaitable[None]]


# ---- invalidations ---------------------------------------------------------------------------


class Invalidations:
    """The ban list of one store, its file, the invalidation records and the background walk
    that applies and retires bans (Varnish's ban lurker).

    ``walk(bans)`` applies ``bans`` to every entry of the store: :func:`walk_index` on a
    single-process node, :func:`walk_disk` in a multi-process node's master. ``epoch``: the
    node's shared epoch, bumped whenever the ban list changes so every worker reloads it.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        walk: Walk,
        *,
        epoch: SharedEpoch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.walk = walk
        self.epoch = epoch
        self.clock = clock
        self.bans = BanList()
        self.records: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.total = 0
        self.linger = BAN_LINGER
        self._lurker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._write_lock = asyncio.Lock()

    async def start(self) -> None:
        """Load the persisted bans and records; walk if bans are pending (after a restart)."""
        bans, records = await asyncio.get_running_loop().run_in_executor(
            None, read_ban_file, self.root
        )
        self.bans = bans
        for record in records[-MAX_RECORDS:]:
            if isinstance(record.get("id"), str):
                self.records[record["id"]] = record
        if self.bans.items:
            self._kick()

    async def close(self) -> None:
        if self._lurker is not None and not self._lurker.done():
            self._lurker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lurker

    async def create(self, paths: list[str], hard: bool) -> dict[str, Any]:
        """Ban every path (all or none: raises :class:`BadPattern` before adding any)."""
        patterns = list(dict.fromkeys(normalize_pattern(p) for p in paths))
        now = self.clock()
        ident = "I" + secrets.token_hex(7).upper()
        for pattern in patterns:
            self.bans.add(pattern, now, hard, ident)
        record: dict[str, Any] = {
            "id": ident,
            "paths": patterns,
            "hard": hard,
            "created_at": now,
            "completed_at": None,
        }
        self.records[ident] = record
        while len(self.records) > MAX_RECORDS:
            self.records.popitem(last=False)
        self.total += 1
        await self._persist()
        log.info("invalidation %s: %s%s", ident, ", ".join(patterns), " (hard)" if hard else "")
        self._kick()
        return self.view(record)

    def view(self, record: dict[str, Any]) -> dict[str, Any]:
        done = record.get("completed_at") is not None or not self.bans.pending(record["id"])
        return {
            "id": record["id"],
            "status": "Completed" if done else "InProgress",
            "paths": record["paths"],
            "hard": record["hard"],
            "created_at": record["created_at"],
            "completed_at": record.get("completed_at"),
        }

    def get(self, ident: str) -> dict[str, Any] | None:
        record = self.records.get(ident)
        return self.view(record) if record is not None else None

    def listing(self) -> list[dict[str, Any]]:
        return [self.view(r) for r in reversed(self.records.values())]

    async def _persist(self, *, bans_changed: bool = True, retired: bool = False) -> None:
        """Write the ban file (serialized: the last state wins). Bans added: bump the bans
        epoch (every worker re-reads the list; bans apply on lookup). Bans retired: bump the
        view epoch, so every worker also forgets its in-memory copies (a worker that saw no
        request during a ban's whole life must not serve what the walk deleted or marked)."""
        async with self._write_lock:
            raw = dump_bans(self.bans, self.records.values())  # on the loop: a consistent view
            await asyncio.get_running_loop().run_in_executor(None, write_ban_file, self.root, raw)
            if self.epoch is not None:
                if retired:
                    self.epoch.bump()
                elif bans_changed:
                    self.epoch.bump_bans()

    def _kick(self) -> None:
        self._wake.set()
        if self._lurker is None or self._lurker.done():
            self._lurker = asyncio.get_running_loop().create_task(self._lurk())

    async def _lurk(self) -> None:
        """Walk while bans are active: a walk completes the invalidations added before it
        started; bans retire once a walk that started ``linger`` seconds after them is done."""
        walked_before = float("-inf")  # bans added before this were applied by a full walk
        while self.bans.items:
            pending = [ban.at for ban in self.bans.items if ban.at >= walked_before]
            if not pending:  # all applied: wait for the oldest to be old enough to retire
                wait = min(ban.at for ban in self.bans.items) + self.linger - self.clock()
                if wait > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    continue
            started = self.clock()
            try:
                await self.walk(self.bans)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("invalidation walk failed; retrying in %.0fs", RETRY_WALK)
                await asyncio.sleep(RETRY_WALK)
                continue
            walked_before = started
            done_at = self.clock()
            completed = False
            for ban in self.bans.items:
                record = self.records.get(ban.invalidation)
                if ban.at < started and record is not None and record["completed_at"] is None:
                    record["completed_at"] = done_at
                    completed = True
            retired = bool(self.bans.retire(started - self.linger))
            if completed or retired:
                try:
                    await self._persist(bans_changed=retired, retired=retired)
                except OSError as exc:
                    log.warning("cannot write the ban file: %s", exc)
            await asyncio.sleep(0)


async def walk_index(store: DiskStore, bans: BanList) -> None:
    """Apply ``bans`` to every entry of a single-process node's index, in batches."""
    await store.wait_loaded()
    keys = list(store.index)
    for first in range(0, len(keys), WALK_BATCH):
        for key_hex in keys[first : first + WALK_BATCH]:
            entry = store.index.get(key_hex)
            if entry is None:
                continue
            ban = bans.match(entry.path, entry.response_time)
            if ban is None:
                continue
            if ban.hard:
                await store.drop(key_hex, only=entry)
                continue
            lifetime = expired_lifetime(
                entry.response_time, entry.initial_age, entry.lifetime, ban.at
            )
            if lifetime is not None:
                entry.lifetime = lifetime
                entry.set_headers(entry.headers)  # recomputes fresh_until
                await store.update_meta(entry)
        await asyncio.sleep(0)


async def walk_disk(
    root: str | os.PathLike[str], bans: BanList, on_drop: Callable[[str], None]
) -> None:
    """Apply ``bans`` to every entry's metadata file under ``root`` (a multi-process node's
    master, which has no index of its own): batches of directories in the executor."""
    loop = asyncio.get_running_loop()
    objects = Path(root) / "objects"
    snapshot = BanList(bans.items)  # read in threads: never the list the loop changes
    dirs = await loop.run_in_executor(None, lambda: sorted(objects.glob("*/*")))
    for first in range(0, len(dirs), WALK_DIRS):
        dropped = await loop.run_in_executor(
            None, _walk_dirs_sync, Path(root), dirs[first : first + WALK_DIRS], snapshot
        )
        for key_hex in dropped:
            on_drop(key_hex)


def _walk_dirs_sync(root: Path, dirs: list[Path], bans: BanList) -> list[str]:
    dropped: list[str] = []
    tmp_dir = root / "tmp"
    for directory in dirs:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if not name.endswith(".meta"):
                continue
            meta = directory / name
            try:
                entry = Entry.from_json(meta.read_bytes())
            except (OSError, ValueError):
                continue
            ban = bans.match(entry.path, entry.response_time)
            if ban is None:
                continue
            if ban.hard:
                if _still_names(meta, entry.body_file):
                    with contextlib.suppress(OSError):
                        meta.unlink()
                        dropped.append(entry.key_hex)
                with contextlib.suppress(OSError):
                    (directory / entry.body_file).unlink()
                continue
            lifetime = expired_lifetime(
                entry.response_time, entry.initial_age, entry.lifetime, ban.at
            )
            if lifetime is None:
                continue
            entry.lifetime = lifetime
            tmp = tmp_dir / f"{entry.key_hex}.{os.getpid()}.{os.urandom(4).hex()}.meta"
            try:
                tmp.write_bytes(entry.to_json())
                if _still_names(meta, entry.body_file):  # not replaced by a worker meanwhile
                    os.rename(tmp, meta)
                else:
                    tmp.unlink()
            except OSError as exc:
                log.warning("cannot mark %s stale: %s", meta, exc)
                with contextlib.suppress(OSError):
                    tmp.unlink()
    return dropped


def _still_names(meta: Path, body_file: str) -> bool:
    try:
        return Entry.from_json(meta.read_bytes()).body_file == body_file
    except (OSError, ValueError):
        return False


# ---- the application -----------------------------------------------------------------------


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _authorize(
    request: web.Request, env_name: str, environ: Mapping[str, str]
) -> web.Response | None:
    """None when the request carries the admin token; else the refusal."""
    expected = environ.get(env_name, "")
    if not expected:
        return _error(
            503,
            f"the admin API is disabled: the token variable {env_name} is not set. Export "
            f"{env_name}=<a long random secret> in the node's environment (node.admin_token_env "
            "names the variable), restart the node, and send 'Authorization: Bearer <secret>'",
        )
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode("utf-8", "replace"), expected.encode("utf-8", "replace")
    ):
        return _error(
            401,
            f"missing or wrong token: send 'Authorization: Bearer <token>' with the value of "
            f"{env_name}",
            headers={"WWW-Authenticate": 'Bearer realm="edgeproxy-admin"'},
        )
    return None


def make_admin_app(
    *,
    token_env: str,
    environ: Mapping[str, str] | None,
    healthz: Callable[[web.Request], Awaitable[web.StreamResponse]],
    stats: Callable[[web.Request], Awaitable[web.StreamResponse]],
    registry: CollectorRegistry,
    invalidations: Callable[[], Invalidations | None],
    popularity: Callable[[], Popularity | None] | None = None,
    listen_url: Callable[[], str | None] | None = None,
    name: str = "",
    missed: Callable[[], Popularity | None] | None = None,
) -> web.Application:
    """The admin app shared by a single-process node and a multi-process node's master.

    ``popularity`` and ``missed``: the node's request and miss counts for ``GET /popular``;
    ``listen_url``: the base URL of the node's own client listener for ``POST /warm`` (either
    missing: that endpoint is 503).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ

    @web.middleware
    async def guard(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if (request.method, request.path) not in OPEN:
            refused = _authorize(request, token_env, env)
            if refused is not None:
                return refused
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            allow = exc.headers.get("Allow")
            return _error(exc.status, exc.reason, {"Allow": allow} if allow else None)

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = exposition(registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    def service() -> Invalidations:
        inv = invalidations()
        if inv is None:
            raise web.HTTPServiceUnavailable(reason="invalidations are not available yet")
        return inv

    async def create(request: web.Request) -> web.Response:
        inv = service()
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'the body must be JSON, e.g. {"paths": ["/images/*"]}')
        if not isinstance(body, dict):
            return _error(400, 'the body must be a JSON object, e.g. {"paths": ["/images/*"]}')
        unknown = sorted(set(body) - {"paths", "hard"})
        if unknown:
            return _error(400, f"unknown key(s) {', '.join(unknown)}; use paths and hard")
        paths = body.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            return _error(400, 'paths must be a non-empty list of strings, e.g. ["/a.mp3"]')
        if len(paths) > MAX_PATHS:
            return _error(400, f"at most {MAX_PATHS} paths per invalidation")
        hard = body.get("hard", False)
        if not isinstance(hard, bool):
            return _error(400, "hard must be true or false")
        try:
            result = await inv.create(paths, hard)
        except BadPattern as exc:
            return _error(400, str(exc))
        return web.json_response(
            result, status=201, headers={"Location": f"/invalidations/{result['id']}"}
        )

    async def listing(_: web.Request) -> web.Response:
        return web.json_response({"invalidations": service().listing()})

    async def one(request: web.Request) -> web.Response:
        ident = request.match_info["ident"]
        result = service().get(ident)
        if result is None:
            return _error(404, f"no invalidation {ident}")
        return web.json_response(result)

    async def popular(request: web.Request) -> web.Response:
        of = request.query.get("of", "requests")
        if of not in ("requests", "misses"):
            return _error(400, f"of must be requests or misses, not {of!r}")
        source = popularity if of == "requests" else missed
        pop = source() if source is not None else None
        if pop is None:
            return _error(503, f"this node keeps no counts of {of}")
        raw = request.query.get("top", "100")
        try:
            top = int(raw)
        except ValueError:
            top = -1
        if not 1 <= top <= MAX_TOP:
            return _error(400, f"top must be an integer from 1 to {MAX_TOP}, not {raw!r}")
        now = time.time()
        return web.json_response(
            {"node": name, "of": of, "paths": [p.as_dict() for p in pop.top(top, now)]}
        )

    async def warm(request: web.Request) -> web.Response:
        base = listen_url() if listen_url is not None else None
        if base is None:
            return _error(503, "warming needs the node's listen address (a fixed listen port)")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, 'the body must be JSON, e.g. {"paths": ["/a.mp3"]}')
        if not isinstance(body, dict):
            return _error(400, 'the body must be a JSON object, e.g. {"paths": ["/a.mp3"]}')
        unknown = sorted(set(body) - {"paths"})
        if unknown:
            return _error(400, f"unknown key(s) {', '.join(unknown)}; use paths")
        paths = body.get("paths")
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            return _error(400, 'paths must be a non-empty list of strings, e.g. ["/a.mp3"]')
        if len(paths) > MAX_PATHS:
            return _error(400, f"at most {MAX_PATHS} paths per warm request")
        bad = [p for p in paths if not p.startswith("/") or any(c in p for c in " \r\n#")]
        if bad:
            return _error(400, f"paths must start with / and hold no space or #: {bad[0]!r}")
        results = await warm_paths(base, paths)
        return web.json_response({"node": name, "results": results})

    app = web.Application(middlewares=[guard])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/stats", stats)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/invalidations", create)
    app.router.add_get("/invalidations", listing)
    app.router.add_get("/invalidations/{ident}", one)
    app.router.add_get("/popular", popular)
    app.router.add_post("/warm", warm)
    return app


async def warm_paths(
    base: str,
    paths: list[str],
    *,
    concurrency: int = WARM_CONCURRENCY,
    timeout: float = WARM_TIMEOUT,
) -> list[dict[str, Any]]:
    """GET every path from ``base`` (the node's own listener), ``concurrency`` at a time,
    reading each body to the end (so the fill completes); one result per path, in order."""
    import aiohttp

    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def one(session: aiohttp.ClientSession, path: str) -> dict[str, Any]:
        async with limit:
            try:
                async with session.get(base + path, headers={"Accept-Encoding": "identity"}) as r:
                    size = 0
                    async for chunk in r.content.iter_chunked(1 << 16):
                        size += len(chunk)
                    return {
                        "path": path,
                        "status": r.status,
                        "cache_status": r.headers.get("Cache-Status", ""),
                        "bytes": size,
                    }
            except (aiohttp.ClientError, TimeoutError) as exc:
                return {"path": path, "error": f"{type(exc).__name__}: {exc}".rstrip(": ")}

    async with aiohttp.ClientSession(
        connector=connector, timeout=client_timeout, auto_decompress=False
    ) as session:
        return list(await asyncio.gather(*(one(session, p) for p in paths)))


def listen_url_of(host: str, port: int) -> str | None:
    """The base URL to reach a listener bound to ``host``:``port`` from this machine (a
    wildcard address becomes loopback); None for port 0 (not known)."""
    if not port:
        return None
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _listen_url(node: Node) -> str | None:
    """The base URL of ``node``'s client listener from its config (None for port 0)."""
    cfg = node.config.node
    return listen_url_of(cfg.listen_host, cfg.listen_port)


def build_admin_app(
    node: Node,
    invalidations: Invalidations | None = None,
    environ: Mapping[str, str] | None = None,
    listen_url: Callable[[], str | None] | None = None,
) -> web.Application:
    """A single-process node's admin app (``listen_url``: default from the config)."""

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
                "invalidations": {
                    "total": invalidations.total if invalidations is not None else 0,
                    "active_bans": len(node.bans),
                },
            }
        )

    return make_admin_app(
        token_env=node.config.node.admin_token_env,
        environ=environ,
        healthz=healthz,
        stats=stats,
        registry=registry_for(NodeCollector(node, invalidations)),
        invalidations=lambda: invalidations,
        popularity=lambda: node.popularity,
        listen_url=listen_url if listen_url is not None else lambda: _listen_url(node),
        name=node.name,
        missed=lambda: node.traffic.missed,
    )
