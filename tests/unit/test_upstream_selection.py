"""Parent selection (weighted rendezvous hashing), parent health, and the parent config forms.

Pure: no sockets. The integration side (retry, failover, go direct through live tiers) is in
tests/integration/test_tiers.py.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from typing import Any

import pytest

from edgeproxy.config import (
    ConfigError,
    HealthConfig,
    ParentConfig,
    UpstreamConfig,
    check_environment,
    parse_config,
)
from edgeproxy.health import ParentHealth
from edgeproxy.proxy.rendezvous import Candidate, rendezvous_order, rendezvous_pick, score
from edgeproxy.proxy.upstream import Upstream


def _keys(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(16) for _ in range(count)]


def _candidates(*names: str, weights: dict[str, float] | None = None) -> list[Candidate]:
    return [Candidate(n.encode(), (weights or {}).get(n, 1.0)) for n in names]


# ---- rendezvous: stable -------------------------------------------------------------------


def test_order_is_a_permutation_and_pick_is_its_head() -> None:
    parents = _candidates("r1", "r2", "r3", "r4")
    for key in _keys(200):
        order = rendezvous_order(key, parents)
        assert sorted(order) == [0, 1, 2, 3]
        assert order[0] == rendezvous_pick(key, parents)
        scores = [score(key, parents[i]) for i in order]
        assert scores == sorted(scores, reverse=True)


def test_order_does_not_depend_on_listing_order() -> None:
    """Two edges that list their regionals differently still agree on every key."""
    parents = _candidates("regional-1", "regional-2", "regional-3")
    for perm in itertools.permutations(parents):
        for key in _keys(300):
            a = [parents[i].ident for i in rendezvous_order(key, parents)]
            b = [perm[i].ident for i in rendezvous_order(key, list(perm))]
            assert a == b


def test_order_is_deterministic_across_runs() -> None:
    """Pinned: the hash is xxh3_64 of ident + NUL + key, so every node (and every release
    that keeps this function) sends a key to the same parent."""
    parents = _candidates("a", "b", "c")
    picks = "".join("abc"[rendezvous_pick(bytes([i]), parents)] for i in range(24))
    assert picks == "".join("abc"[rendezvous_pick(bytes([i]), parents)] for i in range(24))
    # score is a pure function of its inputs
    assert score(b"k", Candidate(b"a", 1.0)) == score(b"k", Candidate(b"a", 1.0))
    assert score(b"k", Candidate(b"a", 2.0)) == pytest.approx(2 * score(b"k", Candidate(b"a")))


def test_empty_and_single() -> None:
    assert rendezvous_order(b"k", []) == []
    with pytest.raises(ValueError):
        rendezvous_pick(b"k", [])
    assert rendezvous_order(b"k", _candidates("only")) == [0]


# ---- rendezvous: shares ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "weights",
    [
        {"r1": 1, "r2": 1},
        {"r1": 1, "r2": 1, "r3": 1, "r4": 1, "r5": 1},
        {"r1": 1, "r2": 2, "r3": 3, "r4": 4},
        {"r1": 0.5, "r2": 10},
    ],
)
def test_first_choice_shares_follow_the_weights(weights: dict[str, float]) -> None:
    """A parent is first for weight / sum(weights) of the keys: within 1.5 points over
    40 000 keys (the binomial standard deviation is at most 0.25 points)."""
    parents = _candidates(*weights, weights=weights)
    keys = _keys(40_000, seed=2)
    counts = Counter(rendezvous_pick(k, parents) for k in keys)
    total = sum(weights.values())
    for i, name in enumerate(weights):
        share = counts[i] / len(keys)
        assert share == pytest.approx(weights[name] / total, abs=0.015), (name, share)


# ---- rendezvous: minimal disruption ---------------------------------------------------------


def test_removing_a_parent_moves_only_its_keys() -> None:
    names = ["r1", "r2", "r3", "r4", "r5"]
    parents = _candidates(*names)
    keys = _keys(20_000, seed=3)
    before = {k: names[rendezvous_pick(k, parents)] for k in keys}
    survivors = [c for c in parents if c.ident != b"r3"]
    after = {k: survivors[rendezvous_pick(k, survivors)].ident.decode() for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved, "r3 owned no key?"
    assert all(before[k] == "r3" for k in moved)  # only r3's keys moved...
    assert all(after[k] == before[k] for k in keys if before[k] != "r3")  # ...nothing else did
    # ...each to its next parent in its own order, spread evenly over the 4 survivors
    for k in moved:
        order = [parents[i].ident.decode() for i in rendezvous_order(k, parents)]
        assert after[k] == order[1]
    spread = Counter(after[k] for k in moved)
    assert set(spread) == {"r1", "r2", "r4", "r5"}
    for count in spread.values():
        assert count / len(moved) == pytest.approx(0.25, abs=0.03)


def test_adding_a_parent_moves_keys_only_to_it() -> None:
    parents = _candidates("r1", "r2", "r3")
    grown = [*parents, Candidate(b"r4")]
    keys = _keys(20_000, seed=4)
    for k in keys:
        old = parents[rendezvous_pick(k, parents)].ident
        new = grown[rendezvous_pick(k, grown)].ident
        assert new in (old, b"r4")
    share = sum(grown[rendezvous_pick(k, grown)].ident == b"r4" for k in keys) / len(keys)
    assert share == pytest.approx(0.25, abs=0.015)


def test_changing_a_weight_moves_keys_only_to_or_from_that_parent() -> None:
    light = _candidates("r1", "r2", "r3")
    heavy = _candidates("r1", "r2", "r3", weights={"r2": 3.0})
    for k in _keys(10_000, seed=6):
        a = light[rendezvous_pick(k, light)].ident
        b = heavy[rendezvous_pick(k, heavy)].ident
        assert a == b or b == b"r2"


# ---- Upstream.choose: health skips a parent, keys move to their next parent -------------------


def _upstream(*parents: ParentConfig, health: HealthConfig | None = None) -> Upstream:
    config = UpstreamConfig(
        parents=tuple(p.url for p in parents),
        parent_specs=tuple(parents),
        health=health or HealthConfig(),
    )
    return Upstream(config, environ={}, clock=lambda: 0.0)


def test_choose_skips_unavailable_parents_and_keeps_hash_order() -> None:
    up = _upstream(*(ParentConfig(f"http://127.0.0.1:{8100 + i}", name=f"r{i}") for i in range(4)))
    keys = _keys(2000, seed=7)
    before = {k: [p.name for p in up.choose(k, now=0.0)] for k in keys}
    assert all(len(order) == 4 for order in before.values())
    victim = up.parents[2]
    for _ in range(up.config.health.fail_threshold):
        victim.health.request_failed(0.0, "connection refused")
    for k in keys:
        after = [p.name for p in up.choose(k, now=1.0)]
        assert after == [n for n in before[k] if n != "r2"]
    # back after retry_time
    later = up.config.health.retry_time + 1.0
    assert all([p.name for p in up.choose(k, now=later)] == before[k] for k in keys)


def test_legacy_parents_tuple_still_works() -> None:
    """UpstreamConfig(parents=(...)) built in code, without parent_specs, selects too."""
    config = UpstreamConfig(parents=("http://127.0.0.1:8101", "http://127.0.0.1:8102"))
    up = Upstream(config, environ={})
    assert [p.spec.weight for p in up.parents] == [1.0, 1.0]
    assert up.url_for("/a").endswith("/a")
    assert up.url_for("/a") == up.url_for("/a")


def test_hash_defaults_to_the_target() -> None:
    up = _upstream(ParentConfig("http://127.0.0.1:8101"), ParentConfig("http://127.0.0.1:8102"))
    targets = [f"/audio/track-{i}.mp3" for i in range(200)]
    firsts = {up.url_for(t).rsplit("/", 2)[0] for t in targets}
    assert firsts == {"http://127.0.0.1:8101", "http://127.0.0.1:8102"}


# ---- ParentHealth (pure) ----------------------------------------------------------------------


def test_passive_marks_eject_after_the_threshold_for_retry_time() -> None:
    h = ParentHealth("r1", HealthConfig(fail_threshold=3, retry_time=10.0))
    assert h.available(0.0)
    assert h.request_failed(0.0, "refused") is False
    assert h.request_failed(0.1, "refused") is False
    assert h.request_failed(0.2, "refused") is True
    assert not h.available(5.0)
    assert "ejected after 3 failed requests" in (h.why_out(5.0) or "")
    assert h.available(10.2)  # half-open: tried again
    assert h.request_failed(10.3, "refused") is True  # one more failure: out again at once
    assert not h.available(11.0)
    assert h.available(20.3)
    h.request_succeeded()
    assert h.failures == 0
    assert h.request_failed(21.0, "timeout") is False  # the count starts over


def test_a_success_between_failures_resets_the_count() -> None:
    h = ParentHealth("r1", HealthConfig(fail_threshold=2))
    h.request_failed(0.0, "500")
    h.request_succeeded()
    assert h.request_failed(0.1, "500") is False
    assert h.available(0.2)


def test_active_checks_use_both_thresholds() -> None:
    h = ParentHealth("r1", HealthConfig(healthy_threshold=2, unhealthy_threshold=3))
    assert h.check_result(False, "refused") is None
    assert h.check_result(False, "refused") is None
    assert h.check_result(False, "refused") is False
    assert not h.available(0.0)
    assert "health check failed" in (h.why_out(0.0) or "")
    assert h.check_result(True) is None
    assert h.check_result(False, "x") is None  # a failure resets the success run
    assert h.check_result(True) is None
    assert h.check_result(True) is True
    assert h.available(0.0)


# ---- config: parent forms, health, fallback ---------------------------------------------------

FILE = "conf/test.toml"


def _node(upstream: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": {"name": "edge-1", "role": "edge", "listen": "127.0.0.1:8080"},
        "upstream": upstream,
    }


def test_parents_as_strings_still_parse() -> None:
    up = parse_config(_node({"parents": ["http://127.0.0.1:8081/"]}), FILE).upstream
    assert up.parents == ("http://127.0.0.1:8081",)
    assert up.parent_list() == (ParentConfig("http://127.0.0.1:8081"),)


def test_parents_as_inline_tables_and_mixed() -> None:
    data = _node(
        {
            "parents": [
                {
                    "url": "http://127.0.0.1:8081",
                    "weight": 2,
                    "health_url": "http://127.0.0.1:9081",
                    "name": "regional-1",
                },
                "http://127.0.0.1:8082",
            ]
        }
    )
    up = parse_config(data, FILE).upstream
    assert up.parents == ("http://127.0.0.1:8081", "http://127.0.0.1:8082")
    first, second = up.parent_list()
    assert first == ParentConfig(
        "http://127.0.0.1:8081", 2.0, "http://127.0.0.1:9081/healthz", "regional-1"
    )
    assert first.ident == "regional-1" and second.ident == "http://127.0.0.1:8082"


def test_parent_table_array_and_health_and_fallback() -> None:
    data = _node(
        {
            "parent": [
                {"url": "http://127.0.0.1:8081", "health_url": "http://127.0.0.1:9081/live"},
                {"url": "http://127.0.0.1:8082", "weight": 0.5},
            ],
            "health": {"interval": "1s", "timeout": "500ms", "fail_threshold": 1},
            "fallback_s3": {
                "endpoint": "http://127.0.0.1:8333",
                "bucket": "music",
                "access_key_env": "A",
                "secret_key_env": "S",
            },
        }
    )
    config = parse_config(data, FILE)
    up = config.upstream
    assert [p.health_url for p in up.parent_list()] == ["http://127.0.0.1:9081/live", None]
    assert up.health == HealthConfig(interval=1.0, timeout=0.5, fail_threshold=1)
    assert up.fallback_s3 is not None and up.fallback_s3.bucket == "music"
    assert check_environment(config, {"A": "x", "S": "y"}) == []
    problems = check_environment(config, {"A": "x"})
    assert problems == ["S is not set (upstream.fallback_s3.secret_key_env); export it"]


@pytest.mark.parametrize(
    ("upstream", "key", "fragment"),
    [
        ({"parents": [{"weight": 2}]}, "upstream.parents[0].url", "missing required key"),
        (
            {"parents": [{"url": "http://h:1", "weight": 0}]},
            "upstream.parents[0].weight",
            "out of range",
        ),
        (
            {"parents": [{"url": "http://h:1", "weight": "2"}]},
            "upstream.parents[0].weight",
            "must be a number",
        ),
        (
            {"parents": [{"url": "http://h:1", "wieght": 2}]},
            "upstream.parents[0].wieght",
            'did you mean "weight"?',
        ),
        (
            {"parents": [{"url": "http://h:1", "health_url": "h:9081"}]},
            "upstream.parents[0].health_url",
            "not an http(s) URL",
        ),
        (
            {"parents": [{"url": "http://h:1", "health_url": "http://h:2/?x=1"}]},
            "upstream.parents[0].health_url",
            "no query",
        ),
        (
            {"parents": [{"url": "http://h:1", "name": "a"}, {"url": "http://h:2", "name": "a"}]},
            "upstream.parents",
            "two parents are named",
        ),
        ({"parents": [True]}, "upstream.parents", "must hold strings only"),
        ({"parent": {"url": "http://h:1"}}, "upstream.parent", "array of tables"),
        (
            {"parents": ["http://h:1"], "parent": [{"url": "http://h:2"}]},
            "upstream",
            "both parents and [[upstream.parent]]",
        ),
        (
            {"parents": ["http://h:1"], "health": {"interval": "1s", "timeout": "2s"}},
            "upstream.health.timeout",
            "exceeds interval",
        ),
        (
            {"parents": ["http://h:1"], "health": {"healthy_threshold": 0}},
            "upstream.health.healthy_threshold",
            "out of range",
        ),
        (
            {"s3": {"endpoint": "http://s3:1", "bucket": "b"}, "health": {}},
            "upstream.health",
            "nodes with parents only",
        ),
        (
            {
                "s3": {"endpoint": "http://s3:1", "bucket": "b"},
                "fallback_s3": {"endpoint": "http://s3:1", "bucket": "b"},
            },
            "upstream.fallback_s3",
            "nodes with parents only",
        ),
        (
            {"parents": ["http://h:1"], "fallback_s3": {"endpoint": "http://s3:1"}},
            "upstream.fallback_s3",
            "neither bucket nor buckets",
        ),
    ],
)
def test_parent_config_errors_are_one_line(
    upstream: dict[str, Any], key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_node(upstream), FILE)
    err = info.value
    assert err.key == key, str(err)
    assert fragment in err.message, str(err)
    assert "\n" not in str(err)
