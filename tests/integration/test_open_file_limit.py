"""`edgeproxy serve` raises a low soft open-file limit to what its connections and mapped
bodies need (edgeproxy.fdlimit), as read from /proc/PID/limits of the running node."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edgeproxy.cache.store import MAX_MAPPED
from edgeproxy.fdlimit import fds_needed
from edgeproxy.seaweed import free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_edgeproxy_serve_starts_with_the_limit_its_connections_need(tmp_path: Path) -> None:
    """A node started with a soft limit of 512 runs with what its client and upstream
    connections and its mapped bodies need (as far as the hard limit allows)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip(f"hard open-file limit {hard}: nothing to raise to")
    needed = fds_needed(4096, 256, MAX_MAPPED)  # the defaults of both max_connections
    expected = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    port, admin = free_ports(2)
    conf = tmp_path / "node.toml"
    conf.write_text(
        f"""[node]
name = "fd-t"
role = "edge"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[store]
path = "{tmp_path / "store"}"
max_size = "64MiB"
ram_size = "8MiB"

[upstream]
parents = ["http://127.0.0.1:9"]

[[policy]]
name = "all"
path = "*"
default_ttl = "1h"
"""
    )

    log = tmp_path / "node.log"
    serve = [sys.executable, "-m", "edgeproxy.cli", "serve", "--config", str(conf)]
    with log.open("wb") as out:  # the soft limit set by the shell, then exec: the same PID
        proc = subprocess.Popen(
            ["sh", "-c", 'ulimit -S -n 512 && exec "$@"', "sh", *serve],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"node did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
        assert int(line.split()[3]) >= expected
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
