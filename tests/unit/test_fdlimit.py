"""edgeproxy.fdlimit: a node raises a low soft open-file limit at start (in a child process:
the limit is per process), never lowers a high one, and warns when the hard limit is short."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from edgeproxy.fdlimit import SPARE_FDS, fds_needed

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import logging, resource, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
from edgeproxy.fdlimit import raise_open_file_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))
before, after = raise_open_file_limit({needed})
print("RESULT", before, after, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _run(soft: int, hard: str, needed: int) -> tuple[list[int], str]:
    code = CHILD.format(soft=soft, hard=hard, needed=needed)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    return [int(v) for v in line.split()[1:]], out


def test_fds_needed_counts_two_per_client_connection_and_mapping_and_spares() -> None:
    assert fds_needed(4096, 256, 1024) == 8192 + 256 + 2048 + SPARE_FDS
    assert fds_needed(10, 0, 0) == 20 + SPARE_FDS


def test_a_low_soft_limit_is_raised_up_to_what_is_needed() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"hard open-file limit {hard} too low to show a raise")
    (before, after, now), out = _run(256, "hard", 2048)
    assert before == 256 and after == now and after >= 2048
    assert "below" not in out


def test_a_high_soft_limit_is_left_alone() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1500:
        pytest.skip(f"hard open-file limit {hard} below the 1500 this test sets")
    (before, after, now), _ = _run(1500, "hard", 1000)
    assert before == after == now == 1500


def test_a_short_hard_limit_is_kept_and_named_in_a_warning() -> None:
    (before, after, now), out = _run(200, "300", 5000)
    assert before == 200 and after == now == 300
    assert "open-file limit 300 (hard 300) is below the 5000" in out
