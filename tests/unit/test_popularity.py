"""Popularity counts: exponential decay, trend, bounded size, persistence, worker tallies
(edgeproxy.popularity)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edgeproxy.popularity import (
    FILE_NAME,
    Popularity,
    Tally,
    decayed,
    load_file,
    save_file,
    trend,
)

T = 1_700_000_000.0


def exact(**kwargs: float) -> Popularity:
    """Scale factors recomputed on every hit: the math without the 1 s resolution."""
    return Popularity(resolution=0.0, **kwargs)  # type: ignore[arg-type]


def test_a_count_halves_every_half_life() -> None:
    pop = exact(short_half_life=10.0, long_half_life=100.0)
    pop.hit("/a", T)
    assert pop.counts_of("/a", T) == pytest.approx((1.0, 1.0))
    assert pop.counts_of("/a", T + 10) == pytest.approx((0.5, 2**-0.1))
    assert pop.counts_of("/a", T + 100) == pytest.approx((2**-10, 0.5))
    assert decayed(8.0, 30.0, 10.0) == pytest.approx(1.0)


def test_hits_add_up_with_their_own_age() -> None:
    pop = exact(short_half_life=10.0, long_half_life=100.0)
    pop.hit("/a", T)
    pop.hit("/a", T + 10)
    pop.hit("/a", T + 20)
    short, long = pop.counts_of("/a", T + 20)
    assert short == pytest.approx(1 + 0.5 + 0.25)
    assert long == pytest.approx(1 + 2**-0.1 + 2**-0.2)
    assert pop.counts_of("/unknown", T) == (0.0, 0.0)


def test_a_steady_rate_converges_to_rate_times_mean_lifetime() -> None:
    pop = exact(short_half_life=10.0, long_half_life=100.0)
    for i in range(5000):  # one request per second
        pop.hit("/a", T + i)
    short, long = pop.counts_of("/a", T + 4999)
    assert short == pytest.approx(1 / (1 - 2 ** (-1 / 10)), rel=1e-6)
    assert long == pytest.approx(1 / (1 - 2 ** (-1 / 100)), rel=1e-6)
    assert pop.top(1, T + 4999)[0].trend == "steady"


def test_trend_rising_falling_steady() -> None:
    pop = exact(short_half_life=10.0, long_half_life=100.0)
    for i in range(1000):
        pop.hit("/old", T + i)  # steady for 1000 s, then silence
    for i in range(20):
        pop.hit("/new", T + 980 + i)  # appears in the last 20 s
    now = T + 1030
    by_path = {p.path: p for p in pop.top(10, now)}
    assert by_path["/old"].trend == "falling"
    assert by_path["/new"].trend == "rising"
    assert trend(0.0, 0.0) == "steady"
    assert trend(10.0, 100.0, 10.0, 100.0) == "steady"
    assert trend(20.0, 100.0, 10.0, 100.0) == "rising"
    assert trend(5.0, 100.0, 10.0, 100.0) == "falling"


def test_top_orders_by_the_long_count_then_path() -> None:
    pop = exact()
    for path, n in (("/b", 3), ("/a", 3), ("/c", 5), ("/d", 1)):
        for _ in range(n):
            pop.hit(path, T)
    top = pop.top(3, T + 60)
    assert [p.path for p in top] == ["/c", "/a", "/b"]
    assert top[0].count == pytest.approx(5 * 0.5 ** (60 / 3600))
    assert top[0].as_dict()["trend"] in ("rising", "steady", "falling")
    assert pop.top(0, T) == [] and Popularity().top(5, T) == []


def test_size_is_bounded_and_the_coldest_go_first() -> None:
    pop = exact(max_paths=100, low_water=0.5)
    for i in range(50):
        for _ in range(3):
            pop.hit(f"/hot/{i}", T)
    for i in range(1000):
        pop.hit(f"/once/{i}", T + 1 + i * 0.001)
        assert len(pop) <= 100
    assert all(f"/hot/{i}" in pop.counts for i in range(50))
    assert pop.evicted == 1050 - len(pop)


def test_rescaling_keeps_the_counts_over_a_long_run() -> None:
    pop = exact(short_half_life=1.0, long_half_life=10.0)
    pop.hit("/a", T)
    for hour in range(1, 5):  # 3600 short half-lives an hour: forces rescaling
        pop.hit("/b", T + 3600 * hour)
        short, long = pop.counts_of("/b", T + 3600 * hour)
        assert short == pytest.approx(1.0) and long == pytest.approx(1.0)
        assert math.isfinite(pop.counts["/b"][0])
    assert pop.counts_of("/a", T + 4 * 3600)[1] == pytest.approx(0.0, abs=1e-100)


def test_the_default_resolution_errs_by_less_than_a_percent() -> None:
    pop = Popularity()
    pop.hit("/a", T)
    pop.hit("/a", T + 0.999)  # uses the factors of T
    short, long = pop.counts_of("/a", T + 0.999)
    assert short == pytest.approx(2.0, rel=0.01) and long == pytest.approx(2.0, rel=0.01)


def test_bad_half_lives_are_refused() -> None:
    with pytest.raises(ValueError):
        Popularity(short_half_life=100.0, long_half_life=10.0)
    with pytest.raises(ValueError):
        Popularity(max_paths=0)


# ---- persistence and tallies -----------------------------------------------------------------


def test_a_dump_reloads_with_the_time_that_passed() -> None:
    pop = exact(short_half_life=10.0, long_half_life=100.0)
    for _ in range(4):
        pop.hit("/a", T)
    pop.hit("/b", T + 5)
    state = json.loads(json.dumps(pop.dump(T + 10)))  # what the file holds
    again = exact(short_half_life=10.0, long_half_life=100.0)
    assert again.load(state, T + 110) == 2
    for path in ("/a", "/b"):
        assert again.counts_of(path, T + 110) == pytest.approx(pop.counts_of(path, T + 110))
    assert again.counts_of("/a", T + 110) == pytest.approx((4 * 2**-11, 4 * 2**-1.1))
    # a clock that went back decays nothing, and a scale divides the counts among workers
    halves = exact(short_half_life=10.0, long_half_life=100.0)
    halves.load(state, T, scale=0.5)
    assert halves.counts_of("/a", T) == pytest.approx((2 * 0.5 ** (10 / 10), 2 * 0.5 ** (10 / 100)))


@pytest.mark.parametrize(
    "state",
    [
        {"version": 99, "saved_at": T, "paths": []},
        {"version": 1, "paths": []},
        {"version": 1, "saved_at": T, "paths": [["/a", 1.0]]},
        {"version": 1, "saved_at": T, "paths": [["/a", -1.0, 1.0]]},
        {"version": 1, "saved_at": T, "paths": [["/ok", 1.0, 1.0], [3, 1.0, 1.0]]},
        [],
    ],
)
def test_a_bad_dump_loads_nothing(state: object) -> None:
    pop = exact()
    with pytest.raises(ValueError):
        pop.load(state, T)  # type: ignore[arg-type]
    assert len(pop) == 0


def test_the_file_is_replaced_atomically_and_a_bad_one_is_ignored(tmp_path: Path) -> None:
    pop = exact()
    pop.hit("/a", T)
    path = save_file(pop.dump(T), tmp_path)
    assert path == tmp_path / FILE_NAME
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]  # no temporary left
    again = exact()
    assert load_file(again, tmp_path, T) == 1
    assert again.counts_of("/a", T) == pytest.approx((1.0, 1.0))
    assert load_file(exact(), tmp_path / "nowhere", T) == 0
    path.write_text('{"version": 1, "saved_at"')  # a torn file (not what save_file leaves)
    assert load_file(exact(), tmp_path, T) == 0


def test_a_tally_counts_until_drained_and_is_bounded() -> None:
    tally = Tally(max_paths=2)
    for path in ("/a", "/a", "/b", "/c", "/a"):
        tally.hit(path, T)
    assert tally.drain() == {"/a": 3, "/b": 1}
    assert tally.dropped == 1 and len(tally) == 0
    pop = exact()
    pop.add("/a", T, 3.0)
    pop.add("/a", T + 10, 1.0)
    assert pop.counts_of("/a", T + 10) == pytest.approx(
        (3 * 0.5 ** (10 / 300) + 1, 3 * 0.5 ** (10 / 3600) + 1)
    )
