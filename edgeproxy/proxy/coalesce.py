"""Single flight per cache key, with read-while-writer, inside a process and across processes.

Contract:
- :meth:`Coalescer.acquire` returns :class:`Lead` (this request fetches and fills), or
  :class:`Follow` (another request is filling: stream from its growing file), or
  :class:`Bypass` (go upstream alone, uncached: the key was recently uncacheable, Varnish's
  hit-for-miss, or the lock could not be taken).
- A leader announces a :class:`FillHead` as soon as the upstream answer's header section is known
  and shareable, then reports progress (bytes in the part file) and ends with an
  :class:`Outcome`. Followers see the head, then the bytes as they arrive, then the outcome:
  their first byte goes out when the leader has it, not when the fetch ends.
- Across worker processes of one node the file system is the lock: the exclusive create of
  ``inflight/<key>.lock`` (holding the leader's PID). Followers in other processes read the head
  from ``inflight/<key>.<fill>.head``, the bytes from the part file, and the outcome from
  ``inflight/<key>.<fill>.done``, polling every ``POLL_INTERVAL``. A lock whose process is gone
  is dangling and is taken over, never waited on forever.
- Nothing is published by this module: the store publishes; failures are reported to followers,
  which must cut their clients' connections (never a short answer that looks complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("edgeproxy.coalesce")

POLL_INTERVAL = 0.005
RING_BYTES = 4 * 1024 * 1024  # the latest chunks of a local fill, shared by its followers
STALE_MARKER_AGE = 120.0


class Outcome(enum.Enum):
    """How a fill ended (Pingora's lock outcomes, in spirit)."""

    DONE = "done"  # the whole body was written (and published, if storable)
    REVALIDATED = "revalidated"  # a 304 refreshed the stored entry: read it from the store
    UPSTREAM_ERROR = "upstream-error"  # failed before or during the body: nothing published
    UNCACHEABLE = "uncacheable"  # not shareable: followers go upstream on their own
    WAIT_TIMEOUT = "wait-timeout"  # follower gave up waiting; goes upstream uncached
    DANGLING = "dangling"  # the leader's process died: its lock was taken over

    def as_str(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class FillHead:
    """What followers need to answer before the body is complete."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # client fields, without Cache-Status and framing
    content_length: int | None
    part_path: str  # the growing body file
    ttl: int
    upstream_status: str | None = None  # the upstream tiers' Cache-Status, to append to
    vary: dict[str, str | None] | None = None  # selecting values of the leader's request

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "status": self.status,
                "reason": self.reason,
                "headers": self.headers,
                "content_length": self.content_length,
                "part_path": self.part_path,
                "ttl": self.ttl,
                "upstream_status": self.upstream_status,
                "vary": self.vary,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> FillHead:
        d = json.loads(raw)
        return cls(
            status=int(d["status"]),
            reason=str(d["reason"]),
            headers=tuple((str(n), str(v)) for n, v in d["headers"]),
            content_length=d["content_length"],
            part_path=str(d["part_path"]),
            ttl=int(d["ttl"]),
            upstream_status=d.get("upstream_status"),
            vary=d.get("vary"),
        )


class Fill:
    """The state of one fill as a follower sees it (local: pushed; remote: polled)."""

    def __init__(self, key_hex: str, fill_id: str) -> None:
        self.key_hex = key_hex
        self.fill_id = fill_id
        self.head: FillHead | None = None
        self.written = 0
        self.outcome: Outcome | None = None
        self.followers = 0
        self._waiters: list[asyncio.Future[None]] = []
        # ``written`` counts the body (False: a remote fill whose part file was already
        # published when we looked: its size was never seen)
        self.size_known = True
        # the published body file of a DONE fill (None: not published, or not known)
        self.body_file: str | None = None
        # the part file, open for reading since the fill began (a local fill; closed by GC
        # once no follower holds the fill): followers far behind the ring read it, whatever
        # became of the path (published, then maybe evicted)
        self.reader: BinaryIO | None = None
        self._ring: deque[tuple[int, bytes]] = deque()
        self._ring_bytes = 0

    def recent(self, offset: int, limit: int) -> memoryview | None:
        """Bytes from ``offset`` (at most ``limit``) if still held in memory; else None."""
        for start, chunk in self._ring:
            if start <= offset < start + len(chunk):
                at = offset - start
                return memoryview(chunk)[at : at + limit]
        return None

    def _keep(self, start: int, chunk: bytes) -> None:
        """Hold the latest chunks (RING_BYTES at most, and at least the last one) so that the
        followers in this process read them from memory: one read for all of them."""
        self._ring.append((start, chunk))
        self._ring_bytes += len(chunk)
        while self._ring_bytes > RING_BYTES and len(self._ring) > 1:
            _, old = self._ring.popleft()
            self._ring_bytes -= len(old)

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def changed(self, timeout: float | None = None) -> None:
        """Wait until the head, the byte count or the outcome changes (or ``timeout``).

        A future per waiter and a timer handle: no task per wait (this runs per chunk)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        handle = None if timeout is None else loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()

    async def wait_head(self, timeout: float) -> bool:
        """True once a head is known; False on an outcome without a head or on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.head is None and self.outcome is None:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            await self.changed(left)
        return self.head is not None


class LocalFill(Fill):
    """A fill led by this process; the leader pushes state, the coalescer mirrors it to files."""

    def __init__(
        self, coalescer: Coalescer, key_hex: str, fill_id: str, *, shared: bool = True
    ) -> None:
        super().__init__(key_hex, fill_id)
        self._coalescer = coalescer
        # not shared: a fill nobody can join (a request that bypassed the queue still stores)
        self.shared = shared
        self.handed_off = False  # a background task owns the rest of the fill
        self.released = asyncio.Event()  # the lock is gone (siblings can lead the key again)

    async def announce(self, head: FillHead) -> None:
        self.head = head
        self._notify()  # followers in this process first: no file-system hop before them
        if self.shared:
            await self._coalescer._write_marker(self, "head", head.to_json())

    def advance(self, written: int, chunk: bytes | None = None) -> None:
        """``written`` bytes of the body are known; ``chunk`` (the last ones) is kept in a
        bounded ring so followers in this process read it from memory. The part file may lag
        by the chunk being written: a follower reads the file only for bytes that left the
        ring (RING_BYTES behind), long written by then, and a short read is retried."""
        if chunk:
            self._keep(written - len(chunk), chunk)
        self.written = written
        self._notify()

    async def finish(self, outcome: Outcome) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        self._notify()
        try:
            if self.shared:
                await self._coalescer._release(self)
        finally:
            self.released.set()


class RemoteFill(Fill):
    """A fill led by another process, observed through its files."""

    def __init__(self, coalescer: Coalescer, key_hex: str, fill_id: str, pid: int) -> None:
        super().__init__(key_hex, fill_id)
        self._coalescer = coalescer
        self.pid = pid
        self._fd: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll())

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def _poll(self) -> None:
        c = self._coalescer
        head_path = c.marker_path(self.key_hex, self.fill_id, "head")
        done_path = c.marker_path(self.key_hex, self.fill_id, "done")
        try:
            while self.outcome is None:
                changed = False
                if self.head is None:
                    raw = await c.read_small(head_path)
                    if raw is not None:
                        self.head = FillHead.from_json(raw)
                        try:
                            self._fd = os.open(self.head.part_path, os.O_RDONLY)
                        except OSError:
                            self.size_known = False
                        changed = True
                if self._fd is not None:
                    size = os.fstat(self._fd).st_size  # metadata of an open fd: no disk read
                    if size > self.written:
                        # one read of the new bytes for every follower in this process
                        want = min(size - self.written, RING_BYTES)
                        data = await c._io(os.pread, self._fd, want, size - want)
                        if data:
                            self._keep(size - want, data)
                    if size != self.written:
                        self.written = size
                        changed = True
                raw = await c.read_small(done_path)
                if raw is not None:
                    if self._fd is not None:
                        self.written = os.fstat(self._fd).st_size
                    try:
                        outcome, _, body_file = raw.decode().strip().partition(" ")
                        self.body_file = body_file or None
                        self.outcome = Outcome(outcome)
                    except ValueError:
                        self.outcome = Outcome.UPSTREAM_ERROR
                    changed = True
                elif not _pid_alive(self.pid):
                    self.outcome = Outcome.DANGLING
                    changed = True
                if changed:
                    self._notify()
                await asyncio.sleep(POLL_INTERVAL)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("following fill %s failed", self.key_hex)
            self.outcome = Outcome.UPSTREAM_ERROR
            self._notify()
        finally:
            if self._fd is not None:  # the outcome is known: the size will not change
                os.close(self._fd)
                self._fd = None


@dataclass(slots=True)
class Lead:
    fill: LocalFill


@dataclass(slots=True)
class Follow:
    fill: Fill


@dataclass(slots=True)
class Bypass:
    reason: str


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Coalescer:
    """Owns the in-flight fills of one process and the lock files shared with its siblings."""

    def __init__(
        self,
        store_root: str | os.PathLike[str],
        *,
        hit_for_miss_ttl: float = 10.0,
        executor: object = None,
        across_processes: bool = True,
    ) -> None:
        self.dir = Path(store_root) / "inflight"
        # False for a node of one process: fills are coordinated in memory only (no lock or
        # marker files, so a miss leads without a file-system hop)
        self.across_processes = across_processes
        self.local: dict[str, LocalFill] = {}
        self.remote: dict[str, RemoteFill] = {}
        self.uncacheable: dict[str, float] = {}
        self.hit_for_miss_ttl = hit_for_miss_ttl
        self._executor = executor
        self.takeovers = 0
        self._acquiring: dict[str, asyncio.Future[None]] = {}

    async def _io(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def prepare(self, clean: bool) -> None:
        """Create the directory (sync; at start). ``clean`` removes every marker (node start)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if clean:
            for name in os.listdir(self.dir):
                with contextlib.suppress(OSError):
                    os.unlink(self.dir / name)

    def lock_path(self, key_hex: str) -> Path:
        return self.dir / f"{key_hex}.lock"

    def marker_path(self, key_hex: str, fill_id: str, kind: str) -> Path:
        return self.dir / f"{key_hex}.{fill_id}.{kind}"

    async def read_small(self, path: Path) -> bytes | None:
        def _read() -> bytes | None:
            try:
                return path.read_bytes()
            except OSError:
                return None

        return await self._io(_read)

    def remember_uncacheable(self, key_hex: str, now: float) -> None:
        """Hit-for-miss: for a while, requests for this key skip the queue, in this process
        and (through a marker file read with the lock) in its sibling workers."""
        if len(self.uncacheable) > 100_000:
            self.uncacheable = {k: t for k, t in self.uncacheable.items() if t > now}
        until = now + self.hit_for_miss_ttl
        self.uncacheable[key_hex] = until
        if self.across_processes:
            path = self.dir / f"{key_hex}.hfm"

            def _write() -> None:
                with contextlib.suppress(OSError):
                    path.write_text(f"{until}")

            asyncio.get_running_loop().run_in_executor(self._executor, _write)

    def _hit_for_miss_sync(self, key_hex: str) -> float | None:
        """A sibling's hit-for-miss marker for this key, while it lasts (its end time)."""
        try:
            until = float((self.dir / f"{key_hex}.hfm").read_text())
        except (OSError, ValueError):
            return None
        return until if until > time.time() else None

    def forget_uncacheable(self, key_hex: str) -> None:
        self.uncacheable.pop(key_hex, None)
        if self.across_processes:
            with contextlib.suppress(OSError):
                (self.dir / f"{key_hex}.hfm").unlink()

    async def acquire(self, key_hex: str, *, now: float) -> Lead | Follow | Bypass:
        until = self.uncacheable.get(key_hex)
        if until is not None:
            if until > now:
                return Bypass("hit-for-miss")
            del self.uncacheable[key_hex]
        while True:
            local = self.local.get(key_hex)
            if local is not None and local.outcome is None:
                return Follow(local)
            remote = self.remote.get(key_hex)
            if remote is not None and remote.outcome is None:
                return Follow(remote)
            pending = self._acquiring.get(key_hex)
            if pending is None:
                break
            # another request of this process is taking or reading the lock for this key:
            # wait for it instead of going to the file system too (a herd makes one trip)
            await asyncio.wait([pending])
        done = asyncio.get_running_loop().create_future()
        self._acquiring[key_hex] = done
        try:
            return await self._acquire_slow(key_hex)
        finally:
            del self._acquiring[key_hex]
            done.set_result(None)

    async def _acquire_slow(self, key_hex: str) -> Lead | Follow | Bypass:
        for _ in range(50):
            local = self.local.get(key_hex)
            if local is not None:
                if local.outcome is None:
                    return Follow(local)
                await asyncio.sleep(0.002)  # ours, releasing its lock
                continue
            fill_id = f"{os.getpid():x}{os.urandom(4).hex()}"
            if not self.across_processes:
                fill = LocalFill(self, key_hex, fill_id)
                self.local[key_hex] = fill
                return Lead(fill)
            got = await self._io(self._try_lock, key_hex, fill_id)
            if isinstance(got, float):  # a sibling found the key uncacheable: skip the queue
                self.uncacheable[key_hex] = got
                return Bypass("hit-for-miss")
            if got is True:
                fill = LocalFill(self, key_hex, fill_id)
                self.local[key_hex] = fill
                return Lead(fill)
            if got is None:
                await asyncio.sleep(POLL_INTERVAL)
                continue  # the holder vanished between our create and read: try again
            holder_pid, holder_fill = got
            if holder_pid == os.getpid():
                # a fill of ours that just ended and is releasing its lock: let it finish
                await asyncio.sleep(0.002)
                continue
            if not _pid_alive(holder_pid):
                log.warning("fill of %s by dead process %d: taking over", key_hex, holder_pid)
                self.takeovers += 1
                await self._io(self._break_lock, key_hex, holder_fill)
                continue
            if key_hex in self.local:  # raced with a local leader while we were off-loop
                return Follow(self.local[key_hex])
            previous = self.remote.get(key_hex)
            if previous is not None:
                if previous.outcome is None:
                    return Follow(previous)  # a concurrent acquire started watching it
                previous.close()  # a finished fill of this key we watched before
            remote = RemoteFill(self, key_hex, holder_fill, holder_pid)
            self.remote[key_hex] = remote
            remote.start()
            return Follow(remote)
        return Bypass("lock-contention")

    def _try_lock(self, key_hex: str, fill_id: str) -> bool | float | tuple[int, str] | None:
        until = self._hit_for_miss_sync(key_hex)
        if until is not None:
            return until
        path = self.lock_path(key_hex)
        # the lock appears with its content or not at all: write a temp file, link it in
        tmp = self.dir / f".{key_hex}.{fill_id}.new"
        tmp.write_bytes(json.dumps({"pid": os.getpid(), "fill": fill_id}).encode())
        try:
            os.link(tmp, path)
        except FileExistsError:
            os.unlink(tmp)
            try:
                data = json.loads(path.read_bytes())
                if isinstance(data, int):
                    return data, ""  # a bare PID (written by hand or an older version)
                return int(data["pid"]), str(data["fill"])
            except (OSError, ValueError, KeyError, TypeError):
                # being written right now, or torn by a crash: judge by age
                try:
                    if time.time() - path.stat().st_mtime > 5.0:
                        path.unlink()
                except OSError:
                    pass
                return None
        os.unlink(tmp)
        return True  # markers of earlier fills are removed by the periodic sweep

    def _break_lock(self, key_hex: str, fill_id: str) -> None:
        with contextlib.suppress(OSError):
            (self.dir / f"{key_hex}.{fill_id}.done").write_bytes(Outcome.DANGLING.value.encode())
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.lock_path(key_hex).read_bytes())
            holder = "" if isinstance(data, int) else data.get("fill")
            if holder == fill_id:
                self.lock_path(key_hex).unlink()

    async def _write_marker(self, fill: LocalFill, kind: str, data: bytes) -> None:
        if not self.across_processes:
            return
        path = self.marker_path(fill.key_hex, fill.fill_id, kind)

        def _write() -> None:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.rename(tmp, path)

        try:
            await self._io(_write)
        except OSError as exc:
            log.warning("cannot write fill marker %s: %s", path, exc)

    async def _release(self, fill: LocalFill) -> None:
        """Publish the outcome for other processes, then drop the lock."""
        assert fill.outcome is not None
        if not self.across_processes:
            if self.local.get(fill.key_hex) is fill:
                del self.local[fill.key_hex]
            return
        done = f"{fill.outcome.value} {fill.body_file or ''}".strip()
        await self._write_marker(fill, "done", done.encode())

        def _unlock() -> None:
            try:
                data = json.loads(self.lock_path(fill.key_hex).read_bytes())
                if data.get("fill") == fill.fill_id:
                    self.lock_path(fill.key_hex).unlink()
            except (OSError, ValueError):
                pass

        await self._io(_unlock)
        # only now: until the lock is gone, a sibling acquire must see this fill as ours
        if self.local.get(fill.key_hex) is fill:
            del self.local[fill.key_hex]

    def forget_remote(self, fill: Fill) -> None:
        if (
            isinstance(fill, RemoteFill)
            and self.remote.get(fill.key_hex) is fill
            and fill.outcome is not None
        ):
            del self.remote[fill.key_hex]
            fill.close()

    def sweep(self, now: float) -> None:
        """Remove markers of finished fills older than ``STALE_MARKER_AGE`` (sync, periodic)."""
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        running = {name[: -len(".lock")] for name in names if name.endswith(".lock")}
        for name in names:
            if name.endswith(".lock") or name.partition(".")[0] in running:
                continue  # a fill of this key still runs: its head marker is still needed
            path = self.dir / name
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > STALE_MARKER_AGE:
                    path.unlink()
