"""Store-wide change counters shared by the worker processes of one node.

Contract: every process maps ``<store>/epoch`` (two little-endian u64 slots, 16 bytes):

* slot 0, the *view* epoch: :meth:`SharedEpoch.bump` increments it whenever a process removed
  entries that others may hold in memory; a worker that sees a new value forgets its
  in-memory view (index and RAM layer) and re-reads the disk, so an invalidation in one worker
  is honoured by all of them (RFC 9111 sec. 4.4 on a multi-process node);
* slot 1, the *bans* epoch: :meth:`SharedEpoch.bump_bans` increments it whenever the ban list
  file changed (admin invalidations); a worker re-reads the ban list and forgets only the
  entries that a retired ban covered (bans are applied on lookup, so adding one needs nothing
  else), instead of its whole view.

:meth:`SharedEpoch.values` is one memory read with no system call, cheap enough for every
request. Increments are serialized with an exclusive ``flock``. A file written by an older
version (8 bytes) is extended in place (its bans slot starts at 0).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

_FMT = "<QQ"
_SIZE = struct.calcsize(_FMT)


class SharedEpoch:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root) / "epoch"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size < _SIZE:
            os.pwrite(self._fd, b"\0" * (_SIZE - size), size)
        self._map = mmap.mmap(self._fd, _SIZE)

    def values(self) -> tuple[int, int]:
        """(view epoch, bans epoch)."""
        return struct.unpack_from(_FMT, self._map, 0)  # type: ignore[return-value]

    def value(self) -> int:
        """The view epoch."""
        return self.values()[0]

    def _bump_slot(self, slot: int) -> int:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            new = self.values()[slot] + 1
            struct.pack_into("<Q", self._map, 8 * slot, new)
            return new
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def bump(self) -> int:
        """Every worker forgets its view; returns the new view epoch."""
        return self._bump_slot(0)

    def bump_bans(self) -> int:
        """Every worker re-reads the ban list; returns the new bans epoch."""
        return self._bump_slot(1)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
