#!/usr/bin/env python3
"""The thundering herd, side by side: 200 clients ask at once for one cold object.

What runs (all on 127.0.0.1, every port picked free, everything in one temporary directory):

* A slow origin: this script again, as a subprocess (``herd_bench.py --serve-origin PORT``), an
  aiohttp server that answers ``GET /<anything>/<size>/<name>`` with ``<size>`` bytes derived
  from the path (deterministic, so the clients can check them), ``Content-Length`` set,
  ``Cache-Control: public, max-age=3600``, sent in 20 slices over ``--origin-seconds``
  (default 1 s). It counts the requests per path and records when each body was finished
  (``CLOCK_MONOTONIC``, the same clock as this script's); ``GET /_origin/stats`` returns both.
* The systems, each started once and left running:
  - ``edgeproxy 1w``, ``edgeproxy 2w``: ``python -m edgeproxy.cli serve --config FILE``,
    role edge, ``workers = 1`` / ``2``, upstream ``parents = ["http://127.0.0.1:ORIGIN"]``,
    one policy ``"*"``, ``default_ttl = "1d"``;
  - ``nginx``: Debian's nginx, ``proxy_cache`` with ``proxy_cache_lock on``,
    ``proxy_cache_lock_timeout 5s``, ``sendfile on``, ``tcp_nopush off``, ``worker_processes
    1``, ``daemon off``, its own config and cache under the temporary directory;
  - ``varnish``: ``varnishd -F -a 127.0.0.1:PORT -b 127.0.0.1:ORIGIN -s malloc,256m -n DIR``
    (installed with ``apt-get install -y varnish`` when missing and running as root; skipped
    with a note when it cannot be installed or started).
* The herd: per round, system and size, 200 clients (one aiohttp session in this process, on
  uvloop, one new connection each) wait on one event, then all send ``GET`` for a URL never
  asked before (a new URL per round and system: a cold cache without restarting anything).

Measured per run: the origin's requests for that URL, each client's time from the common start
to its first body byte (median and p99) and to its last byte (the slowest client), and when the
origin finished sending its body (same clock). Every client must get status 200 and exactly the
origin's number of bytes; every tenth client's bytes are checked (CRC-32) against the origin's.
Rounds are interleaved (A B C D, A B C D, ...). The table shows medians over the rounds (and the
min-max of the per-round TTFB medians); it is printed and written as markdown, with the command
line and the machine, to ``benchmarks/results/herd-<YYYY-MM-DD>.md`` (``--output`` overrides).

Everything started here is stopped by PID (SIGTERM, then SIGKILL) in ``finally`` blocks, also
on Ctrl-C and SIGTERM. Every step has a timeout.

Run from the repository root::

    python benchmarks/herd_bench.py                  # 1 MiB, 3 rounds
    python benchmarks/herd_bench.py --large          # 1 MiB and 8 MiB
    python benchmarks/herd_bench.py --rounds 5 --clients 200 --origin-seconds 1
    python benchmarks/herd_bench.py --systems edgeproxy-1w,nginx --keep
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import (
    REPO_ROOT,
    RESULTS_DIR,
    KiB,
    Managed,
    MiB,
    free_port,
    http_json,
    nginx_binary,
    start_process,
    varnishd_binary,
    wait_http,
)

SLICES = 20
CLIENT_TIMEOUT = 60.0
SYSTEM_NAMES = ("edgeproxy-1w", "edgeproxy-2w", "nginx", "varnish")


def body_for(path: str, size: int) -> bytes:
    """The origin's bytes for ``path``: deterministic, different per path."""
    return random.Random(zlib.crc32(path.encode())).randbytes(size)


def size_of(path: str) -> int:
    """``/<anything>/<size>/<name>`` -> size in bytes (``1048576``)."""
    parts = path.strip("/").split("/")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else 1024


# ---------------------------------------------------------------------------------------------
# The origin (a subprocess: this script with --serve-origin)
# ---------------------------------------------------------------------------------------------


def serve_origin(port: int, seconds: float) -> None:
    import uvloop
    from aiohttp import web

    counts: dict[str, int] = {}
    ends: dict[str, list[float]] = {}
    bodies: dict[str, bytes] = {}

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/_origin/stats":
            return web.json_response({"counts": counts, "ends": ends})
        counts[path] = counts.get(path, 0) + 1
        size = size_of(path)
        body = bodies.get(path)
        if body is None:
            body = bodies[path] = body_for(path, size)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/octet-stream",
                "Cache-Control": "public, max-age=3600",
            }
        )
        resp.content_length = size
        await resp.prepare(request)
        slow = not path.startswith("/warm/")
        step = max(1, size // SLICES)
        offset = 0
        for i in range(SLICES):
            if slow and i:
                await asyncio.sleep(seconds / (SLICES - 1))
            end = size if i == SLICES - 1 else min(size, offset + step)
            await resp.write(body[offset:end])
            offset = end
        await resp.write_eof()
        ends.setdefault(path, []).append(time.monotonic())
        return resp

    async def main() -> None:
        runner = web.ServerRunner(web.Server(handle), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
        await site.start()
        print(f"origin on http://127.0.0.1:{port}/", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    uvloop.run(main())


@contextlib.contextmanager
def temp_root(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="edgeproxy-herdbench-"))
    root.chmod(0o755)  # varnish's unprivileged child must enter its -n directory
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# The systems
# ---------------------------------------------------------------------------------------------


@dataclass
class System:
    name: str
    base_url: str
    managed: Managed
    extra: list[Managed] = field(default_factory=list)

    def stop(self) -> None:
        self.managed.stop()
        for m in self.extra:
            m.stop()


EDGE_TOML = """\
# generated by benchmarks/herd_bench.py
[node]
name = "{name}"
role = "edge"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = {workers}

[store]
path = "{store}"
max_size = "2GiB"
ram_size = "64MiB"

[upstream]
parents = ["http://127.0.0.1:{origin_port}"]

[[policy]]
name = "all"
path = "*"
default_ttl = "1d"
"""


def start_edgeproxy(label: str, workers: int, workdir: Path, origin_port: int) -> System:
    workdir.mkdir(parents=True)
    port, admin_port = free_port(), free_port()
    config = workdir / "node.toml"
    config.write_text(
        EDGE_TOML.format(
            name=f"herd-{workers}w",
            port=port,
            admin_port=admin_port,
            workers=workers,
            store=workdir / "store",
            origin_port=origin_port,
        )
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    args = [sys.executable, "-m", "edgeproxy.cli", "serve", "--config", str(config)]
    managed = start_process(label, args, workdir / "node.log", env=env, cwd=str(REPO_ROOT))
    system = System(label, f"http://127.0.0.1:{port}", managed)
    deadline = time.monotonic() + 30
    while True:  # /healthz 200 with every worker up
        wait_http(managed, f"http://127.0.0.1:{admin_port}/healthz")
        with contextlib.suppress(OSError, ValueError):
            health = http_json(f"http://127.0.0.1:{admin_port}/healthz")
            if len(health.get("workers", [1])) >= workers:  # type: ignore[arg-type]
                return system
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: workers not up:\n{managed.log_tail()}")
        time.sleep(0.1)


def start_nginx(workdir: Path, origin_port: int) -> System:
    """nginx ``proxy_cache`` (1 worker, cache lock on with a 5 s timeout; see
    :class:`common.NginxCache` for the rest) in front of the slow origin."""
    port = free_port()
    conf = common.NginxCache(
        workdir,
        port,
        origin_port,
        ttls=(("/", "1d"),),
        cache_lock_timeout="5s",
        run_as_root=os.geteuid() == 0,
    )
    managed = common.start_nginx("nginx", conf)
    system = System("nginx", f"http://127.0.0.1:{port}", managed)
    wait_http(managed, system.base_url + "/warm/1024/nginx-ready.bin")
    return system


def start_varnish(workdir: Path, origin_port: int) -> System:
    """Varnish with its built-in VCL (``-b`` the origin) and ``malloc,256m`` storage."""
    port = free_port()
    managed = common.start_varnish(
        "varnish",
        workdir,
        port,
        origin_port,
        storage="malloc,256m",
        ready_path="/warm/1024/varnish-ready.bin",
    )
    return System("varnish", f"http://127.0.0.1:{port}", managed)


# ---------------------------------------------------------------------------------------------
# The herd
# ---------------------------------------------------------------------------------------------


@dataclass
class Client:
    status: int = 0
    ttfb: float | None = None  # seconds from the common start to the first body byte
    last: float | None = None  # ... to the last byte
    length: int = 0
    checked: bool | None = None  # CRC-32 matched (checked on every tenth client)
    error: str | None = None


@dataclass
class Run:
    system: str
    size: int
    round: int
    origin_requests: int
    ttfb_median: float
    ttfb_p99: float
    last_byte: float
    origin_done: float | None  # when the origin finished its (first) body, from the start
    errors: int
    waiters_before_origin: int  # clients whose first byte came before the origin's last


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def herd(url: str, clients: int, size: int, want_crc: int) -> tuple[float, list[Client]]:
    import aiohttp

    go = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    start = 0.0

    async def one(i: int) -> Client:
        c = Client()
        crc = 0 if i % 10 == 0 else None
        await go.wait()
        try:
            async with session.get(url) as r:
                c.status = r.status
                async for chunk in r.content.iter_any():
                    if c.ttfb is None:
                        c.ttfb = time.monotonic() - start
                    c.length += len(chunk)
                    if crc is not None:
                        crc = zlib.crc32(chunk, crc)
            c.last = time.monotonic() - start
        except (aiohttp.ClientError, TimeoutError) as exc:
            c.error = f"{type(exc).__name__}: {exc}"
        if crc is not None:
            c.checked = crc == want_crc
        return c

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, auto_decompress=False
    ) as session:
        tasks = [asyncio.create_task(one(i)) for i in range(clients)]
        await asyncio.sleep(0.1)  # every task waits on ``go``
        start = time.monotonic()
        go.set()
        got = await asyncio.wait_for(asyncio.gather(*tasks), CLIENT_TIMEOUT + 10)
    return start, list(got)


def measure(
    system: System, origin_url: str, size: int, rnd: int, clients: int, tag: str
) -> tuple[Run, list[str]]:
    path = f"/herd/{size}/{tag}-r{rnd}-{system.name}.bin"
    body = body_for(path, size)
    want_crc = zlib.crc32(body)
    import uvloop

    start, got = uvloop.run(herd(system.base_url + path, clients, size, want_crc))
    time.sleep(0.2)  # let the origin record its end
    stats = http_json(origin_url + "/_origin/stats")
    count = int(stats["counts"].get(path, 0))  # type: ignore[union-attr]
    ends = stats["ends"].get(path, [])  # type: ignore[union-attr]
    problems: list[str] = []
    bad = [c for c in got if c.error or c.status != 200 or c.length != size or c.checked is False]
    if bad:
        c = bad[0]
        problems.append(
            f"{system.name} {size} B round {rnd}: {len(bad)} of {clients} clients failed, e.g. "
            f"status {c.status}, {c.length} bytes, crc ok {c.checked}, error {c.error}"
        )
    ttfbs = [c.ttfb for c in got if c.ttfb is not None]
    lasts = [c.last for c in got if c.last is not None]
    origin_done = (min(ends) - start) if ends else None
    before = sum(1 for t in ttfbs if origin_done is not None and t < origin_done)
    run = Run(
        system=system.name,
        size=size,
        round=rnd,
        origin_requests=count,
        ttfb_median=statistics.median(ttfbs) if ttfbs else float("nan"),
        ttfb_p99=percentile(ttfbs, 0.99),
        last_byte=max(lasts) if lasts else float("nan"),
        origin_done=origin_done,
        errors=len(bad),
        waiters_before_origin=before,
    )
    return run, problems


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def size_label(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB else f"{size // KiB} KiB"


def ms(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value * 1000:.0f}"


def table_rows(runs: list[Run], systems: list[str], sizes: list[int]) -> list[list[str]]:
    rows = []
    for size in sizes:
        for name in systems:
            rs = [r for r in runs if r.system == name and r.size == size]
            if not rs:
                continue
            med = [r.ttfb_median for r in rs]
            done = [r.origin_done for r in rs if r.origin_done is not None]
            rows.append(
                [
                    size_label(size),
                    name,
                    ",".join(str(r.origin_requests) for r in rs),
                    ms(statistics.median(med)),
                    f"{ms(min(med))}-{ms(max(med))}",
                    ms(statistics.median(r.ttfb_p99 for r in rs)),
                    ms(statistics.median(r.last_byte for r in rs)),
                    ms(statistics.median(done)) if done else "-",
                    ",".join(str(r.waiters_before_origin) for r in rs),
                    str(sum(r.errors for r in rs)),
                ]
            )
    return rows


HEADER = [
    "size",
    "system",
    "origin reqs",
    "TTFB p50 ms",
    "p50 min-max",
    "TTFB p99 ms",
    "last byte ms",
    "origin done ms",
    "1st byte < origin done",
    "failed",
]


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(HEADER), "  ".join("-" * w for w in widths), *map(line, rows)])


def render_markdown(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |"]
    out.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEADER))) + "|")
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_info() -> list[tuple[str, str]]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def run(args: list[str]) -> str:
        try:
            p = subprocess.run(args, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return "?"
        return ((p.stdout or p.stderr).strip().splitlines() or ["?"])[0]

    import aiohttp

    return [
        ("nproc", str(os.cpu_count())),
        ("cpu", cpu or platform.processor() or "?"),
        ("kernel", platform.release()),
        ("python", platform.python_version()),
        ("aiohttp (clients, origin)", aiohttp.__version__),
        ("nginx -v", run([nginx_binary() or "nginx", "-v"])),
        ("varnishd -V", run([varnishd_binary() or "varnishd", "-V"])),
        ("edgeproxy commit", run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])),
        ("load average at start (1, 5, 15 min)", load_average()),
    ]


def write_markdown(
    path: Path,
    args: argparse.Namespace,
    rows: list[list[str]],
    info: list[tuple[str, str]],
    notes: list[str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(["benchmarks/herd_bench.py", *sys.argv[1:]])
    text = [
        f"# The herd: {args.clients} concurrent GETs of one cold object "
        f"({dt.date.today().isoformat()})",
        "",
        f"Command: `{command}`  ",
        f"Rounds: {args.rounds}, interleaved (each round: every system once per size, a new URL "
        f"each time, so every run starts cold). Origin: one aiohttp process sending each body "
        f"in {SLICES} slices over {args.origin_seconds:g} s with Content-Length.",
        "",
        render_markdown(rows),
        "",
        "`origin reqs`: requests that reached the origin in each round (1 = one fetch for the "
        "whole herd). Times are from the moment all clients were released, medians over the "
        "rounds: `TTFB p50/p99` = median / 99th percentile over the clients of the time to "
        "the first body byte (`p50 min-max` over the rounds); `last byte` = when the slowest "
        "client had the whole object; `origin done` = when the origin had sent its last "
        "byte; `1st byte < origin done` = clients per round whose first byte arrived before "
        "that (streaming while the origin still sends); `failed` = clients with a wrong "
        "status, a short or wrong body or an error, over all rounds.",
        "",
        "The clients are one Python process (aiohttp on uvloop) on the same machine: its own "
        "cost is in every number (the TTFB floor is what it takes to open 200 connections "
        "and read 200 first bytes), and `last byte` for large objects is mostly the time this "
        "one process needs to read clients x size bytes. Compare systems within a row group, "
        "not with other machines.",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info],
    ]
    if notes:
        text += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    path.write_text("\n".join(text) + "\n")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--large", action="store_true", help="also 8 MiB (besides 1 MiB)")
    p.add_argument("--origin-seconds", type=float, default=1.0, help="origin body duration")
    p.add_argument(
        "--systems",
        default=",".join(SYSTEM_NAMES),
        help=f"comma-separated subset of {','.join(SYSTEM_NAMES)}",
    )
    p.add_argument("--output", type=Path, default=None, help="markdown file to write")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--serve-origin", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = set(args.systems.split(",")) - set(SYSTEM_NAMES)
    if unknown:
        p.error(f"unknown systems: {', '.join(sorted(unknown))}")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_origin is not None:
        serve_origin(args.serve_origin, args.origin_seconds)
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    wanted = args.systems.split(",")
    sizes = [MiB, 8 * MiB] if args.large else [MiB]
    notes: list[str] = []
    tools = [t for t, name in (("nginx", "nginx"), ("varnishd", "varnish")) if name in wanted]
    for tool in common.ensure_tools(tools, notes):
        wanted.remove("varnish" if tool == "varnishd" else tool)
    info = machine_info()
    systems: list[System] = []
    origin: Managed | None = None
    tag = f"{os.getpid():x}{int(time.time()) % 100000:05d}"
    with temp_root(args.keep) as root:
        try:
            origin_port = free_port()
            origin = start_process(
                "origin",
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--serve-origin",
                    str(origin_port),
                    "--origin-seconds",
                    str(args.origin_seconds),
                ],
                root / "origin.log",
            )
            origin_url = f"http://127.0.0.1:{origin_port}"
            wait_http(origin, origin_url + "/_origin/stats")
            for name in wanted:
                print(f"starting {name} ...", flush=True)
                try:
                    if name.startswith("edgeproxy"):
                        workers = int(name.rsplit("-", 1)[1].rstrip("w"))
                        systems.append(start_edgeproxy(name, workers, root / name, origin_port))
                    elif name == "nginx":
                        systems.append(start_nginx(root / name, origin_port))
                    else:
                        systems.append(start_varnish(root / name, origin_port))
                except RuntimeError as exc:
                    if name != "varnish":
                        raise
                    notes.append(f"varnish could not start; skipped: {str(exc)[:300]}")
                    print(f"warning: {notes[-1]}", file=sys.stderr)
            runs: list[Run] = []
            for rnd in range(1, args.rounds + 1):
                for system in systems:
                    for size in sizes:
                        run, problems = measure(system, origin_url, size, rnd, args.clients, tag)
                        runs.append(run)
                        notes.extend(problems)
                        for problem in problems:
                            print(f"warning: {problem}", file=sys.stderr)
                        print(
                            f"round {rnd} {system.name:<13} {size_label(size):>6}: origin "
                            f"{run.origin_requests}, TTFB p50 {ms(run.ttfb_median)} ms "
                            f"p99 {ms(run.ttfb_p99)} ms, last byte {ms(run.last_byte)} ms, "
                            f"origin done {ms(run.origin_done)} ms",
                            flush=True,
                        )
        finally:
            for system in reversed(systems):
                system.stop()
            if origin is not None:
                origin.stop()
    notes.append(f"load average at the end (1, 5, 15 min): {load_average()}")
    rows = table_rows(runs, [s.name for s in systems], sizes)
    print()
    print(render_text(rows))
    out = args.output or RESULTS_DIR / f"herd-{dt.date.today().isoformat()}.md"
    write_markdown(out, args, rows, info, notes)
    print(f"\nwritten to {out}")
    if args.json is not None:
        common.write_json(args.json, json_figures(args, runs, rows, notes))
        print(f"written to {args.json}")
    return 0


def json_figures(
    args: argparse.Namespace, runs: list[Run], rows: list[list[str]], notes: list[str]
) -> dict[str, object]:
    """The figures for ``--json``: the table, every run, and per system (1 MiB runs) the
    median over the rounds of the clients' TTFB p50 and the origin requests per round."""
    summary: dict[str, dict[str, object]] = {}
    for name in dict.fromkeys(r.system for r in runs):
        mine = [r for r in runs if r.system == name and r.size == MiB]
        if mine:
            summary[name] = {
                "ttfb_p50_ms": 1000 * statistics.median(r.ttfb_median for r in mine),
                "ttfb_p99_ms": 1000 * statistics.median(r.ttfb_p99 for r in mine),
                "origin_requests": [r.origin_requests for r in mine],
                "failed_clients": sum(r.errors for r in mine),
            }
    return {
        "clients": args.clients,
        "origin_seconds": args.origin_seconds,
        "rounds": args.rounds,
        "header": HEADER,
        "rows": rows,
        "runs": [dataclasses.asdict(r) for r in runs],
        "summary": summary,
        "notes": notes,
    }


if __name__ == "__main__":
    sys.exit(main())
