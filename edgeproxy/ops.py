"""Operator commands over a running topology: ``edgeproxy invalidate``, ``warm`` and ``report``.

Contract:
- The nodes come from a running topology's state file (``--topology FILE``, as written by
  ``edgeproxy topology up``) or from a JSON node list (``--nodes FILE``, ``-`` for stdin: the
  line ``topology up --json`` prints, or a list of ``{"name", "role", "admin_url"}``).
- The admin token is the value of ``EDGEPROXY_ADMIN_TOKEN``, else the state file's
  ``admin_token`` (``topology up`` generates one per run and gives it to every node).
- ``invalidate``: tier by tier, shield first, then regionals, then edges (a ban compares
  against each node's storage time, so a lower tier must never refill from an upper tier that
  still holds the old object): ``POST /invalidations`` to every node of the tier at once, then
  wait (bounded by ``--wait``) until each reports ``Completed``, then the next tier. One line
  per node. A node that refuses or cannot be reached: a line saying which and why, the lower
  tiers are left alone (listed), exit 1. Not completed in time: said, exit 1 (the ban already
  applies on lookup, so the lower tiers still go).
- ``warm``: the paths (given, or the top ``--top`` of ``GET /popular`` of the ``--from`` node
  or role, counts summed over the role's nodes) are sent with ``POST /warm`` to every node of
  the ``--to`` role (default edge), in batches, every node at once; a progress bar on stderr;
  one summary line per node. Exit 1 when a node refuses or is unreachable or a path failed
  (an error or a 5xx).
- ``report``: every node at once, ``GET /metrics``, ``GET /popular?top=N`` and
  ``GET /popular?of=misses&top=N``; the figures are computed by :mod:`edgeproxy.report` (pure)
  and printed; ``--html FILE`` also writes the page of :mod:`edgeproxy.report_html` (written
  to a temporary file and renamed). A node that cannot be scraped is named in the report and
  makes the exit status 1; the report covers the others.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

TOKEN_ENV = "EDGEPROXY_ADMIN_TOKEN"
TIER_ORDER = ("shield", "regional", "edge")
WARM_BATCH = 25  # paths per POST /warm
POLL_INTERVAL = 0.1
HTTP_TIMEOUT = 10.0


class OpsError(Exception):
    """The command cannot start (no topology, no token, bad node list): one line."""


class AdminError(Exception):
    """A node refused or could not be reached (the message says which and why)."""


@dataclass(frozen=True)
class Target:
    name: str
    role: str
    admin_url: str


# ---- where the nodes are, and the token ------------------------------------------------------


def targets_from_list(data: Any) -> list[Target]:
    nodes = data.get("nodes") if isinstance(data, dict) else data
    if not isinstance(nodes, list) or not nodes:
        raise OpsError('the node list must be {"nodes": [...]} or a list of nodes')
    result = []
    for node in nodes:
        if not isinstance(node, dict) or not all(
            isinstance(node.get(k), str) and node.get(k) for k in ("name", "role", "admin_url")
        ):
            raise OpsError(f"every node needs name, role and admin_url: {node!r}")
        result.append(Target(node["name"], node["role"], node["admin_url"].rstrip("/")))
    return result


def load_targets(
    topology_file: str | None, nodes_file: str | None, workdir: str | None = None
) -> tuple[list[Target], str | None]:
    """The nodes, and the admin token the state file holds (None: not there)."""
    if nodes_file is not None:
        try:
            if nodes_file == "-":
                text = sys.stdin.read()
            else:
                with open(nodes_file) as handle:
                    text = handle.read()
            data = json.loads(text)
        except OSError as exc:
            raise OpsError(f"{nodes_file}: cannot read: {exc.strerror}") from None
        except ValueError as exc:
            raise OpsError(f"{nodes_file}: not JSON: {exc}") from None
        token = data.get("admin_token") if isinstance(data, dict) else None
        return targets_from_list(data), token if isinstance(token, str) else None
    if topology_file is None:
        raise OpsError("say where the nodes are: --topology FILE or --nodes FILE")
    from edgeproxy.config import ConfigError
    from edgeproxy.topology import STATE_FILE, load_topology, pid_alive, read_state

    try:
        topology = load_topology(topology_file, workdir)
    except ConfigError as exc:
        raise OpsError(str(exc)) from None
    state = read_state(topology.workdir)
    if state is None or not pid_alive(int(state.get("pid") or 0), state.get("start")):
        raise OpsError(
            f"topology {topology.name!r} is not running (no live {topology.workdir / STATE_FILE});"
            f" start it with: edgeproxy topology up {topology_file}"
        )
    if not all(n.get("admin_url") for n in state.get("nodes", [])):
        raise OpsError(f"topology {topology.name!r} is still starting; try again in a moment")
    token = state.get("admin_token")
    return targets_from_list(state), token if isinstance(token, str) else None


def pick_token(stored: str | None, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV) or stored
    if not token:
        raise OpsError(
            f"no admin token: export {TOKEN_ENV}=<the token the nodes run with> (`edgeproxy "
            "topology up` prints it and keeps it in its state file)"
        )
    return token


def tiers(targets: Iterable[Target]) -> list[list[Target]]:
    """The nodes grouped by role: shield, regional, edge, then any other role."""
    groups: dict[str, list[Target]] = {}
    for target in targets:
        groups.setdefault(target.role, []).append(target)
    order = [r for r in TIER_ORDER if r in groups] + sorted(set(groups) - set(TIER_ORDER))
    return [groups[r] for r in order]


# ---- the admin API ------------------------------------------------------------------------------


def call(
    target: Target,
    method: str,
    path: str,
    token: str,
    body: Any = None,
    timeout: float = HTTP_TIMEOUT,
) -> tuple[int, Any]:
    """One admin call: (status, JSON body); AdminError when refused (>= 400) or unreachable."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        target.admin_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except (ValueError, AttributeError, OSError):
            detail = exc.reason
        hint = f" (is {TOKEN_ENV} the token the nodes run with?)" if exc.code == 401 else ""
        raise AdminError(
            f"{target.name} ({target.admin_url}) refused {method} {path}: {exc.code} {detail}{hint}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"{target.name} ({target.admin_url}) is unreachable: {reason}") from None


def _parallel(targets: list[Target], job: Callable[[Target], Any]) -> list[Any]:
    """``job`` on every target at once; a result or the AdminError, in order."""

    def guarded(target: Target) -> Any:
        try:
            return job(target)
        except AdminError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
        return list(pool.map(guarded, targets))


# ---- invalidate ---------------------------------------------------------------------------------


def invalidate(
    targets: list[Target],
    paths: list[str],
    token: str,
    *,
    hard: bool = False,
    wait: float = 30.0,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """See the module docstring. Exit status 0 or 1."""
    kind = "hard" if hard else "soft"
    status = 0

    def one(target: Target) -> tuple[dict[str, Any], float]:
        began = time.monotonic()
        _, record = call(target, "POST", "/invalidations", token, {"paths": paths, "hard": hard})
        deadline = began + wait
        while record.get("status") != "Completed" and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
            _, record = call(target, "GET", f"/invalidations/{record['id']}", token)
        return record, time.monotonic() - began

    groups = tiers(targets)
    for index, group in enumerate(groups):
        failed = False
        for target, result in zip(group, _parallel(group, one), strict=True):
            if isinstance(result, AdminError):
                print(f"edgeproxy invalidate: {result}", file=err)
                failed = True
                continue
            record, took = result
            done = record.get("status") == "Completed"
            line = (
                f"{target.role:<9} {target.name:<14} {kind} {record['id']} "
                f"{', '.join(record.get('paths', paths))}: "
            )
            if done:
                print(line + f"Completed in {took:.2f}s", file=out)
            else:
                print(
                    line + f"still {record.get('status')} after {wait:g}s (the ban already "
                    "applies on lookup; the store walk goes on)",
                    file=out,
                )
                status = 1
        if failed:
            left = [t.name for g in groups[index + 1 :] for t in g]
            if left:
                print(
                    "edgeproxy invalidate: stopped; not invalidated (they would refill from a "
                    f"tier that failed): {', '.join(left)}",
                    file=err,
                )
            return 1
    return status


# ---- warm ---------------------------------------------------------------------------------------


def popular_paths(targets: list[Target], source: str, top: int, token: str) -> list[str]:
    """The ``top`` hottest paths of ``source`` (a node name or a role: summed over it)."""
    chosen = [t for t in targets if t.name == source] or [t for t in targets if t.role == source]
    if not chosen:
        names = ", ".join(sorted({t.name for t in targets} | {t.role for t in targets}))
        raise OpsError(f"--from {source!r}: no such node or role (have: {names})")
    totals: dict[str, float] = {}
    for result in _parallel(chosen, lambda t: call(t, "GET", f"/popular?top={top}", token)[1]):
        if isinstance(result, AdminError):
            raise result
        for item in result.get("paths", []):
            totals[item["path"]] = totals.get(item["path"], 0.0) + float(item["count"])
    return sorted(totals, key=lambda p: (-totals[p], p))[:top]


class Progress:
    """A one-line text progress bar on a terminal; a line per 10% otherwise."""

    def __init__(self, total: int, stream: IO[str], width: int = 30) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.width = width
        self.tty = stream.isatty() if hasattr(stream, "isatty") else False
        self._last_decile = -1

    def add(self, n: int) -> None:
        self.done += n
        share = min(self.done / self.total, 1.0)
        if self.tty:
            filled = int(share * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\rwarming [{bar}] {self.done}/{self.total}")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
            return
        decile = int(share * 10)
        if decile != self._last_decile:
            self._last_decile = decile
            print(f"warming: {self.done}/{self.total} ({share:.0%})", file=self.stream)


def warm(
    targets: list[Target],
    paths: list[str],
    token: str,
    *,
    to: str = "edge",
    batch: int = WARM_BATCH,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """POST /warm ``paths`` to every node of role (or name) ``to``; exit status 0 or 1."""
    chosen = [t for t in targets if t.role == to] or [t for t in targets if t.name == to]
    if not chosen:
        raise OpsError(f"--to {to!r}: no such role or node")
    if not paths:
        print("edgeproxy warm: nothing to warm (no paths)", file=err)
        return 0
    progress = Progress(len(paths) * len(chosen), err)
    lock = threading.Lock()

    def one(target: Target) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        for first in range(0, len(paths), batch):
            chunk = paths[first : first + batch]
            _, body = call(target, "POST", "/warm", token, {"paths": chunk}, timeout=600.0)
            results.extend(body.get("results", []))
            with lock:
                progress.add(len(chunk))
        return results

    status = 0
    for target, result in zip(chosen, _parallel(chosen, one), strict=True):
        if isinstance(result, AdminError):
            print(f"edgeproxy warm: {result}", file=err)
            status = 1
            continue
        hits = sum(1 for r in result if _own_hit(r.get("cache_status", "")))
        failed = [r for r in result if "error" in r or int(r.get("status", 0)) >= 500]
        other = [r for r in result if r not in failed and int(r.get("status", 0)) >= 400]
        fetched = len(result) - hits - len(failed) - len(other)
        print(
            f"{target.name:<14} warmed {len(result)} path(s): {fetched} fetched, {hits} already "
            f"cached, {len(other)} 4xx, {len(failed)} failed",
            file=out,
        )
        for r in failed[:5]:
            print(
                f"  {r['path']}: {r.get('error') or r.get('status')}",
                file=err,
            )
        if failed:
            status = 1
    return status


def _own_hit(cache_status: str) -> bool:
    """Whether the last member of a Cache-Status value (this node's own) says ``hit``."""
    members = [m for m in cache_status.split(",") if m.strip()]
    if not members:
        return False
    return "hit" in (p.strip().lower() for p in members[-1].split(";")[1:])


# ---- report -------------------------------------------------------------------------------------


def fetch_text(target: Target, path: str, token: str, timeout: float = HTTP_TIMEOUT) -> str:
    """GET ``path`` from ``target``'s admin listener as text; AdminError on failure."""
    request = urllib.request.Request(
        target.admin_url + path, headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return str(response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        raise AdminError(
            f"{target.name} ({target.admin_url}) refused GET {path}: {exc.code} {exc.reason}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"{target.name} ({target.admin_url}) is unreachable: {reason}") from None


def scrape(targets: list[Target], token: str, top: int = 10) -> list[Any]:
    """One :class:`~edgeproxy.report.NodeScrape` per target, every node at once. A node
    without ``/popular`` (or ``of=misses``) counts as having no paths."""
    from edgeproxy.report import NodeScrape

    def paths(target: Target, query: str) -> list[Any]:
        try:
            _, body = call(target, "GET", f"/popular?{query}", token)
        except AdminError:
            return []
        items = body.get("paths") if isinstance(body, dict) else None
        return items if isinstance(items, list) else []

    def one(target: Target) -> Any:
        text = fetch_text(target, "/metrics", token)
        return NodeScrape(
            name=target.name,
            role=target.role,
            admin_url=target.admin_url,
            metrics=text,
            popular=paths(target, f"top={top}"),
            missed=paths(target, f"of=misses&top={top}"),
        )

    scrapes = []
    for target, result in zip(targets, _parallel(targets, one), strict=True):
        if isinstance(result, AdminError):
            result = NodeScrape(target.name, target.role, target.admin_url, error=str(result))
        scrapes.append(result)
    return scrapes


def report(
    targets: list[Target],
    token: str,
    *,
    price_per_gb: float = 0.0,
    html: str | None = None,
    top: int = 10,
    min_requests: int = 20,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """Scrape, compute, print (and write the page); exit status 0, or 1 with a node missing."""
    from edgeproxy.report import build_report, render_text
    from edgeproxy.report_html import render_html

    if price_per_gb < 0:
        raise OpsError(f"--price-per-gb must be 0 or more, not {price_per_gb:g}")
    result = build_report(scrape(targets, token, top), price_per_gb, top, min_requests)
    out.write(render_text(result))
    if html is not None:
        tmp = f"{html}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(render_html(result))
            os.replace(tmp, html)
        except OSError as exc:
            raise OpsError(f"{html}: cannot write: {exc.strerror}") from None
        print(f"edgeproxy report: wrote {html}", file=err)
    for name, why in result.unreachable:
        print(f"edgeproxy report: {name}: {why}", file=err)
    return 1 if result.unreachable else 0
