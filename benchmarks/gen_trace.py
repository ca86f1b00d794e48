#!/usr/bin/env python3
"""Generate a synthetic CDN request trace (``timestamp,key,size_bytes``) for ``trace_replay.py``.

Usage (from the repository root)::

    python benchmarks/gen_trace.py /tmp/cdn.csv.gz                    # 200,000 requests, seed 1
    python benchmarks/gen_trace.py /tmp/cdn.csv.gz --requests 500000 --seed 7

A held-out trace: it was written after the eviction policy's parameters were chosen (on bu_web
and the generators inside ``trace_replay.py``) and has a shape of its own, so the policy's
figures on it say whether they generalize. Deterministic for a given ``--seed``.

The model (every figure is a default option):

* a catalog of ``--objects`` objects (200,000) with Zipf popularity (``--alpha`` 0.9); sizes
  are independent of popularity and drawn from a mixture with a heavy tail: 70 % small
  (log-normal, median 4 KiB), 25 % medium (median 96 KiB), 5 % large (median 2 MiB, at most
  64 MiB), as on a CDN that serves API answers, images and media;
* one-hit wonders: ``--one-hit`` (25 %) of the requests are for objects requested once and
  never again (sizes from the same mixture);
* churn: every ``--churn-every`` requests (20,000), ``--churn`` (10 %) of the 2,000 most popular
  objects are replaced by new ones (new content is popular at once, old content fades).

Timestamps are seconds at 100 requests a second.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import itertools
import math
import random
import sys
from collections.abc import Iterator


def _size(rng: random.Random) -> int:
    u = rng.random()
    if u < 0.70:
        median, sigma = 4 * 1024, 1.0
    elif u < 0.95:
        median, sigma = 96 * 1024, 0.8
    else:
        median, sigma = 2 * 1024 * 1024, 0.7
    return max(64, min(64 * 1024 * 1024, int(rng.lognormvariate(math.log(median), sigma))))


def generate(
    requests: int,
    *,
    seed: int = 1,
    objects: int = 200_000,
    alpha: float = 0.9,
    one_hit: float = 0.25,
    churn_every: int = 20_000,
    churn: float = 0.10,
) -> Iterator[tuple[float, str, int]]:
    """Yield ``(timestamp, key, size)`` requests (module docstring)."""
    rng = random.Random(seed)
    serial = itertools.count()
    sizes: dict[str, int] = {}

    def fresh(prefix: str) -> str:
        key = f"{prefix}{next(serial)}"
        sizes[key] = _size(rng)
        return key

    ranked = [fresh("c") for _ in range(objects)]
    cum = list(itertools.accumulate(1.0 / r**alpha for r in range(1, objects + 1)))
    total = cum[-1]
    top = min(2_000, objects)
    for i in range(requests):
        if i and churn_every and i % churn_every == 0:
            for _ in range(int(top * churn)):
                pos = rng.randrange(top)
                sizes.pop(ranked[pos], None)
                ranked[pos] = fresh("c")
        if rng.random() < one_hit:
            key = f"u{next(serial)}"
            yield i * 0.01, key, _size(rng)
            continue
        key = ranked[bisect.bisect_left(cum, rng.random() * total)]
        yield i * 0.01, key, sizes[key]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", help="CSV path; .gz compresses")
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--objects", type=int, default=200_000)
    parser.add_argument("--alpha", type=float, default=0.9, help="Zipf exponent")
    parser.add_argument("--one-hit", type=float, default=0.25, help="share of one-hit requests")
    parser.add_argument("--churn-every", type=int, default=20_000)
    parser.add_argument("--churn", type=float, default=0.10, help="share of the top replaced")
    args = parser.parse_args(argv)
    if args.requests <= 0 or args.objects <= 0 or not 0 <= args.one_hit < 1:
        parser.error("--requests and --objects must be positive, --one-hit in [0, 1)")
    opener = gzip.open if args.output.endswith(".gz") else open
    with opener(args.output, "wt", encoding="utf-8") as f:
        f.write("timestamp,key,size_bytes\n")
        for ts, key, size in generate(
            args.requests,
            seed=args.seed,
            objects=args.objects,
            alpha=args.alpha,
            one_hit=args.one_hit,
            churn_every=args.churn_every,
            churn=args.churn,
        ):
            f.write(f"{ts:.2f},{key},{size}\n")
    print(f"written: {args.output} ({args.requests:,} requests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
