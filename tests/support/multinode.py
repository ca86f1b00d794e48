"""A multi-process node (``workers = 2``: a master and two workers) as a subprocess of the
test, in front of a scripted origin; ended by its PID (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[2]
TOKEN_ENV = "EDGEPROXY_ADMIN_TOKEN"

WORKERS_TOML = """\
[node]
name = "edge-mp"
role = "edge"
region = "eu-west"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
workers = 2

[store]
path = "{store}"

[upstream]
parents = ["http://127.0.0.1:{origin_port}"]

[[policy]]
name = "default"
path = "*"
default_ttl = "1h"
max_ttl = "1d"
{policy_extra}
"""

SERVE = "import sys; from edgeproxy.app import serve; from edgeproxy.config import load_config; "
SERVE += "serve(load_config(sys.argv[1]))"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MultiNode:
    """``edgeproxy serve`` of a 2-worker node; ``policy_extra``: more lines of its policy;
    ``token``: the admin API's bearer token (in its environment)."""

    def __init__(
        self, tmp_path: Path, origin_port: int, *, token: str = "", policy_extra: str = ""
    ) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.config = tmp_path / "node.toml"
        self.store = tmp_path / "store"
        self.config.write_text(
            WORKERS_TOML.format(
                port=self.port,
                admin_port=self.admin_port,
                store=self.store,
                origin_port=origin_port,
                policy_extra=policy_extra,
            )
        )
        self.token = token
        self.log = tmp_path / "node.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"
        self.admin_base = f"http://127.0.0.1:{self.admin_port}"

    async def start(self) -> None:
        """Start it and wait (bounded) until both workers are up."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        if self.token:
            env[TOKEN_ENV] = self.token
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", SERVE, str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(REPO),
                env=env,
            )
        deadline = time.monotonic() + 30
        workers: list[int] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            while len(workers) < 2:
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, self.log.read_text()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with s.get(self.admin_base + "/healthz") as r:
                        workers = (await r.json()).get("listening", [])
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
