#!/usr/bin/env python3
"""The reference deployment's scenario, reproduced on loopback, and the memory soak.

What runs (127.0.0.1 only; everything started here is stopped by PID, also on Ctrl-C):

* SeaweedFS (``weed mini``, SigV4 enforced, a public-read bucket policy for nginx and the
  "no cache" clients, which cannot sign) holding the generated catalog of
  :func:`common.catalog` (audio 3-8 MB in the reference's four formats, album art 5-600 KB,
  JSON 1-3 KB and ~50 KB listings). When run by ``run.py`` the origin is run.py's.
* A delaying relay (:class:`common.DelayRelay`, in a thread of this process) in front of it:
  every chunk, each direction, waits ``--origin-delay-ms / 2`` (90 ms), so one origin fetch
  costs ~180 ms as the reference deployment's "before" (this kernel has no netem; the
  approach of ``tier_latency_bench.py``). Every system below reaches the origin only through
  it, and it counts the requests and bytes it carried (the origin load).
* The systems, measured in turn (rounds interleaved, A B C A B C):
  - ``no cache``: the clients straight at the relay (the reference's "before");
  - ``nginx (1 tier)``: nginx ``proxy_cache`` (1 worker, the same TTLs, cache lock on) whose
    cache gets the edge's disk budget, in front of the relay;
  - ``edgeproxy (3 tiers)``: edge-1 -> regional-1 -> shield-1 -> relay -> SeaweedFS, one
    process each (one worker), only the shield signing with the S3 credentials. Disk budgets
    are shares of the catalog's bytes (edge 20 %, regional 60 %, shield 150 %: the edge holds
    the hot part, as the reference's edges hold the top plays); RAM layers at role defaults;
    the policies of ``conf/`` (audio as 1 MiB slices at the edge and the regional, whole
    tracks at the shield: :data:`SLICE_THRESHOLD`).
* Load: ``wrk`` with ``zipf_mix.lua`` (``ZIPF_MIX_COUNT=1``: which cache answered, statuses),
  ``-c CONNECTIONS`` connections, each waiting an exponential think time (mean
  ``--think-ms``) between requests: a steady request rate well below saturation, since the
  reference's figures are response times, not peak throughput.
* Steady state first, per system (not measured): every object of the catalog fetched once
  through it (:func:`preload`: the reference's deployment has served its catalog many times
  over, and preloads predicted-hot tracks; a minute of a 1,300-object catalog from empty
  caches would measure compulsory misses, a full origin round trip each), then ``--warm``
  seconds of the workload (caches settle on what it asks for). ``--no-preload`` skips the
  pass and measures the cold start instead. Then ``--rounds`` x ``--duration`` seconds
  measured, each round with its own request sequence (a seed other than the warm-up's).

Reported per system: requests, mean and p99 latency at the edge (wrk's histogram), the share
answered by each tier (the first ``Cache-Status`` member saying ``hit``; nginx:
``X-Cache-Status: HIT``), the edge's hit ratio, the origin load (origin requests / client
requests, and origin bytes / client bytes) and the non-2xx answers, next to the reference's
"before" (180 ms mean, 850 ms p99, 75 % hits, 100 % origin load) and "after" (12 ms, 45 ms,
99.95 %, 2 %). The tier links themselves are not delayed here (loopback), so edge latency
excludes the viewer's network round trip; ``tier_latency_bench.py`` measures per-link delays.

The soak (``--soak SECONDS``): afterwards, the same topology under the Zipf workload at full
speed (no think time) for SECONDS; RSS and open file descriptors of every node process
sampled every ``--sample`` seconds; table of start / middle / max / end per process, and
growth flagged (see :func:`growth_flags`).

Standalone: ``python benchmarks/reference_scenario.py [--quick] [--soak 60] [--json FILE]
[--output FILE]``; ``run.py`` calls :func:`run_reference` and :func:`run_soak` itself.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import MiB

LUA = common.BENCH_DIR / "zipf_mix.lua"
BUCKET = "bench"
NO_CACHE = "no cache (origin direct)"
NGINX = "nginx (1 tier)"
EDGEPROXY = "edgeproxy (3 tiers)"
SYSTEMS = (NO_CACHE, NGINX, EDGEPROXY)
#: the reference deployment's before/after (REFERENCE.md)
REFERENCE_BEFORE = {"mean_ms": 180.0, "p99_ms": 850.0, "hit": 0.75, "origin_load": 1.0}
REFERENCE_AFTER = {"mean_ms": 12.0, "p99_ms": 45.0, "hit": 0.9995, "origin_load": 0.02}
#: store budgets of the tiers, as shares of the catalog's bytes
SHARES = {"edge": 0.20, "regional": 0.60, "shield": 1.50}
#: audio over this size is cached as 1 MiB slices: the edge and the regional keep the parts of
#: tracks that are played (a 512 KiB range costs a 1 MiB fetch, not the whole track); the
#: shield fetches whole tracks (one origin request per track, the slices' ranges are
#: answered from it)
SLICE_THRESHOLD = {"edge": "1MiB", "regional": "1MiB", "shield": "8MiB"}


@dataclass
class Options:
    origin_delay_ms: float = 180.0  # per origin fetch (two one-way delays)
    connections: int = 16
    think_ms: float = 20.0
    warm: float = 20.0
    duration: float = 30.0
    rounds: int = 1
    soak: float = 0.0
    sample: float = 5.0
    systems: tuple[str, ...] = SYSTEMS
    preload: bool = True


@dataclass
class Topology:
    relay: common.RelayThread
    nodes: dict[str, common.Node] = field(default_factory=dict)  # tier -> node
    nginx: common.Managed | None = None
    nginx_url: str = ""

    def stop(self) -> None:
        for tier in ("edge", "regional", "shield"):
            node = self.nodes.get(tier)
            if node is not None:
                node.managed.stop()
        if self.nginx is not None:
            self.nginx.stop()
        self.relay.stop()


def _size(value: float) -> str:
    return f"{max(64, int(value / MiB))}MiB"


def start_topology(
    workdir: Path,
    origin_port: int,
    access: str,
    secret: str,
    catalog_bytes: int,
    delay_ms: float,
) -> Topology:
    """The relay, the three edgeproxy tiers and nginx (see the module docstring)."""
    relay = common.RelayThread(origin_port, delay_ms / 2).start()
    topo = Topology(relay)
    try:
        parent_url = ""
        for tier in ("shield", "regional", "edge"):
            port, admin = common.free_ports(2)
            store = workdir / f"{tier}-1"
            kwargs: dict[str, Any] = {"role": tier}
            if tier == "shield":
                kwargs["s3_endpoint"] = f"http://127.0.0.1:{relay.port}"
                kwargs["bucket"] = BUCKET
            else:
                kwargs["parents"] = [parent_url]
            text = common.edge_toml(
                f"{tier}-1",
                port,
                admin,
                store / "store",
                max_size=_size(catalog_bytes * SHARES[tier]),
                policies=common.reference_policies(slice_threshold=SLICE_THRESHOLD[tier]),
                **kwargs,
            )
            env = {common.ACCESS_ENV: access, common.SECRET_ENV: secret} if tier == "shield" else {}
            topo.nodes[tier] = common.start_edgeproxy(
                f"{tier}-1", store, text, port, admin, env=env
            )
            parent_url = topo.nodes[tier].url
        port = common.free_port()
        conf = common.NginxCache(
            workdir / "nginx",
            port,
            relay.port,
            origin_prefix=f"/{BUCKET}",
            max_cache=_size(catalog_bytes * SHARES["edge"]).replace("MiB", "m"),
            run_as_root=os.geteuid() == 0,
        )
        topo.nginx = common.start_nginx(NGINX, conf)
        topo.nginx_url = f"http://127.0.0.1:{port}"
    except BaseException:
        topo.stop()
        raise
    return topo


def _wrk(
    url: str, seconds: float, opts: Options, catalog_file: Path, prefix: str, seed: int = 11
) -> common.WrkResult:
    """The Zipf mix with counting and think time (the environment is wrk's, see the Lua);
    ``seed`` picks the request sequence (warm-up and each measured round use their own)."""
    os.environ["ZIPF_MIX_COUNT"] = "1"
    os.environ["ZIPF_MIX_THINK_MS"] = f"{opts.think_ms:g}"
    try:
        return common.run_wrk(
            url,
            seconds,
            opts.connections,
            cpu=None,
            script=LUA,
            script_args=[f"catalog={catalog_file}", f"prefix={prefix}", f"seed={seed}"],
            timeout_s=30,
        )
    finally:
        os.environ.pop("ZIPF_MIX_COUNT", None)
        os.environ.pop("ZIPF_MIX_THINK_MS", None)


def preload(url: str, catalog_file: Path, *, parallel: int = 16) -> int:
    """GET every object of the catalog once through ``url`` (``parallel`` at a time, bodies
    read; tracks as aligned 1 MiB ranges): the state of a deployment that has served its whole
    catalog before, as the reference's long-running one has (and it preloads predicted-hot
    tracks). Without it a minute-long run of a 1,300-object catalog measures first requests
    (compulsory misses, a full origin round trip each) rather than the steady state. Returns
    the failures."""
    from concurrent.futures import ThreadPoolExecutor

    # the request headers zipf_mix.lua sends per kind (they are part of the cache keys);
    # audio as players ask for it: Range requests (so slices are made where the policy
    # slices), here one per aligned MiB (one slice each)
    headers = {
        "image": {"Accept": "image/avif,image/webp,image/*,*/*;q=0.8"},
        "json": {"Accept-Encoding": "gzip"},
    }
    requests: list[tuple[str, dict[str, str] | None, int]] = []
    for line in catalog_file.read_text().splitlines():
        kind, path, size = line.split("\t")
        if kind == "audio":
            for first in range(0, int(size), MiB):
                last = min(int(size), first + MiB) - 1
                requests.append((path, {"Range": f"bytes={first}-{last}"}, 206))
        else:
            requests.append((path, headers.get(kind), 200))

    def get(request: tuple[str, dict[str, str] | None, int]) -> bool:
        path, fields, want = request
        status, _, _ = common.http_get(url + path, fields, timeout=60)
        return status == want

    with ThreadPoolExecutor(parallel) as pool:
        return sum(1 for ok in pool.map(get, requests) if not ok)


def _edge_results(topo: Topology) -> dict[str, int]:
    with contextlib.suppress(OSError, ValueError):
        return {k: int(v) for k, v in topo.nodes["edge"].stats().get("results", {}).items()}
    return {}


def run_reference(
    topo: Topology, catalog_file: Path, opts: Options, log: Any = print
) -> dict[str, Any]:
    """Warm each system with the workload, then measure it; returns per system the figures
    of the module docstring (JSON-ready)."""
    targets = {
        NO_CACHE: (f"http://127.0.0.1:{topo.relay.port}", f"/{BUCKET}"),
        NGINX: (topo.nginx_url, ""),
        EDGEPROXY: (topo.nodes["edge"].url, ""),
    }
    for name in (n for n in (NGINX, EDGEPROXY) if n in opts.systems):
        url, prefix = targets[name]
        if opts.preload:
            log(f"  reference: {name}: every object once (preload) ...")
            failed = preload(url, catalog_file)
            if failed:
                log(f"  reference: {name}: {failed} preload GETs failed")
        if opts.warm > 0:
            log(f"  reference: warming {name} with the workload for {opts.warm:g} s ...")
            _wrk(url, opts.warm, opts, catalog_file, prefix)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in opts.systems}
    for rnd in range(opts.rounds):
        order = opts.systems if rnd % 2 == 0 else tuple(reversed(opts.systems))
        for name in order:
            url, prefix = targets[name]
            relay_before = topo.relay.stats()
            edge_before = _edge_results(topo) if name == EDGEPROXY else {}
            result = _wrk(url, opts.duration, opts, catalog_file, prefix, seed=101 + rnd)
            relay_after = topo.relay.stats()
            origin_requests = relay_after["requests"] - relay_before["requests"]
            origin_bytes = relay_after["bytes"] - relay_before["bytes"]
            script = result.script
            answered = script.get("answered", {})
            summary = script.get("summary", {})
            client_bytes = float(summary.get("bytes", 0))
            run: dict[str, Any] = {
                "round": rnd + 1,
                "wrk": result.to_json(),
                "requests": result.requests,
                "mean_ms": result.mean_ms,
                "p99_ms": result.p99_ms,
                "origin_requests": origin_requests,
                "origin_bytes": origin_bytes,
                "origin_load": origin_requests / result.requests if result.requests else None,
                "origin_bytes_share": origin_bytes / client_bytes if client_bytes else None,
                "answered": answered,
                "status": script.get("status", {}),
                "errors": result.errors,
            }
            if name == EDGEPROXY:
                after = _edge_results(topo)
                delta = {k: v - edge_before.get(k, 0) for k, v in after.items()}
                total = sum(delta.values())
                run["edge_results"] = {k: v for k, v in delta.items() if v}
                run["edge_hit_ratio"] = delta.get("hit", 0) / total if total else None
            elif name == NGINX:
                total = sum(answered.values())
                run["edge_hit_ratio"] = answered.get("hit", 0) / total if total else None
            else:
                run["edge_hit_ratio"] = 0.0
            runs[name].append(run)
            log(
                f"  reference round {rnd + 1} {name:26} {result.requests:>7,} req  mean "
                f"{result.mean_ms:7.2f} ms  p99 {result.p99_ms:8.2f} ms  origin load "
                f"{100 * (run['origin_load'] or 0):5.2f} %  errors {result.errors}"
            )
    return {"options": opts.__dict__, "runs": runs, "summary": summarize(runs)}


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per system: medians over the rounds of mean/p99 latency and the ratios; answered-by
    shares over all rounds."""
    out: dict[str, dict[str, Any]] = {}
    for name, rs in runs.items():
        if not rs:
            continue
        answered: dict[str, int] = {}
        for r in rs:
            for k, v in r["answered"].items():
                answered[k] = answered.get(k, 0) + int(v)
        total = sum(answered.values())
        out[name] = {
            "requests": sum(r["requests"] for r in rs),
            "mean_ms": common.median(r["mean_ms"] for r in rs),
            "p99_ms": common.median(r["p99_ms"] for r in rs),
            "mean_ms_range": [min(r["mean_ms"] for r in rs), max(r["mean_ms"] for r in rs)],
            "edge_hit_ratio": common.median(
                r["edge_hit_ratio"] for r in rs if r["edge_hit_ratio"] is not None
            ),
            "origin_load": common.median(
                r["origin_load"] for r in rs if r["origin_load"] is not None
            ),
            "origin_bytes_share": common.median(
                r["origin_bytes_share"] for r in rs if r["origin_bytes_share"] is not None
            ),
            "answered_share": {k: v / total for k, v in answered.items() if v} if total else {},
            "errors": sum(r["errors"] for r in rs),
        }
    return out


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{100 * value:.{digits}f} %"


def reference_table(summary: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["system", "requests", "mean ms", "p99 ms", "edge hit ratio", "origin load"]
    header += ["origin bytes", "answered by", "errors"]
    rows = [
        ["reference: before", "-", "180", "850", "75 %", "100 %", "-", "-", "-"],
        ["reference: after", "-", "12", "45", "99.95 %", "2 %", "-", "-", "-"],
    ]
    for name in SYSTEMS:
        s = summary.get(name)
        if s is None:
            continue
        shares = ", ".join(
            f"{k} {100 * v:.1f}%"
            for k, v in sorted(s["answered_share"].items(), key=lambda kv: -kv[1])
        )
        rows.append(
            [
                name,
                f"{s['requests']:,}",
                f"{s['mean_ms']:.2f}",
                f"{s['p99_ms']:.1f}",
                _pct(s["edge_hit_ratio"]),
                _pct(s["origin_load"]),
                _pct(s["origin_bytes_share"]),
                shares or "-",
                str(s["errors"]),
            ]
        )
    return header, rows


# ---------------------------------------------------------------------------------------------
# Soak
# ---------------------------------------------------------------------------------------------


def growth_flags(rss: list[int], fds: list[int]) -> list[str]:
    """Growth that a bounded process should not show, from samples in time order: RSS in the
    second half rising by more than 5 % + 8 MiB from the middle sample to the last (the first
    half is allowed to grow: caches and the RAM layer fill), or open fds ending more than 16
    above the middle sample. Pure."""
    flags: list[str] = []
    if len(rss) >= 3:
        mid, end = rss[len(rss) // 2], rss[-1]
        if end > mid * 1.05 + 8 * MiB:
            flags.append(f"RSS +{(end - mid) / MiB:.0f} MiB in the second half")
    if len(fds) >= 3:
        mid_fd, end_fd = fds[len(fds) // 2], fds[-1]
        if end_fd > mid_fd + 16:
            flags.append(f"fds +{end_fd - mid_fd} in the second half")
    return flags


def run_soak(topo: Topology, catalog_file: Path, opts: Options, log: Any = print) -> dict[str, Any]:
    """The Zipf workload at full speed against the edge for ``opts.soak`` seconds while
    sampling every node process (see the module docstring)."""
    import subprocess

    procs: dict[str, int] = {}
    for tier in ("edge", "regional", "shield"):
        node = topo.nodes[tier]
        for i, pid in enumerate(node.managed.pids()):
            procs[f"{node.name}" + (f" (pid {pid})" if i else "")] = pid
    samples: dict[str, list[tuple[float, int, int]]] = {name: [] for name in procs}
    args = common.wrk_command(
        topo.nodes["edge"].url,
        opts.soak,
        32,
        cpu=None,
        script=LUA,
        script_args=[f"catalog={catalog_file}", "seed=23"],
        timeout_s=30,
    )
    log(
        f"  soak: {opts.soak:g} s of the Zipf workload at full speed, "
        f"sampling every {opts.sample:g} s"
    )
    started = time.monotonic()
    process = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "ZIPF_MIX_COUNT": "0"},
    )
    try:
        while process.poll() is None:
            now = time.monotonic() - started
            for name, pid in procs.items():
                rss, fds = common.rss_bytes(pid), common.open_fds(pid)
                if rss is not None and fds is not None:
                    samples[name].append((now, rss, fds))
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(opts.sample)
        output = process.stdout.read() if process.stdout else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    for name, pid in procs.items():  # one more sample at the end
        rss, fds = common.rss_bytes(pid), common.open_fds(pid)
        if rss is not None and fds is not None:
            samples[name].append((time.monotonic() - started, rss, fds))
    result = None
    with contextlib.suppress(ValueError):
        result = common.parse_wrk(output)
    table: dict[str, dict[str, Any]] = {}
    for name, s in samples.items():
        if not s:
            table[name] = {"gone": True}
            continue
        rss = [x[1] for x in s]
        fds = [x[2] for x in s]
        table[name] = {
            "samples": len(s),
            "rss": {"start": rss[0], "mid": rss[len(rss) // 2], "max": max(rss), "end": rss[-1]},
            "fds": {"start": fds[0], "mid": fds[len(fds) // 2], "max": max(fds), "end": fds[-1]},
            "flags": growth_flags(rss, fds),
            "alive_at_end": common.rss_bytes(procs[name]) is not None,
        }
    store = {}
    for tier, node in topo.nodes.items():
        with contextlib.suppress(OSError, ValueError):
            store[tier] = node.stats().get("store", {})
    return {
        "seconds": opts.soak,
        "wrk": result.to_json() if result else {"raw": output[-2000:]},
        "processes": table,
        "store": store,
    }


def soak_table(soak: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["process", "RSS start MiB", "mid", "max", "end", "fds start", "mid", "max", "end"]
    header.append("growth")
    rows = []
    for name, p in soak["processes"].items():
        if p.get("gone"):
            rows.append([name, *["-"] * 8, "EXITED (no samples)"])
            continue
        r, f = p["rss"], p["fds"]
        flags = list(p["flags"])
        if not p.get("alive_at_end", True):
            flags.append("EXITED")
        rows.append(
            [
                name,
                *(f"{r[k] / MiB:.0f}" for k in ("start", "mid", "max", "end")),
                *(str(f[k]) for k in ("start", "mid", "max", "end")),
                "; ".join(flags) or "none",
            ]
        )
    return header, rows


# ---------------------------------------------------------------------------------------------
# Standalone
# ---------------------------------------------------------------------------------------------


def reference_markdown(result: dict[str, Any]) -> list[str]:
    """The reference scenario's markdown section."""
    opts = result["options"]
    header, rows = reference_table(result["summary"])
    out = [
        "## The reference deployment's scenario",
        "",
        f"Origin fetch ~{opts['origin_delay_ms']:g} ms (a delaying relay in front of SeaweedFS, "
        f"{opts['origin_delay_ms'] / 2:g} ms each direction); Zipf mix (`zipf_mix.lua`) with "
        f"{opts['connections']} connections and {opts['think_ms']:g} ms mean think time, "
        + (
            "every object fetched once through each cache first (steady state, not cold "
            "start: see `reference_scenario.py`), then "
            if opts.get("preload", True)
            else "caches empty at the start (cold start), "
        )
        + f"{opts['warm']:g} s of warm-up per system, then {opts['rounds']} x "
        f"{opts['duration']:g} s measured, each round with its own request sequence. Tier "
        "links on loopback (not delayed). Audio is cached as 1 MiB slices at the edge and "
        "the regional.",
        "",
        common.render_markdown(header, rows, left=1),
        "",
        "`origin load` = origin requests / client requests in the measured window (the relay "
        "counts them); `origin bytes` = origin bytes / client bytes; `edge hit ratio`: "
        "edgeproxy's edge /stats (hit / all results), nginx's `X-Cache-Status`; "
        "`answered by`: the first `Cache-Status` member with `hit` (edge, regional, shield), "
        "`hit` = nginx from its cache, `miss` = the origin answered.",
    ]
    return out


def soak_markdown(soak: dict[str, Any]) -> list[str]:
    """The soak's markdown section."""
    header, rows = soak_table(soak)
    wrk = soak.get("wrk", {})
    return [
        f"## Memory and soak ({soak['seconds']:g} s)",
        "",
        f"The 3-tier topology under the Zipf mix at full speed (32 connections, no think "
        f"time): {wrk.get('requests', 0):,} requests, {wrk.get('rps', 0):,.0f} req/s, "
        f"{wrk.get('socket_errors', 0)} socket errors (connections cut), "
        f"{wrk.get('non_2xx', 0)} non-2xx answers.",
        "",
        common.render_markdown(header, rows, left=1),
        "",
        "RSS and open file descriptors per node process, sampled during the run. Growth "
        "is flagged when, in the second half, RSS rises by more than 5 % + 8 MiB or the "
        "fds by more than 16 (the first half may grow: caches fill).",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="small catalog, 10 s warm, 15 s runs")
    p.add_argument("--origin-delay-ms", type=float, default=180.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--think-ms", type=float, default=20.0)
    p.add_argument("--warm", type=float, default=None)
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--soak", type=float, default=0.0, help="soak seconds after (0: none)")
    p.add_argument("--sample", type=float, default=5.0)
    p.add_argument(
        "--systems",
        default="all",
        help="comma-separated subset of: nocache, nginx, edgeproxy (default: all)",
    )
    p.add_argument(
        "--no-preload",
        dest="preload",
        action="store_false",
        help="start from empty caches (only the workload warm-up): measures the cold start",
    )
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.add_argument("--output", type=Path, help="markdown (default: results/reference-DATE.md)")
    a = p.parse_args(argv)
    short = {"nocache": NO_CACHE, "nginx": NGINX, "edgeproxy": EDGEPROXY}
    picked = set(short) if a.systems == "all" else set(a.systems.split(","))
    if not picked <= set(short):
        p.error(f"--systems: unknown {', '.join(sorted(picked - set(short)))}")
    systems = tuple(name for key, name in short.items() if key in picked)
    opts = Options(
        origin_delay_ms=a.origin_delay_ms,
        connections=a.connections,
        think_ms=a.think_ms,
        warm=a.warm if a.warm is not None else (10.0 if a.quick else 30.0),
        duration=a.duration if a.duration is not None else (15.0 if a.quick else 30.0),
        rounds=a.rounds if a.rounds is not None else (1 if a.quick else 2),
        soak=a.soak,
        sample=a.sample,
        systems=systems,
        preload=a.preload,
    )
    missing = common.ensure_tools(["nginx", "wrk"])
    if missing:
        return 1
    objects = common.catalog(12, 24, 300, 4) if a.quick else common.catalog(40, 80, 1000, 10)
    objects = [o for o in objects if o.kind != "bench"]
    root = Path(tempfile.mkdtemp(prefix="edgeproxy-reference-"))
    origin = topo = None
    try:
        with common.signals_raise_interrupt():
            access, secret = "edgeproxy-bench", secrets.token_hex(16)
            print(f"starting SeaweedFS with {len(objects)} objects ...", flush=True)
            origin = common.start_seaweed(root / "seaweed", BUCKET, objects, access, secret)
            catalog_file = root / "catalog.tsv"
            common.write_catalog_file(catalog_file, objects)
            origin_port = int(origin.endpoint.rsplit(":", 1)[1])
            total = sum(o.size for o in objects)
            topo = start_topology(root, origin_port, access, secret, total, opts.origin_delay_ms)
            result = run_reference(topo, catalog_file, opts)
            soak = run_soak(topo, catalog_file, opts) if opts.soak > 0 else None
    except KeyboardInterrupt:
        print("interrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        if topo is not None:
            topo.stop()
        if origin is not None:
            origin.stop()
        shutil.rmtree(root, ignore_errors=True)
    text = [f"# The reference scenario ({dt.date.today().isoformat()})", ""]
    text += reference_markdown(result)
    if soak:
        text += ["", *soak_markdown(soak)]
    out = a.output or common.RESULTS_DIR / f"reference-{dt.date.today().isoformat()}.md"
    out.write_text("\n".join(text) + "\n")
    print("\n".join(text))
    if a.json:
        common.write_json(a.json, {"reference": result, "soak": soak})
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
