"""DiskStore: atomic publish, recovery at start, checksum verification, byte budget."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edgeproxy.cache.entry import Entry
from edgeproxy.cache.store import DiskStore


def _entry(key: str, path: str = "/a") -> Entry:
    now = time.time()
    return Entry(
        key_hex=key,
        path=path,
        status=200,
        reason="OK",
        headers=[("Content-Type", "text/plain"), ("Cache-Control", "max-age=60")],
        request_time=now,
        response_time=now,
        initial_age=0.0,
        lifetime=60.0,
        size=0,
        checksum="",
        body_file="",
    )


def _store(root: Path, **kw: int) -> DiskStore:
    return DiskStore(
        root,
        max_size=kw.get("max_size", 10_000_000),
        ram_size=kw.get("ram_size", 1_000_000),
        ram_object_max=kw.get("ram_object_max", 1000),
    )


async def _put(store: DiskStore, key: str, body: bytes) -> Entry:
    writer = store.new_writer(key)
    for i in range(0, len(body), 700):
        await writer.write(body[i : i + 700])
    entry = _entry(key)
    assert await store.publish(writer, entry)
    return entry


KEY_A = "aa" * 16
KEY_B = "bb" * 16
KEY_C = "cc" * 16


async def test_publish_then_lookup_and_restart(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.start()
    await _put(store, KEY_A, b"small")
    await _put(store, KEY_B, os.urandom(5000))
    entry = await store.lookup(KEY_A)
    assert entry is not None and store.ram_body(entry) == b"small"
    await store.close()

    again = _store(tmp_path)
    await again.start()
    await again.wait_loaded()
    assert set(again.index) == {KEY_A, KEY_B}
    big = await again.lookup(KEY_B)
    assert big is not None and not big.verified
    assert await again.ensure_readable(big)
    assert big.verified and big.mapped is not None and len(big.mapped) == 5000
    await again.close()


async def test_lookup_while_loading_returns_the_entry(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.start()
    await _put(store, KEY_A, b"x" * 100)
    await store.close()
    again = _store(tmp_path)
    await again.start()
    # no wait_loaded(): the lookup races the background index rebuild and must still find it
    entry = await again.lookup(KEY_A)
    assert entry is not None
    await again.wait_loaded()
    assert again.index[KEY_A] is entry or again.index[KEY_A].key_hex == KEY_A
    await again.close()


async def test_corrupt_body_is_dropped_on_first_use(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.start()
    entry = await _put(store, KEY_A, b"0123456789" * 50)
    body_path = store.body_path(entry)
    await store.close()
    raw = bytearray(body_path.read_bytes())
    raw[3] ^= 1
    body_path.write_bytes(bytes(raw))
    again = _store(tmp_path)
    await again.start()
    await again.wait_loaded()
    loaded = await again.lookup(KEY_A)
    assert loaded is not None
    assert not await again.ensure_readable(loaded)
    assert await again.lookup(KEY_A) is None
    assert again.corrupt_dropped == 1
    await again.close()


async def test_a_body_unreadable_for_lack_of_descriptors_is_kept(
    tmp_path: Path, monkeypatch
) -> None:
    """EMFILE/ENFILE/ENOMEM while loading a body say nothing of the body: the entry stays
    (not servable this time) and loads once descriptors are back; other errors drop it."""
    import errno

    store = _store(tmp_path, ram_object_max=100)
    await store.start()
    entry = await _put(store, KEY_A, os.urandom(5000))
    await store.close()
    again = _store(tmp_path, ram_object_max=100)
    await again.start()
    await again.wait_loaded()
    loaded = await again.lookup(KEY_A)
    assert loaded is not None
    real_dup = os.dup

    def no_fd(fd: int) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(os, "dup", no_fd)
    assert not await again.ensure_readable(loaded)
    assert not await again.ensure_readable(loaded)
    assert again.index.get(KEY_A) is loaded and again.body_path(entry).exists()
    assert again.resource_refusals == 2
    monkeypatch.setattr(os, "dup", real_dup)
    assert await again.ensure_readable(loaded) and loaded.mapped is not None
    assert bytes(loaded.mapped) == again.body_path(entry).read_bytes()

    def gone(fd: int) -> int:
        raise OSError(errno.EIO, "Input/output error")

    loaded.mapped = loaded.handle = None
    monkeypatch.setattr(os, "dup", gone)
    assert not await again.ensure_readable(loaded)
    assert await again.lookup(KEY_A) is None  # a read error of the body: dropped
    await again.close()


async def test_start_removes_temp_files_orphans_and_broken_metadata(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.start()
    entry = await _put(store, KEY_A, b"abc")
    await store.close()
    directory = store.body_path(entry).parent
    orphan = directory / f"{KEY_A}.deadbeef.body"  # a body whose metadata never got written
    orphan.write_bytes(b"torn")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    (tmp_path / "tmp" / "x.part").write_bytes(b"partial")
    broken_dir = tmp_path / "objects" / "cc" / "cc"
    broken_dir.mkdir(parents=True)
    (broken_dir / f"{KEY_C}.meta").write_bytes(b"{not json")

    again = _store(tmp_path)
    await again.start()
    await again.wait_loaded()
    assert not orphan.exists()
    assert not (tmp_path / "tmp" / "x.part").exists()
    assert not (broken_dir / f"{KEY_C}.meta").exists()
    assert set(again.index) == {KEY_A}
    await again.close()


async def test_budget_evicts_least_recently_used(tmp_path: Path) -> None:
    store = _store(tmp_path, max_size=2500, ram_object_max=10)
    await store.start()
    await _put(store, KEY_A, b"a" * 1000)
    await _put(store, KEY_B, b"b" * 1000)
    assert store.peek(KEY_A) is not None  # A is now more recent than B
    await _put(store, KEY_C, b"c" * 1000)
    assert store.used_bytes <= 2500
    assert set(store.index) == {KEY_A, KEY_C}
    assert store.evictions == 1
    await store.close()


async def test_replacing_an_entry_keeps_one_version(tmp_path: Path) -> None:
    store = _store(tmp_path, ram_object_max=10)
    await store.start()
    first = await _put(store, KEY_A, b"1" * 100)
    first_body = store.body_path(first)
    second = await _put(store, KEY_A, b"2" * 200)
    await store.close()  # waits for the background unlink
    assert not first_body.exists()
    assert store.body_path(second).read_bytes() == b"2" * 200
    assert store.used_bytes == 200


async def test_aborted_writer_publishes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    await store.start()
    writer = store.new_writer(KEY_A)
    await writer.write(b"x" * 300_000)  # flushed to the temp file
    await writer.abort()
    assert await store.lookup(KEY_A) is None
    assert list((tmp_path / "tmp").iterdir()) == []
    await store.close()


async def test_oversized_objects_are_not_admitted(tmp_path: Path) -> None:
    store = _store(tmp_path, max_size=1000)
    await store.start()
    writer = store.new_writer(KEY_A)
    await writer.write(b"x" * 900)
    assert not await store.publish(writer, _entry(KEY_A))
    assert store.used_bytes == 0 and await store.lookup(KEY_A) is None
    await store.close()


async def test_mapped_bodies_are_bounded(tmp_path: Path, monkeypatch) -> None:
    """Each mapping holds a file descriptor: only MAX_MAPPED stay mapped; an entry whose
    mapping was released is mapped again on its next use."""
    import edgeproxy.cache.store as store_module

    monkeypatch.setattr(store_module, "MAX_MAPPED", 2)
    store = _store(tmp_path, ram_object_max=10)
    await store.start()
    keys = [f"{i:02x}" * 16 for i in range(3)]
    entries = [await _put(store, key, bytes([i]) * 100) for i, key in enumerate(keys)]
    for entry in entries:
        assert await store.ensure_readable(entry)
    assert entries[0].mapped is None
    assert entries[1].mapped is not None and entries[2].mapped is not None
    assert await store.ensure_readable(entries[0])
    assert bytes(entries[0].mapped) == b"\x00" * 100
    await store.close()


async def test_the_mapping_served_last_is_kept_longest(tmp_path: Path, monkeypatch) -> None:
    """Mappings are released least recently served first: a hot body stays mapped however
    many others are mapped after it."""
    import edgeproxy.cache.store as store_module

    monkeypatch.setattr(store_module, "MAX_MAPPED", 2)
    store = _store(tmp_path, ram_object_max=10)
    await store.start()
    keys = [f"{i:02x}" * 16 for i in range(3)]
    entries = [await _put(store, key, bytes([i]) * 100) for i, key in enumerate(keys)]
    assert await store.ensure_readable(entries[0])
    assert await store.ensure_readable(entries[1])
    store.served_mapped(entries[0])  # a hit on the first: the second is now the oldest
    assert await store.ensure_readable(entries[2])
    assert entries[0].mapped is not None and entries[2].mapped is not None
    assert entries[1].mapped is None
    await store.close()


async def test_a_dropped_entry_lets_go_of_its_mapping(tmp_path: Path) -> None:
    """Removing an entry releases its mapping and open file in this process (its disk space
    is not held by a mapping nobody will serve from again)."""
    store = _store(tmp_path, ram_object_max=10)
    await store.start()
    entry = await _put(store, KEY_A, b"x" * 100)
    assert await store.ensure_readable(entry) and entry.mapped is not None
    handle = entry.handle
    assert handle is not None
    assert await store.drop(KEY_A)
    assert entry.mapped is None and entry.handle is None
    del handle
    await store.close()


async def _cut_publish(store: DiskStore, key: str, monkeypatch) -> Path:
    """Publish ``key`` as a process killed between the body's rename and the metadata's
    would: returns the body left in objects/ (its metadata stays in tmp/)."""
    real_rename = os.rename

    def dies_before_the_metadata(src, dst, *args, **kwargs):
        if str(dst).endswith(".meta"):
            raise SystemExit("killed")  # stands for kill -9: nothing after runs
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", dies_before_the_metadata)
    writer = store.new_writer(key)
    await writer.write(b"never published")
    entry = _entry(key)
    with pytest.raises(SystemExit):
        await store.publish(writer, entry)
    monkeypatch.setattr(os, "rename", real_rename)
    body = store._dir_for(key) / entry.body_file
    assert body.exists() and not store.meta_path(key).exists()
    return body


async def test_a_body_moved_in_by_a_process_killed_before_its_metadata_is_removed(
    tmp_path: Path, monkeypatch
) -> None:
    """Publishing writes the metadata to tmp/ first, then renames the body into objects/,
    then the metadata: a process dying between the two renames leaves a body nobody names,
    which remove_temporary_files_of (the master, after reaping the worker) removes; a body
    whose metadata did land stays."""
    from edgeproxy.cache.store import remove_temporary_files_of

    store = _store(tmp_path)
    await store.start()
    kept = await _put(store, KEY_B, b"published")
    orphan = await _cut_publish(store, KEY_A, monkeypatch)
    assert any(name.endswith(".meta") for name in os.listdir(tmp_path / "tmp"))
    assert remove_temporary_files_of(tmp_path, os.getpid()) >= 2  # the body, the .meta
    assert not orphan.exists() and not any(
        name.endswith(".meta") for name in os.listdir(tmp_path / "tmp")
    )
    assert store.body_path(kept).read_bytes() == b"published"
    await store.close()


async def test_a_fresh_start_removes_a_body_a_killed_node_moved_in_just_before(
    tmp_path: Path, monkeypatch
) -> None:
    """The whole node killed between the renames, restarted at once: the body is seconds
    old, and its metadata waits in tmp/; the fresh start removes both (a body only the
    dead process's tmp/ metadata names is nobody's)."""
    store = _store(tmp_path)
    await store.start()
    kept = await _put(store, KEY_B, b"published")
    orphan = await _cut_publish(store, KEY_A, monkeypatch)
    await store.close()

    again = _store(tmp_path)
    await again.start()
    await again.wait_loaded()
    assert not orphan.exists()
    assert os.listdir(tmp_path / "tmp") == []
    assert set(again.index) == {KEY_B}
    assert again.body_path(kept).read_bytes() == b"published"
    await again.close()


async def test_the_scan_removes_a_fresh_unnamed_body_and_keeps_one_in_flight(
    tmp_path: Path, monkeypatch
) -> None:
    """A worker's scan of a shared store runs while its siblings publish: a body whose
    metadata waits in tmp/ is in flight and stays, however new; a body nothing names goes,
    however new (an entry replaced by a process killed before it unlinked the old body)."""
    store = _store(tmp_path)
    await store.start()
    await _put(store, KEY_B, b"published")
    in_flight = await _cut_publish(store, KEY_A, monkeypatch)
    unnamed = store._dir_for(KEY_B) / f"{KEY_B}.0123abcd.body"  # written just now
    unnamed.write_bytes(b"replaced")
    await store.close()

    # a worker: tmp/ belongs to its live siblings
    worker = DiskStore(
        tmp_path, max_size=10_000_000, ram_size=1_000_000, ram_object_max=1000, shared=True
    )
    await worker.start()
    await worker.wait_loaded()
    assert in_flight.exists()
    assert not unnamed.exists()
    assert set(worker.index) == {KEY_B}
    await worker.close()


async def test_the_scan_keeps_a_body_whose_metadata_it_cannot_read(
    tmp_path: Path, monkeypatch
) -> None:
    """Out of descriptors while a sibling publishes: the metadata in tmp/ naming the body
    cannot be read, so nobody can tell the body is in flight; it stays."""
    import errno

    store = _store(tmp_path)
    await store.start()
    in_flight = await _cut_publish(store, KEY_A, monkeypatch)
    await store.close()
    real_read = Path.read_bytes

    def short_of_descriptors(self: Path) -> bytes:
        if self.parent.name == "tmp" and self.name.endswith(".meta"):
            raise OSError(errno.EMFILE, "Too many open files")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", short_of_descriptors)
    worker = DiskStore(
        tmp_path, max_size=10_000_000, ram_size=1_000_000, ram_object_max=1000, shared=True
    )
    await worker.start()
    await worker.wait_loaded()
    assert in_flight.exists()
    await worker.close()


async def test_a_failed_metadata_rename_leaves_no_body_behind(tmp_path: Path, monkeypatch) -> None:
    store = _store(tmp_path)
    await store.start()
    real_rename = os.rename

    def full(src, dst, *args, **kwargs):
        if str(dst).endswith(".meta"):
            raise OSError(28, "No space left on device")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", full)
    writer = store.new_writer(KEY_A)
    await writer.write(b"body")
    assert not await store.publish(writer, _entry(KEY_A))
    monkeypatch.setattr(os, "rename", real_rename)
    assert list((tmp_path / "objects").glob("*/*/*")) == []
    assert os.listdir(tmp_path / "tmp") == []
    assert await store.lookup(KEY_A) is None
    await store.close()


def test_remove_temporary_files_of_takes_only_that_process_files(tmp_path: Path) -> None:
    """What a dead worker left in tmp/ goes; a live sibling's files with a PID that merely
    contains the dead one's digits, and other names, stay."""
    from edgeproxy.cache.store import remove_temporary_files_of

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    dead = [f"{'a' * 32}.4242.0011aabb.part", f"{'b' * 32}.4242.ccdd0011.meta"]
    alive = [
        f"{'a' * 32}.42421.0011aabb.part",
        f"{'c' * 32}.424.4242abcd.part",
        f"{'d' * 32}.77.4242.part",
        "policy.state.4242",
        "notes.txt",
    ]
    for name in dead + alive:
        (tmp / name).write_bytes(b"x")
    assert remove_temporary_files_of(tmp_path, 4242) == len(dead)
    assert sorted(os.listdir(tmp)) == sorted(alive)
    assert remove_temporary_files_of(tmp_path, 4242) == 0
    assert remove_temporary_files_of(tmp_path / "missing", 4242) == 0


async def test_a_meta_replaced_while_read_is_read_again_not_dropped(tmp_path: Path) -> None:
    """A sibling republished the key between our read of its metadata and the check of the
    body it named (the old body already gone): the new metadata is read, nothing dropped.
    A meta that still names a missing body is dropped."""
    store = _store(tmp_path)
    await store.start()
    new = await _put(store, KEY_A, b"v2 body")
    meta = store.meta_path(KEY_A)
    old = _entry(KEY_A)
    old.size, old.body_file = 7, "gone.body"  # what the meta said a moment before
    stale_bytes = old.to_json()

    class ReplacedWhileRead(type(meta)):  # type: ignore[misc]
        reads = 0

        def read_bytes(self) -> bytes:
            ReplacedWhileRead.reads += 1
            return stale_bytes if ReplacedWhileRead.reads == 1 else super().read_bytes()

    found = store._read_meta_sync(ReplacedWhileRead(meta))
    assert found is not None and found.body_file == new.body_file
    assert meta.exists() and (meta.parent / new.body_file).exists()

    meta.write_bytes(stale_bytes)  # now the meta itself names the missing body
    assert store._read_meta_sync(meta) is None
    assert not meta.exists()
    await store.close()
