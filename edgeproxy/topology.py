"""``edgeproxy topology up|down|status FILE``: a whole multi-tier deployment on loopback.

Contract:

* ``up`` starts, in this order: SeaweedFS (``weed mini``, the embedded S3 origin, credentials
  generated for this run) with a bucket seeded with demo content; then every node of ``FILE``
  as its own OS process (``python -m edgeproxy.cli serve --config <generated toml>``), tier
  by tier, parents first, each waited for until its admin ``/healthz`` answers 200. Only
  the nodes that talk to the origin (no parents, or ``go_direct``) get the S3 credentials in
  their environment. It then prints the URLs and a curl to try (``--json``: one JSON object
  on one line instead, and everything else on stderr) and stays in the foreground until
  SIGINT/SIGTERM/SIGHUP, when it stops every process it started, by PID: edges first, origin
  last. A failed start stops what was started and exits 1 with the failing node's log tail.
* Every node gets the admin API token in ``EDGEPROXY_ADMIN_TOKEN``: the caller's value of
  that variable, else one generated for this run; it is printed and kept in the state file
  (``admin_token``), where ``edgeproxy invalidate|warm --topology FILE`` find it.
* ``up`` writes ``<workdir>/topology.json`` (PIDs with their start times, URLs, the demo
  credentials, the admin token; mode 0600) and removes it when it has stopped everything, so
  ``down`` and ``status`` work from another shell. ``down`` asks the ``up`` process to stop
  (SIGTERM) and then stops, by PID, whatever it left running. A PID is only ever signalled
  while its start time still matches the recorded one (no stray signal to a reused PID).
* ``status`` checks each recorded process and its ``/healthz``; exit 0 when all are healthy,
  1 when some are not, 3 when the topology is not running.
* A bad ``FILE`` exits 2 with one line ``FILE: KEY: problem`` (as a node config does); every
  generated node config is checked with edgeproxy's own loader before anything starts.

Topology file schema (``#`` marks the defaults; relative paths resolve against the file's
directory)::

    [topology]
    name = "local"                  # a label for the output
    workdir = "../var/topology"     # required: node configs, stores, logs, origin data, state
    host = "127.0.0.1"              # every listener binds here; loopback addresses only
    startup_timeout = "60s"         # per tier: every node healthy within this
    log_level = "INFO"              # of the node processes

    [origin]                        # the embedded origin: SeaweedFS seeded with demo content
    bucket = "music"
    region = "us-east-1"
    seed = 7                        # edgeproxy.democontent.catalog(seed, tracks, images,
    tracks = 6                      #   api_docs): audio 3-8 MB, images 50-600 KB, JSON
    images = 8
    api_docs = 8

    [health]                        # copied into every node's [upstream.health]; the keys of
    interval = "2s"                 # a node config's [upstream.health], same defaults

    [roles.edge]                    # defaults of the nodes of a role (also roles.regional,
    policies = "../conf/edge.toml"  # roles.shield): [[policy]] tables taken from this node
    max_size = "1GiB"               # config (default: one catch-all, 1h default TTL); store
    ram_size = "256MiB"             # sizes (default: the role's, from edgeproxy.config)

    [[node]]                        # one or more
    name = "edge-1"                 # required, unique; letters, digits, ".", "_", "-"
    role = "edge"                   # required; "edge" | "regional" | "shield"
    port = 8080                     # required; client listener; 0 = any free port
    admin_port = 9080               # default: port + 1000 (any free port when port is 0)
    parents = ["regional-1", "regional-2"]  # names of nodes of this file, or tables
                                    # {name = "regional-1", weight = 2}; none = the origin
    go_direct = false               # with parents: the origin when every parent is out
                                    # (gives this node the S3 credentials too)
    max_size = "512MiB"             # overrides roles.<role>
    ram_size = "128MiB"
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from edgeproxy.config import (
    _NODE_NAME_RE,
    ROLE_DEFAULTS,
    ConfigError,
    HealthConfig,
    _did_you_mean,
    _parse_health,
    _show,
    _Table,
    parse_config,
)

STATE_FILE = "topology.json"
ADMIN_TOKEN_ENV = "EDGEPROXY_ADMIN_TOKEN"  # every generated node config's node.admin_token_env
ACCESS_ENV = "EDGEPROXY_S3_ACCESS_KEY"
SECRET_ENV = "EDGEPROXY_S3_SECRET_KEY"
#: never inherited by a node that is not origin-facing
CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    ACCESS_ENV,
    SECRET_ENV,
)
ROLES = ("edge", "regional", "shield")
STOP_TIMEOUT = 15.0  # a node drains for up to 10 s on SIGTERM

_TOP_KEYS = ("topology", "origin", "health", "roles", "node")
_TOPOLOGY_KEYS = ("name", "workdir", "host", "startup_timeout", "log_level")
_ORIGIN_KEYS = ("bucket", "region", "seed", "tracks", "images", "api_docs")
_HEALTH_KEYS = (
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
    "fail_threshold",
    "retry_time",
)
_ROLE_KEYS = ("policies", "max_size", "ram_size")
_NODE_KEYS = (
    "name",
    "role",
    "port",
    "admin_port",
    "parents",
    "go_direct",
    "max_size",
    "ram_size",
)
_PARENT_KEYS = ("name", "weight")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
DEFAULT_POLICIES: tuple[dict[str, Any], ...] = (
    {"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"},
)


# ---------------------------------------------------------------------------------------------
# The file: schema and validation (pure)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OriginSpec:
    bucket: str = "music"
    region: str = "us-east-1"
    seed: int = 7
    tracks: int = 6
    images: int = 8
    api_docs: int = 8


@dataclass(frozen=True, slots=True)
class RoleSpec:
    policies: tuple[dict[str, Any], ...]
    max_size: int | str
    ram_size: int | str


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    role: str
    port: int
    admin_port: int  # 0 = any free port
    parents: tuple[tuple[str, float], ...]  # (name, weight)
    go_direct: bool
    max_size: int | str
    ram_size: int | str

    @property
    def origin_facing(self) -> bool:
        """True when the node talks to the origin: no parents, or go_direct."""
        return not self.parents or self.go_direct


@dataclass(frozen=True, slots=True)
class Topology:
    file: str
    name: str
    workdir: Path
    host: str
    startup_timeout: float
    log_level: str
    origin: OriginSpec
    health: HealthConfig
    roles: Mapping[str, RoleSpec]
    nodes: tuple[NodeSpec, ...]
    levels: tuple[tuple[str, ...], ...] = field(default=())  # start order, parents first

    def node(self, name: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.name == name:
                return spec
        raise KeyError(name)


def _load_policies(t: _Table, base_dir: Path) -> tuple[dict[str, Any], ...]:
    if "policies" not in t:
        return DEFAULT_POLICIES
    rel = t.word("policies", example='"../conf/edge.toml"')
    path = (base_dir / rel).resolve()
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as err:
        t.fail("policies", f"cannot read {path}: {err.strerror or err}")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        t.fail("policies", f"{path} is not a TOML file: {err}")
    policies = data.get("policy")
    if not isinstance(policies, list) or not policies:
        t.fail("policies", f"{path} has no [[policy]] tables; name a node config that has some")
    return tuple(policies)


def _host(t: _Table) -> str:
    host = t.word("host", "127.0.0.1", '"127.0.0.1"')
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        t.fail("host", f'{_show(host)} is not an IP address; use "127.0.0.1"')
    if not address.is_loopback:
        t.fail(
            "host",
            f"{_show(host)} is not a loopback address; the local topology listens on "
            'loopback only (e.g. "127.0.0.1")',
        )
    return host


def _log_level(t: _Table) -> str:
    level = t.word("log_level", "INFO", '"INFO"').upper()
    if level not in _LOG_LEVELS:
        t.fail(
            "log_level", f"{_show(level)} is not a log level; " + _did_you_mean(level, _LOG_LEVELS)
        )
    return level


def _parse_origin(root: _Table) -> OriginSpec:
    t = root.table("origin", _ORIGIN_KEYS) or _Table(root.file, "origin", {}, _ORIGIN_KEYS)
    bucket = t.word("bucket", "music", '"music"')
    if not _BUCKET_RE.fullmatch(bucket):
        t.fail("bucket", f'{_show(bucket)} is not an S3 bucket name; use e.g. "music"')
    return OriginSpec(
        bucket=bucket,
        region=t.word("region", "us-east-1", '"us-east-1"'),
        seed=t.integer("seed", 7, 0, 2**31),
        tracks=t.integer("tracks", 6, 0, 100),
        images=t.integer("images", 8, 0, 1000),
        api_docs=t.integer("api_docs", 8, 0, 10_000),
    )


def _parse_roles(root: _Table, base_dir: Path) -> dict[str, RoleSpec]:
    t = root.table("roles", ROLES) or _Table(root.file, "roles", {}, ROLES)
    roles: dict[str, RoleSpec] = {}
    for role in ROLES:
        r = t.table(role, _ROLE_KEYS) or _Table(root.file, f"roles.{role}", {}, _ROLE_KEYS)
        max_default, ram_default = ROLE_DEFAULTS[role]
        max_size = r.value("max_size", max_default, None)
        ram_size = r.value("ram_size", ram_default, None)
        r.size("max_size", max_default, 1)
        r.size("ram_size", ram_default)
        roles[role] = RoleSpec(_load_policies(r, base_dir), max_size, ram_size)
    return roles


def _parse_parents(t: _Table) -> tuple[tuple[str, float], ...]:
    raw = t.value("parents", [], None)
    if not isinstance(raw, list):
        t.fail("parents", 'must be an array of node names, e.g. parents = ["regional-1"]')
    parents: list[tuple[str, float]] = []
    for index, item in enumerate(raw):
        if isinstance(item, str):
            name, weight = item, 1.0
        elif isinstance(item, dict):
            p = _Table(t.file, f"{t.key('parents')}[{index}]", item, _PARENT_KEYS)
            name = p.word("name", example='"regional-1"')
            weight = p.value("weight", 1.0, "2")
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                p.fail("weight", "must be a number > 0, e.g. weight = 2")
            if not math.isfinite(weight) or not 0 < weight <= 1_000_000:
                p.fail("weight", f"{_show(weight)} is out of range; use a number > 0")
        else:
            t.fail(
                "parents",
                f'must hold node names or tables {{name = "...", weight = 2}}, got {_show(item)}',
            )
        if any(name == seen for seen, _ in parents):
            t.fail("parents", f"{_show(name)} is listed twice; list each parent once")
        parents.append((name, float(weight)))
    return tuple(parents)


def _parse_node(t: _Table, roles: Mapping[str, RoleSpec]) -> NodeSpec:
    name = t.word("name", example='"edge-1"')
    if not _NODE_NAME_RE.fullmatch(name):
        t.fail(
            "name",
            f'{_show(name)} is not a node name; use up to 64 letters, digits, ".", "_" '
            'and "-", e.g. "edge-1"',
        )
    role = t.word("role", example='"edge"')
    if role not in ROLES:
        t.fail("role", f"{_show(role)} is not a role; " + _did_you_mean(role, ROLES))
    if "port" not in t:
        t.fail("port", "missing required key; add e.g. port = 8080 (0 = any free port)")
    port = t.integer("port", 0, 0, 65535)
    default_admin = port + 1000 if port else 0
    if default_admin > 65535:
        t.fail("admin_port", f"no default: port {port} + 1000 is above 65535; set admin_port")
    admin_port = t.integer("admin_port", default_admin, 0, 65535)
    if admin_port and admin_port == port:
        t.fail("admin_port", f"{admin_port} is the node's port; the admin API needs its own")
    parents = _parse_parents(t)
    go_direct = t.boolean("go_direct", False)
    if go_direct and not parents:
        t.fail("go_direct", "needs parents: a node without parents always uses the origin")
    role_spec = roles[role]
    max_size = t.value("max_size", role_spec.max_size, None)
    ram_size = t.value("ram_size", role_spec.ram_size, None)
    t.size("max_size", 1, 1)
    t.size("ram_size", 0)
    return NodeSpec(name, role, port, admin_port, parents, go_direct, max_size, ram_size)


def _levels(nodes: tuple[NodeSpec, ...], fail: Any) -> tuple[tuple[str, ...], ...]:
    """Start order: tiers of nodes whose parents are all in earlier tiers; a cycle fails."""
    placed: set[str] = set()
    levels: list[tuple[str, ...]] = []
    remaining = list(nodes)
    while remaining:
        level = tuple(n.name for n in remaining if all(p in placed for p, _ in n.parents))
        if not level:
            cycle = ", ".join(n.name for n in remaining)
            fail(f"the parents of {cycle} form a cycle; parents must point toward the origin")
        levels.append(level)
        placed.update(level)
        remaining = [n for n in remaining if n.name not in placed]
    return tuple(levels)


def parse_topology(data: Mapping[str, Any], file: str) -> Topology:
    """Validate parsed TOML ``data`` of the topology file ``file``; raises ConfigError (one
    line: ``FILE: KEY: problem``). Policies files named by ``roles.*.policies`` are read."""
    root = _Table(file, "", data, _TOP_KEYS)
    base_dir = Path(os.path.dirname(os.path.abspath(file)))
    top = root.table("topology", _TOPOLOGY_KEYS, True, '[topology] with workdir = "..."')
    assert top is not None
    name = top.word("name", "local", '"local"')
    workdir = top.string("workdir", example='"../var/topology"')
    if not workdir or "\0" in workdir:
        top.fail("workdir", f'{_show(workdir)} is not a directory; write e.g. "../var/topology"')
    startup = top.duration("startup_timeout", 60.0, True, '"60s"')
    host = _host(top)
    log_level = _log_level(top)
    origin = _parse_origin(root)
    health_holder = _Table(file, "", {"health": data.get("health", {})}, ("health",))
    health = _parse_health(health_holder)
    roles = _parse_roles(root, base_dir)
    raw_nodes = data.get("node")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        root.fail("node", "missing: add [[node]] tables (double brackets) with name, role, port")
    nodes: list[NodeSpec] = []
    for index, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            root.fail("node", "must be an array of tables; write [[node]] before each node")
        t = _Table(file, f"node[{index}]", raw, _NODE_KEYS)
        spec = _parse_node(t, roles)
        for other in nodes:
            if other.name == spec.name:
                t.fail("name", f"{_show(spec.name)} is already the name of another node")
            used = {other.port, other.admin_port} - {0}
            for key, port in (("port", spec.port), ("admin_port", spec.admin_port)):
                if port and port in used:
                    t.fail(key, f"{port} is already used by node {other.name}; pick another")
        nodes.append(spec)
    names = [n.name for n in nodes]
    for index, spec in enumerate(nodes):
        t = _Table(file, f"node[{index}]", {}, ())
        for parent, _ in spec.parents:
            if parent == spec.name:
                t.fail("parents", f"{_show(parent)} is this node itself (a loop)")
            if parent not in names:
                t.fail(
                    "parents",
                    f"{_show(parent)} is not a node of this topology; "
                    + _did_you_mean(parent, tuple(names)),
                )
    if not any(n.origin_facing for n in nodes):
        root.fail("node", "no node fetches from the origin; give one node no parents")

    def cycle_fail(message: str) -> None:
        root.fail("node", message)

    levels = _levels(tuple(nodes), cycle_fail)
    return Topology(
        file=file,
        name=name,
        workdir=(base_dir / workdir).resolve(),
        host=host,
        startup_timeout=startup,
        log_level=log_level,
        origin=origin,
        health=health,
        roles=roles,
        nodes=tuple(nodes),
        levels=levels,
    )


def load_topology(path: str, workdir: str | None = None) -> Topology:
    """Read and validate a topology file; ``workdir`` (relative to the current directory)
    overrides the file's. Raises ConfigError."""
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(path, "(file)", f"cannot read it: {err.strerror or err}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(path, "(toml)", f"not UTF-8 text (byte {err.start})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, "(toml)", f"{err}; fix the TOML syntax there") from None
    topology = parse_topology(data, path)
    if workdir is not None:
        topology = replace(topology, workdir=Path(workdir).resolve())
    return topology


# ---------------------------------------------------------------------------------------------
# Node configs (pure)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where each node listens, once ports are chosen: name -> (port, admin_port)."""

    host: str
    ports: Mapping[str, tuple[int, int]]

    def url(self, name: str) -> str:
        return f"http://{self._h()}:{self.ports[name][0]}"

    def admin_url(self, name: str) -> str:
        return f"http://{self._h()}:{self.ports[name][1]}"

    def _h(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


def _health_dict(health: HealthConfig) -> dict[str, Any]:
    return {
        "interval": health.interval,
        "timeout": health.timeout,
        "healthy_threshold": health.healthy_threshold,
        "unhealthy_threshold": health.unhealthy_threshold,
        "fail_threshold": health.fail_threshold,
        "retry_time": health.retry_time,
    }


def node_config(
    topology: Topology, spec: NodeSpec, endpoints: Endpoints, origin_endpoint: str
) -> dict[str, Any]:
    """The node config (as TOML data) of ``spec``: listeners from ``endpoints``, the store
    under the workdir, parents with their admin /healthz, or the origin with credentials read
    from ``EDGEPROXY_S3_ACCESS_KEY``/``EDGEPROXY_S3_SECRET_KEY``."""
    port, admin = endpoints.ports[spec.name]
    s3 = {
        "endpoint": origin_endpoint,
        "region": topology.origin.region,
        "bucket": topology.origin.bucket,
        "access_key_env": ACCESS_ENV,
        "secret_key_env": SECRET_ENV,
    }
    upstream: dict[str, Any]
    if spec.parents:
        upstream = {
            "parent": [
                {
                    "url": endpoints.url(name),
                    "name": name,
                    "weight": weight,
                    "health_url": endpoints.admin_url(name) + "/healthz",
                }
                for name, weight in spec.parents
            ],
            "health": _health_dict(topology.health),
        }
        if spec.go_direct:
            upstream["fallback_s3"] = s3
    else:
        upstream = {"s3": s3}
    host = f"[{topology.host}]" if ":" in topology.host else topology.host
    return {
        "node": {
            "name": spec.name,
            "role": spec.role,
            "listen": f"{host}:{port}",
            "admin_listen": f"{host}:{admin}",
            "region": topology.name if _NODE_NAME_RE.fullmatch(topology.name) else "local",
        },
        "store": {
            "path": str(topology.workdir / "cache" / spec.name),
            "max_size": spec.max_size,
            "ram_size": spec.ram_size,
        },
        "upstream": upstream,
        "policy": [dict(p) for p in topology.roles[spec.role].policies],
    }


def check_node_configs(topology: Topology, endpoints: Endpoints, origin_endpoint: str) -> None:
    """Validate every generated node config with edgeproxy's loader; a problem is raised as a
    ConfigError on the topology file naming the node."""
    for index, spec in enumerate(topology.nodes):
        data = node_config(topology, spec, endpoints, origin_endpoint)
        generated = str(topology.workdir / "nodes" / f"{spec.name}.toml")
        try:
            parse_config(data, generated)
        except ConfigError as err:
            raise ConfigError(
                topology.file,
                f"node[{index}]",
                f"the config generated for {spec.name} is invalid: {err.key}: {err.message}",
            ) from None


def _bare(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no TOML form here")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_bare(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{type(value).__name__} has no TOML form")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dump_toml(data: Mapping[str, Any]) -> str:
    """TOML text for ``data`` (str/int/float/bool, lists, tables; lists of tables become
    ``[[...]]`` arrays). ``tomllib.loads(dump_toml(d)) == d`` for such data."""
    lines: list[str] = []

    def table(prefix: str, body: Mapping[str, Any]) -> None:
        for key, value in body.items():
            if not isinstance(value, dict) and not _is_table_array(value):
                lines.append(f"{_bare(key)} = {_toml_value(value)}")
        for key, value in body.items():
            name = f"{prefix}.{_bare(key)}" if prefix else _bare(key)
            if isinstance(value, dict):
                has_scalars = any(
                    not isinstance(v, dict) and not _is_table_array(v) for v in value.values()
                )
                if has_scalars or not value:  # a table of tables needs no header of its own
                    lines.append("")
                    lines.append(f"[{name}]")
                table(name, value)
            elif _is_table_array(value):
                for item in value:
                    lines.append("")
                    lines.append(f"[[{name}]]")
                    table(name, item)

    table("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def proc_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def pid_alive(pid: int, start: str | None) -> bool:
    """True when ``pid`` runs and (when known) is still the process started at ``start``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start is None:
        return True
    current = proc_start_time(pid)
    if current is None:
        return not Path("/proc/self/stat").exists()
    if current != start:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
        return state[state.rfind(")") + 2 :].split()[0] != "Z"
    except OSError:
        return False


def stop_pids(pids: Iterable[tuple[int, str | None]], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM every live process of ``pids`` (checked by start time), wait up to
    ``timeout``, then SIGKILL the rest. Returns how many were signalled."""
    live = [(pid, start) for pid, start in pids if pid_alive(pid, start)]
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p, s) for p, s in live):
        _reap(live)
        time.sleep(0.05)
    for pid, start in live:
        if pid_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    _reap(live)
    return len(live)


def _reap(pids: Iterable[tuple[int, str | None]]) -> None:
    """Collect exited children of this process (no zombies while waiting for them)."""
    for pid, _ in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_pairs(host: str, count: int) -> list[int]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def healthz(admin_url: str, timeout: float = 1.0) -> tuple[bool, str]:
    """GET ``admin_url``/healthz: (True, "ok") on 200, else (False, why)."""
    try:
        with urllib.request.urlopen(admin_url + "/healthz", timeout=timeout) as response:
            response.read()
            return response.status == 200, f"answered {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"answered {exc.code}"
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, str(reason)


def log_tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_bytes()[-limit:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"


def read_state(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _write_state(workdir: Path, state: Mapping[str, Any]) -> None:
    path = workdir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=1)
    os.replace(tmp, path)


class StartError(Exception):
    """The topology could not be started (the message says which part and why)."""


class _Stop(Exception):
    """A stop signal arrived (raised at safe points only, never from the signal handler, so
    no process is ever started without being recorded)."""


@dataclass
class _Running:
    spec: NodeSpec
    process: subprocess.Popen[bytes]
    start: str | None
    config: Path
    log: Path


class Runner:
    """Starts, supervises and stops one topology (``up``). Not reentrant."""

    def __init__(self, topology: Topology, *, out: IO[str], err: IO[str]) -> None:
        self.topology = topology
        self.out = out
        self.err = err
        self.workdir = topology.workdir
        self.access = "edgeproxy-topology"
        self.secret = secrets.token_hex(16)
        # the admin API's bearer token of every node: the caller's, else one for this run
        self.admin_token = os.environ.get(ADMIN_TOKEN_ENV) or secrets.token_urlsafe(24)
        self.origin: Any = None  # SeaweedServer
        self.objects: list[str] = []
        self.running: dict[str, _Running] = {}
        self.endpoints: Endpoints | None = None
        self.reported_exits: set[str] = set()
        self.stop_requested = False

    def check_stop(self) -> None:
        """Raise _Stop when a stop signal arrived (called between steps)."""
        if self.stop_requested:
            raise _Stop()

    # ---- state ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What ``down``, ``status`` and ``--json`` need; JSON-able."""
        topo = self.topology
        ends = self.endpoints
        nodes = []
        for spec in topo.nodes:
            run = self.running.get(spec.name)
            entry: dict[str, Any] = {"name": spec.name, "role": spec.role}
            if ends is not None:
                admin = ends.admin_url(spec.name)
                entry.update(
                    url=ends.url(spec.name),
                    admin_url=admin,
                    health_url=admin + "/healthz",
                    metrics_url=admin + "/metrics",
                )
            entry.update(
                parents=[name for name, _ in spec.parents],
                pid=run.process.pid if run else None,
                start=run.start if run else None,
                config=str(run.config) if run else None,
                log=str(run.log) if run else None,
            )
            nodes.append(entry)
        origin: dict[str, Any] = {"kind": "seaweedfs", "bucket": topo.origin.bucket}
        if self.origin is not None and self.origin.pid is not None:
            origin.update(
                endpoint=self.origin.endpoint,
                region=topo.origin.region,
                access_key=self.access,
                secret_key=self.secret,
                pid=self.origin.pid,
                start=proc_start_time(self.origin.pid),
                objects=len(self.objects),
            )
        return {
            "name": topo.name,
            "file": topo.file,
            "workdir": str(self.workdir),
            "pid": os.getpid(),
            "start": proc_start_time(os.getpid()),
            "origin": origin,
            "admin_token_env": ADMIN_TOKEN_ENV,
            "admin_token": self.admin_token,
            "nodes": nodes,
        }

    def _save(self) -> None:
        _write_state(self.workdir, self.state())

    def _say(self, message: str) -> None:
        print(message, file=self.err, flush=True)

    # ---- up -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Refuse to start twice; check fixed ports; choose the free ones; check configs."""
        topo = self.topology
        previous = read_state(self.workdir)
        if previous is not None:
            if pid_alive(int(previous.get("pid") or 0), previous.get("start")):
                raise StartError(
                    f"topology already running (pid {previous['pid']}, state "
                    f"{self.workdir / STATE_FILE}); stop it with: edgeproxy topology down "
                    f"{topo.file}"
                )
            leftovers = _state_pids(previous)
            if any(pid_alive(p, s) for p, s in leftovers):
                raise StartError(
                    f"processes of an earlier run are still alive; stop them with: "
                    f"edgeproxy topology down {topo.file}"
                )
            (self.workdir / STATE_FILE).unlink(missing_ok=True)
        for spec in topo.nodes:
            for kind, port in (("port", spec.port), ("admin_port", spec.admin_port)):
                if port and not port_free(topo.host, port):
                    raise StartError(
                        f"{topo.host}:{port} ({spec.name} {kind}) is in use; stop what uses "
                        f"it or change {kind} of {spec.name} in {topo.file}"
                    )
        wanted = sum((s.port == 0) + (s.admin_port == 0) for s in topo.nodes)
        spare = iter(free_port_pairs(topo.host, wanted))
        ports = {s.name: (s.port or next(spare), s.admin_port or next(spare)) for s in topo.nodes}
        self.endpoints = Endpoints(topo.host, ports)
        check_node_configs(topo, self.endpoints, "http://127.0.0.1:8333")

    def start_origin(self) -> None:
        from edgeproxy.democontent import catalog
        from edgeproxy.seaweed import SeaweedServer

        spec = self.topology.origin
        self.origin = SeaweedServer(
            self.workdir / "seaweed", self.access, self.secret, region=spec.region
        )
        self._say(f"starting SeaweedFS (S3 origin) in {self.workdir / 'seaweed'} ...")
        try:
            self.origin.start()
        except RuntimeError as exc:
            raise StartError(f"origin: {exc}") from None
        self._save()
        self.origin.create_bucket(spec.bucket)
        for key, ctype, body, cc in catalog(spec.seed, spec.tracks, spec.images, spec.api_docs):
            self.check_stop()
            headers = {"Cache-Control": cc} if cc else None
            self.origin.put_object(spec.bucket, key, body, ctype, headers=headers)
            self.objects.append(key)
        self._say(
            f"origin {self.origin.endpoint}: bucket {spec.bucket!r} with "
            f"{len(self.objects)} objects"
        )

    def _environment(self, spec: NodeSpec) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        env[ADMIN_TOKEN_ENV] = self.admin_token
        if spec.origin_facing:
            env[ACCESS_ENV] = self.access
            env[SECRET_ENV] = self.secret
        return env

    def _recheck_ports(self, spec: NodeSpec) -> None:
        """A port chosen free earlier (port 0 in the file) may have been taken since (by the
        origin, or an outgoing connection's ephemeral port): choose again before the node
        binds. Its parents are already running; its children are configured after it."""
        assert self.endpoints is not None
        port, admin = self.endpoints.ports[spec.name]
        host = self.topology.host
        if spec.port == 0 and not port_free(host, port):
            port = free_port_pairs(host, 1)[0]
        if spec.admin_port == 0 and not port_free(host, admin):
            admin = free_port_pairs(host, 1)[0]
        if (port, admin) != self.endpoints.ports[spec.name]:
            ports = dict(self.endpoints.ports)
            ports[spec.name] = (port, admin)
            self.endpoints = Endpoints(host, ports)

    def start_node(self, spec: NodeSpec) -> None:
        assert self.endpoints is not None and self.origin is not None
        self._recheck_ports(spec)
        data = node_config(self.topology, spec, self.endpoints, self.origin.endpoint)
        config = self.workdir / "nodes" / f"{spec.name}.toml"
        config.write_text(
            f"# generated by `edgeproxy topology up {self.topology.file}`; "
            "rewritten on every start\n" + dump_toml(data)
        )
        log = self.workdir / "logs" / f"{spec.name}.log"
        args = [
            sys.executable,
            "-m",
            "edgeproxy.cli",
            "--log-level",
            self.topology.log_level,
            "serve",
            "--config",
            str(config),
        ]
        with log.open("ab") as handle:
            process = subprocess.Popen(
                args,
                env=self._environment(spec),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops in order
            )
        self.running[spec.name] = _Running(spec, process, proc_start_time(process.pid), config, log)
        self._save()

    def wait_healthy(self, names: Iterable[str]) -> None:
        assert self.endpoints is not None
        pending = list(names)
        deadline = time.monotonic() + self.topology.startup_timeout
        why: dict[str, str] = {}
        while pending:
            self.check_stop()
            for name in list(pending):
                run = self.running[name]
                code = run.process.poll()
                if code is not None:
                    raise StartError(
                        f"node {name} exited with status {code} while starting; "
                        f"log {run.log}:\n{log_tail(run.log)}"
                    )
                ok, why[name] = healthz(self.endpoints.admin_url(name), timeout=1.0)
                if ok:
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                name = pending[0]
                run = self.running[name]
                raise StartError(
                    f"node {name} not healthy after {self.topology.startup_timeout:g}s "
                    f"({why.get(name)}); log {run.log}:\n{log_tail(run.log)}"
                )
            if pending:
                time.sleep(0.1)

    def up(self) -> None:
        """Everything up and healthy, or StartError (after stopping what was started)."""
        self.prepare()
        for sub in ("nodes", "logs", "cache", "seaweed"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.start_origin()
        for level in self.topology.levels:
            for name in level:
                self.check_stop()
                self.start_node(self.topology.node(name))
            self.wait_healthy(level)
            self._say("healthy: " + ", ".join(level))

    # ---- output ---------------------------------------------------------------------------

    def try_path(self) -> str:
        for key in self.objects:
            if key.startswith("api/"):
                return "/" + key
        return "/" + self.objects[0] if self.objects else "/"

    def first_edge(self) -> str:
        for spec in self.topology.nodes:
            if spec.role == "edge":
                return spec.name
        return self.topology.nodes[-1].name

    def summary(self) -> dict[str, Any]:
        assert self.endpoints is not None
        state = self.state()
        state["origin"]["objects"] = ["/" + key for key in self.objects]
        url = self.endpoints.url(self.first_edge()) + self.try_path()
        state["try"] = f"curl -s -D - -o /dev/null {url}"
        return state

    def print_summary(self, as_json: bool) -> None:
        summary = self.summary()
        if as_json:
            print(json.dumps(summary, separators=(",", ":")), file=self.out, flush=True)
            return
        origin = summary["origin"]
        lines = [
            f"topology {self.topology.name!r} is up ({len(summary['nodes'])} nodes, "
            f"workdir {self.workdir})",
            f"  {'origin':<12} {'seaweedfs':<9} {origin['endpoint']}  bucket "
            f"{origin['bucket']} ({len(origin['objects'])} objects)  pid {origin['pid']}",
        ]
        for node in summary["nodes"]:
            parents = ",".join(node["parents"]) or "origin"
            lines.append(
                f"  {node['name']:<12} {node['role']:<9} {node['url']}/  admin "
                f"{node['health_url']}  parents {parents}  pid {node['pid']}"
            )
        lines.append("try:")
        lines.append(f"  {summary['try']} | grep -i -e '^HTTP' -e cache-status")
        lines.append(
            f"admin API (invalidate, warm, /popular): every node has {ADMIN_TOKEN_ENV} of this "
            f"run (also in {self.workdir / STATE_FILE}); `edgeproxy invalidate|warm "
            f"--topology {self.topology.file}` reads it from there, or:"
        )
        lines.append(f"  export {ADMIN_TOKEN_ENV}={self.admin_token}")
        lines.append(
            f"Ctrl-C here (or `edgeproxy topology down {self.topology.file}` from another "
            "shell) stops everything."
        )
        print("\n".join(lines), file=self.out, flush=True)

    # ---- supervise and stop ---------------------------------------------------------------

    def supervise(self) -> None:
        """Until a stop signal: report nodes that exit on their own (once each)."""
        while not self.stop_requested:
            for name, run in self.running.items():
                code = run.process.poll()
                if code is not None and name not in self.reported_exits:
                    self.reported_exits.add(name)
                    self._say(f"node {name} exited with status {code}; log {run.log}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop every process started, by PID: the last tier first, the origin last."""
        for level in reversed(self.topology.levels):
            pids = []
            for name in level:
                run = self.running.get(name)
                if run is not None and run.process.poll() is None:
                    pids.append((run.process.pid, run.start))
            if pids:
                stop_pids(pids)
            for name in level:
                run = self.running.get(name)
                if run is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        run.process.wait(1)
        if self.origin is not None:
            self.origin.stop()
        (self.workdir / STATE_FILE).unlink(missing_ok=True)


def _state_pids(state: Mapping[str, Any]) -> list[tuple[int, str | None]]:
    """Node PIDs (last tier first, as recorded), then the origin's."""
    pids = [
        (int(n["pid"]), n.get("start")) for n in reversed(state.get("nodes", [])) if n.get("pid")
    ]
    origin = state.get("origin", {})
    if origin.get("pid"):
        pids.append((int(origin["pid"]), origin.get("start")))
    return pids


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def _load_or_exit(path: str, workdir: str | None, err: IO[str]) -> Topology | None:
    try:
        return load_topology(path, workdir)
    except ConfigError as exc:
        print(f"edgeproxy: {exc}", file=err)
        return None


def cmd_up(
    path: str,
    *,
    as_json: bool = False,
    workdir: str | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """``topology up``: start, print, supervise until a signal, stop. Exit status: 0 after a
    clean stop, 1 when starting failed, 2 for a bad file."""
    topology = _load_or_exit(path, workdir, err)
    if topology is None:
        return 2
    runner = Runner(topology, out=out, err=err if as_json else out)

    def on_signal(signum: int, frame: Any) -> None:
        runner.stop_requested = True

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    status = 0
    try:
        runner.up()
        runner.print_summary(as_json)
        runner.supervise()
    except _Stop:
        pass
    except ConfigError as exc:
        print(f"edgeproxy: {exc}", file=err)
        status = 2
    except (StartError, OSError, RuntimeError) as exc:
        if not runner.stop_requested:  # a Ctrl-C during start also stops weed: not an error
            print(f"edgeproxy topology: {exc}", file=err)
            status = 1
    finally:
        started = runner.origin is not None or bool(runner.running)
        try:
            runner.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if started:
            print("topology stopped.", file=err, flush=True)
    return status


def cmd_down(
    path: str, *, workdir: str | None = None, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr
) -> int:
    """``topology down``: stop the ``up`` process and whatever it left running, by PID."""
    topology = _load_or_exit(path, workdir, err)
    if topology is None:
        return 2
    state = read_state(topology.workdir)
    if state is None:
        print(
            f"topology {topology.name!r} is not running (no {STATE_FILE} in {topology.workdir})",
            file=out,
        )
        return 0
    supervisor = (int(state.get("pid") or 0), state.get("start"))
    stopped = 0
    if pid_alive(*supervisor):
        stopped += stop_pids([supervisor], timeout=3 * STOP_TIMEOUT)
    leftovers = [p for p in _state_pids(state) if pid_alive(*p)]
    if leftovers:
        stopped += stop_pids(leftovers)
    (topology.workdir / STATE_FILE).unlink(missing_ok=True)
    print(f"topology {topology.name!r} stopped ({stopped} process(es) signalled)", file=out)
    return 0


def cmd_status(
    path: str,
    *,
    as_json: bool = False,
    workdir: str | None = None,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    """``topology status``: each process alive and healthy? 0 all, 1 some not, 3 not running."""
    topology = _load_or_exit(path, workdir, err)
    if topology is None:
        return 2
    state = read_state(topology.workdir)
    if state is None or not pid_alive(int(state.get("pid") or 0), state.get("start")):
        if as_json:
            print(json.dumps({"name": topology.name, "running": False}), file=out)
        else:
            print(f"topology {topology.name!r} is not running", file=out)
        return 3
    rows = []
    origin = state.get("origin", {})
    origin_alive = bool(origin.get("pid")) and pid_alive(int(origin["pid"]), origin.get("start"))
    origin_ok, origin_why = (
        healthz(origin["endpoint"]) if origin_alive and origin.get("endpoint") else (False, "")
    )
    rows.append(
        {
            "name": "origin",
            "role": "origin",
            "url": origin.get("endpoint"),
            "alive": origin_alive,
            "healthy": origin_ok,
            "detail": origin_why if origin_alive else "process gone",
        }
    )
    for node in state.get("nodes", []):
        alive = bool(node.get("pid")) and pid_alive(int(node["pid"]), node.get("start"))
        ok, why = healthz(node["admin_url"]) if alive and node.get("admin_url") else (False, "")
        rows.append(
            {
                "name": node["name"],
                "role": node["role"],
                "url": node.get("url"),
                "alive": alive,
                "healthy": ok,
                "detail": why if alive else "process gone",
            }
        )
    healthy = all(row["healthy"] for row in rows)
    if as_json:
        print(
            json.dumps({"name": topology.name, "running": True, "healthy": healthy, "nodes": rows}),
            file=out,
        )
    else:
        print(f"topology {topology.name!r} (pid {state['pid']}):", file=out)
        for row in rows:
            mark = "healthy" if row["healthy"] else "DOWN"
            print(
                f"  {row['name']:<12} {row['role']:<9} {row['url'] or '-':<28} {mark:<8} "
                f"{row['detail']}",
                file=out,
            )
    return 0 if healthy else 1
