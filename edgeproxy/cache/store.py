"""The disk store: one metadata file and one body file per entry, published atomically.

Layout under ``root``::

    objects/ab/cd/<key>.meta            JSON metadata (the commit point)
    objects/ab/cd/<key>.<gen>.body      the body of one version
    tmp/                                bodies being written (same file system: rename is atomic)

Contract:
- A crash at any point never leaves a torn entry visible: a body is written to ``tmp/``; the
  metadata naming it is written to ``tmp/``; the body is renamed to a new, version-unique name
  in ``objects/``, and only then the metadata is renamed over ``<key>.meta`` (the commit
  point). Temporary files, and bodies that no published metadata names (a crash between the
  two renames, or between replacing an entry's metadata and unlinking its old body), are
  removed at start; a body whose metadata still waits in ``tmp/`` is in flight, not orphaned.
- A body whose size or xxh3-64 checksum does not match its metadata is never served: entries
  written by this process are trusted; entries found on disk are verified on first use, and a
  mismatch makes that lookup a miss and drops the entry.
- ``start()`` returns at once; the index is rebuilt from disk in a thread while the node already
  answers (a key not yet indexed is looked up on disk directly).
- The byte budget ``max_size`` is kept by evicting what the policy names, after each publish;
  so is the free-space watermark ``min_free`` (bytes, or ``min_free_percent`` of the file
  system), from a ``statvfs`` taken at most every ``FS_CHECK_INTERVAL`` seconds and corrected
  by the bytes written and evicted since. Victims are unlinked in the executor (no stall on the
  request path). Objects larger than ``max_object_share`` of ``max_size`` are not stored.
- The RAM layer (:class:`RamLayer`) holds small bodies within ``ram_size`` bytes; what stays
  there is decided by :meth:`PopularityPolicy.for_ram` (object hits only), not by LRU.
- All file I/O runs in the executor, never on the event loop; the hit path (``peek``,
  ``ram_body``, ``Entry.mapped``) does no system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mmap
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import xxhash

from edgeproxy.cache.entry import Entry
from edgeproxy.cache.eviction import LruPolicy, PopularityPolicy

log = logging.getLogger("edgeproxy.store")

FLUSH_BYTES = 256 * 1024
# A store that cannot write (ENOSPC, EROFS, EACCES, EDQUOT) makes the node pass through: new
# objects are not stored for UNWRITABLE_RETRY seconds, then writing is tried again; the
# condition is logged at most once per UNWRITABLE_LOG_INTERVAL.
UNWRITABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM})
UNWRITABLE_RETRY = 1.0
UNWRITABLE_LOG_INTERVAL = 60.0
# free bytes kept in hand beyond the announced length before a fill is started
FREE_SPACE_MARGIN = 64 * 1024
FS_CHECK_INTERVAL = 0.25
# mapped bodies kept at once, least recently served released first (two fds each: the
# mapping's own and the open file sendfile reads; see edgeproxy.fdlimit)
MAX_MAPPED = 4096
# errors of reading a body that say the process is short of descriptors or memory, not that
# the body is bad: the entry is kept (answered from upstream this time), never dropped
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


def remove_temporary_files_of(store_root: str | os.PathLike[str], pid: int) -> int:
    """Delete what process ``pid`` left in the store's ``tmp/``: bodies it was writing (named
    ``<key>.<pid>.<random>.part``) and metadata before its rename (``.meta``), and the body a
    metadata file there names when the process died between moving that body into
    ``objects/`` and its metadata (publishing writes the metadata first, see
    ``DiskStore._publish_sync``; a body no published metadata names is served by nobody).
    For the master of a multi-process node, when a worker has exited (a kill -9 leaves its
    part files behind; nothing of a dead process is ever published, and a follower that had
    the part file open keeps reading it). Call it once the worker was reaped. Returns the
    files removed."""
    tmp_dir = Path(store_root) / "tmp"
    wanted = str(pid)
    removed = 0
    try:
        names = os.listdir(tmp_dir)
    except OSError:
        return 0
    for name in names:
        parts = name.split(".")
        if len(parts) == 4 and parts[1] == wanted and parts[3] in ("part", "meta"):
            if parts[3] == "meta":
                removed += _remove_unpublished_body(Path(store_root), tmp_dir / name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_dir / name)
                removed += 1
    return removed


def _remove_unpublished_body(store_root: Path, meta_tmp: Path) -> int:
    """The body ``meta_tmp`` (a dead process's metadata, never renamed) names, if it is in
    ``objects/`` while the published metadata of its key names another body: removed (1)."""
    try:
        entry = Entry.from_json(meta_tmp.read_bytes())
    except (OSError, ValueError):
        return 0
    directory = store_root / "objects" / entry.key_hex[:2] / entry.key_hex[2:4]
    try:
        if _body_named_by(directory / f"{entry.key_hex}.meta") == entry.body_file:
            return 0  # published after all
    except (OSError, ValueError):
        return 0  # unreadable: keep it (the index rebuild drops a broken metadata file, and
        # the body then goes as one nothing names)
    try:
        os.unlink(directory / entry.body_file)
    except OSError:
        return 0
    return 1


def _body_named_by(meta: Path) -> str | None:
    """The body file the metadata file ``meta`` names; None when there is no such file.
    Raises OSError or ValueError when it exists but cannot be read or parsed (then nobody
    can tell what it names)."""
    try:
        raw = meta.read_bytes()
    except FileNotFoundError:
        return None
    return Entry.from_json(raw).body_file


def _checksum_hex(hasher: xxhash.xxh3_64) -> str:
    return hasher.hexdigest()


class RamLayer:
    """RAM copies of small bodies within a byte budget, kept by a popularity policy.

    The policy (:meth:`PopularityPolicy.for_ram`: GreedyDual with object hits only, a frequency
    sketch and a newcomer discount) decides; this class executes: :meth:`get` is a hit (O(1),
    no system call), :meth:`put` is a miss that offers a body, and may evict others or the
    offered body itself. Replayed at an edge's RAM share of bu_web (objects up to 256 KiB), it
    its object hit ratio is .241 / .333 where LRU's is .156 / .242 (RAM at 0.25 % / 2.5 % of
    the footprint; ``benchmarks/results/trace-bu_web-ram-*.md``).
    """

    __slots__ = ("_data", "maxsize", "policy", "refused")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = max(maxsize, 1)
        self.policy = PopularityPolicy.for_ram(self.maxsize, max_object_share=1.0)
        self._data: dict[str, bytes] = {}
        self.refused = 0  # bodies offered and not kept (evicted at once, or too large)

    @property
    def currsize(self) -> int:
        return self.policy.bytes_stored

    @property
    def evictions(self) -> int:
        return self.policy.evictions

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str) -> bytes | None:
        """The body, recording a hit; None when not held."""
        body = self._data.get(key)
        if body is not None:
            self.policy.touch(key, 0.0)
        return body

    def put(self, key: str, body: bytes, now: float) -> bool:
        """Offer ``body`` for ``key`` (replacing what is held); True if it is kept."""
        policy = self.policy
        if key in self._data:
            del self._data[key]
            policy.remove(key)
        size = len(body)
        policy.record_miss(key, size, now)
        if not policy.admit(size, self.maxsize):
            self.refused += 1
            return False
        policy.insert(key, size, now)
        self._data[key] = body
        over = policy.bytes_stored - self.maxsize
        if over > 0:
            for victim in list(policy.victims(over, now)):
                self._data.pop(victim, None)
                policy.remove(victim)
        if key not in self._data:
            self.refused += 1
            return False
        return True

    def pop(self, key: str, default: bytes | None = None) -> bytes | None:
        body = self._data.pop(key, None)
        if body is None:
            return default
        self.policy.remove(key)
        return body

    def clear(self) -> None:
        self._data.clear()
        self.policy = PopularityPolicy.for_ram(self.maxsize, max_object_share=1.0)


class BodyWriter:
    """Streams one body into a temporary file, computing size and checksum on the way.

    Small bodies (up to ``keep_limit``) are also kept in memory so the RAM layer can take them
    without reading the file back.
    """

    def __init__(self, store: DiskStore, key_hex: str, *, streaming: bool = False) -> None:
        self._store = store
        # streaming: every chunk reaches the file at once, so followers can read it
        self.streaming = streaming
        self.key_hex = key_hex
        self.tmp_path = store.tmp_dir / f"{key_hex}.{os.getpid()}.{os.urandom(4).hex()}.part"
        self._fd: int | None = None
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._hasher = xxhash.xxh3_64()
        self.size = 0
        self._kept: list[bytes] | None = []
        self._keep_limit = store.ram_object_max
        self.failed: BaseException | None = None

    async def write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._hasher.update(chunk)
        self.size += len(chunk)
        if self._kept is not None:
            if self.size <= self._keep_limit:
                self._kept.append(chunk)
            else:
                self._kept = None
        self._pending.append(chunk)
        self._pending_len += len(chunk)
        if self.streaming or self._pending_len >= FLUSH_BYTES:
            await self._flush()

    async def open(self) -> None:
        """Create the part file now (followers open it as soon as the fill is announced)."""
        if self._fd is None:
            await self._io(b"")

    async def _io(self, data: bytes) -> None:
        try:
            await self._store.run_io(self._write_sync, data)
        except OSError as exc:
            self._store.note_write_error(exc)
            raise

    async def _flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_len = 0
        await self._io(data)

    def _write_sync(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def finish(self) -> tuple[int, str, bytes | None]:
        """Flush and close; returns (size, checksum, body bytes if small enough to keep)."""
        if not self._pending and self._fd is None:
            # empty body: still create the file so publishing is uniform
            await self._io(b"")
        await self._flush()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            await self._store.run_io(os.close, fd)
        kept = b"".join(self._kept) if self._kept is not None else None
        return self.size, _checksum_hex(self._hasher), kept

    async def abort(self) -> None:
        """Discard: nothing of this body is ever published."""
        fd, self._fd = self._fd, None
        self._pending.clear()
        self._kept = None

        def _discard() -> None:
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp_path)

        await self._store.run_io(_discard)


class DiskStore:
    """Disk-backed store with a RAM layer for small bodies. See the module docstring."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_size: int,
        ram_size: int,
        ram_object_max: int,
        executor: ThreadPoolExecutor | None = None,
        clock: Callable[[], float] = time.time,
        shared: bool = False,
        min_free: int = 0,
        min_free_percent: float = 0.0,
        max_object_share: float = 0.5,
        eviction: str = "popularity",
        object_weight: float = 0.8,
    ) -> None:
        self.root = Path(root)
        self.eviction = eviction
        self.object_weight = object_weight
        # shared: one of several worker processes over this store. Then the manager process
        # owns the byte budget and deletes victims; this index is a per-process view that is
        # capped without unlinking, and an index miss looks on the disk (a sibling may have
        # stored it). ``report`` tells the manager about accesses, stores and drops.
        self.shared = shared
        self.report: Callable[[str, str, int], None] | None = None
        self._publishing: dict[str, asyncio.Future[None]] = {}  # the last publish per key
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.max_size = max_size
        self.ram_object_max = ram_object_max
        self.min_free = min_free
        self.min_free_percent = min_free_percent
        self.max_object_share = max_object_share
        self.index: dict[str, Entry] = {}
        self.used_bytes = 0
        # the popularity-aware policy owns the budget of a single-process node; a worker's
        # view of a shared store is only capped (LRU), the manager decides for the store
        self.policy: LruPolicy | PopularityPolicy = self._new_policy()
        self.state_path = self.root / "policy.state"
        self.ram = RamLayer(ram_size)
        self._executor = executor or ThreadPoolExecutor(max_workers=4, thread_name_prefix="store")
        self.executor = self._executor
        self._clock = clock
        self.loading = False
        self._load_task: asyncio.Task[None] | None = None
        self.evictions = 0
        self.corrupt_dropped = 0
        # bodies not loaded for lack of descriptors or memory (entries kept), logged at most
        # once per UNWRITABLE_LOG_INTERVAL
        self.resource_refusals = 0
        self._resource_logged = -UNWRITABLE_LOG_INTERVAL
        self._closed = False
        # disk full / read-only: monotonic time until which nothing new is written
        self.unwritable_until = 0.0
        self._mapped: OrderedDict[int, Entry] = OrderedDict()
        self._fs_checked_at = -FS_CHECK_INTERVAL
        self._fs_readonly = False
        self._fs_free: int | None = None
        self._fs_total: int | None = None
        # bytes published and evicted since the last statvfs (the watermark's estimate)
        self._written_since_fs = 0
        self._freed_since_fs = 0
        self.watermark_evictions = 0  # entries evicted to keep min_free (not max_size)
        self.unwritable_count = 0  # times a write was refused by the file system
        self._unwritable_logged = -UNWRITABLE_LOG_INTERVAL

    def _new_policy(self) -> LruPolicy | PopularityPolicy:
        if self.shared or self.eviction == "lru":
            return LruPolicy(max_object_share=self.max_object_share)
        return PopularityPolicy(
            self.max_size, alpha=self.object_weight, max_object_share=self.max_object_share
        )

    @property
    def admissions_refused(self) -> int:
        """Objects not stored because they exceed ``max_object_share`` of the budget."""
        return self.policy.admissions_refused

    # ---- plumbing -------------------------------------------------------------------------

    async def run_io(self, fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _dir_for(self, key_hex: str) -> Path:
        return self.objects_dir / key_hex[:2] / key_hex[2:4]

    def meta_path(self, key_hex: str) -> Path:
        return self._dir_for(key_hex) / f"{key_hex}.meta"

    def body_path(self, entry: Entry) -> Path:
        return self._dir_for(entry.key_hex) / entry.body_file

    # ---- start: cleanup and index rebuild ---------------------------------------------------

    async def start(self) -> None:
        """Prepare directories and rebuild the index in the background; returns at once."""
        await self.run_io(self._prepare_dirs)
        self.loading = True
        self._load_task = asyncio.get_running_loop().create_task(self._load_index())

    def _prepare_dirs(self) -> None:
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        if self.shared:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            return  # the node's master cleaned up before starting the workers
        if self.tmp_dir.exists():
            # a fresh start: whoever wrote tmp/ is dead; a body its metadata names went into
            # objects/ without that metadata (killed between the renames) and is nobody's
            for meta_tmp in self.tmp_dir.glob("*.meta"):
                _remove_unpublished_body(self.root, meta_tmp)
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def _load_index(self) -> None:
        try:
            if not self.shared:
                raw = await self.run_io(self._read_state_sync)
                if isinstance(raw, bytes):
                    try:
                        self.policy.load_state(raw, self._clock())
                    except ValueError as exc:
                        log.warning("policy state unreadable (%s): starting cold", exc)
            entries = await self.run_io(self._scan_sync)
            assert isinstance(entries, list)
            for entry in entries:
                if entry.key_hex in self.index:
                    continue  # written by this process meanwhile: newer
                self._index_add(entry)
            finish = getattr(self.policy, "finish_load", None)
            if finish is not None:
                finish()
            self._enforce_budget()
            log.info(
                "store %s: indexed %d entries, %d bytes",
                self.root,
                len(self.index),
                self.used_bytes,
            )
        except Exception:
            log.exception("store %s: index rebuild failed", self.root)
        finally:
            self.loading = False

    def _scan_sync(self) -> list[Entry]:
        """Read every metadata file; drop broken ones and orphan bodies (thread)."""
        found: list[tuple[float, Entry]] = []
        unnamed: list[Path] = []  # bodies no metadata named when their directory was listed
        for sub in self.objects_dir.glob("*/*"):
            try:
                names = os.listdir(sub)
            except OSError:
                continue
            referenced: set[str] = set()
            for name in names:
                if not name.endswith(".meta"):
                    continue
                path = sub / name
                entry = self._read_meta_sync(path)
                if entry is None:
                    continue
                referenced.add(entry.body_file)
                try:
                    mtime = path.stat().st_mtime
                except OSError:
                    continue
                found.append((mtime, entry))
            unnamed.extend(
                sub / name for name in names if name.endswith(".body") and name not in referenced
            )
        if unnamed:
            self._remove_orphan_bodies_sync(unnamed)
        found.sort(key=lambda item: item[0])  # oldest first = least recently used first
        return [entry for _, entry in found]

    def _remove_orphan_bodies_sync(self, unnamed: list[Path]) -> None:
        """Unlink the bodies in ``unnamed`` that are neither published nor in flight (thread).

        Publishing writes the metadata to ``tmp/`` before the body enters ``objects/`` and
        renames it over ``<key>.meta`` after: a body seen without metadata is in flight
        exactly while a metadata file in ``tmp/`` names it, and published once its key's
        metadata does. ``tmp/`` is read after the body was seen and the key's metadata again
        after that, so a publish that moves on between the reads is seen by one of them.
        (Another process may be publishing: the workers of a node share its store.)
        A metadata file that exists but cannot be read (EMFILE, EIO, a torn write) keeps
        every body of its key: only a file that is not there names nothing."""
        keys = {path.name.split(".", 1)[0] for path in unnamed}
        in_flight: set[str] = set()
        unsure: set[str] = set()  # keys with a metadata file that could not be read
        try:
            tmp_names = os.listdir(self.tmp_dir)
        except OSError:
            return  # cannot tell what is in flight: remove nothing
        for name in tmp_names:
            key_hex = name.split(".", 1)[0]
            if name.endswith(".meta") and key_hex in keys:
                try:
                    named = _body_named_by(self.tmp_dir / name)
                except (OSError, ValueError):
                    unsure.add(key_hex)
                    continue
                if named is not None:
                    in_flight.add(named)
        for path in unnamed:
            key_hex = path.name.split(".", 1)[0]
            if path.name in in_flight or key_hex in unsure:
                continue
            try:
                if _body_named_by(path.parent / f"{key_hex}.meta") == path.name:
                    continue
            except (OSError, ValueError):
                continue
            self._unlink_quiet(path)

    def _read_state_sync(self) -> bytes | None:
        try:
            return self.state_path.read_bytes()
        except OSError:
            return None

    def _write_state_sync(self, raw: bytes) -> None:
        tmp = self.tmp_dir / f"policy.state.{os.getpid()}"
        tmp.write_bytes(raw)
        os.rename(tmp, self.state_path)

    async def save_state(self) -> None:
        """Persist the policy's popularity state (so a restart does not forget what is hot)."""
        if self.shared:
            return
        try:
            await self.run_io(self._write_state_sync, self.policy.dump_state())
        except OSError as exc:
            log.warning("cannot save the policy state: %s", exc)

    def touch(self, key_hex: str, now: float) -> None:
        """Record a hit (the fast path calls this directly)."""
        self.policy.touch(key_hex, now)
        if self.report is not None:
            self.report("a", key_hex, 0)

    def record_miss(self, key_hex: str, size: int, now: float) -> None:
        """Tell the admission filter about a request for an object not stored."""
        self.policy.record_miss(key_hex, size, now)
        if self.report is not None:
            self.report("m", key_hex, size)

    def _read_meta_sync(self, path: Path, again: bool = True) -> Entry | None:
        """The entry a metadata file describes, checked against its body file (size). A meta
        whose body is missing is dropped with it, unless the meta changed meanwhile (a
        sibling republished the key: new body, new meta, old body gone): then the new one is
        read (``again``: once)."""
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            entry = Entry.from_json(raw)
        except ValueError as exc:
            log.warning("dropping unreadable metadata %s: %s", path, exc)
            self._unlink_quiet(path)
            return None
        body = path.parent / entry.body_file
        try:
            if body.stat().st_size != entry.size:
                raise OSError("size mismatch")
        except OSError:
            if again:
                try:
                    current = path.read_bytes()
                except OSError:
                    return None  # dropped meanwhile
                if current != raw:
                    return self._read_meta_sync(path, again=False)
            log.warning("dropping %s: body missing or of the wrong size", path)
            self._unlink_quiet(path)
            self._unlink_quiet(body)
            return None
        return entry

    @staticmethod
    def _unlink_quiet(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()

    # ---- lookup ----------------------------------------------------------------------------

    def peek(self, key_hex: str) -> Entry | None:
        """Index lookup without I/O (the hit path); records the access."""
        entry = self.index.get(key_hex)
        if entry is not None:
            self.policy.touch(key_hex, 0.0)
            if self.report is not None:
                self.report("a", key_hex, entry.size)
        return entry

    async def lookup(self, key_hex: str) -> Entry | None:
        """Index lookup; while the index is still loading, falls back to the disk."""
        entry = self.peek(key_hex)
        if entry is None and (self.loading or self.shared):
            found = await self.run_io(self._read_meta_sync, self.meta_path(key_hex))
            # the background load may have indexed it while we read: the index wins
            entry = self.index.get(key_hex)
            if entry is None and isinstance(found, Entry):
                self._index_add(found)
                entry = found
        return entry

    def ram_body(self, entry: Entry) -> bytes | None:
        """The RAM copy of this entry's body; None for an entry that is no longer the current
        version of its key (the RAM layer is keyed by key, and holds the current body)."""
        if self.index.get(entry.key_hex) is not entry:
            return None
        return self.ram.get(entry.key_hex)

    async def read_entry_from_disk(self, key_hex: str) -> Entry | None:
        """The entry as published on disk now (bypassing this process's view)."""
        found = await self.run_io(self._read_meta_sync, self.meta_path(key_hex))
        return found if isinstance(found, Entry) else None

    async def ensure_readable(self, entry: Entry) -> bool:
        """Make the body servable without I/O (RAM or mmap); verify it if not yet verified.

        Returns False (and drops the entry) when the body is missing, short or corrupt; False
        (keeping the entry) when the process is out of descriptors or memory to read it.
        """
        if entry.mapped is not None and entry.verified:
            return True
        if entry.verified and entry.key_hex in self.ram and self.index.get(entry.key_hex) is entry:
            return True
        try:
            result = await self.run_io(self._load_body_sync, entry)
        except OSError as exc:
            if exc.errno in RESOURCE_ERRNOS:  # the process, not the body: keep the entry
                self.resource_refusals += 1
                now = time.monotonic()
                if now - self._resource_logged >= UNWRITABLE_LOG_INTERVAL:
                    self._resource_logged = now
                    log.warning(
                        "entry %s not readable now (%s): kept (%d such refusals so far)",
                        entry.key_hex,
                        exc,
                        self.resource_refusals,
                    )
                return False
            log.warning("entry %s unreadable (%s): dropped", entry.key_hex, exc)
            await self.drop(entry.key_hex, only=entry)
            return False
        if result is None:
            log.warning("entry %s failed its checksum: dropped", entry.key_hex)
            self.corrupt_dropped += 1
            await self.drop(entry.key_hex, only=entry)
            return False
        handle = None
        if isinstance(result, tuple):
            result, handle = result
        in_ram = (
            isinstance(result, bytes)
            and self.index.get(entry.key_hex) is entry
            and self.ram.put(entry.key_hex, result, self._clock())
        )
        if not in_ram:
            # a mapping, the bytes of a version no longer current, or bytes the RAM layer
            # did not keep (bounded with the mappings)
            entry.mapped = result
            entry.handle = handle
            self._remember_mapping(entry)
        entry.verified = True
        return True

    def _remember_mapping(self, entry: Entry) -> None:
        """Bound the mapped bodies (each mapping holds file descriptors): the least recently
        served are released (not closed: a response may still be sending from them; GC
        closes them)."""
        mapped = self._mapped
        mapped[id(entry)] = entry
        while len(mapped) > MAX_MAPPED:
            _, oldest = mapped.popitem(last=False)
            oldest.mapped = oldest.handle = None

    def served_mapped(self, entry: Entry) -> None:
        """A hit was answered from ``entry``'s mapping: it is released last. O(1)."""
        mapped = self._mapped
        if id(entry) in mapped:
            mapped.move_to_end(id(entry))

    def _release_mapping(self, entry: Entry) -> None:
        """``entry`` left this process's view: its mapping and file go (once no response
        sends from them), so a removed body's disk space is not held by this process."""
        if self._mapped.pop(id(entry), None) is not None:
            entry.mapped = entry.handle = None

    def _load_body_sync(self, entry: Entry) -> bytes | tuple[mmap.mmap, BinaryIO] | None:
        path = self.body_path(entry)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != entry.size:
                return None
            if size <= self.ram_object_max:
                data = f.read()
                if len(data) != entry.size:
                    return None
                if not entry.verified and xxhash.xxh3_64_hexdigest(data) != entry.checksum:
                    return None
                return data
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            if not entry.verified and xxhash.xxh3_64_hexdigest(mapped) != entry.checksum:
                mapped.close()
                return None
            # and an open file for sendfile(2) (closed by GC with the mapping, see
            # _remember_mapping: a response may still be sending from it)
            try:
                return mapped, os.fdopen(os.dup(f.fileno()), "rb", buffering=0)
            except OSError:
                mapped.close()  # its own descriptor goes now, not with the traceback
                raise

    async def open_body(self, entry: Entry) -> int | None:
        """A read-only descriptor of the entry's body (thread); None when the file is gone
        (evicted or replaced since the lookup). The caller closes it (:meth:`close_fd`)."""
        try:
            fd = await self.run_io(os.open, self.body_path(entry), os.O_RDONLY)
        except FileNotFoundError:
            return None
        assert isinstance(fd, int)
        return fd

    async def pread(self, fd: int, length: int, offset: int) -> bytes:
        data = await self.run_io(os.pread, fd, length, offset)
        assert isinstance(data, bytes)
        return data

    async def close_fd(self, fd: int) -> None:
        await self.run_io(os.close, fd)

    async def read_range(self, entry: Entry, start: int, length: int) -> bytes:
        """Read part of a body (thread); used for bodies not held in RAM or mapped."""

        def _read() -> bytes:
            with open(self.body_path(entry), "rb") as f:
                f.seek(start)
                return f.read(length)

        data = await self.run_io(_read)
        assert isinstance(data, bytes)
        return data

    # ---- write -----------------------------------------------------------------------------

    def note_write_error(self, exc: OSError) -> bool:
        """Record a write refused by the file system (full, read-only, no permission): new
        objects pass through for a while. True if ``exc`` was such an error."""
        if exc.errno not in UNWRITABLE_ERRNOS:
            return False
        self._unwritable(f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, '?')})")
        return True

    def _unwritable(self, reason: str) -> None:
        now = time.monotonic()
        self.unwritable_until = now + UNWRITABLE_RETRY
        self.unwritable_count += 1
        if now - self._unwritable_logged >= UNWRITABLE_LOG_INTERVAL:
            self._unwritable_logged = now
            log.warning(
                "store %s cannot write (%s): passing through, retrying every %.0fs",
                self.root,
                reason,
                UNWRITABLE_RETRY,
            )

    def writable(self, size: int | None) -> bool:
        """Whether a new object of ``size`` bytes (None: unknown) should be written now: not
        after a recent write error, and only with room for it on the file system."""
        now = time.monotonic()
        if now < self.unwritable_until:
            return False
        self._check_fs(now)
        if self._fs_readonly:
            self._unwritable("read-only file system")
            return False
        free = self._fs_free
        if free is not None and free < (size or 0) + FREE_SPACE_MARGIN:
            self._unwritable(f"{free} bytes free")
            return False
        return True

    def _check_fs(self, now: float) -> None:
        """statvfs at most a few times a second (a metadata call, not on every miss)."""
        if now - self._fs_checked_at < FS_CHECK_INTERVAL:
            return
        self._fs_checked_at = now
        try:
            st = os.statvfs(self.tmp_dir)
            self._fs_readonly = bool(st.f_flag & os.ST_RDONLY)
            self._fs_free = st.f_bavail * st.f_frsize
            self._fs_total = st.f_blocks * st.f_frsize
        except OSError:
            self._fs_readonly, self._fs_free = False, None  # the write itself will tell
        self._written_since_fs = self._freed_since_fs = 0

    def watermark_deficit(self) -> int:
        """Bytes to free to keep ``min_free`` on the file system (0: none, or no watermark).

        From the last statvfs (rate-limited), minus what was published since, plus what was
        evicted since (its unlinks may still be queued).
        """
        if not (self.min_free or self.min_free_percent):
            return 0
        self._check_fs(time.monotonic())
        free = self._fs_free
        if free is None:
            return 0
        want = self.min_free
        if self.min_free_percent and self._fs_total:
            want = max(want, int(self._fs_total * self.min_free_percent / 100))
        free += self._freed_since_fs - self._written_since_fs
        return max(0, want - free)

    def admits(self, size: int | None) -> bool:
        """Whether an object of this size may be stored at all (unknown size: yes)."""
        return size is None or self.policy.fits(size, self.max_size)

    def new_writer(self, key_hex: str, *, streaming: bool = False) -> BodyWriter:
        return BodyWriter(self, key_hex, streaming=streaming)

    async def publish(self, writer: BodyWriter, entry: Entry) -> bool:
        """Atomically publish a finished body with its metadata; evict to keep the budget.

        ``entry.size``/``checksum`` must come from ``writer.finish()``. Returns False when the
        object was not admitted or the write failed (nothing is then visible).
        """
        size, checksum, kept = await writer.finish()
        entry.size, entry.checksum = size, checksum
        if not self.policy.admit(size, self.max_size):
            await writer.abort()
            return False
        self._written_since_fs += size
        entry.body_file = f"{entry.key_hex}.{time.time_ns():x}{os.urandom(2).hex()}.body"
        # publishes of one key run one after the other (two bypassing fills of one key may
        # finish together): the later one replaces the earlier on disk and in the index,
        # whose body goes and whose bytes leave the budget exactly once
        previous = self._publishing.get(entry.key_hex)
        turn = asyncio.get_running_loop().create_future()
        self._publishing[entry.key_hex] = turn
        try:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await self.run_io(self._publish_sync, writer.tmp_path, entry)
            except OSError as exc:
                if not self.note_write_error(exc):
                    log.warning("publish of %s failed: %s", entry.key_hex, exc)
                await writer.abort()
                return False
            entry.verified = True
            if self.index.get(entry.key_hex) is not None:
                self._index_remove(entry.key_hex, replaced=True)
            self._index_add(entry)
        finally:
            turn.set_result(None)
            if self._publishing.get(entry.key_hex) is turn:
                del self._publishing[entry.key_hex]
        if kept is not None:
            self.ram.put(entry.key_hex, kept, self._clock())
        if self.report is not None:
            self.report("p", entry.key_hex, entry.size)
        self._enforce_budget()
        return True

    def _publish_sync(self, tmp_path: Path, entry: Entry) -> None:
        directory = self._dir_for(entry.key_hex)
        directory.mkdir(parents=True, exist_ok=True)
        # the metadata is written first: a process killed between the body's rename and the
        # metadata's leaves the .meta in tmp/, naming the body for remove_temporary_files_of
        meta_tmp = self._meta_tmp_sync(entry)
        try:
            os.rename(tmp_path, directory / entry.body_file)
        except OSError:
            with contextlib.suppress(OSError):
                meta_tmp.unlink()
            raise
        try:
            os.rename(meta_tmp, directory / f"{entry.key_hex}.meta")
        except OSError:
            for leftover in (directory / entry.body_file, meta_tmp):
                self._unlink_quiet(leftover)
            raise

    def _meta_tmp_sync(self, entry: Entry) -> Path:
        tmp = self.tmp_dir / f"{entry.key_hex}.{os.getpid()}.{os.urandom(4).hex()}.meta"
        try:
            tmp.write_bytes(entry.to_json())
        except OSError:
            self._unlink_quiet(tmp)  # a torn one would keep its key's bodies "in flight"
            raise
        return tmp

    def _write_meta_sync(self, entry: Entry) -> None:
        tmp = self._meta_tmp_sync(entry)
        try:
            os.rename(tmp, self._dir_for(entry.key_hex) / f"{entry.key_hex}.meta")
        except OSError:
            self._unlink_quiet(tmp)
            raise

    async def update_meta(self, entry: Entry) -> None:
        """Persist changed metadata (after a 304 revalidation, RFC 9111 sec. 4.3.4)."""
        if self.index.get(entry.key_hex) is not entry:
            return
        try:
            await self.run_io(self._write_meta_sync, entry)
        except OSError as exc:
            log.warning("metadata update of %s failed: %s", entry.key_hex, exc)

    async def drop(self, key_hex: str, only: Entry | None = None) -> bool:
        """Remove an entry (metadata first, so no reader sees a meta without its body)."""
        entry = self.index.get(key_hex)
        if entry is None and only is None:
            # not in this process's view: it may still be on disk (stored by a sibling)
            found = await self.run_io(self._unlink_by_key_sync, key_hex)
            if found and self.report is not None:
                self.report("d", key_hex, 0)
            return bool(found)
        if entry is None or (only is not None and entry is not only):
            if only is not None and entry is None:
                await self.run_io(self._unlink_entry_sync, only)
            return False
        self._index_remove(key_hex)
        if self.report is not None:
            self.report("d", key_hex, 0)
        return True

    def forget(self, key_hex: str) -> None:
        """Drop one entry from this process's view (index and RAM layer), not its files: the
        next lookup re-reads it from the disk (another process changed it there)."""
        entry = self.index.pop(key_hex, None)
        if entry is not None:
            self.used_bytes -= entry.size
            self.policy.remove(key_hex)
            self.ram.pop(key_hex, None)
            self._release_mapping(entry)

    def forget_all(self) -> None:
        """Drop this process's view (index and RAM layer), not the files: after another
        process invalidated entries, lookups re-read the disk."""
        self.index.clear()
        self.ram.clear()
        for entry in self._mapped.values():
            entry.mapped = entry.handle = None
        self._mapped.clear()
        self.used_bytes = 0
        self.policy = self._new_policy()

    # ---- index and budget ------------------------------------------------------------------

    def _index_add(self, entry: Entry) -> None:
        self.index[entry.key_hex] = entry
        self.used_bytes += entry.size
        self.policy.insert(entry.key_hex, entry.size, self._clock())

    def _index_remove(self, key_hex: str, *, replaced: bool = False) -> None:
        """Forget an entry and unlink its files in the background.

        ``replaced``: a newer version's metadata is already in place, so only the old body goes.
        Open mappings of the old body stay valid (the inode lives until they are closed).
        """
        entry = self.index.pop(key_hex, None)
        if entry is None:
            return
        self.used_bytes -= entry.size
        self.policy.remove(key_hex)
        self.ram.pop(key_hex, None)
        self._release_mapping(entry)
        unlink = self._unlink_body_sync if replaced else self._unlink_entry_sync
        asyncio.get_running_loop().run_in_executor(self._executor, unlink, entry)

    def _unlink_by_key_sync(self, key_hex: str) -> bool:
        meta = self.meta_path(key_hex)
        try:
            entry = Entry.from_json(meta.read_bytes())
        except (OSError, ValueError):
            return False
        self._unlink_entry_sync(entry)
        return True

    def _unlink_body_sync(self, entry: Entry) -> None:
        self._unlink_quiet(self.body_path(entry))

    def _unlink_entry_sync(self, entry: Entry) -> None:
        meta = self.meta_path(entry.key_hex)
        # only remove the meta if it still names this version
        try:
            current = Entry.from_json(meta.read_bytes())
            if current.body_file == entry.body_file:
                meta.unlink()
        except (OSError, ValueError):
            pass
        self._unlink_quiet(self.body_path(entry))

    def _enforce_budget(self) -> None:
        over = self.used_bytes - self.max_size
        deficit = 0 if self.shared else self.watermark_deficit()
        by_watermark = deficit > over
        if by_watermark:
            over = deficit
        if over <= 0:
            return
        for key_hex in list(self.policy.victims(over, self._clock())):
            entry = self.index.get(key_hex)
            if entry is None:
                self.policy.remove(key_hex)  # named victims always leave the policy
                continue
            if self.shared:
                # a worker's view only: forget it here; the manager deletes the files
                self.index.pop(key_hex, None)
                self.used_bytes -= entry.size
                self.policy.remove(key_hex)
                self.ram.pop(key_hex, None)
            else:
                self._freed_since_fs += entry.size
                self._index_remove(key_hex)
                self.evictions += 1
                self.watermark_evictions += by_watermark

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        elif not self.shared and self._load_task is not None:
            await self.save_state()
        self._executor.shutdown(wait=True)
