"""Invalidation bans: Varnish's ban list with CloudFront's path rules.

Contract:
- A ban is a path pattern, a time and a kind. The pattern is exact (``/audio/a.mp3``) or a
  prefix: a trailing ``*`` and nowhere else (``/images/*``, ``/img*``, ``/*`` = everything), as
  CloudFront's invalidation paths. Patterns are normalized like request paths
  (:func:`edgeproxy.cache.key.normalize_path`), so a ban matches what the cache key holds.
- A ban matches a stored entry when the entry's path matches the pattern and the entry was
  stored before the ban (``stored_at < ban.at``): whatever is fetched after the ban is new. Every
  variant (br/gzip) and every slice of an object carries the object's path, so they go with it.
- Soft bans mark entries stale (:func:`expired_lifetime`: their freshness ends at the ban's
  time), so stale-if-error still protects the origin and the next request revalidates; hard
  bans delete. When both kinds match, the hard one wins.
- :meth:`BanList.match` is cheap: one dict lookup for the exact patterns and a ``startswith``
  per prefix ban; callers test ``BanList.items`` (a list, empty when nothing is banned) first,
  so the hit path pays one attribute read when there are no bans.
- Bans retire (:meth:`BanList.retire`) once a walk over the whole store has applied them; the
  walk and the store are the caller's. This module does no I/O except :func:`read_ban_file` and
  :func:`write_ban_file`: the shared on-disk format ``<store>/bans.json``, written by whoever
  serves the admin API and read by every worker process of the node.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeproxy.cache.key import BadRequestTarget, normalize_path

log = logging.getLogger("edgeproxy.bans")

BAN_FILE = "bans.json"
FORMAT_VERSION = 1


class BadPattern(ValueError):
    """An invalidation path that cannot be a ban (the admin API answers 400)."""


@dataclass(frozen=True, slots=True)
class Ban:
    pattern: str  # normalized; ends with "*" for a prefix
    at: float  # entries stored before this time match
    hard: bool  # delete instead of marking stale
    invalidation: str = ""  # the id of the invalidation request it belongs to

    @property
    def prefix(self) -> str | None:
        return self.pattern[:-1] if self.pattern.endswith("*") else None

    def matches(self, path: str, stored_at: float) -> bool:
        if stored_at >= self.at:
            return False
        prefix = self.prefix
        return path.startswith(prefix) if prefix is not None else path == self.pattern

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "at": self.at,
            "hard": self.hard,
            "invalidation": self.invalidation,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ban:
        return cls(
            pattern=normalize_pattern(str(d["pattern"])),
            at=float(d["at"]),
            hard=bool(d["hard"]),
            invalidation=str(d.get("invalidation", "")),
        )


def normalize_pattern(raw: str) -> str:
    """An invalidation path -> its normalized pattern; raises :class:`BadPattern`.

    ``/a/../b.mp3`` -> ``/b.mp3``; ``/images/*`` stays; ``/caf%c3%a9*`` -> ``/caf%C3%A9*``.
    """
    if not isinstance(raw, str) or not raw:
        raise BadPattern("a path must be a non-empty string starting with '/'")
    star = raw.find("*")
    if star != -1 and star != len(raw) - 1:
        raise BadPattern(f"{raw!r}: '*' is allowed only as the last character (a prefix)")
    if "?" in raw:
        raise BadPattern(
            f"{raw!r}: no query string; a path's every keyed variant is invalidated with it"
        )
    body = raw[:-1] if star != -1 else raw
    try:
        norm = normalize_path(body)
    except BadRequestTarget as exc:
        raise BadPattern(f"{raw!r}: {exc}") from None
    return norm + "*" if star != -1 else norm


def expired_lifetime(
    response_time: float, initial_age: float, lifetime: float, at: float
) -> float | None:
    """The freshness lifetime that makes an entry stale from ``at`` on (RFC 9111 sec. 4.2:
    fresh while ``now - response_time + initial_age < lifetime``), or None when it is stale by
    then already. Staleness (for stale-if-error / stale-while-revalidate windows) counts from
    the ban, not from the entry's original expiry."""
    fresh_until = response_time - initial_age + lifetime
    if fresh_until <= at:
        return None
    return max(0.0, at - response_time + initial_age)


class BanList:
    """The active bans of one node, in the order they were added."""

    __slots__ = ("_exact", "_prefixes", "items")

    def __init__(self, bans: Iterable[Ban] = ()) -> None:
        self.items: list[Ban] = []
        self._exact: dict[str, list[Ban]] = {}
        self._prefixes: list[Ban] = []
        for ban in bans:
            self._insert(ban)

    def __len__(self) -> int:
        return len(self.items)

    def _insert(self, ban: Ban) -> None:
        self.items.append(ban)
        if ban.prefix is not None:
            self._prefixes.append(ban)
        else:
            self._exact.setdefault(ban.pattern, []).append(ban)

    def add(self, pattern: str, now: float, hard: bool, invalidation: str = "") -> Ban:
        """Ban ``pattern`` (normalized here; raises :class:`BadPattern`) from ``now`` on."""
        ban = Ban(normalize_pattern(pattern), now, hard, invalidation)
        self._insert(ban)
        return ban

    def match(self, path: str, stored_at: float) -> Ban | None:
        """The ban that applies to an entry of ``path`` stored at ``stored_at`` (a hard one
        if any applies), or None."""
        if not self.items:
            return None
        found: Ban | None = None
        for ban in self._exact.get(path, ()):
            if stored_at < ban.at:
                if ban.hard:
                    return ban
                found = found or ban
        for ban in self._prefixes:
            if stored_at < ban.at and path.startswith(ban.pattern[:-1]):
                if ban.hard:
                    return ban
                found = found or ban
        return found

    def retire(self, before: float) -> list[Ban]:
        """Remove the bans added before ``before`` (a walk that started then has applied them
        to every stored entry); returns them."""
        gone = [ban for ban in self.items if ban.at < before]
        if gone:
            kept = [ban for ban in self.items if ban.at >= before]
            self.items = []
            self._exact = {}
            self._prefixes = []
            for ban in kept:
                self._insert(ban)
        return gone

    def pending(self, invalidation: str) -> bool:
        """Whether a ban of this invalidation is still active."""
        return any(ban.invalidation == invalidation for ban in self.items)

    def to_list(self) -> list[dict[str, Any]]:
        return [ban.to_dict() for ban in self.items]


# ---- the shared file (<store>/bans.json) ---------------------------------------------------


def read_ban_file(root: str | os.PathLike[str]) -> tuple[BanList, list[dict[str, Any]]]:
    """The bans and the invalidation records stored under ``root``; empty when there is no
    file, and (logged) when it is unreadable: a broken file must not stop the node."""
    path = Path(root) / BAN_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return BanList(), []
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return BanList(), []
    try:
        data = json.loads(raw)
        if data.get("v") != FORMAT_VERSION:
            raise ValueError(f"unknown version {data.get('v')!r}")
        bans = BanList(Ban.from_dict(d) for d in data.get("bans", []))
        records = [dict(r) for r in data.get("invalidations", [])]
        return bans, records
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return BanList(), []


def dump_bans(bans: BanList, records: Iterable[dict[str, Any]] = ()) -> bytes:
    """The file's content: the active bans and the invalidation records."""
    return json.dumps(
        {"v": FORMAT_VERSION, "bans": bans.to_list(), "invalidations": list(records)},
        separators=(",", ":"),
    ).encode()


def write_ban_file(root: str | os.PathLike[str], raw: bytes) -> None:
    """Persist :func:`dump_bans` output atomically (temporary file + rename, same directory)."""
    path = Path(root) / BAN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{BAN_FILE}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        tmp.write_bytes(raw)
        os.rename(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
