#!/usr/bin/env python3
"""Hit throughput of edgeproxy vs nginx ``proxy_cache``, side by side, on loopback.

What runs:

* ONE SeaweedFS (``weed mini`` through :class:`edgeproxy.seaweed.SeaweedServer`, credentials
  set, SigV4 enforced) with three objects of random bytes (1 KiB, 100 KiB, 1 MiB,
  ``application/octet-stream``) in the bucket ``bench``.
* Two edgeproxy nodes, started as ``taskset -c 0 python -m edgeproxy.cli serve --config FILE``
  (role edge, one worker, S3 upstream with the credentials passed in environment variables,
  one policy ``"*"`` with ``default_ttl = "1d"``, store in a temporary directory):
  ``edgeproxy (ram)`` has ``ram_object_max = "2MiB"``, so all three objects are RAM hits;
  ``edgeproxy (disk)`` has ``ram_object_max = "64KiB"``, so 100 KiB and 1 MiB are served from
  the mapped body file (page cache) and only 1 KiB from RAM.
* nginx (``taskset -c 0 nginx -p TMP -c TMP/nginx.conf``, ``daemon off``, ``worker_processes
  1``, ``worker_cpu_affinity 01``) as ``proxy_cache`` in front of the SAME SeaweedFS.

How nginx reaches an origin that wants SigV4: nginx cannot sign, so the bucket ``bench`` gets a
bucket policy allowing anonymous ``s3:GetObject`` (SeaweedFS 4.x honours ``PUT /bench?policy``;
checked at start: the script fails if an anonymous GET is still refused). edgeproxy keeps
signing every request with the credentials; nginx fetches the same objects anonymously. Only
the warm-up touches the origin: the measured requests are all cache hits on both sides.

nginx is configured the way an operator would: ``proxy_cache_path ... keys_zone=bench:10m``,
``proxy_cache_valid 200 1d``, ``proxy_cache_lock on``, ``sendfile on``, ``tcp_nopush off``
(Debian's default ``on`` stalls ~100 KiB cache hits by ~40 ms here), ``keepalive_requests
100000``, ``access_log off``, HTTP/1.1 with upstream keep-alive, ``X-Cache-Status``.

Procedure: each object is fetched twice through each system and the second answer must be a
hit (edgeproxy ``Cache-Status`` member with ``hit``; nginx ``X-Cache-Status: HIT``; edgeproxy
may answer a GET sent right after its miss ended as ``collapsed`` while it still publishes the
body: then up to 10 more GETs, and a note). After a 1 s wrk warm-up per system and size, per
round and per size, ``taskset -c 1 wrk -t1 -c50 -dDs --latency`` runs against each system in
turn (the order alternates between rounds: A B C, C B A, ...). Reported per size and system:
median req/s over the rounds, the min-max spread, median p50/p99 latency, the ratio
edgeproxy/nginx of the medians, and, from /proc, the server's CPU use, its requests per CPU
second (the cost of a hit, which a noisy shared machine disturbs much less than req/s) and the
CPU that other processes used meanwhile. Before each run the script waits (``--wait-quiet``,
120 s in total at most) while other processes keep more than 0.3 cores busy. edgeproxy's
``/stats`` must show that every measured request was a hit. The table is printed and written
as markdown (with the command line and the machine) to
``benchmarks/results/hit-<YYYY-MM-DD>.md`` (``--output`` overrides).

``--profile DIR`` additionally samples each edgeproxy node with ``py-spy`` (``pip install
py-spy``) during one extra wrk run per size and writes a flame graph (SVG) and a text summary
of the hottest functions to DIR.

Everything started here is stopped by PID (also on Ctrl-C, SIGTERM and errors) and the temporary
directories are removed. Only 127.0.0.1 is used. Every step has a timeout.

Run from the repository root: ``python benchmarks/hit_bench.py [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import (
    ACCESS_ENV,
    CLIENT_CPU,
    REPO_ROOT,
    RESULTS_DIR,
    SECRET_ENV,
    SERVER_CPU,
    KiB,
    Managed,
    MiB,
    QuietWaiter,
    WrkResult,
    free_port,
    http_get,
    import_edgeproxy,
    nginx_binary,
    start_process,
    wait_http,
)

BUCKET = "bench"
SIZES: tuple[tuple[str, int], ...] = (("1 KiB", KiB), ("100 KiB", 100 * KiB), ("1 MiB", MiB))
NGINX = "nginx (proxy_cache)"
COPY = "edgeproxy (disk, sendfile off)"
LOWAT_OFF = "edgeproxy (disk, lowat off)"


def size_label(size: int) -> str:
    """``1 KiB``, ``256 KiB``, ``1 MiB``, ``1536 B``: the label of an object size."""
    if size % MiB == 0:
        return f"{size // MiB} MiB"
    if size % KiB == 0:
        return f"{size // KiB} KiB"
    return f"{size} B"


def object_key(label: str) -> str:
    return "obj-" + label.replace(" ", "").lower() + ".bin"


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


def ensure_tools() -> None:
    """nginx and wrk from Debian when missing (apt-get, needs root); taskset must exist."""
    missing = common.ensure_tools(["nginx", "wrk", "taskset"])
    if missing:
        sys.exit(f"hit_bench: missing {', '.join(missing)}")
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; server and client share a core", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# The systems under test
# ---------------------------------------------------------------------------------------------


@dataclass
class System:
    name: str
    base_url: str
    managed: Managed
    stats_url: str | None = None  # edgeproxy's admin /stats

    def server_pids(self) -> list[int]:
        """The processes doing the serving: the node, or nginx's master and workers."""
        return self.managed.pids()

    def is_hit(self, headers: dict[str, str]) -> bool:
        if self.stats_url is None:
            return headers.get("x-cache-status", "").upper() == "HIT"
        members = headers.get("cache-status", "").split(",")
        return "hit" in [p.strip() for p in members[-1].split(";")]

    def hit_summary(self, headers: dict[str, str]) -> str:
        if self.stats_url is None:
            return "X-Cache-Status: " + headers.get("x-cache-status", "(none)")
        return "Cache-Status: " + headers.get("cache-status", "(none)")

    def stats(self) -> dict[str, int]:
        if self.stats_url is None:
            return {}
        with urllib.request.urlopen(self.stats_url, timeout=5) as response:
            return dict(json.load(response).get("results", {}))


EDGE_TOML = """\
# generated by benchmarks/hit_bench.py
[node]
name = "{name}"
role = "edge"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = 1
{node_extra}
[store]
path = "{store}"
max_size = "1GiB"
ram_size = "64MiB"
ram_object_max = "{ram_object_max}"

[upstream.s3]
endpoint = "{endpoint}"
bucket = "{bucket}"
access_key_env = "{access_env}"
secret_key_env = "{secret_env}"

[[policy]]
name = "all"
path = "*"
default_ttl = "1d"
"""


def answers_http(base_url: str) -> bool:
    """One request that the node answers itself (405 for OPTIONS on an S3 upstream, no
    origin traffic); False when the connection is cut instead."""
    request = urllib.request.Request(base_url + "/", method="OPTIONS")
    try:
        with urllib.request.urlopen(request, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def start_edgeproxy(
    label: str,
    name: str,
    ram_object_max: str,
    workdir: Path,
    origin: object,
    env: dict[str, str],
    node_extra: str = "",
) -> System:
    workdir.mkdir(parents=True, exist_ok=True)
    port, admin_port = free_port(), free_port()
    config = workdir / "node.toml"
    config.write_text(
        EDGE_TOML.format(
            name=name,
            port=port,
            admin_port=admin_port,
            store=workdir / "store",
            ram_object_max=ram_object_max,
            node_extra=node_extra,
            endpoint=origin.endpoint,  # type: ignore[attr-defined]
            bucket=BUCKET,
            access_env=ACCESS_ENV,
            secret_env=SECRET_ENV,
        )
    )
    args = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "edgeproxy.cli"]
    args += ["serve", "--config", str(config)]
    managed = start_process(label, args, workdir / "node.log", env=env, cwd=str(REPO_ROOT))
    system = System(
        label,
        f"http://127.0.0.1:{port}",
        managed,
        stats_url=f"http://127.0.0.1:{admin_port}/stats",
    )
    wait_http(managed, f"http://127.0.0.1:{admin_port}/healthz")
    return system


def start_nginx(workdir: Path, origin_port: int, open_file_cache: bool) -> System:
    """nginx ``proxy_cache`` (:class:`common.NginxCache`), one worker pinned to CPU 0,
    ``proxy_cache_valid 200 1d`` for everything."""
    port = free_port()
    conf = common.NginxCache(
        workdir,
        port,
        origin_port,
        origin_prefix=f"/{BUCKET}",
        ttls=(("/", "1d"),),
        cpu_affinity="01",
        open_file_cache=open_file_cache,
        # started as root, workers would switch to "nobody", who cannot enter this 0700
        # temporary directory
        run_as_root=os.geteuid() == 0,
    )
    managed = common.start_nginx(NGINX, conf, cpu=SERVER_CPU)
    system = System(NGINX, f"http://127.0.0.1:{port}", managed)
    wait_http(managed, system.base_url + "/")
    return system


def allow_anonymous_reads(origin: object) -> None:
    """Bucket policy: anonymous s3:GetObject on BUCKET (for nginx, which cannot sign)."""
    common.allow_anonymous_reads(origin, BUCKET)


def warm(system: System, bodies: dict[str, bytes], notes: list[str]) -> None:
    """GET each object twice; the second answer must be a hit with the right body.

    A second GET sent the moment the first answer ended may still find the store publishing
    the body (edgeproxy answers it as ``collapsed``); it is retried a few times, and noted.
    """
    for label, body in bodies.items():
        url = f"{system.base_url}/{object_key(label)}"
        answers = []
        for attempt in range(1, 12):
            status, headers, got = http_get(url)
            if status != 200 or got != body:
                raise RuntimeError(
                    f"{system.name}: GET {url} (#{attempt}) -> {status}, "
                    f"{len(got)} bytes (want 200, {len(body)}): {got[:200]!r}"
                )
            answers.append(system.hit_summary(headers))
            if attempt >= 2 and system.is_hit(headers):
                break
            if attempt >= 2:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"{system.name}: GET {url} never became a hit: {answers}")
        if len(answers) > 2:
            notes.append(
                f"{system.name} {label}: the second GET was not a hit ({answers[1]}); "
                f"hit at GET #{len(answers)}"
            )
        print(f"  {system.name:18} {label:>7}: {answers[-1]}", flush=True)


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------


def run_wrk(url: str, duration: float, connections: int, server: System | None = None) -> WrkResult:
    """``taskset -c 1 wrk -t1 -cN --latency`` (see :func:`common.run_wrk`); the server's CPU
    time and the other processes' are accounted when ``server`` is given."""
    pids = server.server_pids() if server is not None else []
    return common.run_wrk(url, duration, connections, server_pids=pids, cpu=CLIENT_CPU)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    size: str
    system: str
    runs: list[WrkResult] = field(default_factory=list)

    @property
    def median_rps(self) -> float:
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
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    @property
    def per_cpu(self) -> float:
        return statistics.median(r.per_cpu for r in self.runs)

    @property
    def cpu_share(self) -> float:
        return statistics.median(r.cpu_share for r in self.runs)

    @property
    def background(self) -> float:
        return max(r.background for r in self.runs)


def build_table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    header = ["size", "system", "req/s (median)", "min-max", "p50 ms", "p99 ms", "MiB/s"]
    header += ["vs nginx", "server CPU", "req/CPU-s", "vs nginx/CPU", "other load"]
    nginx = {row.size: row for row in rows if row.system == NGINX}
    size_bytes = dict(SIZES)
    table = []
    for row in rows:
        ref = nginx[row.size]
        if row.system == NGINX:
            ratio = per_cpu_ratio = "1.00x (ref)"
        else:
            ratio = f"{row.median_rps / ref.median_rps:.2f}x"
            per_cpu_ratio = f"{row.per_cpu / ref.per_cpu:.2f}x" if ref.per_cpu else "?"
        mib = row.median_rps * size_bytes[row.size] / MiB
        errors = f" ({row.errors} errors!)" if row.errors else ""
        table.append(
            [
                row.size,
                row.system + errors,
                f"{row.median_rps:,.0f}",
                row.spread,
                f"{row.p50:.2f}",
                f"{row.p99:.2f}",
                f"{mib:,.0f}",
                ratio,
                f"{100 * row.cpu_share:.0f}%",
                f"{row.per_cpu:,.0f}",
                per_cpu_ratio,
                f"{row.background:.2f}",
            ]
        )
    return header, table


def json_figures(args: argparse.Namespace, rows: list[Row], notes: list[str]) -> dict[str, object]:
    """The figures for ``--json``: per size and system the medians and every wrk run."""
    return {
        "rounds": args.rounds,
        "duration": args.duration,
        "connections": args.connections,
        "rows": [
            {
                "size": row.size,
                "system": row.system,
                "median_rps": row.median_rps,
                "median_p50_ms": row.p50,
                "median_p99_ms": row.p99,
                "median_per_cpu": row.per_cpu,
                "errors": row.errors,
                "runs": [r.to_json() for r in row.runs],
            }
            for row in rows
        ],
        "notes": notes,
    }


def render_text(header: list[str], table: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    right = set(range(2, len(header)))

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [line(header), "  ".join("-" * w for w in widths)]
    previous = None
    for cells in table:
        if previous is not None and cells[0] != previous:
            out.append("")
        previous = cells[0]
        out.append(line(cells))
    return "\n".join(out)


def render_markdown(header: list[str], table: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|")
    for cells in table:
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def machine_info() -> list[tuple[str, str]]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nginx_v = subprocess.run(
        [nginx_binary() or "nginx", "-v"], capture_output=True, text=True, timeout=10
    )
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    weed_v = subprocess.run(["weed", "version"], capture_output=True, text=True, timeout=30)
    commit = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "edgeproxy"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    revision = commit.stdout.strip() or "?"
    if dirty.stdout.strip():
        revision += " + uncommitted changes in edgeproxy/"
    return [
        ("nproc", str(os.cpu_count())),
        ("cpu", cpu or platform.processor() or "?"),
        ("kernel", platform.release()),
        ("python", platform.python_version()),
        ("nginx -v", (nginx_v.stderr or nginx_v.stdout).strip()),
        ("wrk", ((wrk_v.stdout or wrk_v.stderr).splitlines() or ["?"])[0].strip()),
        ("weed", (weed_v.stdout.split("\n", 1)[0]).strip()),
        ("edgeproxy commit", revision),
    ]


def write_markdown(
    path: Path,
    args: argparse.Namespace,
    header: list[str],
    table: list[list[str]],
    info: list[tuple[str, str]],
    notes: list[str],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join(["benchmarks/hit_bench.py", *sys.argv[1:]])
    text = [
        f"# Hit throughput: edgeproxy vs nginx proxy_cache ({dt.date.today().isoformat()})",
        "",
        f"Command: `{command}`  ",
        f"Rounds: {args.rounds} x {args.duration:g} s per system and size, "
        f"`wrk -t1 -c{args.connections} --latency` pinned to CPU {CLIENT_CPU}; "
        f"servers pinned to CPU {SERVER_CPU} (one process / worker each).",
        "",
        render_markdown(header, table),
        "",
        "req/s and min-max over the rounds; p50/p99 are medians over the rounds; "
        "`vs nginx` = median req/s of the row / median req/s of nginx for that size. "
        "`server CPU` = CPU time (user + system, all threads; nginx: master + worker) the "
        "server used per second of the run (100% = the whole of CPU 0; less means it was "
        "idle or preempted); `req/CPU-s` = requests per CPU second of the server, which "
        "background load on a shared machine disturbs much less than req/s; "
        "`vs nginx/CPU` is its ratio; `other load` = the most CPU (in cores) that processes "
        "other than the server and wrk used during one of the row's runs (0.00: a quiet "
        "machine). "
        "`edgeproxy (ram)`: ram_object_max 2MiB (all sizes from RAM); `edgeproxy (disk)`: "
        "ram_object_max 64KiB (larger bodies from the mapped body file, by sendfile up to "
        "sendfile_max). With --sendfile-ab, `edgeproxy (disk)` sends every size by sendfile "
        f"(sendfile_max 16MiB) and `{COPY}` copies every size from the mapping. With "
        f"--lowat-ab, `{LOWAT_OFF}` is the disk node with notsent_lowat 0 (the system's "
        "TCP_NOTSENT_LOWAT while bodies over 1 MiB are sent; the others set 512 KiB).",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info],
    ]
    if notes:
        text += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    path.write_text("\n".join(text) + "\n")


# ---------------------------------------------------------------------------------------------
# Profiling (optional)
# ---------------------------------------------------------------------------------------------


def summarize_raw(raw_path: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_counts: dict[str, int] = defaultdict(int)
    incl_counts: dict[str, int] = defaultdict(int)
    total = other_threads = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if not any(f.startswith("_run_module_as_main") for f in frames):
            other_threads += count  # the store's executor threads, mostly waiting
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    if not total:
        return "(no samples)\n"

    def block(title: str, counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [title, *[f"{100 * c / total:6.1f}%  {name}" for name, c in ranked], ""]

    lines = [f"{total} samples of the main (event loop) thread; {other_threads} of others"]
    lines += block("-- self (where the CPU is) --", self_counts)
    lines += block("-- inclusive (frame anywhere on the stack) --", incl_counts)
    return "\n".join(lines)


def profile(system: System, out_dir: Path, duration: float, connections: int) -> None:
    """Per size: one wrk run under ``py-spy record --native --format raw`` (summarized into
    ``*.summary.txt``), then one under ``--format flamegraph`` (``*.svg``). py-spy pauses the
    node for each sample (``--native`` cannot be non-blocking), so req/s are lower here."""
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("--profile: py-spy not found (pip install py-spy); skipped", file=sys.stderr)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", system.name.lower()).strip("-")
    for label, _ in SIZES:
        stem = out_dir / f"{slug}-{label.replace(' ', '').lower()}"
        rates = []
        for fmt, path in (("raw", Path(f"{stem}.txt")), ("flamegraph", Path(f"{stem}.svg"))):
            record = ["taskset", "-c", CLIENT_CPU, py_spy, "record", "--pid"]
            record += [str(system.managed.pid), "--rate", "200", "--native", "--duration"]
            record += [str(int(duration)), "--format", fmt, "-o", str(path)]
            log_path = Path(f"{stem}.py-spy.log")
            with log_path.open("ab") as log:
                recorder = subprocess.Popen(record, stdout=log, stderr=subprocess.STDOUT)
            try:
                time.sleep(0.5)
                url = f"{system.base_url}/{object_key(label)}"
                rates.append(run_wrk(url, duration, connections).rps)
            finally:
                try:
                    recorder.wait(duration + 30)
                except subprocess.TimeoutExpired:
                    recorder.kill()
                    recorder.wait(10)
            if not path.exists():
                print(f"  py-spy wrote no {path}; see {log_path}", file=sys.stderr)
        raw = Path(f"{stem}.txt")
        summary = summarize_raw(raw) if raw.exists() else "(no samples)\n"
        Path(f"{stem}.summary.txt").write_text(
            f"{system.name} {label}: {rates[0]:,.0f} req/s under py-spy\n{summary}"
        )
        print(f"  profiled {system.name} {label}: {stem}.svg, {stem}.summary.txt", flush=True)


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--quick", action="store_true", help="2 rounds x 3 s")
    parser.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    parser.add_argument("--warmup", type=float, default=1.0, help="wrk warm-up seconds (0: none)")
    parser.add_argument("--output", type=Path, help="markdown file (default results/hit-DATE.md)")
    parser.add_argument(
        "--nginx-open-file-cache",
        action="store_true",
        help="also give nginx open_file_cache (not in the default operator config)",
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the edgeproxy nodes into DIR"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="before each run, wait while other processes keep > 0.3 cores busy, "
        "at most SECONDS in total (default 120; 0: never wait)",
    )
    parser.add_argument(
        "--sizes",
        metavar="LIST",
        help='object sizes, comma-separated (default "1KiB,100KiB,1MiB")',
    )
    parser.add_argument(
        "--sendfile-ab",
        action="store_true",
        help=f"also run {COPY!r}: the disk node with sendfile = false (the default is on up "
        "to sendfile_max; the disk node sets sendfile_max 16MiB to compare every size)",
    )
    parser.add_argument(
        "--lowat-ab",
        action="store_true",
        help=f"also run {LOWAT_OFF!r}: the disk node with notsent_lowat = 0 (the system's "
        "TCP_NOTSENT_LOWAT; the default sets 512 KiB while a body over 1 MiB is sent, so "
        'give --sizes with larger ones, e.g. "4MiB,8MiB")',
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 2, 3.0
    if args.rounds < 1 or not 1 <= args.duration <= 120:
        parser.error("need --rounds >= 1 and 1 <= --duration <= 120")
    if args.sizes:
        global SIZES
        import_edgeproxy()
        from edgeproxy.config import parse_size

        try:
            sizes = [parse_size(part.strip()) for part in args.sizes.split(",")]
        except ValueError as err:
            parser.error(f"--sizes: {err}")
        if not sizes or not all(KiB <= size <= 64 * MiB for size in sizes):
            parser.error("--sizes: each size from 1KiB to 64MiB")
        SIZES = tuple((size_label(size), size) for size in dict.fromkeys(sizes))
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def temp_root(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="edgeproxy-hitbench-"))
    try:
        yield root
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import_edgeproxy()
    ensure_tools()
    from edgeproxy.seaweed import SeaweedServer

    # SIGINT too: a shell may start background jobs with SIGINT ignored
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    started: list[Managed] = []
    origin = None
    with temp_root(args.keep) as root:
        try:
            access, secret = "edgeproxy-bench", secrets.token_hex(16)
            origin = SeaweedServer(root / "seaweed", access, secret)
            print(f"starting SeaweedFS in {root / 'seaweed'} ...", flush=True)
            origin.start()
            origin.create_bucket(BUCKET)
            bodies = {label: os.urandom(size) for label, size in SIZES}
            for label, body in bodies.items():
                origin.put_object(BUCKET, object_key(label), body, "application/octet-stream")
            allow_anonymous_reads(origin)
            status, _, _ = http_get(f"{origin.endpoint}/{BUCKET}/{object_key(SIZES[0][0])}")
            if status != 200:
                raise RuntimeError(f"anonymous GET still refused ({status}) after bucket policy")
            print(f"origin {origin.endpoint}: bucket {BUCKET!r}, anonymous reads allowed")

            env = {**os.environ, ACCESS_ENV: access, SECRET_ENV: secret}
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            )
            systems: list[System] = []
            notes: list[str] = []
            variants = [
                ("edgeproxy (ram)", "bench-ram", "2MiB", ""),
                ("edgeproxy (disk)", "bench-disk", "64KiB", ""),
            ]
            if args.sendfile_ab:  # sendfile for every size against the copy for every size
                variants[1] = (*variants[1][:3], 'sendfile_max = "16MiB"\n')
                variants.append((COPY, "bench-copy", "64KiB", "sendfile = false\n"))
            if args.lowat_ab:  # the disk node without TCP_NOTSENT_LOWAT (the system's)
                off = variants[1][3] + 'notsent_lowat = "0"\n'
                variants.append((LOWAT_OFF, "bench-lowat-off", "64KiB", off))
            for label, name, ram_max, node_extra in variants:
                system = start_edgeproxy(
                    label, name, ram_max, root / name, origin, env, node_extra=node_extra
                )
                started.append(system.managed)
                if not answers_http(system.base_url):
                    raise RuntimeError(f"{label} cuts every connection (see its log below)")
                systems.append(system)
            origin_port = int(origin.endpoint.rsplit(":", 1)[1])
            nginx = start_nginx(root / "nginx", origin_port, args.nginx_open_file_cache)
            started.append(nginx.managed)
            systems.append(nginx)
            for system in systems:
                print(f"{system.name}: {system.base_url} (pid {system.managed.pid})", flush=True)

            print("warming (2 GETs per object, the second must be a hit):", flush=True)
            for system in systems:
                warm(system, bodies, notes)
            if args.warmup > 0:
                for label, _ in SIZES:
                    for system in systems:
                        run_wrk(
                            f"{system.base_url}/{object_key(label)}",
                            max(1.0, args.warmup),
                            args.connections,
                        )
            before = {s.name: s.stats() for s in systems}

            quiet = QuietWaiter(args.wait_quiet)
            rows = {(label, s.name): Row(label, s.name) for label, _ in SIZES for s in systems}
            total = args.rounds * len(SIZES) * len(systems)
            eta = total * (args.duration + 0.3)
            print(f"running {total} wrk runs of {args.duration:g} s (~{eta:.0f} s) ...")
            for rnd in range(args.rounds):
                order = systems if rnd % 2 == 0 else list(reversed(systems))
                for label, _ in SIZES:
                    for system in order:
                        quiet.wait()
                        url = f"{system.base_url}/{object_key(label)}"
                        result = run_wrk(url, args.duration, args.connections, system)
                        rows[(label, system.name)].runs.append(result)
                        print(
                            f"  round {rnd + 1}/{args.rounds} {label:>7} {system.name:19} "
                            f"{result.rps:>10,.0f} req/s  p99 {result.p99_ms:7.2f} ms  "
                            f"server CPU {100 * result.cpu_share:3.0f}%  "
                            f"{result.per_cpu:>8,.0f} req/CPU-s  "
                            f"other load {result.background:4.2f}"
                            + (f"  {result.errors} errors" if result.errors else ""),
                            flush=True,
                        )

            for system in systems:
                if system.stats_url is None:
                    continue
                after = system.stats()
                misses = sum(
                    after.get(k, 0) - before[system.name].get(k, 0) for k in after if k != "hit"
                )
                hits = after.get("hit", 0) - before[system.name].get("hit", 0)
                note = f"{system.name}: {hits:,} hits and {misses} other results while measured"
                notes.append(note)
            for label, _ in SIZES:
                status, headers, _ = http_get(f"{nginx.base_url}/{object_key(label)}")
                if not nginx.is_hit(headers):
                    notes.append(f"nginx: {label} was no longer a HIT after the runs!")
            if quiet.waited:
                notes.append(
                    f"waited {quiet.waited:.0f} s in total for other processes to go quiet "
                    f"(budget {args.wait_quiet:g} s)"
                )
            if args.nginx_open_file_cache:
                notes.append("nginx ran with open_file_cache max=1000 inactive=60s")

            ordered = [rows[(label, s.name)] for label, _ in SIZES for s in systems]
            header, table = build_table(ordered)
            print()
            print(render_text(header, table))
            for note in notes:
                print("note: " + note)
            info = machine_info()
            output = args.output or RESULTS_DIR / f"hit-{dt.date.today().isoformat()}.md"
            write_markdown(output, args, header, table, info, notes)
            print(f"\nwritten: {output}")
            if args.json is not None:
                common.write_json(args.json, json_figures(args, ordered, notes))
                print(f"written: {args.json}")

            if args.profile is not None:
                print(f"profiling the edgeproxy nodes with py-spy into {args.profile} ...")
                for system in systems:
                    if system.stats_url is not None:
                        profile(system, args.profile, args.duration, args.connections)
            return 0
        except KeyboardInterrupt:
            print("\ninterrupted; stopping everything", file=sys.stderr)
            return 130
        except Exception as exc:
            for managed in started:
                print(f"--- {managed.name} log ---\n{managed.log_tail()}", file=sys.stderr)
            print(f"hit_bench: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            for managed in reversed(started):
                managed.stop()
            if origin is not None:
                origin.stop()


if __name__ == "__main__":
    sys.exit(main())
