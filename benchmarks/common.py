"""Shared pieces of the benchmark scripts: processes, tools, wrk, nginx, Varnish, SeaweedFS,
edgeproxy nodes, a delaying relay, the catalog, reports and a PNG chart.

Contract:

* Everything a benchmark starts is a :class:`Managed` process, started with its output in a
  log file and stopped by its PID (SIGTERM, then SIGKILL), together with the descendants it
  had (nginx workers, Varnish's child, edgeproxy's workers). Only 127.0.0.1 is used.
* :func:`parse_wrk` reads wrk's text output (``--latency``) into a :class:`WrkResult`; a
  line ``BENCH_JSON {...}`` printed by a Lua script's ``done()`` (``zipf_mix.lua``) is parsed
  into ``WrkResult.script``. :func:`run_wrk` runs wrk (pinned with ``taskset`` when asked) and
  accounts the server's CPU time and everybody else's from /proc.
* The config writers (:func:`nginx_conf`, :func:`varnish_vcl`, :func:`edge_toml`) are pure
  functions of their arguments (no I/O), so the unit tests check them without processes. The
  three systems get the same TTLs per path (the reference deployment's, :data:`REFERENCE_TTLS`),
  used when the origin sends no freshness (SeaweedFS sends none).
* :func:`catalog` generates the objects (deterministic for a seed) shaped like the reference
  deployment's content; :func:`write_catalog_file` writes the list ``zipf_mix.lua`` reads.
* :class:`DelayRelay` is a TCP relay that delays every chunk, each direction, by a one-way
  delay (latency injection without netem) and counts the requests and bytes it carried;
  :class:`RelayThread` runs one in a background thread.
* :func:`png_bar_chart` writes a PNG with zlib only (a 5x7 bitmap font for the labels).

Run from anywhere; the scripts import it as ``common`` (their own directory is on sys.path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
KiB = 1024
MiB = 1024 * KiB
SERVER_CPU = "0"
CLIENT_CPU = "1"
ACCESS_ENV = "EDGEPROXY_BENCH_ACCESS_KEY"
SECRET_ENV = "EDGEPROXY_BENCH_SECRET_KEY"

#: path prefix -> default TTL, as the reference deployment's policies (REFERENCE.md) and
#: conf/edge.toml; the last entry is the catch-all. nginx/Varnish/edgeproxy notation alike.
REFERENCE_TTLS: tuple[tuple[str, str], ...] = (
    ("/audio/", "1d"),
    ("/images/", "7d"),
    ("/api/", "5m"),
    ("/", "1h"),
)
COMPRESSIBLE_TYPES = ("application/json", "text/plain", "text/css", "application/javascript")


def import_edgeproxy() -> None:
    """Make ``edgeproxy`` importable when the package is not installed."""
    try:
        import edgeproxy  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the processes started here: no HTTP proxy variables (everything
    is on loopback), the repository on PYTHONPATH, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


# ---------------------------------------------------------------------------------------------
# Ports, processes
# ---------------------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (edgeproxy.seaweed's: all bound at once, then
    released)."""
    import_edgeproxy()
    from edgeproxy.seaweed import free_ports as bound_then_released

    return bound_then_released(count)


def free_port() -> int:
    return free_ports(1)[0]


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads' children), read from /proc."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid`` (children, grandchildren, ...)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in child_pids(todo.pop()):
            if child not in out:
                out.append(child)
                todo.append(child)
    return out


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def busy_seconds() -> float:
    """CPU time all CPUs spent busy since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (VmRSS), None when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * KiB
    except OSError:
        return None
    return 0


def open_fds(pid: int) -> int | None:
    """Open file descriptors of ``pid``, None when it is gone (or not ours to see)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class QuietWaiter:
    """Before a run, wait while other processes keep more than ``threshold`` cores busy,
    spending at most ``budget`` seconds in total (then runs go ahead regardless)."""

    def __init__(self, budget: float, threshold: float = 0.3) -> None:
        self.budget = budget
        self.threshold = threshold
        self.waited = 0.0

    def wait(self) -> None:
        while self.waited < self.budget:
            before = busy_seconds()
            time.sleep(0.5)
            if (busy_seconds() - before) / 0.5 <= self.threshold:
                return
            self.waited += 0.5


@dataclass
class Managed:
    """A subprocess a benchmark started; :meth:`stop` ends it and its descendants by PID
    (``stop_signal``, then SIGKILL after ``timeout``)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def pids(self) -> list[int]:
        """The process and its descendants (nginx workers, edgeproxy workers, ...)."""
        return [self.pid, *descendants(self.pid)] if self.alive() else []

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-limit:].decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        family = descendants(self.pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.process.wait(timeout)
        for pid in family:  # left behind by a killed parent (e.g. nginx workers)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def start_process(
    name: str,
    args: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
) -> Managed:
    """Start ``args`` with stdout and stderr appended to ``log_path``, stdin closed."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd is not None else None,
        )
    return Managed(name, process, log_path)


def wait_http(managed: Managed, url: str, timeout: float = 30.0) -> None:
    """Poll ``url`` until it answers (any status); fail with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(
                f"{managed.name} exited with {managed.process.returncode}:\n{managed.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    raise RuntimeError(f"{managed.name} not ready after {timeout:.0f} s ({last})")


def wait_listening(managed: Managed, port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(f"{managed.name} exited:\n{managed.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{managed.name} did not listen on {port} within {timeout:.0f} s")


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    """One GET on a new connection: (status, lower-cased headers, body); errors returned."""
    request = urllib.request.Request(url, headers={"Connection": "close", **(headers or {})})
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def http_json(url: str, timeout: float = 10.0) -> dict[str, Any]:
    with _NO_PROXY.open(url, timeout=timeout) as response:
        return dict(json.load(response))


@contextlib.contextmanager
def signals_raise_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt inside the block (a shell may start
    background jobs with SIGINT ignored), so ``finally`` blocks stop what was started."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------

#: tool -> Debian package that provides it
DEBIAN_PACKAGES = {"nginx": "nginx", "wrk": "wrk", "varnishd": "varnish", "taskset": "util-linux"}


def binary(name: str) -> str | None:
    """``name`` on PATH, or in /usr/sbin (not on every PATH)."""
    found = shutil.which(name)
    if found:
        return found
    sbin = f"/usr/sbin/{name}"
    return sbin if os.access(sbin, os.X_OK) else None


def nginx_binary() -> str | None:
    return binary("nginx")


def varnishd_binary() -> str | None:
    return binary("varnishd")


def ensure_tools(tools: Iterable[str], notes: list[str] | None = None) -> list[str]:
    """Install the Debian packages of the missing ``tools`` with apt-get (root only; one
    ``apt-get update`` when the first install fails). Returns the tools still missing; each
    problem is appended to ``notes`` (or printed)."""
    missing = [t for t in tools if binary(t) is None]
    if not missing:
        return []
    packages = sorted({DEBIAN_PACKAGES.get(t, t) for t in missing})

    def say(message: str) -> None:
        if notes is not None:
            notes.append(message)
        print(f"warning: {message}", file=sys.stderr)

    if os.geteuid() != 0:
        say(f"missing {', '.join(missing)}; as root: apt-get install -y {' '.join(packages)}")
        return missing
    print(f"installing {' '.join(packages)} (apt-get) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    try:
        done = subprocess.run(install, env=env, timeout=900, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, timeout=600, capture_output=True)
            subprocess.run(install, env=env, timeout=900, capture_output=True, check=True)
    except (subprocess.SubprocessError, OSError) as exc:
        say(f"apt-get install {' '.join(packages)} failed: {exc}")
    still = [t for t in missing if binary(t) is None]
    if still:
        say(f"still missing after apt-get: {', '.join(still)}")
    return still


def tool_version(args: Sequence[str]) -> str:
    """First line of a ``--version``-like command's output, ``?`` when it fails."""
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0].strip()


def machine_info() -> list[tuple[str, str]]:
    """nproc, CPU, kernel, Python, nginx/Varnish/wrk/weed versions, commit, load."""
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = tool_version(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "edgeproxy"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    return [
        ("nproc", str(os.cpu_count())),
        ("cpu", cpu or platform.processor() or "?"),
        ("kernel", platform.release()),
        ("python", platform.python_version()),
        ("nginx", tool_version([nginx_binary() or "nginx", "-v"])),
        ("varnishd", tool_version([varnishd_binary() or "varnishd", "-V"])),
        ("wrk", tool_version(["wrk", "-v"])),
        ("weed", tool_version(["weed", "version"])),
        ("edgeproxy commit", commit + (" + uncommitted changes in edgeproxy/" if dirty else "")),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    """One wrk run. Latencies in ms; ``transfer_bps`` in bytes per second."""

    rps: float
    requests: int
    mean_ms: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    transfer_bps: float
    socket_errors: int = 0
    non_2xx: int = 0
    duration: float = 0.0
    server_cpu: float = 0.0  # CPU seconds the server used during the run
    other_cpu: float = 0.0  # CPU seconds used by everything but the server and wrk
    script: dict[str, Any] = field(default_factory=dict)  # BENCH_JSON from the Lua script

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx

    @property
    def per_cpu(self) -> float:
        """Requests per CPU second of the server: what a contended machine disturbs least."""
        return self.requests / self.server_cpu if self.server_cpu else 0.0

    @property
    def cpu_share(self) -> float:
        return self.server_cpu / self.duration if self.duration else 0.0

    @property
    def background(self) -> float:
        """Other processes' CPU use during the run, in cores (0.5 = half a core)."""
        return self.other_cpu / self.duration if self.duration else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "rps": self.rps,
            "requests": self.requests,
            "mean_ms": self.mean_ms,
            "p50_ms": self.p50_ms,
            "p75_ms": self.p75_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "transfer_bps": self.transfer_bps,
            "errors": self.errors,
            "socket_errors": self.socket_errors,
            "non_2xx": self.non_2xx,
            "duration": self.duration,
            "server_cpu": self.server_cpu,
            "per_cpu": self.per_cpu,
            "background": self.background,
            "script": self.script,
        }


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_UNITS_BYTES = {"B": 1, "KB": KiB, "MB": MiB, "GB": 1024 * MiB, "TB": 1024 * 1024 * MiB}


def wrk_ms(text: str) -> float:
    """wrk's latency notation (``812.00us``, ``1.23ms``, ``2.00s``, ``1.00m``) -> ms."""
    match = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def wrk_bytes(text: str) -> float:
    """wrk's size notation (``512.00B``, ``1.50KB``, ``3.21MB``, ``1.02GB``; powers of 1024)."""
    match = re.fullmatch(r"([0-9.]+)(B|KB|MB|GB|TB)", text.strip())
    if match is None:
        raise ValueError(f"unexpected wrk size {text!r}")
    return float(match.group(1)) * _UNITS_BYTES[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """wrk's report (with ``--latency``) -> :class:`WrkResult`. Raises ValueError when the
    summary lines are missing. A ``BENCH_JSON {...}`` line (from a Lua ``done()``) fills
    ``script``; its latencies, when present, override the text ones (they are unrounded)."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+)", output, re.M)
    lat = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", output, re.M)
    if not (rps and total and lat):
        raise ValueError(f"cannot parse wrk output:\n{output}")
    pct: dict[int, float] = {}
    for q, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M):
        pct[int(q)] = wrk_ms(value)
    transfer = re.search(r"^Transfer/sec:\s+(\S+)", output, re.M)
    sock = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    script: dict[str, Any] = {}
    for line in output.splitlines():
        if line.startswith("BENCH_JSON "):
            script = json.loads(line[len("BENCH_JSON ") :])
    mean = wrk_ms(lat.group(1))
    result = WrkResult(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        mean_ms=mean,
        p50_ms=pct.get(50, float("nan")),
        p75_ms=pct.get(75, float("nan")),
        p90_ms=pct.get(90, float("nan")),
        p99_ms=pct.get(99, float("nan")),
        max_ms=wrk_ms(lat.group(3)),
        transfer_bps=wrk_bytes(transfer.group(1)) if transfer else 0.0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        duration=wrk_ms(total.group(2)) / 1000,
        script=script,
    )
    latency = script.get("latency_ms")
    if isinstance(latency, dict):
        result.mean_ms = float(latency.get("mean", result.mean_ms))
        result.p50_ms = float(latency.get("p50", result.p50_ms))
        result.p90_ms = float(latency.get("p90", result.p90_ms))
        result.p99_ms = float(latency.get("p99", result.p99_ms))
        result.max_ms = float(latency.get("max", result.max_ms))
    return result


def wrk_command(
    url: str,
    duration: float,
    connections: int,
    *,
    threads: int = 1,
    cpu: str | None = CLIENT_CPU,
    script: Path | None = None,
    script_args: Sequence[str] = (),
    headers: Mapping[str, str] | None = None,
    timeout_s: int = 10,
) -> list[str]:
    """The wrk command line (pinned with ``taskset -c cpu`` unless ``cpu`` is None); wrk
    takes whole seconds, so ``duration`` is rounded (at least 1)."""
    args = ["taskset", "-c", cpu] if cpu is not None else []
    seconds = max(1, round(duration))
    args += ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    args += [f"--timeout={timeout_s}s"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if script is not None:
        args += ["-s", str(script)]
    args.append(url)
    if script_args:
        args += ["--", *script_args]
    return args


def run_wrk(
    url: str,
    duration: float,
    connections: int,
    *,
    server_pids: Sequence[int] = (),
    **options: Any,
) -> WrkResult:
    """Run wrk (see :func:`wrk_command` for ``options``) and account the CPU time of
    ``server_pids`` and of everything else during the run."""
    args = wrk_command(url, duration, connections, **options)
    cpu_before, busy_before = cpu_seconds(server_pids), busy_seconds()
    wrk_before = children_cpu_seconds()
    done = subprocess.run(args, capture_output=True, text=True, timeout=duration + 90)
    cpu_used = cpu_seconds(server_pids) - cpu_before
    busy = busy_seconds() - busy_before
    wrk_cpu = children_cpu_seconds() - wrk_before
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    result = parse_wrk(done.stdout)
    if not result.duration:
        result.duration = duration
    result.server_cpu = cpu_used
    result.other_cpu = max(0.0, busy - cpu_used - wrk_cpu)
    return result


# ---------------------------------------------------------------------------------------------
# nginx proxy_cache
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NginxCache:
    """An nginx ``proxy_cache`` in front of one origin, configured as an operator would:
    cache lock on, sendfile on, ``tcp_nopush off`` (Debian's default ``on`` stalls ~100 KiB
    cache hits by ~40 ms here), gzip on for text-like types (compressed per response), HTTP/1.1
    upstream keep-alive, ``proxy_cache_valid`` per path = :data:`REFERENCE_TTLS` (used when
    the origin sends no freshness). ``origin_prefix`` is put in front of the request URI
    upstream (``/bucket`` for a path-style S3 origin)."""

    workdir: Path
    port: int
    origin_port: int
    origin_prefix: str = ""
    workers: int | str = 1
    cpu_affinity: str | None = None  # worker_cpu_affinity, e.g. "01" or "auto"
    ttls: tuple[tuple[str, str], ...] = REFERENCE_TTLS
    valid_codes: str = "200"
    cache_lock_timeout: str | None = None
    max_cache: str = "4g"
    gzip: bool = True
    gzip_level: int = 6
    open_file_cache: bool = False
    extra_location: str = ""  # raw directives added to every location (e.g. slice)
    run_as_root: bool = False  # "user root;" (as root, workers would switch to nobody)


def nginx_conf(c: NginxCache) -> str:
    """The nginx.conf text for ``c`` (pure; the paths all live under ``c.workdir``)."""
    tmp = c.workdir
    lines = ["# generated by benchmarks/common.py", f"worker_processes {c.workers};"]
    if c.cpu_affinity:
        lines.append(f"worker_cpu_affinity {c.cpu_affinity};")
    lines += [
        "daemon off;",
        f"pid {tmp}/nginx.pid;",
        f"error_log {tmp}/error.log warn;",
    ]
    if c.run_as_root:
        lines.append("user root;")
    lines += [
        "events {",
        "    worker_connections 4096;",
        "}",
        "http {",
        "    access_log off;",
        "    sendfile on;",
        "    tcp_nopush off;",
        "    tcp_nodelay on;",
        "    keepalive_timeout 65;",
        "    keepalive_requests 100000;",
        "    default_type application/octet-stream;",
        f"    client_body_temp_path {tmp}/client_body;",
        f"    proxy_temp_path {tmp}/proxy_temp;",
        f"    fastcgi_temp_path {tmp}/fastcgi_temp;",
        f"    uwsgi_temp_path {tmp}/uwsgi_temp;",
        f"    scgi_temp_path {tmp}/scgi_temp;",
        f"    proxy_cache_path {tmp}/cache levels=1:2 keys_zone=bench:32m "
        f"max_size={c.max_cache} inactive=7d use_temp_path=off;",
    ]
    if c.gzip:
        lines += [
            "    gzip on;",
            "    gzip_proxied any;",
            "    gzip_vary on;",
            f"    gzip_comp_level {c.gzip_level};",
            "    gzip_min_length 1000;",
            f"    gzip_types {' '.join(COMPRESSIBLE_TYPES)};",
        ]
    if c.open_file_cache:
        lines.append("    open_file_cache max=1000 inactive=60s;")
    lines += [
        "    upstream origin {",
        f"        server 127.0.0.1:{c.origin_port};",
        "        keepalive 32;",
        "    }",
        "    server {",
        f"        listen 127.0.0.1:{c.port} backlog=4096;",
    ]
    for prefix, ttl in c.ttls:
        lines += [
            f"        location {prefix} {{",
            f"            proxy_pass http://origin{c.origin_prefix}$request_uri;",
            "            proxy_http_version 1.1;",
            '            proxy_set_header Connection "";',
            f"            proxy_set_header Host 127.0.0.1:{c.origin_port};",
            "            proxy_cache bench;",
            f"            proxy_cache_valid {c.valid_codes} {ttl};",
            "            proxy_cache_lock on;",
        ]
        if c.cache_lock_timeout:
            lines.append(f"            proxy_cache_lock_timeout {c.cache_lock_timeout};")
        lines += [f"            {line.strip()}" for line in c.extra_location.splitlines() if line]
        lines += [
            "            add_header X-Cache-Status $upstream_cache_status always;",
            "        }",
        ]
    lines += ["    }", "}", ""]
    return "\n".join(lines)


def start_nginx(name: str, c: NginxCache, cpu: str | None = None) -> Managed:
    """Write ``c``'s config, check it (``nginx -t``), start nginx in the foreground (pinned
    with ``taskset -c cpu`` when given) and wait until it listens."""
    nginx = nginx_binary()
    if nginx is None:
        raise RuntimeError("nginx not found (apt-get install nginx)")
    c.workdir.mkdir(parents=True, exist_ok=True)
    conf = c.workdir / "nginx.conf"
    conf.write_text(nginx_conf(c))
    base = [nginx, "-p", str(c.workdir), "-c", str(conf), "-e", str(c.workdir / "error.log")]
    test = subprocess.run([*base, "-t"], capture_output=True, text=True, timeout=30)
    if test.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
    args = (["taskset", "-c", cpu] if cpu is not None else []) + base
    managed = start_process(name, args, c.workdir / "stdout.log")
    managed.log_path = c.workdir / "error.log"
    wait_listening(managed, c.port)
    return managed


# ---------------------------------------------------------------------------------------------
# Varnish
# ---------------------------------------------------------------------------------------------


def _vcl_duration(ttl: str) -> str:
    """``1h``/``5m``/``7d`` (edgeproxy/nginx notation) are VCL durations as they are."""
    if not re.fullmatch(r"\d+(ms|s|m|h|d|w|y)", ttl):
        raise ValueError(f"not a VCL duration: {ttl!r}")
    return ttl


def varnish_vcl(
    origin_port: int,
    origin_prefix: str = "",
    ttls: Sequence[tuple[str, str]] = REFERENCE_TTLS,
    gzip: bool = True,
) -> str:
    """A VCL for Varnish in front of one origin, as close to the nginx config as VCL allows:
    every GET/HEAD looked up (cookies dropped), the URI prefixed with ``origin_prefix``
    upstream, a TTL per path prefix when the origin sends no Cache-Control/Expires, text-like
    types stored gzipped (``do_gzip``: Varnish compresses once and serves the stored bytes),
    ``X-Cache-Status: HIT|MISS`` on answers. Request coalescing and ranges from the stored
    object are Varnish's defaults."""
    lines = [
        "vcl 4.1;",
        "# generated by benchmarks/common.py",
        "backend origin {",
        '    .host = "127.0.0.1";',
        f'    .port = "{origin_port}";',
        "    .first_byte_timeout = 60s;",
        "    .between_bytes_timeout = 60s;",
        "}",
        "sub vcl_recv {",
        "    unset req.http.Cookie;",
        '    if (req.method != "GET" && req.method != "HEAD") {',
        "        return (pass);",
        "    }",
        "    return (hash);",
        "}",
        "sub vcl_backend_fetch {",
    ]
    if origin_prefix:
        lines.append(f'    set bereq.url = "{origin_prefix}" + bereq.url;')
    lines += [
        f'    set bereq.http.Host = "127.0.0.1:{origin_port}";',
        "}",
        "sub vcl_backend_response {",
        "    if (!beresp.http.Cache-Control && !beresp.http.Expires) {",
    ]
    default = None
    branches = 0
    for prefix, ttl in ttls:
        if prefix == "/":
            default = ttl
            continue
        start = "        if" if branches == 0 else "        } elsif"
        lines.append(f'{start} (bereq.url ~ "^{origin_prefix}{prefix}") {{')
        lines.append(f"            set beresp.ttl = {_vcl_duration(ttl)};")
        branches += 1
    if default is not None:
        lines.append("        } else {" if branches else "        {")
        lines.append(f"            set beresp.ttl = {_vcl_duration(default)};")
    if branches or default is not None:
        lines.append("        }")
    lines.append("    }")
    if gzip:
        types = "|".join(re.escape(t) for t in COMPRESSIBLE_TYPES)
        lines += [
            f'    if (beresp.http.Content-Type ~ "^({types})") {{',
            "        set beresp.do_gzip = true;",
            "    }",
        ]
    lines += [
        "}",
        "sub vcl_deliver {",
        "    if (obj.hits > 0) {",
        '        set resp.http.X-Cache-Status = "HIT";',
        "    } else {",
        '        set resp.http.X-Cache-Status = "MISS";',
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def start_varnish(
    name: str,
    workdir: Path,
    port: int,
    origin_port: int,
    *,
    vcl: str | None = None,
    storage: str = "malloc,1g",
    cpu: str | None = None,
    ready_path: str = "/",
) -> Managed:
    """``varnishd -F`` (foreground) on 127.0.0.1:``port`` with ``-s storage``: the VCL text
    ``vcl`` (``-f``), or ``-b`` to the origin when None (Varnish's built-in VCL). ``-j none``:
    no privilege separation, so the temporary directory's permissions do not matter.
    Waits until ``ready_path`` answers."""
    varnishd = varnishd_binary()
    if varnishd is None:
        raise RuntimeError("varnishd not found (apt-get install varnish)")
    workdir.mkdir(parents=True, exist_ok=True)
    args = (["taskset", "-c", cpu] if cpu is not None else []) + [varnishd, "-F", "-j", "none"]
    args += ["-a", f"127.0.0.1:{port}", "-s", storage, "-n", str(workdir / "n"), "-T", "none"]
    if vcl is None:
        args += ["-b", f"127.0.0.1:{origin_port}"]
    else:
        path = workdir / "bench.vcl"
        path.write_text(vcl)
        args += ["-f", str(path)]
    managed = start_process(name, args, workdir / "varnishd.log")
    wait_http(managed, f"http://127.0.0.1:{port}{ready_path}")
    return managed


# ---------------------------------------------------------------------------------------------
# edgeproxy nodes
# ---------------------------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a TOML basic string is a JSON string for what we write


def reference_policies(
    ttls: Sequence[tuple[str, str]] = REFERENCE_TTLS,
    compress: bool = True,
    slice_threshold: str = "8MiB",
) -> str:
    """``[[policy]]`` tables with the reference deployment's TTLs and keys (conf/single.toml
    without the response headers, which nginx and Varnish do not add either); audio over
    ``slice_threshold`` is cached as 1 MiB slices (conf/edge.toml and conf/regional.toml:
    "1MiB")."""
    extra = {
        "/audio/": ['query_keys = ["quality", "format", "bitrate"]', "compress = false"],
        "/images/": ['query_keys = ["w", "h", "q", "format"]', 'header_keys = ["accept"]'],
    }
    out = []
    for prefix, ttl in ttls:
        name = prefix.strip("/") or "default"
        path = "*" if prefix == "/" else prefix + "*"
        out += ["[[policy]]", f"name = {_toml_str(name)}", f"path = {_toml_str(path)}"]
        out += [f"default_ttl = {_toml_str(ttl)}"]
        lines = extra.get(prefix, [])
        out += lines
        if compress and not any(line.startswith("compress") for line in lines):
            out.append("compress = true")
        if prefix == "/audio/":
            out += ['slice_size = "1MiB"', f"slice_threshold = {_toml_str(slice_threshold)}"]
        out.append("")
    return "\n".join(out)


def edge_toml(
    name: str,
    port: int,
    admin_port: int,
    store: Path,
    *,
    role: str = "edge",
    workers: int | str = 1,
    max_size: str = "4GiB",
    ram_size: str | None = None,
    ram_object_max: str | None = None,
    s3_endpoint: str | None = None,
    bucket: str = "bench",
    parents: Sequence[str] = (),
    policies: str | None = None,
) -> str:
    """A node config (pure). Exactly one of ``s3_endpoint`` (credentials from
    :data:`ACCESS_ENV`/:data:`SECRET_ENV`) and ``parents``. ``policies`` defaults to
    :func:`reference_policies`."""
    if (s3_endpoint is None) == (not parents):
        raise ValueError("need exactly one of s3_endpoint and parents")
    w = workers if isinstance(workers, int) else _toml_str(workers)
    lines = [
        "# generated by benchmarks/common.py",
        "[node]",
        f"name = {_toml_str(name)}",
        f"role = {_toml_str(role)}",
        f'listen = "127.0.0.1:{port}"',
        f'admin_listen = "127.0.0.1:{admin_port}"',
        f"workers = {w}",
        "",
        "[store]",
        f"path = {_toml_str(str(store))}",
        f"max_size = {_toml_str(max_size)}",
    ]
    if ram_size is not None:
        lines.append(f"ram_size = {_toml_str(ram_size)}")
    if ram_object_max is not None:
        lines.append(f"ram_object_max = {_toml_str(ram_object_max)}")
    lines.append("")
    if s3_endpoint is not None:
        lines += [
            "[upstream.s3]",
            f"endpoint = {_toml_str(s3_endpoint)}",
            f"bucket = {_toml_str(bucket)}",
            f"access_key_env = {_toml_str(ACCESS_ENV)}",
            f"secret_key_env = {_toml_str(SECRET_ENV)}",
        ]
    else:
        lines += ["[upstream]", "parents = [" + ", ".join(_toml_str(p) for p in parents) + "]"]
    lines += ["", policies if policies is not None else reference_policies()]
    return "\n".join(lines).rstrip("\n") + "\n"


@dataclass
class Node:
    """An edgeproxy node started here."""

    name: str
    managed: Managed
    port: int
    admin_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}/stats"

    def stats(self) -> dict[str, Any]:
        return http_json(self.stats_url)


def start_edgeproxy(
    name: str,
    workdir: Path,
    config_text: str,
    port: int,
    admin_port: int,
    *,
    env: Mapping[str, str] | None = None,
    cpu: str | None = None,
    workers: int = 1,
) -> Node:
    """``python -m edgeproxy.cli serve --config FILE`` (pinned when ``cpu`` is given); waits
    until ``/healthz`` answers with all ``workers`` up."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "node.toml"
    config.write_text(config_text)
    args = (["taskset", "-c", cpu] if cpu is not None else []) + [sys.executable, "-m"]
    args += ["edgeproxy.cli", "serve", "--config", str(config)]
    managed = start_process(name, args, workdir / "node.log", env=child_env(env), cwd=REPO_ROOT)
    node = Node(name, managed, port, admin_port)
    health = f"http://127.0.0.1:{admin_port}/healthz"
    deadline = time.monotonic() + 60
    while True:
        wait_http(managed, health, timeout=max(1.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError, ValueError):
            answer = http_json(health)
            if workers <= 1 or len(answer.get("listening", [])) >= workers:
                wait_listening(managed, port, timeout=10)
                return node
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: not all workers up:\n{managed.log_tail()}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# SeaweedFS and the catalog
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogObject:
    """One object of the generated catalog; ``rank`` is its popularity rank within ``kind``
    (0 = most popular); the body (exactly ``size`` bytes) is made from ``seed`` on demand
    (:meth:`body`)."""

    kind: str  # "audio" | "image" | "json" | "bench"
    key: str
    size: int
    content_type: str
    rank: int
    seed: int

    def body(self) -> bytes:
        rng = random.Random(self.seed)
        if self.content_type == "application/json":
            return json_document(rng, self.size)
        return rng.randbytes(self.size)


_WORDS = (  # noqa: SIM905
    "midnight river echo velvet neon summer ghost golden paper satellite ocean ember glass "
    "wild silver city dream thunder honey static fever garden northern electric hollow"
).split()


def json_document(rng: random.Random, size: int) -> bytes:
    """A JSON listing of tracks of about ``size`` bytes (compresses like real API answers:
    gzip ~70-80 %, as the reference deployment says)."""
    tracks: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"version": 3, "market": rng.choice(["US", "GB", "DE", "JP"])}
    doc["tracks"] = tracks
    while True:
        words = rng.sample(_WORDS, 3)
        tracks.append(
            {
                "id": f"{rng.getrandbits(64):016x}",
                "title": " ".join(w.title() for w in words[:2]),
                "artist": {"id": f"{rng.getrandbits(40):010x}", "name": words[2].title()},
                "duration_ms": rng.randint(120_000, 420_000),
                "explicit": rng.random() < 0.1,
                "popularity": rng.randint(0, 100),
                "genres": rng.sample(["pop", "rock", "jazz", "folk", "indie", "ambient"], 2),
                "preview_url": f"/audio/preview-{rng.getrandbits(32):08x}.mp3",
            }
        )
        text = json.dumps(doc, separators=(",", ":")).encode()
        if len(text) >= size or len(tracks) > 10_000:
            return text


#: audio formats: (extension, content type, nominal size in bytes) from REFERENCE.md
AUDIO_FORMATS = (
    ("mp3", "audio/mpeg", 8_000_000),  # 320 kbps MP3 ~8 MB
    ("m4a", "audio/mp4", 6_000_000),  # 256 kbps AAC ~6 MB
    ("m4a", "audio/mp4", 3_000_000),  # 128 kbps AAC ~3 MB
    ("opus", "audio/ogg", 4_000_000),  # Opus ~4 MB
)
#: album art per album: (suffix, content type, nominal size)
IMAGE_VARIANTS = (
    ("thumb.webp", "image/webp", 50_000),
    ("cover.webp", "image/webp", 400_000),
    ("cover.jpg", "image/jpeg", 600_000),
)
PLACEHOLDERS = 4  # ~5 KB placeholders, the most requested images
HIT_SIZES: tuple[tuple[str, int], ...] = (
    ("1 KiB", KiB),
    ("100 KiB", 100 * KiB),
    ("1 MiB", MiB),
    ("8 MiB", 8 * MiB),
)


def hit_key(label: str) -> str:
    """The catalog key of the hit-benchmark object of size ``label`` (``"1 KiB"``)."""
    return "bench/obj-" + label.replace(" ", "").lower() + ".bin"


def catalog(
    tracks: int, albums: int, api_docs: int, listings: int = 4, seed: int = 9
) -> list[CatalogObject]:
    """The generated catalog, deterministic for its arguments: ``tracks`` audio files (the
    four formats of the reference in turn, sizes +-12 % around nominal), ``albums`` x three
    album-art variants plus a few placeholders, ``api_docs`` JSON track documents of 1-3 KB
    and ``listings`` JSON listings of ~50 KB, and the hit-benchmark objects (1 KiB - 8 MiB of
    random bytes under ``bench/``). Popularity rank = order within the kind."""
    rng = random.Random(seed)
    out: list[CatalogObject] = []

    def add(kind: str, key: str, size: int, ctype: str, rank: int) -> None:
        seed = rng.getrandbits(48)
        if ctype == "application/json":  # a document of about ``size``: measure it
            size = len(json_document(random.Random(seed), size))
        out.append(CatalogObject(kind, key, size, ctype, rank, seed))

    for i in range(tracks):
        ext, ctype, nominal = AUDIO_FORMATS[i % len(AUDIO_FORMATS)]
        size = int(nominal * rng.uniform(0.88, 1.12))
        add("audio", f"audio/track-{i:04d}.{ext}", size, ctype, i)
    rank = 0
    for i in range(PLACEHOLDERS):
        add(
            "image",
            f"images/placeholder-{i}.webp",
            int(5_000 * rng.uniform(0.9, 1.1)),
            "image/webp",
            rank,
        )
        rank += 1
    for a in range(albums):
        for suffix, ctype, nominal in IMAGE_VARIANTS:
            size = int(nominal * rng.uniform(0.85, 1.15))
            add("image", f"images/album-{a:04d}/{suffix}", size, ctype, rank)
            rank += 1
    step = max(1, api_docs // max(1, listings))
    rank = 0
    for i in range(api_docs):
        if listings and i % step == step // 2 and i // step < listings:
            add("json", f"api/listings/{i // step}.json", 50 * KiB, "application/json", rank)
            rank += 1
        add("json", f"api/tracks/{i}.json", rng.randint(1_000, 3_000), "application/json", rank)
        rank += 1
    for i, (label, size) in enumerate(HIT_SIZES):
        add("bench", hit_key(label), size, "application/octet-stream", i)
    return out


def write_catalog_file(path: Path, objects: Iterable[CatalogObject], prefix: str = "") -> None:
    """The list ``zipf_mix.lua`` reads: ``kind<TAB>/prefix/key<TAB>size`` a line, in
    popularity order within each kind (hit-benchmark objects left out)."""
    lines = [
        f"{o.kind}\t{prefix}/{o.key}\t{o.size}"
        for o in sorted(objects, key=lambda o: (o.kind, o.rank))
        if o.kind != "bench"
    ]
    path.write_text("\n".join(lines) + "\n")


def allow_anonymous_reads(origin: Any, bucket: str) -> None:
    """Bucket policy: anonymous ``s3:GetObject`` on ``bucket`` (for nginx and Varnish, which
    cannot sign SigV4; edgeproxy keeps signing). Checked: raises when still refused."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "BenchPublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": ["s3:GetObject"],
                "Resource": [f"arn:aws:s3:::{bucket}/*"],
            }
        ],
    }
    response = origin.request(
        "PUT",
        f"/{bucket}?policy",
        data=json.dumps(policy).encode(),
        headers={"Content-Type": "application/json"},
    )
    if response.status not in (200, 204):
        raise RuntimeError(f"PUT bucket policy: {response.status} {response.body[:300]!r}")


def start_seaweed(
    workdir: Path, bucket: str, objects: Sequence[CatalogObject], access: str, secret: str
) -> Any:
    """SeaweedFS (``weed mini``, SigV4 enforced) with ``bucket`` holding ``objects`` and a
    public-read bucket policy; returns the started :class:`edgeproxy.seaweed.SeaweedServer`
    (the caller stops it). Uploads run on 4 threads."""
    import_edgeproxy()
    from concurrent.futures import ThreadPoolExecutor

    from edgeproxy.seaweed import SeaweedServer

    workdir.mkdir(parents=True, exist_ok=True)
    server = SeaweedServer(workdir, access, secret)
    server.start(timeout=60)
    try:
        server.create_bucket(bucket)

        def put(o: CatalogObject) -> None:
            server.put_object(bucket, o.key, o.body(), o.content_type)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(put, objects))
        allow_anonymous_reads(server, bucket)
        probe = min(objects, key=lambda o: o.size)
        status, _, _ = http_get(f"{server.endpoint}/{bucket}/{probe.key}")
        if status != 200:
            raise RuntimeError(f"anonymous GET still refused ({status}) after bucket policy")
    except BaseException:
        server.stop()
        raise
    return server


# ---------------------------------------------------------------------------------------------
# Latency injection: a delaying, counting TCP relay
# ---------------------------------------------------------------------------------------------


class DelayRelay:
    """A TCP relay on 127.0.0.1 to ``target_port`` that delays every chunk, each direction,
    by ``delay_ms`` (order kept, pipelined: like netem on both ends of a link, so one request
    and its answer cost two delays). Counts what it carried: connections, requests (an HTTP
    request head ends with a blank line; the proxies send bodiless GET/HEAD) and the bytes
    sent back."""

    def __init__(self, target_port: int, delay_ms: float) -> None:
        self.target_port = target_port
        self.delay = delay_ms / 1000
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.requests = 0
        self.bytes_down = 0

    def stats(self) -> dict[str, int]:
        return {
            "connections": self.connections,
            "requests": self.requests,
            "bytes": self.bytes_down,
        }

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upward: bool
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def send() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(send())
        tail = b""
        try:
            while True:
                chunk = await reader.read(65536)
                if upward and chunk:
                    seen = tail + chunk
                    self.requests += seen.count(b"\r\n\r\n")
                    tail = seen[-3:]
                elif chunk:
                    self.bytes_down += len(chunk)
                queue.put_nowait((loop.time() + self.delay, chunk))
                if not chunk:
                    break
            await sender
        finally:
            sender.cancel()

    async def _conn(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        uw: asyncio.StreamWriter | None = None
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(
                self._pipe(cr, uw, True), self._pipe(ur, cw, False), return_exceptions=True
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            cw.close()
            if uw is not None:
                uw.close()
            self.tasks.discard(task)


class RelayThread:
    """A :class:`DelayRelay` served by its own event loop in a daemon thread."""

    def __init__(self, target_port: int, delay_ms: float) -> None:
        self.relay = DelayRelay(target_port, delay_ms)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delay-relay", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.relay.start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> RelayThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("delay relay did not start")
        return self

    @property
    def port(self) -> int:
        return self.relay.port

    def stats(self) -> dict[str, int]:
        return self.relay.stats()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.relay.stop(), self._loop)
        with contextlib.suppress(Exception):
            future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    data = [v for v in values if v == v]  # drop NaN
    return statistics.median(data) if data else float("nan")


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``min-max`` of ``values`` formatted with ``fmt``."""
    if not values:
        return "-"
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``1.23x``; ``-`` when either is missing or ``b`` is 0."""
    if not a or not b or a != a or b != b:
        return "-"
    return f"{a / b:.2f}x"


def render_markdown(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 2) -> str:
    """A markdown table; the first ``left`` columns left-aligned, the others right."""
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|")
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def render_text(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 2) -> str:
    """The same table as plain aligned text (for the terminal)."""
    table = [list(header), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(table[0]), "  ".join("-" * w for w in widths), *map(line, table[1:])])


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON (NaN written as null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and value != value:
            return None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(data), indent=1) + "\n")


# ---------------------------------------------------------------------------------------------
# PNG chart (zlib only)
# ---------------------------------------------------------------------------------------------

# 5x7 glyphs: 7 rows, each two hex digits of a 5-bit row (MSB = leftmost pixel)
_FONT: dict[str, str] = {
    " ": "00000000000000",
    "0": "0e11131519110e",
    "1": "040c040404040e",
    "2": "0e11010204081f",
    "3": "1f02040201110e",
    "4": "02060a121f0202",
    "5": "1f101e0101110e",
    "6": "0608101e11110e",
    "7": "1f010204080808",
    "8": "0e11110e11110e",
    "9": "0e11110f01020c",
    "A": "0e11111f111111",
    "B": "1e11111e11111e",
    "C": "0e11101010110e",
    "D": "1c12111111121c",
    "E": "1f10101e10101f",
    "F": "1f10101e101010",
    "G": "0e11101711110f",
    "H": "1111111f111111",
    "I": "0e04040404040e",
    "J": "0702020202120c",
    "K": "11121418141211",
    "L": "1010101010101f",
    "M": "111b1515111111",
    "N": "11111915131111",
    "O": "0e11111111110e",
    "P": "1e11111e101010",
    "Q": "0e11111115120d",
    "R": "1e11111e141211",
    "S": "0f10100e01011e",
    "T": "1f040404040404",
    "U": "1111111111110e",
    "V": "11111111110a04",
    "W": "1111111515150a",
    "X": "11110a040a1111",
    "Y": "1111110a040404",
    "Z": "1f01020408101f",
    ".": "00000000000c0c",
    ",": "000000000c0408",
    ":": "000c0c000c0c00",
    "-": "0000001f000000",
    "+": "0004041f040400",
    "/": "01010204081010",
    "(": "02040808080402",
    ")": "08040202020408",
    "%": "18190204081303",
    "=": "00001f001f0000",
    ">": "08040201020408",
    "<": "02040810080402",
    "_": "0000000000001f",
    "?": "0e110102040004",
}

Color = tuple[int, int, int]


class Canvas:
    """An RGB raster with rectangles and 5x7 text (scaled), written as PNG by :meth:`png`."""

    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        self.width = width
        self.height = height
        self.rows = [bytearray(bytes(background) * width) for _ in range(height)]

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        if x0 >= x1:
            return
        run = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            self.rows[y][3 * x0 : 3 * x1] = run

    def text(self, x: int, y: int, text: str, color: Color = (0, 0, 0), scale: int = 2) -> int:
        """Draw ``text`` (upper-cased; unknown characters as ``?``) with its top-left at
        (x, y); returns the x after it."""
        for ch in text.upper():
            glyph = _FONT.get(ch, _FONT["?"])
            for row in range(7):
                bits = int(glyph[2 * row : 2 * row + 2], 16)
                for col in range(5):
                    if bits & (16 >> col):
                        px, py = x + col * scale, y + row * scale
                        self.rect(px, py, px + scale, py + scale, color)
            x += 6 * scale
        return x

    @staticmethod
    def text_width(text: str, scale: int = 2) -> int:
        return 6 * scale * len(text)

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        raw = b"".join(b"\x00" + bytes(row) for row in self.rows)
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


PALETTE: tuple[Color, ...] = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def png_bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    reference: float | None = 1.0,
    unit: str = "X",
) -> bytes:
    """A horizontal grouped bar chart as PNG bytes: one group per label, one bar per series
    (``(name, values)``; None = no bar), the value written after each bar, a vertical line at
    ``reference`` (e.g. parity, 1.0x) and a legend."""
    scale = 2
    line_h = 7 * scale + 6
    label_w = max([Canvas.text_width(t, scale) for t in labels] or [0]) + 20
    plot_w = 560
    bar_h = 7 * scale + 4
    group_h = bar_h * len(series) + 12
    top = 20 + line_h * 2 + 10
    height = top + group_h * len(labels) + 40
    width = label_w + plot_w + 120
    canvas = Canvas(width, height)
    canvas.text(10, 10, title, scale=scale)
    x = 10
    for i, (name, _) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        canvas.rect(x, 10 + line_h, x + 14, 10 + line_h + 14, color)
        x = canvas.text(x + 20, 10 + line_h, name, scale=scale) + 20
    values = [v for _, vs in series for v in vs if v is not None and v == v]
    vmax = max([*values, reference or 0.0, 1e-9]) * 1.1
    x0 = label_w

    def xpos(v: float) -> int:
        return x0 + int(plot_w * v / vmax)

    for g, label in enumerate(labels):
        y = top + g * group_h
        canvas.text(10, y + (group_h - 12 - 7 * scale) // 2, label, scale=scale)
        for i, (_, vs) in enumerate(series):
            v = vs[g] if g < len(vs) else None
            if v is None or v != v:
                continue
            yb = y + i * bar_h
            canvas.rect(x0, yb, xpos(v), yb + bar_h - 3, PALETTE[i % len(PALETTE)])
            canvas.text(xpos(v) + 6, yb + 1, f"{v:.2f}{unit}", color=(60, 60, 60), scale=scale)
        canvas.rect(10, y + group_h - 6, width - 10, y + group_h - 5, (225, 225, 225))
    canvas.rect(x0, top - 4, x0 + 1, height - 30, (0, 0, 0))
    if reference is not None:
        xr = xpos(reference)
        for yy in range(top - 4, height - 30, 8):
            canvas.rect(xr, yy, xr + 2, yy + 4, (120, 120, 120))
        canvas.text(xr - 20, height - 24, f"{reference:g}{unit}", color=(90, 90, 90), scale=scale)
    return canvas.png()
