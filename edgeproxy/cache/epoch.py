"""A store-wide invalidation counter shared by the worker processes of one node.

Contract: every process maps ``<store>/epoch`` (8 bytes). :meth:`SharedEpoch.bump` increments it
(under an exclusive ``flock``) whenever entries are invalidated; :meth:`SharedEpoch.value` is a
memory read with no system call, cheap enough for every request. A worker that sees a new value
forgets its in-memory view (index and RAM layer) and re-reads the disk, so an invalidation in
one worker is honoured by all of them (RFC 9111 sec. 4.4 on a multi-process node).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from pathlib import Path

_FMT = "<Q"


class SharedEpoch:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = Path(root) / "epoch"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size < 8:
            os.pwrite(self._fd, b"\0" * 8, 0)
        self._map = mmap.mmap(self._fd, 8)

    def value(self) -> int:
        return struct.unpack_from(_FMT, self._map, 0)[0]

    def bump(self) -> int:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            new = self.value() + 1
            struct.pack_into(_FMT, self._map, 0, new)
            return new
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)
