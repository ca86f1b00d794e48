#!/usr/bin/env python3
"""Replay a request trace through edgeproxy's eviction policy, LRU and reference policies.

Usage (from the repository root)::

    python benchmarks/trace_replay.py TRACE.csv[.gz] --sizes 0.001,0.01,0.1
    python benchmarks/trace_replay.py --synthetic music --sizes 0.001,0.01,0.1
    python benchmarks/trace_replay.py --synthetic all --save        # every synthetic trace
    python benchmarks/trace_replay.py /work/shared/traces/bu_web.csv.gz --save
    python benchmarks/trace_replay.py --synthetic scan --dump-trace /tmp/scan.csv.gz

Trace format: CSV ``timestamp,key,size_bytes``, header line first, one request a line
(``.gz`` read transparently). An object is ``(key, size)``: a key seen with a new size counts as
a new object (so it misses).

Cache sizes (``--sizes``) are shares of the trace's footprint: the sum of the sizes of its
distinct objects. Every cache starts empty.

Simulation semantics, identical for every policy (and the way the store drives a policy):

* ``now`` is the request's timestamp;
* the cache holds a key -> size map of what the policy was told is stored;
* a request for a stored key is a **hit**: ``policy.touch(key, now)``;
* otherwise a **miss**: ``policy.record_miss(key, size, now)``; then, if
  ``policy.admit(size, budget)``, ``policy.insert(key, size, now)`` and, while the stored bytes
  exceed the budget, every key ``policy.victims(over, now)`` names is removed from the map and
  reported with ``policy.remove(key)``. A policy that names a key not stored, or does not free
  enough bytes, aborts the run;
* object hit ratio = hits / requests; byte hit ratio = bytes of hits / bytes requested.

edgeproxy's policy is imported from ``edgeproxy.cache.eviction`` (the real code, not a copy):
``edgeproxy`` is ``PopularityPolicy.for_disk`` and ``edgeproxy-ram`` is
``PopularityPolicy.for_ram``. ``LRU`` is ``edgeproxy.cache.eviction.LruPolicy``. The reference
policies (S3-FIFO, W-TinyLFU, GDSF, ARC) are in ``benchmarks/policies_ref.py``. Every policy is
given the same object size limit, ``--max-object-share`` of the cache (default 1.0: anything
that fits is admitted, as in the trace README's LRU figures, which this LRU reproduces).

Synthetic traces (``--synthetic NAME``, deterministic for a ``--seed``; ``--requests N``):

* ``music``: a music service. Three catalogs with Zipf popularity (alpha 0.9/0.8/0.9): JSON
  API answers 1-10 KB (100k objects, 55 % of the requests), cover images 50-600 KB (50k, 30 %),
  audio files 3-8 MB (20k, 15 %); every 5,000 requests 20 new objects per catalog appear among
  the 200 most popular (new releases), pushing the least popular out.
* ``scan``: a Zipf(0.8) working set of 50k objects (log-normal sizes, median 16 KB, capped at
  2 MB) interrupted every 12,000 requests by a scan of 8,000 requests, 90 % of them for objects
  requested once and never again (crawlers, backups).
* ``shift``: a Zipf(1.0) working set of 30k objects (log-normal sizes, median 8 KB, capped at
  4 MB) of which half is replaced by new objects every 40,000 requests (popularity moves on).

``--ablation`` adds rows for edgeproxy's policy with parts switched off: a fixed 10 %
probation (no ARC-style adaptation), no size credit (every hit earns one hit), and neither
(what is left is S3-FIFO with the frequency sketch in place of its ghost queue).

``--live`` replays the trace (its first ``--limit`` requests) through a live node over HTTP
on 127.0.0.1 instead: one node (``edgeproxy.app.RunningNode``, single process) in front of an
in-process aiohttp origin that answers ``/t/<object>/<size>`` with ``size`` bytes, the node's
store ``max_size`` set to the first ``--sizes`` share of those requests' footprint and
``max_object_share`` 1 (as in the simulator). It counts the node's hits from its
``Cache-Status`` field (RFC 9211: ``<node>; hit``) and prints them next to the simulator's for
the same requests. The accounting is the same: the store's ``max_size`` counts body bytes, as the
simulator does; metadata files (about 1 KiB an entry) are not counted in either.

``--max-object-bytes N`` keeps only the requests for objects up to N bytes: the RAM layer's
view (``store.ram_object_max``), to replay it at its share of the footprint (an edge's RAM is a
quarter of its disk by default: 256 MiB and 1 GiB).

``--save`` writes the tables as markdown to ``benchmarks/results/trace-<name>-<date>.md``;
``--output PATH`` to PATH instead.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import gzip
import itertools
import math
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))

import policies_ref  # noqa: E402

from edgeproxy.cache.eviction import LruPolicy, PopularityPolicy  # noqa: E402

Request = tuple[float, str, int]


class Policy(Protocol):
    evictions: int
    admissions_refused: int

    def admit(self, size: int, budget: int) -> bool: ...
    def record_miss(self, key: str, size: int, now: float) -> None: ...
    def insert(self, key: str, size: int, now: float) -> None: ...
    def touch(self, key: str, now: float) -> None: ...
    def remove(self, key: str) -> None: ...
    def victims(self, bytes_over: int, now: float) -> Iterator[str]: ...


# ---- traces --------------------------------------------------------------------------------


def load_trace(path: str) -> list[Request]:
    """Read ``timestamp,key,size_bytes`` (header first); the object id is ``key/size``."""
    opener = gzip.open if path.endswith(".gz") else open
    interned: dict[tuple[str, int], str] = {}
    out: list[Request] = []
    with opener(path, "rt", encoding="utf-8") as f:
        header = f.readline()
        if "size" not in header:
            raise SystemExit(f"{path}: first line must be the header timestamp,key,size_bytes")
        for lineno, line in enumerate(f, 2):
            parts = line.rstrip("\n").split(",")
            if len(parts) != 3:
                if not line.strip():
                    continue
                raise SystemExit(f"{path}:{lineno}: expected 3 fields, got {line!r}")
            ts, key, size_s = parts
            size = int(size_s)
            obj = interned.get((key, size))
            if obj is None:
                obj = interned[(key, size)] = f"{key}/{size}"
            out.append((float(ts), obj, size))
    return out


def write_trace(path: str, reqs: Iterable[Request]) -> None:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write("timestamp,key,size_bytes\n")
        for ts, key, size in reqs:
            f.write(f"{ts:.3f},{key},{size}\n")


def _zipf_cum(n: int, alpha: float) -> list[float]:
    return list(itertools.accumulate(1.0 / r**alpha for r in range(1, n + 1)))


def _pick(rng: random.Random, cum: list[float]) -> int:
    return bisect.bisect_left(cum, rng.random() * cum[-1])


def _lognormal(rng: random.Random, median: int, sigma: float, cap: int) -> int:
    return max(64, min(cap, int(rng.lognormvariate(math.log(median), sigma))))


def synth_music(n: int, seed: int) -> list[Request]:
    """See the module docstring: JSON / images / audio catalogs, Zipf, new releases."""
    rng = random.Random(seed)
    catalogs = [  # name, objects, min size, max size, share of requests, zipf alpha
        ("json", 100_000, 1_000, 10_000, 0.55, 0.9),
        ("img", 50_000, 50_000, 600_000, 0.30, 0.8),
        ("audio", 20_000, 3_000_000, 8_000_000, 0.15, 0.9),
    ]
    serial = itertools.count()
    sizes: dict[str, int] = {}
    ranked: dict[str, list[str]] = {}
    cums: dict[str, list[float]] = {}
    for name, count, lo, hi, _, alpha in catalogs:
        ids = [f"{name}{next(serial)}" for _ in range(count)]
        for key in ids:
            sizes[key] = rng.randint(lo, hi)
        ranked[name] = ids
        cums[name] = _zipf_cum(count, alpha)
    kinds = rng.choices([c[0] for c in catalogs], weights=[c[4] for c in catalogs], k=n)
    out: list[Request] = []
    for i, kind in enumerate(kinds):
        if i and i % 5_000 == 0:  # new releases
            for name, _, lo, hi, _, _ in catalogs:
                order = ranked[name]
                for _ in range(20):
                    key = f"{name}{next(serial)}"
                    sizes[key] = rng.randint(lo, hi)
                    order.insert(rng.randrange(200), key)
                    order.pop()
        key = ranked[kind][_pick(rng, cums[kind])]
        out.append((i * 0.01, key, sizes[key]))
    return out


def synth_scan(n: int, seed: int) -> list[Request]:
    """See the module docstring: a Zipf working set interrupted by scans of one-time objects."""
    rng = random.Random(seed)
    count = 50_000
    ids = [f"h{i}" for i in range(count)]
    rng.shuffle(ids)
    sizes = {key: _lognormal(rng, 16_000, 1.0, 2_000_000) for key in ids}
    cum = _zipf_cum(count, 0.8)
    serial = itertools.count()
    out: list[Request] = []
    while len(out) < n:
        for _ in range(12_000):
            key = ids[_pick(rng, cum)]
            out.append((len(out) * 0.01, key, sizes[key]))
        for _ in range(8_000):
            if rng.random() < 0.1:
                key = ids[_pick(rng, cum)]
                size = sizes[key]
            else:
                key = f"s{next(serial)}"
                size = _lognormal(rng, 16_000, 1.0, 2_000_000)
            out.append((len(out) * 0.01, key, size))
    return out[:n]


def synth_shift(n: int, seed: int) -> list[Request]:
    """See the module docstring: half the working set is replaced every 40,000 requests."""
    rng = random.Random(seed)
    count = 30_000
    pool = (f"o{i}" for i in itertools.count())
    sizes: dict[str, int] = {}

    def fresh() -> str:
        key = next(pool)
        sizes[key] = _lognormal(rng, 8_000, 1.3, 4_000_000)
        return key

    hot = [fresh() for _ in range(count)]
    cum = _zipf_cum(count, 1.0)
    out: list[Request] = []
    for i in range(n):
        if i and i % 40_000 == 0:
            keep = hot[: count // 2]
            rng.shuffle(keep)
            new = [fresh() for _ in range(count - count // 2)]
            hot = [key for pair in zip(new, keep, strict=True) for key in pair]
        key = hot[_pick(rng, cum)]
        out.append((i * 0.01, key, sizes[key]))
    return out


SYNTHETIC: dict[str, Callable[[int, int], list[Request]]] = {
    "music": synth_music,
    "scan": synth_scan,
    "shift": synth_shift,
}


# ---- replay --------------------------------------------------------------------------------


def footprint(reqs: list[Request]) -> int:
    return sum({key: size for _, key, size in reqs}.values())


def infinite(reqs: list[Request]) -> tuple[float, float]:
    seen: set[str] = set()
    hits = hit_bytes = total_bytes = 0
    for _, key, size in reqs:
        total_bytes += size
        if key in seen:
            hits += 1
            hit_bytes += size
        else:
            seen.add(key)
    return hits / len(reqs), hit_bytes / max(total_bytes, 1)


def replay(reqs: list[Request], policy: Policy, budget: int) -> tuple[float, float]:
    """Run the trace through ``policy`` (module docstring); returns (OHR, BHR)."""
    stored: dict[str, int] = {}
    used = hits = hit_bytes = total_bytes = 0
    touch, record_miss, admit = policy.touch, policy.record_miss, policy.admit
    insert, victims, remove = policy.insert, policy.victims, policy.remove
    for now, key, size in reqs:
        total_bytes += size
        if key in stored:
            touch(key, now)
            hits += 1
            hit_bytes += size
            continue
        record_miss(key, size, now)
        if not admit(size, budget):
            continue
        insert(key, size, now)
        stored[key] = size
        used += size
        if used > budget:
            for victim in list(victims(used - budget, now)):
                if victim not in stored:
                    raise RuntimeError(f"{type(policy).__name__} named {victim!r}, not stored")
                remove(victim)
                used -= stored.pop(victim)
            if used > budget:
                raise RuntimeError(f"{type(policy).__name__} left {used} > {budget} bytes")
    return hits / len(reqs), hit_bytes / max(total_bytes, 1)


def make_policies(share: float) -> dict[str, Callable[[int], Policy]]:
    return {
        "edgeproxy": lambda b: PopularityPolicy.for_disk(b, max_object_share=share),
        "edgeproxy-ram": lambda b: PopularityPolicy.for_ram(b, max_object_share=share),
        "LRU": lambda b: LruPolicy(max_object_share=share),
        "S3-FIFO": lambda b: policies_ref.S3FifoRef(b, max_object_share=share),
        "W-TinyLFU": lambda b: policies_ref.WTinyLfuRef(b, max_object_share=share),
        "GDSF": lambda b: policies_ref.GdsfRef(b, max_object_share=share),
        "ARC": lambda b: policies_ref.ArcRef(b, max_object_share=share),
    }


def make_ablations(share: float) -> dict[str, Callable[[int], Policy]]:
    """edgeproxy's policy with parts switched off (``--ablation``), to show what each adds."""
    return {
        "edgeproxy-no-discount": lambda b: PopularityPolicy(
            b, max_object_share=share, delta=0.0, delta_max=0.0
        ),
        "edgeproxy-fixed-discount": lambda b: PopularityPolicy(
            b, max_object_share=share, delta=0.5, delta_max=0.5
        ),
        "edgeproxy-alpha-1": lambda b: PopularityPolicy(b, max_object_share=share, alpha=1.0),
        "edgeproxy-alpha-0.5": lambda b: PopularityPolicy(b, max_object_share=share, alpha=0.5),
        "edgeproxy-alpha-0": lambda b: PopularityPolicy(b, max_object_share=share, alpha=0.0),
    }


def _pct(share: float) -> str:
    return f"{share * 100:g}%"


def run_trace(
    name: str,
    reqs: list[Request],
    sizes: list[float],
    policies: dict[str, Callable[[int], Policy]],
    out: Callable[[str], None],
) -> None:
    fp = footprint(reqs)
    inf_ohr, inf_bhr = infinite(reqs)
    distinct = len({key for _, key, _ in reqs})
    out(f"### {name}\n")
    out(
        f"{len(reqs):,} requests, {distinct:,} objects, footprint {fp / 2**20:,.1f} MiB; "
        f"infinite cache OHR {inf_ohr:.3f}, BHR {inf_bhr:.3f}.\n"
    )
    head = " | ".join(f"OHR {_pct(s)}" for s in sizes) + " | "
    head += " | ".join(f"BHR {_pct(s)}" for s in sizes)
    out(f"| policy | {head} | seconds |")
    out("|---" * (2 * len(sizes) + 2) + "|")
    counters: list[str] = []
    for pname, factory in policies.items():
        started = time.perf_counter()
        ohr: list[float] = []
        bhr: list[float] = []
        for share in sizes:
            budget = max(1, int(fp * share))
            policy = factory(budget)
            o, b = replay(reqs, policy, budget)
            ohr.append(o)
            bhr.append(b)
            if isinstance(policy, PopularityPolicy):
                counters.append(
                    f"| {pname} | {_pct(share)} | {policy.evictions:,} | "
                    f"{policy.admissions_refused:,} | {policy.delta:.3f} | "
                    f"{len(policy):,} | {policy.bytes_stored:,} |"
                )
        cells = " | ".join(f"{v:.3f}" for v in ohr + bhr)
        out(f"| {pname} | {cells} | {time.perf_counter() - started:.1f} |")
    if counters:
        out("")
        out(
            "| policy | size | evictions | admissions refused | newcomer discount at end | "
            "objects stored | bytes stored |"
        )
        out("|---|---|---|---|---|---|---|")
        for line in counters:
            out(line)
    out("")


async def _live(reqs: list[Request], share: float, out: Callable[[str], None]) -> None:
    """Replay ``reqs`` through a live node (module docstring) and print both hit ratios."""
    import tempfile

    import aiohttp
    from aiohttp import web

    from edgeproxy.app import RunningNode
    from edgeproxy.config import parse_config

    fp = footprint(reqs)
    budget = max(1, int(fp * share))
    ids: dict[str, int] = {}
    paths = [f"/t/{ids.setdefault(key, len(ids))}/{size}" for _, key, size in reqs]

    async def answer(request: web.Request) -> web.Response:
        size = int(request.path.rsplit("/", 1)[1])
        return web.Response(
            body=b"x" * size,
            headers={"Cache-Control": "max-age=86400", "Content-Type": "application/octet-stream"},
        )

    app = web.Application()
    app.router.add_get("/t/{obj}/{size}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    origin_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hits = hit_bytes = total_bytes = 0
    with tempfile.TemporaryDirectory(prefix="trace-live-") as tmp:
        data = {
            "node": {
                "name": "live",
                "role": "edge",
                "listen": "127.0.0.1:0",
                "admin_listen": "127.0.0.1:0",
            },
            "store": {
                "path": f"{tmp}/store",
                "max_size": budget,
                "ram_size": "4MiB",
                "ram_object_max": "64KiB",
                "max_object_share": 1.0,
            },
            "upstream": {"parents": [f"http://127.0.0.1:{origin_port}"]},
            "policy": [{"name": "all", "path": "*", "default_ttl": "1d", "max_ttl": "1d"}],
        }
        node = RunningNode(parse_config(data, f"{tmp}/live.toml"))
        await node.start()
        try:
            base = f"http://127.0.0.1:{node.port}"
            async with aiohttp.ClientSession(auto_decompress=False) as session:
                for path, (_, _, size) in zip(paths, reqs, strict=True):
                    async with session.get(base + path) as resp:
                        body = await resp.read()
                        status = resp.headers.get("Cache-Status", "")
                    if resp.status != 200 or len(body) != size:
                        raise RuntimeError(f"{path}: {resp.status}, {len(body)} bytes")
                    total_bytes += size
                    member = [part.strip() for part in status.split(",")[-1].split(";")]
                    if member[0] == "live" and "hit" in member[1:]:
                        hits += 1
                        hit_bytes += size
            store = node.store
            stored, used, evictions = len(store.index), store.used_bytes, store.evictions
        finally:
            await node.stop(1.0)
            await runner.cleanup()
    sim = PopularityPolicy.for_disk(budget, max_object_share=1.0)
    s_ohr, s_bhr = replay(reqs, sim, budget)
    l_ohr, l_bhr = hits / len(reqs), hit_bytes / max(total_bytes, 1)
    out(f"### live node vs simulator: {len(reqs):,} requests, cache {_pct(share)} of their")
    out(f"footprint ({budget:,} bytes)\n")
    out("| replay | OHR | BHR | evictions | objects stored | bytes stored |")
    out("|---|---|---|---|---|---|")
    out(
        f"| live node (Cache-Status) | {l_ohr:.4f} | {l_bhr:.4f} | {evictions:,} | "
        f"{stored:,} | {used:,} |"
    )
    out(
        f"| simulator (same policy) | {s_ohr:.4f} | {s_bhr:.4f} | {sim.evictions:,} | "
        f"{len(sim):,} | {sim.bytes_stored:,} |"
    )
    out(
        f"\ndifference: OHR {abs(l_ohr - s_ohr) * 100:.2f} points, "
        f"BHR {abs(l_bhr - s_bhr) * 100:.2f} points\n"
    )


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trace", nargs="?", help="CSV trace (timestamp,key,size_bytes), .gz ok")
    parser.add_argument(
        "--synthetic",
        metavar="NAME",
        help=f"replay a generated trace instead: {', '.join(SYNTHETIC)} or all",
    )
    parser.add_argument("--sizes", default="0.001,0.01,0.1", help="cache sizes, footprint shares")
    parser.add_argument("--policies", help="comma-separated subset of the policies to run")
    parser.add_argument(
        "--ablation",
        action="store_true",
        help="add edgeproxy's policy with parts switched off (fixed probation, no size credit)",
    )
    parser.add_argument("--max-object-share", type=float, default=1.0)
    parser.add_argument("--requests", type=int, default=200_000, help="synthetic trace length")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dump-trace", metavar="PATH", help="write the synthetic trace as CSV")
    parser.add_argument("--live", action="store_true", help="replay through a live node")
    parser.add_argument("--limit", type=int, default=0, help="only the first N requests")
    parser.add_argument(
        "--max-object-bytes",
        type=int,
        default=0,
        help="drop requests for larger objects (the RAM layer's view: ram_object_max)",
    )
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/trace-*.md")
    parser.add_argument("--output", metavar="PATH", help="write the markdown here instead")
    args = parser.parse_args(argv)

    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(s <= 0 for s in sizes):
        parser.error("--sizes: positive shares of the footprint, e.g. 0.001,0.01,0.1")
    policies = make_policies(args.max_object_share)
    if args.ablation:
        policies.update(make_ablations(args.max_object_share))
    if args.policies:
        wanted = [p.strip() for p in args.policies.split(",")]
        unknown = [p for p in wanted if p not in policies]
        if unknown:
            parser.error(f"unknown policies {unknown}; known: {', '.join(policies)}")
        policies = {p: policies[p] for p in wanted}

    traces: list[tuple[str, Callable[[], list[Request]]]] = []
    if args.synthetic:
        names = list(SYNTHETIC) if args.synthetic == "all" else args.synthetic.split(",")
        for name in names:
            if name not in SYNTHETIC:
                parser.error(f"unknown synthetic trace {name!r}; known: {', '.join(SYNTHETIC)}")
            gen = SYNTHETIC[name]
            traces.append((f"synthetic-{name}", lambda gen=gen: gen(args.requests, args.seed)))
    if args.trace:
        label = Path(args.trace).name.removesuffix(".gz").removesuffix(".csv")
        traces.append((label, lambda: load_trace(args.trace)))
    if not traces:
        parser.error("give a TRACE file or --synthetic NAME")
    if args.dump_trace and len(traces) != 1:
        parser.error("--dump-trace needs exactly one trace")

    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    command = "python benchmarks/trace_replay.py " + " ".join(argv or sys.argv[1:])
    out(f"# Trace replay ({dt.date.today().isoformat()})\n")
    out(f"Command: `{command.strip()}`  ")
    out(
        f"Commit {_commit()}, Python {platform.python_version()}. Caches start empty; sizes are "
        f"shares of the footprint; object size limit {args.max_object_share:g} of the cache "
        "for every policy. OHR = object hit ratio, BHR = byte hit ratio.\n"
    )
    started = time.perf_counter()
    for label, load in traces:
        reqs = load()
        if args.max_object_bytes > 0:
            reqs = [r for r in reqs if r[2] <= args.max_object_bytes]
        if args.limit > 0:
            reqs = reqs[: args.limit]
        if args.live:
            import asyncio

            asyncio.run(_live(reqs, sizes[0], out))
            continue
        if args.dump_trace:
            write_trace(args.dump_trace, reqs)
        run_trace(label, reqs, sizes, policies, out)
    out(f"Total {time.perf_counter() - started:.1f} s.")

    if args.save or args.output:
        if args.output:
            path = Path(args.output)
        else:
            name = traces[0][0] if len(traces) == 1 else "synthetic"
            path = ROOT / "benchmarks" / "results" / f"trace-{name}-{dt.date.today()}.md"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
