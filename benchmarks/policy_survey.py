#!/usr/bin/env python3
"""Replay a trace through the policies of libCacheSim, for a survey beyond our own references.

``benchmarks/trace_replay.py`` compares edgeproxy's policy (the real code) with LRU and the
reference policies written in ``benchmarks/policies_ref.py``. This script asks a wider
question with the C implementations of libCacheSim (``pip install libcachesim``; a research
tool, not a dependency of the project): what do LHD, LRB, GLCache, 3L-Cache, Cacheus, LIRS,
the offline Belady (and its size-aware variant) and others reach on the same trace, at the
same cache sizes? Issue 7 asks for the best reference's object AND byte hit ratio at once;
this shows where that point lies against every policy libCacheSim has, oracles included.

Semantics as in trace_replay.py: the trace is ``timestamp,key,size_bytes`` (header line first,
``.gz`` allowed); an object is (key, size); cache sizes are shares of the footprint (the sum of
distinct object sizes); caches start empty. The trace is converted once to libCacheSim's
``oracleGeneral`` binary format (with each request's next access, which the oracles need)
in ``--work`` (default: a temporary directory, removed at the end).

Policies are named as libCacheSim's Python classes (``LRU``, ``GDSF``, ``S3FIFO``, ``ARC``,
``LHD``, ``Belady``, ``BeladySize``, ...), separated by ``+``; ``NAME@k=v;k=v`` passes raw
parameters to the C constructor (``ThreeLCache@objective=object-miss-ratio``,
``GLCache@retrain-intvl=100``). LRB needs about 130,000 requests of training before it
departs from LRU: use long traces (``gen_trace.py --requests 1000000``).

Usage: ``python benchmarks/policy_survey.py TRACE.csv.gz [--sizes 0.01,0.1]
[--policies LRU+GDSF+S3FIFO+ARC+LHD+Belady]``. Prints a markdown table (OHR, BHR, seconds).
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_replay import footprint, load_trace

DEFAULT_POLICIES = "LRU+GDSF+S3FIFO+ARC+LHD+Cacheus+LIRS+Sieve+Belady+BeladySize"
# one oracleGeneral record: uint32 timestamp, uint64 object id, uint32 size, int64 next access
_RECORD = struct.Struct("<IQIq")


def next_access(keys: list[Any]) -> list[int]:
    """For each request, the position of the next request for the same object, counted from
    1 as libCacheSim's own converter writes it (its virtual time); -1: none."""
    following: dict[Any, int] = {}
    out = [-1] * len(keys)
    for i in range(len(keys) - 1, -1, -1):
        out[i] = following.get(keys[i], -1)
        following[keys[i]] = i + 1
    return out


def oracle_records(requests: list[tuple[float, str, int]]) -> bytes:
    """The trace (as :func:`trace_replay.load_trace` reads it: the object id is key/size) in
    libCacheSim's oracleGeneral format, objects numbered from 1 in order of first request."""
    objects = [obj for _, obj, _ in requests]
    ids: dict[str, int] = {}
    nexts = next_access(objects)
    out = bytearray()
    for (ts, obj, size), nxt in zip(requests, nexts, strict=True):
        oid = ids.setdefault(obj, len(ids) + 1)
        out += _RECORD.pack(int(ts) & 0xFFFFFFFF, oid, max(1, size), nxt)
    return bytes(out)


def make_cache(lcs: Any, name: str, size: int) -> Any:
    """A libCacheSim cache of ``size`` bytes by class name, or ``NAME@k=v;k=v`` (raw C init)."""
    if "@" in name:
        base, params = name.split("@", 1)
        from libcachesim import libcachesim_python as native

        init = getattr(native, base + "_init")
        common = native.CommonCacheParams(
            cache_size=size, default_ttl=86400 * 300, hashpower=24, consider_obj_metadata=False
        )
        return lcs.cache.CacheBase(init(common, params.replace(";", ",")))
    return getattr(lcs, name)(size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--sizes", default="0.001,0.01,0.1", help="shares of the footprint")
    parser.add_argument("--policies", default=DEFAULT_POLICIES, help="names joined by +")
    parser.add_argument("--work", type=Path, help="where the converted trace is written")
    args = parser.parse_args(argv)
    try:
        import libcachesim as lcs
    except ImportError:
        parser.error("needs libCacheSim: pip install libcachesim")
    try:
        shares = [float(x) for x in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes: not a list of numbers: {args.sizes!r}")
    if not all(0 < s <= 1 for s in shares):
        parser.error("--sizes: shares between 0 and 1")
    requests = load_trace(str(args.trace))
    total = footprint(requests)
    print(f"# {args.trace}: {len(requests)} requests, footprint {total / 2**20:.1f} MiB")
    cols = [f"OHR {s:g}" for s in shares] + [f"BHR {s:g}" for s in shares]
    print("| policy | " + " | ".join(cols) + " | s |")
    print("|---" * (len(cols) + 2) + "|")
    with tempfile.TemporaryDirectory(prefix="policy-survey-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        binary = work / f"{args.trace.name}.oracleGeneral"
        binary.write_bytes(oracle_records(requests))
        for name in args.policies.split("+"):
            started = time.monotonic()
            ohr, bhr = [], []
            for share in shares:
                reader = lcs.TraceReader(str(binary), lcs.TraceType.ORACLE_GENERAL_TRACE)
                cache = make_cache(lcs, name, int(share * total))
                object_miss, byte_miss = cache.process_trace(reader)
                ohr.append(1 - object_miss)
                bhr.append(1 - byte_miss)
            cells = " | ".join(f"{x:.3f}" for x in ohr + bhr)
            print(f"| {name} | {cells} | {time.monotonic() - started:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
