"""benchmarks/policy_survey.py: the trace conversion the libCacheSim survey relies on (the
oracles read each request's next access from it). libCacheSim itself is not needed here."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import policy_survey


def test_next_access_points_at_the_next_request_for_the_same_object() -> None:
    # positions counted from 1 (libCacheSim's virtual time)
    assert policy_survey.next_access(["a", "b", "a", "c", "b", "a"]) == [3, 5, 6, -1, -1, -1]
    assert policy_survey.next_access([]) == []


def test_oracle_records_number_objects_and_keep_sizes_and_next_access() -> None:
    reqs = [(1.0, "x/10", 10), (2.0, "y/0", 0), (3.0, "x/10", 10), (4.0, "x/20", 20)]
    data = policy_survey.oracle_records(reqs)
    records = [struct.unpack_from("<IQIq", data, i * 24) for i in range(len(data) // 24)]
    assert len(data) == 24 * len(reqs)
    # (timestamp, object id from 1 in order of first request, size (at least 1), next access)
    assert records == [(1, 1, 10, 3), (2, 2, 1, -1), (3, 1, 10, -1), (4, 3, 20, -1)]
