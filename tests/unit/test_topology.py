"""The topology file (tiers/local.toml): schema, one-line errors, generated node configs.

Pure: nothing is started here (tests/integration/test_tiers.py starts a topology).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.config import ConfigError, parse_config
from edgeproxy.topology import (
    ACCESS_ENV,
    SECRET_ENV,
    Endpoints,
    Runner,
    check_node_configs,
    dump_toml,
    load_topology,
    node_config,
    parse_topology,
)

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "tiers" / "local.toml"
FILE = str(REPO / "tiers" / "test.toml")  # resolves "../conf/..." like tiers/local.toml


def _base() -> dict[str, Any]:
    return tomllib.loads(LOCAL.read_text())


def _endpoints(topology: Any) -> Endpoints:
    return Endpoints(
        topology.host, {n.name: (n.port or 1, n.admin_port or 2) for n in topology.nodes}
    )


def test_the_shipped_local_topology() -> None:
    topo = load_topology(str(LOCAL))
    assert topo.levels == (("shield-1",), ("regional-1", "regional-2"), ("edge-1", "edge-2"))
    assert topo.workdir == REPO / "var" / "topology"
    assert [n.port for n in topo.nodes] == [8300, 8200, 8201, 8080, 8081]
    assert [n.admin_port for n in topo.nodes] == [9300, 9200, 9201, 9080, 9081]
    assert [n.name for n in topo.nodes if n.origin_facing] == ["shield-1"]
    check_node_configs(topo, _endpoints(topo), "http://127.0.0.1:8333")


def test_generated_configs_load_and_only_origin_facing_nodes_have_credentials() -> None:
    topo = load_topology(str(LOCAL))
    ends = _endpoints(topo)
    configs = {
        n.name: parse_config(node_config(topo, n, ends, "http://127.0.0.1:8333"), "x.toml")
        for n in topo.nodes
    }
    shield = configs["shield-1"].upstream
    assert shield.s3 is not None and shield.s3.access_key_env == ACCESS_ENV
    assert shield.s3.secret_key_env == SECRET_ENV and shield.parents == ()
    edge = configs["edge-1"].upstream
    assert edge.s3 is None and edge.fallback_s3 is None
    assert [p.name for p in edge.parent_list()] == ["regional-1", "regional-2"]
    assert [p.health_url for p in edge.parent_list()] == [
        "http://127.0.0.1:9200/healthz",
        "http://127.0.0.1:9201/healthz",
    ]
    assert edge.health.interval == 1.0 and edge.health.timeout == 0.5
    # the edge's policies come from conf/edge.toml (with its client-facing headers)
    assert [p.name for p in configs["edge-1"].policies] == ["audio", "images", "api", "default"]
    assert configs["edge-1"].policies[0].response_headers
    assert not configs["regional-1"].policies[0].response_headers
    assert configs["edge-1"].store.max_size == 512 * 1024**2

    runner = Runner(topo, out=None, err=None)  # type: ignore[arg-type]
    for spec in topo.nodes:
        env = runner._environment(spec)
        assert (ACCESS_ENV in env) == (spec.name == "shield-1")
        assert "AWS_SECRET_ACCESS_KEY" not in env


def test_go_direct_gives_the_node_a_fallback_origin() -> None:
    data = _base()
    data["node"][3]["go_direct"] = True
    topo = parse_topology(data, FILE)
    edge = topo.node("edge-1")
    assert edge.origin_facing
    config = parse_config(node_config(topo, edge, _endpoints(topo), "http://s3:1"), "x.toml")
    assert config.upstream.fallback_s3 is not None


def test_weighted_parents_and_free_ports() -> None:
    data = _base()
    data["node"][3]["parents"] = [{"name": "regional-1", "weight": 3}, "regional-2"]
    data["node"][3]["port"] = 0
    topo = parse_topology(data, FILE)
    edge = topo.node("edge-1")
    assert edge.parents == (("regional-1", 3.0), ("regional-2", 1.0))
    assert (edge.port, edge.admin_port) == (0, 0)


def test_dump_toml_round_trips() -> None:
    topo = load_topology(str(LOCAL))
    for spec in topo.nodes:
        data = node_config(topo, spec, _endpoints(topo), "http://127.0.0.1:8333")
        assert tomllib.loads(dump_toml(data)) == data
    odd = {"a": {"b c": 'x"y\n\u00e9', "n": [1, 2.5, True]}, "t": [{"k": {"x": 1}}], "e": {}}
    assert tomllib.loads(dump_toml(odd)) == odd


def _edit(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(_base())
    target: Any = data
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if value is _DELETE:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "key", "fragment"),
    [
        ("topology.workdir", _DELETE, "topology.workdir", "missing required key"),
        ("topology.hots", "x", "topology.hots", 'did you mean "host"?'),
        ("topology.host", "0.0.0.0", "topology.host", "not a loopback address"),
        ("topology.host", "localhost", "topology.host", "not an IP address"),
        ("topology.log_level", "LOUD", "topology.log_level", "not a log level"),
        ("topology.startup_timeout", "soon", "topology.startup_timeout", "not a duration"),
        ("origin.bucket", "Music_Bucket", "origin.bucket", "not an S3 bucket name"),
        ("health.timeout", "5s", "health.timeout", "exceeds interval"),
        ("roles.edge.policies", "../nowhere.toml", "roles.edge.policies", "cannot read"),
        ("roles.edge.max_size", "10 GB", "roles.edge.max_size", "is not a size"),
        ("roles.proxy", {}, "roles.proxy", "unknown key"),
        ("node.0.role", "origin", "node[0].role", "is not a role"),
        ("node.0.port", _DELETE, "node[0].port", "missing required key"),
        ("node.0.port", 70000, "node[0].port", "out of range"),
        ("node.1.name", "shield-1", "node[1].name", "already the name"),
        ("node.1.name", "bad name", "node[1].name", "without spaces"),
        ("node.2.port", 8200, "node[2].port", "already used by node regional-1"),
        ("node.2.admin_port", 8201, "node[2].admin_port", "is the node's port"),
        ("node.1.parents", ["shield-9"], "node[1].parents", 'did you mean "shield-1"?'),
        ("node.1.parents", ["regional-1"], "node[1].parents", "this node itself"),
        ("node.1.parents", ["shield-1", "shield-1"], "node[1].parents", "listed twice"),
        ("node.1.parents", "shield-1", "node[1].parents", "must be an array"),
        ("node.1.parents", [{"name": "shield-1", "weight": 0}], "node[1].parents[0].weight", "out"),
        ("node.0.parents", ["edge-1"], "node", "no node fetches from the origin"),
        ("node.0.go_direct", True, "node[0].go_direct", "needs parents"),
        ("node.1.ram_size", "lots", "node[1].ram_size", "is not a size"),
        ("node", [], "node", "add [[node]] tables"),
    ],
)
def test_errors_are_one_line_naming_the_key(path: str, value: Any, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_topology(_edit(path, value), FILE)
    err = info.value
    assert err.key == key, str(err)
    assert fragment in err.message, str(err)
    assert "\n" not in str(err)


def test_a_cycle_is_refused() -> None:
    data = _base()
    data["node"].append({"name": "loop-a", "role": "regional", "port": 8400, "parents": ["loop-b"]})
    data["node"].append({"name": "loop-b", "role": "regional", "port": 8401, "parents": ["loop-a"]})
    with pytest.raises(ConfigError, match="loop-a, loop-b form a cycle"):
        parse_topology(data, FILE)


def test_generated_config_problems_name_the_topology_node() -> None:
    data = _base()
    data["node"][3]["ram_size"] = "32KiB"  # below ram_object_max (64KiB)
    topo = parse_topology(data, FILE)
    with pytest.raises(ConfigError) as info:
        check_node_configs(topo, _endpoints(topo), "http://127.0.0.1:8333")
    assert info.value.file == FILE and info.value.key == "node[3]"
    assert "edge-1" in info.value.message and "ram_object_max" in info.value.message
