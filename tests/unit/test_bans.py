"""Invalidation bans (edgeproxy/cache/bans.py): pure matching rules, retirement, the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeproxy.cache.bans import (
    BAN_FILE,
    BadPattern,
    Ban,
    BanList,
    dump_bans,
    expired_lifetime,
    normalize_pattern,
    read_ban_file,
    write_ban_file,
)

T = 1_000_000.0  # the ban's time; entries are stored before or after it


# ---- patterns ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "pattern"),
    [
        ("/audio/a.mp3", "/audio/a.mp3"),
        ("/images/*", "/images/*"),
        ("/img*", "/img*"),
        ("/*", "/*"),
        ("/a/../b.mp3", "/b.mp3"),  # normalized as request paths are
        ("/caf%c3%a9*", "/caf%C3%A9*"),
        ("/x%7e", "/x~"),
    ],
)
def test_patterns_are_normalized_like_request_paths(raw: str, pattern: str) -> None:
    assert normalize_pattern(raw) == pattern


@pytest.mark.parametrize(
    "raw",
    ["", "audio/a.mp3", "*", "/a*/b", "/**", "/a?x=1", "/a#f", "/%zz", "/a b"],
)
def test_bad_patterns_are_refused(raw: str) -> None:
    with pytest.raises(BadPattern):
        normalize_pattern(raw)


# ---- matching ---------------------------------------------------------------------------------


def test_an_empty_list_matches_nothing() -> None:
    bans = BanList()
    assert not bans.items
    assert bans.match("/a", 0.0) is None


def test_exact_pattern_matches_only_that_path() -> None:
    bans = BanList()
    ban = bans.add("/audio/a.mp3", T, hard=False)
    assert bans.match("/audio/a.mp3", T - 1) is ban
    assert bans.match("/audio/a.mp3x", T - 1) is None
    assert bans.match("/audio/a.mp", T - 1) is None
    assert bans.match("/audio/b.mp3", T - 1) is None


def test_prefix_pattern_matches_everything_under_it() -> None:
    bans = BanList()
    ban = bans.add("/api/*", T, hard=False)
    assert bans.match("/api/", T - 1) is ban
    assert bans.match("/api/v1/users.json", T - 1) is ban
    assert bans.match("/apix", T - 1) is None
    assert bans.match("/images/api/x", T - 1) is None


def test_prefix_without_slash_is_a_plain_string_prefix() -> None:
    """CloudFront: ``/img*`` covers /img.png and /img-large/... alike."""
    bans = BanList()
    bans.add("/img*", T, hard=False)
    assert bans.match("/img.png", T - 1) is not None
    assert bans.match("/img-large/a.png", T - 1) is not None
    assert bans.match("/im", T - 1) is None


def test_star_alone_bans_everything() -> None:
    bans = BanList()
    bans.add("/*", T, hard=False)
    assert bans.match("/", T - 1) is not None
    assert bans.match("/any/thing", T - 1) is not None


def test_only_entries_stored_before_the_ban_match() -> None:
    bans = BanList()
    bans.add("/a", T, hard=False)
    bans.add("/p/*", T, hard=False)
    for path in ("/a", "/p/x"):
        assert bans.match(path, T - 0.001) is not None
        assert bans.match(path, T) is None  # stored at the ban's instant: new enough
        assert bans.match(path, T + 5) is None  # fetched after the ban: new


def test_a_hard_ban_wins_over_a_soft_one() -> None:
    bans = BanList()
    bans.add("/p/*", T, hard=False)
    hard = bans.add("/p/x", T, hard=True)
    bans.add("/p/y*", T, hard=False)
    assert bans.match("/p/x", T - 1) is hard
    both = BanList()
    both.add("/p/x", T, hard=False)
    prefix_hard = both.add("/p/*", T, hard=True)
    assert both.match("/p/x", T - 1) is prefix_hard


def test_a_later_ban_covers_entries_a_former_one_did_not() -> None:
    bans = BanList()
    bans.add("/a", T, hard=False)
    later = bans.add("/a", T + 100, hard=False)
    assert bans.match("/a", T + 50) is later


# ---- retirement -------------------------------------------------------------------------------


def test_retire_removes_bans_older_than_the_walk() -> None:
    bans = BanList()
    old_exact = bans.add("/a", T, hard=False, invalidation="I1")
    old_prefix = bans.add("/p/*", T, hard=True, invalidation="I1")
    new = bans.add("/b", T + 10, hard=False, invalidation="I2")
    gone = bans.retire(T + 5)  # a walk that started at T + 5
    assert set(gone) == {old_exact, old_prefix}
    assert bans.items == [new]
    assert bans.match("/a", T - 1) is None
    assert bans.match("/p/x", T - 1) is None
    assert bans.match("/b", T - 1) is new
    assert not bans.pending("I1") and bans.pending("I2")


def test_a_ban_added_at_the_walks_start_is_not_retired_by_it() -> None:
    bans = BanList()
    ban = bans.add("/a", T, hard=False)
    assert bans.retire(T) == []
    assert bans.items == [ban]


# ---- soft expiry ------------------------------------------------------------------------------


def test_soft_ban_makes_a_fresh_entry_stale_from_the_ban_on() -> None:
    # stored at T-100 with Age 20 and max-age 600: fresh until T+480
    lifetime = expired_lifetime(T - 100, 20.0, 600.0, T)
    assert lifetime == pytest.approx(120.0)  # its age at the ban
    fresh_until = (T - 100) - 20.0 + lifetime
    assert fresh_until == pytest.approx(T)


def test_soft_ban_leaves_an_already_stale_entry_alone() -> None:
    assert expired_lifetime(T - 1000, 0.0, 600.0, T) is None


# ---- the file ---------------------------------------------------------------------------------


def test_ban_file_round_trip(tmp_path: Path) -> None:
    bans = BanList()
    bans.add("/a", T, hard=False, invalidation="I1")
    bans.add("/p/*", T + 1, hard=True, invalidation="I2")
    records = [{"id": "I1", "paths": ["/a"], "hard": False}]
    write_ban_file(tmp_path, dump_bans(bans, records))
    loaded, got_records = read_ban_file(tmp_path)
    assert loaded.items == bans.items
    assert got_records == records
    assert loaded.match("/p/q", T) is not None
    assert [p.name for p in tmp_path.iterdir()] == [BAN_FILE]  # no temporary file left


def test_missing_or_broken_ban_file_reads_as_no_bans(tmp_path: Path) -> None:
    assert read_ban_file(tmp_path)[0].items == []
    (tmp_path / BAN_FILE).write_text("{not json")
    assert read_ban_file(tmp_path)[0].items == []
    (tmp_path / BAN_FILE).write_text('{"v": 99, "bans": []}')
    assert read_ban_file(tmp_path)[0].items == []


def test_ban_dict_round_trip() -> None:
    ban = Ban("/x*", T, True, "I9")
    assert Ban.from_dict(ban.to_dict()) == ban
    assert ban.prefix == "/x"
    assert Ban("/x", T, False).prefix is None
