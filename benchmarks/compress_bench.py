#!/usr/bin/env python3
"""Compressed hits: edgeproxy's stored br/gzip variants vs nginx compressing on the fly.

What runs (loopback only):

* A generated JSON document of ~50 KiB shaped like an API listing of tracks (deterministic for
  ``--seed``; ``--write-json PATH`` writes it out, e.g. to upload it to the origin a node
  serves, and exits).
* nginx (Debian's), ``taskset -c 0``, ``daemon off``, ``worker_processes 1``, serving that file
  from disk (``sendfile on; tcp_nopush off``) with ``gzip on; gzip_types application/json;
  gzip_comp_level 6; gzip_min_length 1000;`` and, when Debian's
  ``libnginx-mod-http-brotli-filter`` is installed (the script installs it with apt-get when
  run as root, unless ``--no-install``), ``brotli on`` with the same types and
  ``brotli_comp_level`` = edgeproxy's default quality. nginx compresses every response anew:
  that is what it does for a dynamic (proxied or static) JSON answer.
* ``--static`` adds ``nginx (gzip_static)``: the same file pre-compressed on disk
  (``gzip_static on``; no Brotli counterpart without the brotli-static module), an upper bound
  for "serve stored compressed bytes".
* ``--start-edgeproxy``: an edge node started here (``taskset -c 0``, one worker, RAM store,
  one policy ``"*"`` with ``compress = true`` and ``default_ttl = "1d"``) whose parent is the
  same nginx, location ``/origin/`` (the document uncompressed, ``max-age=86400``): only the
  warm-up reaches nginx. Or ``--edgeproxy-url URL`` of a node started elsewhere that serves the
  same JSON (``--write-json``), with ``--edgeproxy-pid``/``--edgeproxy-stats`` for its CPU time
  and hit counters. Each scenario is requested a few times first (to produce the variants);
  the answer should be 200 with the expected Content-Encoding and decode to the document
  (a mismatch is reported in the notes, not fatal). Without either option, the script measures
  nginx only and says so.

Scenarios: ``Accept-Encoding: br, gzip`` and ``Accept-Encoding: gzip``. Per round, per scenario
and per system (the order alternates between rounds), ``taskset -c 1 wrk -t1 -cN -dDs --latency
-H 'Accept-Encoding: ...'`` runs once. Reported: median req/s over the rounds and the min-max,
median p50/p99, the server's CPU seconds per 1,000 responses (robust on a shared machine), the
bytes of one response on the wire (status line + header + body as framed, measured with one
raw-socket request; nginx's on-the-fly coding is chunked) and of its content, and the ratio to
nginx in the same scenario. Also a table of Brotli quality 0-11 and gzip level 1-9 on the
document (ratio and time per compression): ``--levels`` prints only that.

Results go to ``benchmarks/results/compress-<YYYY-MM-DD>.md`` (``--output`` overrides). Everything
started here is stopped by PID in ``finally`` (also on SIGTERM); temporary files are removed
(``--keep`` keeps them). Every subprocess has a timeout.

Run from the repository root: ``python benchmarks/compress_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gzip
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import brotli

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import (
    CLIENT_CPU,
    REPO_ROOT,
    RESULTS_DIR,
    SERVER_CPU,
    KiB,
    Managed,
    QuietWaiter,
    busy_seconds,
    children_cpu_seconds,
    cpu_seconds,
    free_port,
    import_edgeproxy,
    nginx_binary,
)

TARGET_SIZE = 50 * KiB
CDN = "https://cdn.example.com"
BROTLI_MODULE = Path("/usr/lib/nginx/modules/ngx_http_brotli_filter_module.so")
BROTLI_PACKAGE = "libnginx-mod-http-brotli-filter"
SCENARIOS: tuple[tuple[str, str], ...] = (("br, gzip", "br"), ("gzip", "gzip"))
NGINX_DYN = "nginx (on the fly)"
NGINX_STATIC = "nginx (gzip_static)"
EDGEPROXY = "edgeproxy"


import_edgeproxy()
from edgeproxy.proxy.compress import (  # noqa: E402
    DEFAULT_BROTLI_QUALITY,
    DEFAULT_GZIP_LEVEL,
    compress_sync,
    decompress,
)

# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------

_SYLLABLE_TEXT = (
    "la ka mo ri sen ta vel do mi na ro lu shi an el ver tor bel cas min dra zo pe fa gu "
    "ny quo str wen hal dor fin gal ith mor"
)
_WORD_TEXT = (
    "love night summer heart fire dream city light blue river gold wild home road rain "
    "shadow echo neon dance ghost silver ocean storm glass paper moon sun young lost run"
)
_SYLLABLES = tuple(_SYLLABLE_TEXT.split())
_WORDS = tuple(_WORD_TEXT.split())
_GENRES = ("pop", "rock", "indie", "hip-hop", "electronic", "jazz", "folk", "r&b", "ambient")
_MARKETS = ("US", "GB", "DE", "FR", "SE", "BR", "JP", "IN", "AU", "CA", "MX", "ES", "IT", "NL")
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _name(rng: random.Random, words: int) -> str:
    return " ".join(
        rng.choice(_WORDS).capitalize()
        if rng.random() < 0.6
        else "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()
        for _ in range(words)
    )


def _id(rng: random.Random) -> str:
    return "".join(rng.choice(_B62) for _ in range(22))


def track_listing_json(seed: int = 5, target: int = TARGET_SIZE) -> bytes:
    """A page of an API listing of tracks (minified JSON, UTF-8), just over ``target`` bytes.

    Shaped like a music API's playlist-tracks page: per item the track (id, name, ISRC,
    duration, popularity, preview URL), its artists and its album with three image sizes,
    added_at and markets. IDs and names are random, so it compresses like real API output
    (gzip ~25-30 % of the size), not like repeated filler.
    """
    rng = random.Random(seed)
    base = "https://api.example.com/v1"
    artists = [{"id": _id(rng), "name": _name(rng, rng.randint(1, 3))} for _ in range(150)]
    albums = []
    for _ in range(120):
        album_id = _id(rng)
        albums.append(
            {
                "id": album_id,
                "name": _name(rng, rng.randint(1, 4)),
                "album_type": rng.choice(("album", "single", "compilation")),
                "release_date": f"{rng.randint(1968, 2026)}-{rng.randint(1, 12):02d}-"
                f"{rng.randint(1, 28):02d}",
                "total_tracks": rng.randint(1, 22),
                "images": [
                    {
                        "url": f"{CDN}/images/{rng.getrandbits(160):040x}?w={w}",
                        "width": w,
                        "height": w,
                    }
                    for w in (640, 300, 64)
                ],
                "href": f"{base}/albums/{album_id}",
            }
        )
    items: list[dict[str, object]] = []
    doc: dict[str, object] = {"href": f"{base}/playlists/{_id(rng)}/tracks?offset=0&limit=100"}
    doc["items"] = items
    encoded = b""
    while len(encoded) < target:
        track_id = _id(rng)
        items.append(
            {
                "added_at": f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
                "track": {
                    "id": track_id,
                    "name": _name(rng, rng.randint(1, 5)),
                    "isrc": f"{rng.choice(_MARKETS)}{rng.choice(_B62[10:36])}"
                    f"{rng.choice(_B62[10:36])}{rng.randint(0, 10**9 - 1):09d}",
                    "duration_ms": rng.randint(95_000, 420_000),
                    "explicit": rng.random() < 0.2,
                    "popularity": rng.randint(0, 100),
                    "track_number": rng.randint(1, 18),
                    "disc_number": 1,
                    "preview_url": f"{CDN}/audio/preview/{track_id}.mp3",
                    "href": f"{base}/tracks/{track_id}",
                    "artists": rng.sample(artists, rng.choice((1, 1, 1, 2, 3))),
                    "album": rng.choice(albums),
                    "genres": rng.sample(_GENRES, rng.randint(1, 3)),
                    "available_markets": sorted(rng.sample(_MARKETS, rng.randint(3, 10))),
                },
            }
        )
        doc["total"] = 100 + len(items)
        doc["limit"] = 100
        doc["offset"] = 0
        doc["next"] = f"{base}/playlists/tracks?offset={len(items)}&limit=100"
        encoded = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return encoded


# ---------------------------------------------------------------------------------------------
# Compression levels
# ---------------------------------------------------------------------------------------------


@dataclass
class LevelRow:
    coding: str
    level: int
    size: int
    ratio: float  # compressed / original
    ms: float  # best time of one compression


def _time_best(fn: object, budget: float = 0.25, min_runs: int = 3, max_runs: int = 200) -> float:
    best = float("inf")
    runs = 0
    start = time.perf_counter()
    while runs < min_runs or (time.perf_counter() - start < budget and runs < max_runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return best


def measure_levels(body: bytes) -> list[LevelRow]:
    """Ratio and best-of-N time of Brotli quality 0-11 and gzip 1-9 on ``body``."""
    rows: list[LevelRow] = []
    for q in range(12):
        out = compress_sync(body, "br", brotli_quality=q)
        assert brotli.decompress(out) == body
        ms = _time_best(lambda q=q: compress_sync(body, "br", brotli_quality=q)) * 1000
        rows.append(LevelRow("br", q, len(out), len(out) / len(body), ms))
    for level in range(1, 10):
        out = compress_sync(body, "gzip", gzip_level=level)
        assert gzip.decompress(out) == body
        ms = _time_best(lambda lv=level: compress_sync(body, "gzip", gzip_level=lv)) * 1000
        rows.append(LevelRow("gzip", level, len(out), len(out) / len(body), ms))
    return rows


def levels_table(rows: list[LevelRow], body_len: int) -> list[str]:
    defaults = {("br", DEFAULT_BROTLI_QUALITY), ("gzip", DEFAULT_GZIP_LEVEL)}
    lines = [
        f"Document: {body_len:,} bytes of JSON. Time: best of repeated runs, one core.",
        "",
        "| coding | level | bytes | % of original | saved | ms per compression | MB/s in |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = " (default)" if (r.coding, r.level) in defaults else ""
        lines.append(
            f"| {r.coding} | {r.level}{mark} | {r.size:,} | {r.ratio * 100:.1f} % | "
            f"{(1 - r.ratio) * 100:.1f} % | {r.ms:.3f} | {body_len / r.ms / 1000:.0f} |"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Processes: started and stopped by PID
# ---------------------------------------------------------------------------------------------


def ensure_tools(install_brotli: bool, notes: list[str]) -> bool:
    """nginx, wrk and taskset must exist; returns whether the Brotli filter module is there
    (installing Debian's package first when allowed and possible)."""
    missing = [t for t in ("wrk", "taskset") if shutil.which(t) is None]
    if nginx_binary() is None:
        missing.append("nginx")
    if missing:
        sys.exit(f"compress_bench: missing {', '.join(missing)} (apt-get install nginx wrk)")
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; server and client share a core", file=sys.stderr)
    if BROTLI_MODULE.exists():
        return True
    if not install_brotli:
        notes.append(f"{BROTLI_PACKAGE} not installed (--no-install): nginx serves gzip only")
        return False
    if os.geteuid() != 0:
        notes.append(f"{BROTLI_PACKAGE} not installed and not root: nginx serves gzip only")
        return False
    print(f"installing {BROTLI_PACKAGE} (apt-get) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    try:
        subprocess.run(
            ["apt-get", "install", "-y", BROTLI_PACKAGE],
            check=True,
            env=env,
            timeout=300,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        notes.append(f"apt-get install {BROTLI_PACKAGE} failed ({exc}): nginx serves gzip only")
        return False
    return BROTLI_MODULE.exists()


NGINX_CONF = """\
# generated by benchmarks/compress_bench.py
{load_module}
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
{user_line}
events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    types {{
        application/json json;
    }}
    default_type application/octet-stream;
    etag on;

    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy_temp;
    fastcgi_temp_path {tmp}/fastcgi_temp;
    uwsgi_temp_path {tmp}/uwsgi_temp;
    scgi_temp_path {tmp}/scgi_temp;

    gzip on;
    gzip_types application/json;
    gzip_comp_level {gzip_level};
    gzip_min_length 1000;
    gzip_vary on;
{brotli}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        root {tmp}/www;
        location / {{
        }}
        location /static/ {{
            gzip off;
{brotli_off}            gzip_static on;
        }}
        location /origin/ {{
            gzip off;
{brotli_off}            add_header Cache-Control "max-age=86400";
        }}
    }}
}}
"""
BROTLI_CONF = """\
    brotli on;
    brotli_types application/json;
    brotli_comp_level {level};
    brotli_min_length 1000;
"""


@dataclass
class System:
    name: str
    url: str
    managed: Managed | None  # None: not started here (edgeproxy)
    pid_hint: int | None = None  # a process to account CPU for, when known

    def server_pids(self) -> list[int]:
        if self.managed is not None:
            return self.managed.pids()
        if self.pid_hint is not None:
            return [self.pid_hint, *common.descendants(self.pid_hint)]
        return []


def start_nginx(
    tmp: Path, body: bytes, with_brotli: bool, brotli_level: int
) -> tuple[Managed, int]:
    """Write the document (and its .gz) under ``tmp/www``, start nginx; (process, port)."""
    (tmp / "www" / "static").mkdir(parents=True)
    (tmp / "www" / "origin").mkdir(parents=True)
    (tmp / "www" / "tracks.json").write_bytes(body)
    (tmp / "www" / "origin" / "tracks.json").write_bytes(body)
    (tmp / "www" / "static" / "tracks.json").write_bytes(body)
    (tmp / "www" / "static" / "tracks.json.gz").write_bytes(
        compress_sync(body, "gzip", gzip_level=DEFAULT_GZIP_LEVEL)
    )
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            load_module=f"load_module {BROTLI_MODULE};" if with_brotli else "",
            tmp=tmp,
            port=port,
            # as root, workers would switch to "nobody", who cannot enter this 0700 directory
            user_line="user root;" if os.geteuid() == 0 else "",
            gzip_level=DEFAULT_GZIP_LEVEL,
            brotli=BROTLI_CONF.format(level=brotli_level) if with_brotli else "",
            brotli_off="            brotli off;\n" if with_brotli else "",
        )
    )
    nginx = nginx_binary()
    assert nginx is not None
    base = [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
    test = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    if test.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
    log_path = tmp / "stdout.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *base],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    managed = Managed("nginx", process, tmp / "error.log")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(f"nginx exited: {managed.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return managed, port
        time.sleep(0.05)
    raise RuntimeError("nginx did not listen within 15 s")


EDGE_TOML = """\
# generated by benchmarks/compress_bench.py
[node]
name = "bench-compress"
role = "edge"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = 1

[store]
path = "{store}"
max_size = "1GiB"
ram_size = "64MiB"
ram_object_max = "2MiB"

[upstream]
parents = ["http://127.0.0.1:{origin_port}"]

[[policy]]
name = "api"
path = "*"
default_ttl = "1d"
compress = true
"""


def start_edgeproxy(tmp: Path, origin_port: int) -> tuple[Managed, str, str]:
    """One edge node (``taskset -c 0``, one worker) whose parent is the nginx ``/origin/``
    location (the document uncompressed, ``max-age=86400``), policy ``compress = true``.
    Returns (process, document URL, admin /stats URL)."""
    workdir = tmp / "edgeproxy"
    workdir.mkdir()
    port, admin_port = free_port(), free_port()
    config = workdir / "node.toml"
    config.write_text(
        EDGE_TOML.format(
            port=port, admin_port=admin_port, store=workdir / "store", origin_port=origin_port
        )
    )
    args = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "edgeproxy.cli", "serve"]
    args += ["--config", str(config)]
    log_path = workdir / "node.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(REPO_ROOT),
        )
    managed = Managed("edgeproxy", process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(f"edgeproxy exited: {managed.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return (
                managed,
                f"http://127.0.0.1:{port}/origin/tracks.json",
                f"http://127.0.0.1:{admin_port}/stats",
            )
        time.sleep(0.1)
    raise RuntimeError(f"edgeproxy did not listen within 30 s: {managed.log_tail()}")


def edgeproxy_results(stats_url: str | None) -> dict[str, int]:
    """The node's result counters (admin ``/stats``), or {} when unknown."""
    if stats_url is None:
        return {}
    try:
        with urllib.request.urlopen(stats_url, timeout=5) as response:
            return {k: int(v) for k, v in json.load(response).get("results", {}).items()}
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------
# One raw request: the exact bytes on the wire
# ---------------------------------------------------------------------------------------------


@dataclass
class Wire:
    status: int
    headers: dict[str, str]
    head_bytes: int
    wire_bytes: int  # head + body as framed (chunk sizes included)
    content: bytes  # the body after de-chunking (still content-coded)


def _read_exact(sock: socket.socket, buf: bytearray, n: int) -> None:
    while len(buf) < n:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed early")
        buf += data


def fetch_wire(url: str, accept_encoding: str, timeout: float = 10.0) -> Wire:
    """GET ``url`` once over a keep-alive HTTP/1.1 connection, as wrk sends it; measure the
    response's bytes exactly (Content-Length or chunked framing)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Accept-Encoding: {accept_encoding}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed before the header ended")
            buf += data
        head_end = buf.index(b"\r\n\r\n") + 4
        head = bytes(buf[:head_end]).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
        pos = head_end
        content = bytearray()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                while b"\r\n" not in buf[pos:]:
                    _read_exact(sock, buf, len(buf) + 1)
                line_end = buf.index(b"\r\n", pos)
                size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
                pos = line_end + 2
                _read_exact(sock, buf, pos + size + 2)
                content += buf[pos : pos + size]
                pos += size + 2
                if size == 0:
                    break  # no trailers expected
        else:
            length = int(headers.get("content-length", "0"))
            _read_exact(sock, buf, pos + length)
            content += buf[pos : pos + length]
            pos += length
    return Wire(status, headers, head_end, pos, bytes(content))


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu: float = 0.0
    other_load: float = 0.0  # cores kept busy by processes other than the server and wrk


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    total = re.search(r"^\s+(\d+) requests in", output, re.M)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"cannot parse wrk output:\n{output}")
    errors = 0
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        errors=errors,
    )


def run_wrk(
    url: str, accept_encoding: str, duration: float, connections: int, system: System
) -> WrkResult:
    seconds = max(1, round(duration))  # wrk takes whole seconds
    args = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    args += ["--latency", "-H", f"Accept-Encoding: {accept_encoding}", url]
    pids = system.server_pids()
    before = cpu_seconds(pids)
    busy_before, wrk_before, t0 = busy_seconds(), children_cpu_seconds(), time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    elapsed = time.monotonic() - t0
    used = cpu_seconds(pids) - before
    busy = busy_seconds() - busy_before
    wrk_cpu = children_cpu_seconds() - wrk_before
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    result = parse_wrk(done.stdout)
    result.server_cpu = used
    # without the server's PID (edgeproxy without --edgeproxy-pid) its CPU counts as "other"
    result.other_load = max(0.0, (busy - used - wrk_cpu) / elapsed) if elapsed > 0 else 0.0
    return result


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    system: str
    wire: Wire | None = None
    runs: list[WrkResult] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def spread(self) -> str:
        rates = [r.rps for r in self.runs]
        return f"{min(rates):,.0f}-{max(rates):,.0f}"

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def other_load(self) -> float:
        return max(r.other_load for r in self.runs)

    @property
    def cpu_ms_per_1k(self) -> float | None:
        cpu = sum(r.server_cpu for r in self.runs)
        n = sum(r.requests for r in self.runs)
        return cpu / n * 1_000_000 if cpu and n else None


def machine_info(with_brotli: bool) -> list[tuple[str, str]]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def out(args: list[str]) -> str:
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return "?"
        return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]

    module = "no"
    if with_brotli:
        module = out(["dpkg-query", "-W", "-f", "${Version}", BROTLI_PACKAGE])
    return [
        ("nproc", str(os.cpu_count())),
        ("cpu", cpu or platform.processor() or "?"),
        ("kernel", platform.release()),
        ("python", platform.python_version()),
        ("python brotli", getattr(brotli, "__version__", "?")),
        ("zlib", zlib.ZLIB_RUNTIME_VERSION),
        ("nginx -v", out([nginx_binary() or "nginx", "-v"])),
        (BROTLI_PACKAGE, module),
        ("wrk", out(["wrk", "-v"])),
        ("edgeproxy commit", out(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])),
        ("loadavg at start", Path("/proc/loadavg").read_text().strip()),
    ]


def results_table(rows: list[Row]) -> list[str]:
    lines = [
        "| Accept-Encoding | system | served | req/s (median) | min-max | p50 ms | p99 ms | "
        "server CPU ms / 1k resp | bytes on the wire | content bytes | vs nginx | other load |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, _ in SCENARIOS:
        ref = next((r for r in rows if r.scenario == scenario and r.system == NGINX_DYN), None)
        for row in (r for r in rows if r.scenario == scenario):
            if not row.runs:
                continue
            served = "?"
            wire = content = "?"
            if row.wire is not None:
                served = row.wire.headers.get("content-encoding", "identity")
                if "chunked" in row.wire.headers.get("transfer-encoding", ""):
                    served += " (chunked)"
                wire = f"{row.wire.wire_bytes:,}"
                content = f"{len(row.wire.content):,}"
            cpu = row.cpu_ms_per_1k
            ratio = "1.00x (ref)" if row is ref else (f"{row.rps / ref.rps:.2f}x" if ref else "-")
            if served.startswith("identity"):
                ratio += " (not coded!)"
            lines.append(
                f"| `{scenario}` | {row.system} | {served} | {row.rps:,.0f} | {row.spread} | "
                f"{row.p50:.2f} | {row.p99:.2f} | {f'{cpu:.1f}' if cpu else '-'} | {wire} | "
                f"{content} | {ratio} | {row.other_load:.2f} |"
            )
    return lines


def json_figures(args: argparse.Namespace, rows: list[Row], notes: list[str]) -> dict[str, object]:
    """The figures for ``--json``: per Accept-Encoding and system the medians, the bytes of
    one response and every run."""
    out = []
    for row in rows:
        if not row.runs:
            continue
        served = row.wire.headers.get("content-encoding", "identity") if row.wire else None
        out.append(
            {
                "accept_encoding": row.scenario,
                "system": row.system,
                "served": served,
                "wire_bytes": row.wire.wire_bytes if row.wire else None,
                "median_rps": row.rps,
                "median_p50_ms": row.p50,
                "median_p99_ms": row.p99,
                "cpu_ms_per_1k": row.cpu_ms_per_1k,
                "runs": [dataclasses.asdict(r) for r in row.runs],
            }
        )
    return {"rounds": args.rounds, "duration": args.duration, "rows": out, "notes": notes}


def write_markdown(
    path: Path,
    args: argparse.Namespace,
    table: list[str],
    levels: list[str],
    info: list[tuple[str, str]],
    notes: list[str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(["benchmarks/compress_bench.py", *sys.argv[1:]])
    text = [
        f"# Compressed hits: edgeproxy vs nginx ({dt.date.today().isoformat()})",
        "",
        f"Command: `{command}`  ",
        f"Rounds: {args.rounds} x {args.duration:g} s per system and Accept-Encoding, "
        f"`wrk -t1 -c{args.connections} --latency` pinned to CPU {CLIENT_CPU}; servers pinned "
        f"to CPU {SERVER_CPU} (one process / worker). nginx: gzip_comp_level "
        f"{DEFAULT_GZIP_LEVEL}, brotli_comp_level {args.nginx_brotli_level}, compressing every "
        "response; the document is served from disk (sendfile on, tcp_nopush off).",
        "",
        *table,
        "",
        "req/s: median over the rounds (min-max); p50/p99: medians over the rounds; server CPU: "
        "CPU time of the server processes per 1,000 responses over all rounds; bytes on the "
        "wire: status line, header and body as framed, for one response; vs nginx: median "
        f"req/s / median req/s of `{NGINX_DYN}` for the same Accept-Encoding.",
        "",
        "## Compression levels on the document",
        "",
        *levels,
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info],
        "",
    ]
    if notes:
        text += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    path.write_text("\n".join(text))


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


class Stop(Exception):
    pass


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Stop(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def check_answer(
    system: str, wire: Wire, want_coding: str, body: bytes, notes: list[str], strict: bool
) -> None:
    """The answer must be 200 and coded as expected; the decoded body should be ``body``."""
    coding = wire.headers.get("content-encoding", "identity")
    problem = None
    if wire.status != 200:
        problem = f"status {wire.status}"
    elif coding != want_coding:
        problem = f"Content-Encoding {coding!r}, want {want_coding!r}"
    if problem is not None:
        if strict:
            raise RuntimeError(f"{system}: {problem}")
        notes.append(f"{system} ({want_coding}): {problem}")
        return
    decoded = decompress(wire.content, coding)
    if decoded != body:
        message = (
            f"{system} ({coding}): decoded body ({len(decoded):,} bytes) differs from the "
            f"generated JSON ({len(body):,} bytes)"
        )
        if strict:
            raise RuntimeError(message)
        notes.append(message + " -- upload the file from --write-json for a like-for-like run")
    if "accept-encoding" not in wire.headers.get("vary", "").lower():
        notes.append(f"{system} ({coding}): no Vary: Accept-Encoding")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds x 3 s")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of wrk per system (0: none)"
    )
    parser.add_argument("--edgeproxy-url", help="URL of the JSON on a running edgeproxy node")
    parser.add_argument("--edgeproxy-pid", type=int, help="its PID, to report its CPU time")
    parser.add_argument(
        "--edgeproxy-stats", help="its admin /stats URL, to count hits while measured"
    )
    parser.add_argument(
        "--start-edgeproxy",
        action="store_true",
        help="start an edge node here (parent: this nginx, policy compress = true)",
    )
    parser.add_argument("--static", action="store_true", help="also nginx with gzip_static")
    parser.add_argument("--nginx-brotli-level", type=int, default=DEFAULT_BROTLI_QUALITY)
    parser.add_argument("--no-install", action="store_true", help="never apt-get anything")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        metavar="SECONDS",
        help="before each run, wait while other processes keep > 0.3 cores busy (total budget; "
        "default 120, 30 with --quick)",
    )
    parser.add_argument("--levels", action="store_true", help="only the compression-level table")
    parser.add_argument("--write-json", type=Path, help="write the JSON document here and exit")
    parser.add_argument("--output", type=Path, help="markdown results file")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.warmup = 2, 3.0, 1.0
    if args.wait_quiet is None:
        args.wait_quiet = 30.0 if args.quick else 120.0

    body = track_listing_json(args.seed)
    if args.write_json is not None:
        args.write_json.write_bytes(body)
        print(f"wrote {len(body):,} bytes of JSON to {args.write_json}")
        return 0
    print(f"document: {len(body):,} bytes of JSON (seed {args.seed})", flush=True)
    levels = levels_table(measure_levels(body), len(body))
    print("\n".join(levels), flush=True)
    if args.levels:
        return 0

    notes: list[str] = []
    with_brotli = ensure_tools(not args.no_install, notes)
    info = machine_info(with_brotli)
    tmp = Path(tempfile.mkdtemp(prefix="edgeproxy-compressbench-"))
    nginx: Managed | None = None
    edge: Managed | None = None
    stats_url: str | None = args.edgeproxy_stats
    try:
        with stop_on_signals():
            nginx, port = start_nginx(tmp, body, with_brotli, args.nginx_brotli_level)
            base = f"http://127.0.0.1:{port}"
            systems = [System(NGINX_DYN, f"{base}/tracks.json", nginx)]
            if args.static:
                systems.append(System(NGINX_STATIC, f"{base}/static/tracks.json", nginx))
            if args.start_edgeproxy:
                edge, url, stats_url = start_edgeproxy(tmp, port)
                systems.append(System(EDGEPROXY, url, edge))
            elif args.edgeproxy_url:
                systems.append(System(EDGEPROXY, args.edgeproxy_url, None, args.edgeproxy_pid))
            else:
                print("no edgeproxy URL given (--edgeproxy-url): measuring nginx only")
                notes.append("no edgeproxy URL given (--edgeproxy-url): nginx figures only")
            if not with_brotli:
                notes.append("nginx without Brotli: `br, gzip` is answered with gzip")

            rows: dict[tuple[str, str], Row] = {}
            for scenario, want in SCENARIOS:
                for system in systems:
                    if system.name == EDGEPROXY:
                        for _ in range(3):  # produce and store the variant, then a hit
                            fetch_wire(system.url, scenario)
                    wire = fetch_wire(system.url, scenario)
                    expect = want
                    if system.name != EDGEPROXY and (
                        (want == "br" and not with_brotli) or system.name == NGINX_STATIC
                    ):
                        expect = "gzip"
                    check_answer(
                        system.name, wire, expect, body, notes, strict=system.name != EDGEPROXY
                    )
                    if system.name == EDGEPROXY:
                        cs = wire.headers.get("cache-status", "")
                        if "hit" not in [p.strip() for p in cs.split(",")[-1].split(";")]:
                            notes.append(f"edgeproxy (`{scenario}`): not a hit: {cs or '-'}")
                    rows[(scenario, system.name)] = Row(scenario, system.name, wire)
                    print(
                        f"  {system.name:22} {scenario!r:12}: {wire.status} "
                        f"{wire.headers.get('content-encoding', 'identity'):8} "
                        f"{wire.wire_bytes:,} bytes on the wire",
                        flush=True,
                    )
                    if args.warmup > 0:
                        run_wrk(system.url, scenario, args.warmup, args.connections, system)

            quiet = QuietWaiter(args.wait_quiet)
            counters_before = edgeproxy_results(stats_url)
            for round_no in range(args.rounds):
                order = systems if round_no % 2 == 0 else list(reversed(systems))
                for scenario, _ in SCENARIOS:
                    for system in order:
                        quiet.wait()
                        result = run_wrk(
                            system.url, scenario, args.duration, args.connections, system
                        )
                        rows[(scenario, system.name)].runs.append(result)
                        if result.errors:
                            notes.append(
                                f"round {round_no + 1}, {system.name}, `{scenario}`: "
                                f"{result.errors} socket errors / non-2xx answers"
                            )
                        print(
                            f"round {round_no + 1}/{args.rounds} {scenario!r:12} "
                            f"{system.name:22} {result.rps:>10,.0f} req/s  "
                            f"p99 {result.p99_ms:7.2f} ms",
                            flush=True,
                        )
            info.append(("loadavg at end", Path("/proc/loadavg").read_text().strip()))
            busiest = max((r.other_load for r in rows.values() if r.runs), default=0.0)
            if busiest > 0.3:
                notes.append(
                    f"the machine was busy (up to {busiest:.2f} cores used by other processes "
                    "during a run): req/s and p99 are disturbed; server CPU per 1k responses is "
                    "the steadier figure (1,000 / it = req/s one core could serve)"
                )
            counters_after = edgeproxy_results(stats_url)
            if counters_after:
                delta = {
                    k: v - counters_before.get(k, 0)
                    for k, v in counters_after.items()
                    if v - counters_before.get(k, 0)
                }
                notes.append(f"edgeproxy results while measured (admin /stats): {delta}")
            if quiet.waited:
                notes.append(
                    f"waited {quiet.waited:.0f} s in total for other processes to go quiet "
                    f"(budget {args.wait_quiet:g} s)"
                )
            table = results_table(list(rows.values()))
            for scenario, want in SCENARIOS:
                ep = rows.get((scenario, EDGEPROXY))
                ref = rows.get((scenario, NGINX_DYN))
                if ep is None or ref is None or not ep.runs or not ref.runs:
                    continue
                ratio = ep.rps / ref.rps
                served = ep.wire.headers.get("content-encoding", "identity") if ep.wire else "?"
                verdict = "met" if ratio >= 3.0 and served == want else "NOT met"
                table.append("")
                table.append(
                    f"Target >= 3x nginx, `{scenario}`: {verdict} ({ratio:.2f}x, edgeproxy "
                    f"served {served})."
                )
            print()
            print("\n".join(table))
            output = args.output or RESULTS_DIR / f"compress-{dt.date.today().isoformat()}.md"
            write_markdown(output, args, table, levels, info, notes)
            if args.json is not None:
                common.write_json(args.json, json_figures(args, list(rows.values()), notes))
                print(f"written to {args.json}")
            for note in notes:
                print("note:", note)
            print(f"\nwritten to {output}")
    except Stop as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        if edge is not None:
            edge.stop()
        if nginx is not None:
            nginx.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
