"""A live node's measured hit ratios match the eviction simulator's on the same requests.

``benchmarks/trace_replay.py --live`` (issue 7) replays a trace through a real node over HTTP on
127.0.0.1, in front of an in-process origin that answers with bodies of the trace's sizes, and
counts the node's hits from ``Cache-Status``. This runs it on a small generated trace (bounded:
1,500 requests) and checks the live figures against the simulator's within one point.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gen_trace  # noqa: E402
import trace_replay  # noqa: E402


async def test_live_node_hit_ratios_match_the_simulator() -> None:
    reqs = [
        (ts, f"{key}/{size}", size)
        for ts, key, size in gen_trace.generate(1_500, seed=3, objects=2_000, one_hit=0.3)
    ]
    lines: list[str] = []
    await trace_replay._live(reqs, 0.05, lines.append)
    text = "\n".join(lines)
    live = re.search(r"\| live node \(Cache-Status\) \| ([\d.]+) \| ([\d.]+) \|", text)
    sim = re.search(r"\| simulator \(same policy\) \| ([\d.]+) \| ([\d.]+) \|", text)
    assert live and sim, text
    l_ohr, l_bhr = float(live[1]), float(live[2])
    s_ohr, s_bhr = float(sim[1]), float(sim[2])
    assert s_ohr > 0.05  # the trace has hits to measure
    assert abs(l_ohr - s_ohr) <= 0.01, text
    assert abs(l_bhr - s_bhr) <= 0.01, text
