"""The config loader: every error is one line ``FILE: KEY: message``; shipped configs load."""

from __future__ import annotations

import contextlib
import copy
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.config import (
    YEAR,
    Config,
    ConfigError,
    check_environment,
    load_config,
    parse_config,
    parse_duration,
    parse_listen,
    parse_size,
)

REPO = Path(__file__).resolve().parents[2]
FILE = "/srv/edgeproxy/conf/test.toml"


def base() -> dict[str, Any]:
    """A minimal valid config (as tomllib would return it)."""
    return {
        "node": {"name": "edge-1", "role": "edge", "listen": "127.0.0.1:8080"},
        "upstream": {"parents": ["http://127.0.0.1:8081"]},
        "policy": [
            {"name": "audio", "path": "/audio/*", "default_ttl": "1d", "max_ttl": "365d"},
            {"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"},
        ],
    }


def s3_base() -> dict[str, Any]:
    data = base()
    data["upstream"] = {"s3": {"endpoint": "http://127.0.0.1:8333", "bucket": "music"}}
    return data


_DELETE = object()


def edit(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Copy of ``data`` with ``path`` ("a.b.0.c") set to ``value`` (or deleted: ``_DELETE``)."""
    data = copy.deepcopy(data)
    *parents, last = path.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return data


def error_of(data: dict[str, Any], file: str = FILE) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, file)
    err = info.value
    text = str(err)
    assert "\n" not in text and "\r" not in text, text
    assert text == f"{file}: {err.key}: {err.message}"
    return err


def assert_error(data: dict[str, Any], key: str, fragment: str) -> None:
    err = error_of(data)
    assert err.file == FILE
    assert err.key == key, str(err)
    assert fragment in err.message, str(err)


# --- the shipped configurations -------------------------------------------------------------


@pytest.mark.parametrize("name", ["edge", "regional", "shield", "single"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(str(REPO / "conf" / f"{name}.toml"))
    assert isinstance(config, Config)
    assert config.policies[-1].path == "*"
    assert [p.name for p in config.policies] == ["audio", "images", "api", "default"]
    # store paths resolve against conf/, landing in <repo>/var/cache/<name>
    assert config.store.path == str(REPO / "var" / "cache" / config.node.name)


def test_shipped_topology() -> None:
    edge = load_config(str(REPO / "conf" / "edge.toml"))
    regional = load_config(str(REPO / "conf" / "regional.toml"))
    shield = load_config(str(REPO / "conf" / "shield.toml"))
    single = load_config(str(REPO / "conf" / "single.toml"))
    assert edge.upstream.parents == (f"http://127.0.0.1:{regional.node.listen_port}",)
    assert regional.upstream.parents == (f"http://127.0.0.1:{shield.node.listen_port}",)
    for node in (shield, single):
        s3 = node.upstream.s3
        assert s3 is not None and node.upstream.parents == ()
        assert (s3.endpoint, s3.bucket) == ("http://127.0.0.1:8333", "music")
        assert (s3.access_key_env, s3.secret_key_env) == (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        )
    assert single.node.role == "edge" and single.node.listen_port == 8080
    # the same keys on every tier; response headers on the client-facing nodes only
    for other in (regional, shield, single):
        assert [(p.query_keys, p.header_keys) for p in other.policies] == [
            (p.query_keys, p.header_keys) for p in edge.policies
        ]
    for node in (edge, single):
        assert all(
            dict(p.response_headers)["X-Content-Type-Options"] == "nosniff" for p in node.policies
        )
    assert all(p.response_headers == () for p in regional.policies + shield.policies)
    audio = edge.policy_for("/audio/a.mp3")
    assert (audio.default_ttl, audio.max_ttl, audio.compress) == (86400, YEAR, False)
    assert audio.query_keys == ("quality", "format", "bitrate")
    images = edge.policy_for("/images/a.jpg")
    assert (images.default_ttl, images.compress, images.header_keys) == (
        7 * 86400,
        True,
        ("accept",),
    )
    api = edge.policy_for("/api/tracks")
    assert (api.default_ttl, api.max_ttl, api.compress) == (300, 3600, True)


# --- defaults -------------------------------------------------------------------------------


def test_minimal_config_and_defaults() -> None:
    config = parse_config(base(), FILE)
    node = config.node
    assert (node.listen_host, node.listen_port) == ("127.0.0.1", 8080)
    assert (node.admin_host, node.admin_port) == ("127.0.0.1", 9080)
    assert (node.region, node.workers, node.max_header_bytes) == ("local", 1, 16 * 1024)
    assert config.upstream.connect_timeout == 5.0
    # the default store path is relative, so it resolves against the config's directory
    assert config.store.path == "/srv/edgeproxy/conf/var/cache/edge-1"


@pytest.mark.parametrize(
    ("role", "max_size", "ram_size"),
    [
        ("edge", 1 << 30, 256 << 20),
        ("regional", 20 << 30, 128 << 20),
        ("shield", 20 << 30, 128 << 20),
    ],
)
def test_role_sets_store_defaults(role: str, max_size: int, ram_size: int) -> None:
    config = parse_config(edit(base(), "node.role", role), FILE)
    assert (config.store.max_size, config.store.ram_size) == (max_size, ram_size)
    explicit = edit(edit(base(), "node.role", role), "store.max_size", "5GiB")
    assert parse_config(explicit, FILE).store.max_size == 5 << 30


def test_relative_paths_resolve_against_the_config_directory() -> None:
    data = edit(base(), "store.path", "../var/cache/edge-1")
    assert parse_config(data, FILE).store.path == "/srv/edgeproxy/var/cache/edge-1"
    data = edit(base(), "store.path", "/data/cache")
    assert parse_config(data, FILE).store.path == "/data/cache"


def test_limits_table() -> None:
    data = edit(base(), "node.limits", {"max_header_bytes": "32KiB", "idle_timeout": "2m"})
    node = parse_config(data, FILE).node
    assert (node.max_header_bytes, node.idle_timeout, node.header_timeout) == (32768, 120.0, 10.0)


def test_ipv6_listen_and_explicit_admin() -> None:
    data = edit(base(), "node.listen", "[::1]:8443")
    data = edit(data, "node.admin_listen", "[::1]:9443")
    node = parse_config(data, FILE).node
    assert (node.listen_host, node.listen_port, node.admin_host, node.admin_port) == (
        "::1",
        8443,
        "::1",
        9443,
    )


def test_missing_default_policy_gets_the_builtin_one() -> None:
    data = base()
    data["policy"] = data["policy"][:1]
    policies = parse_config(data, FILE).policies
    assert [p.name for p in policies] == ["audio", "default"]
    builtin = policies[-1]
    assert (builtin.path, builtin.default_ttl, builtin.max_ttl, builtin.query_keys) == (
        "*",
        0.0,
        YEAR,
        (),
    )
    del data["policy"]
    assert [p.path for p in parse_config(data, FILE).policies] == ["*"]


def test_builtin_default_does_not_clash_with_a_policy_named_default() -> None:
    data = edit(base(), "policy.1.path", "/other/*")
    assert [p.name for p in parse_config(data, FILE).policies][-1] == "builtin-default"


def test_policy_fields() -> None:
    data = edit(base(), "policy.0.header_keys", ["Accept"])
    data = edit(data, "policy.0.query_keys", ["Quality", "format"])
    data = edit(data, "policy.0.methods", ["GET"])
    data = edit(data, "policy.0.response_headers", {"X-A": " 1 "})
    policy = parse_config(data, FILE).policies[0]
    assert policy.header_keys == ("accept",)  # lower-cased
    assert policy.query_keys == ("Quality", "format")  # as written: matched case-sensitively
    assert policy.methods == ("GET",)
    assert policy.response_headers == (("X-A", "1"),)


# --- errors: one line naming the file and the key ------------------------------------------

ERRORS: list[tuple[str, Any, str, str]] = [
    # (path to edit, new value or _DELETE, expected key, fragment of the message)
    ("node.name", _DELETE, "node.name", "missing required key"),
    ("node.role", _DELETE, "node.role", "missing required key"),
    ("node.listen", _DELETE, "node.listen", "missing required key"),
    ("node.name", 5, "node.name", "must be a string, got integer 5"),
    ("node.name", "edge 1", "node.name", "not a node name"),
    ("node.workers", "4", "node.workers", "must be an integer"),
    ("node.workers", 0, "node.workers", "out of range"),
    ("node.role", "cache", "node.role", "is not a role"),
    ("node.role", "egde", "node.role", 'did you mean "edge"?'),
    ("node.listen", "127.0.0.1", "node.listen", "missing port"),
    ("node.listen", "127.0.0.1:-1", "node.listen", "1 to 65535"),
    ("node.listen", "127.0.0.1:65536", "node.listen", "1 to 65535"),
    ("node.listen", "127.0.0.1:http", "node.listen", "1 to 65535"),
    ("node.listen", "::1:8080", "node.listen", "brackets"),
    ("node.listen", "[::1:8080", "node.listen", 'missing "]"'),
    ("node.listen", "[zz]:8080", "node.listen", "not an IPv6 address"),
    ("node.listen", ":8080", "node.listen", "missing host"),
    ("node.listen", "bad host:8080", "node.listen", "not a host name"),
    ("node.listen", "256.1.1.1:8080", "node.listen", "not an IPv4 address"),
    ("node.listen", "127.0.0.1:" + "9" * 5000, "node.listen", "1 to 65535"),
    ("node.listen", "127.0.0.1:65000", "node.admin_listen", "above 65535"),
    ("node.admin_listen", "127.0.0.1:8080", "node.admin_listen", "its own port"),
    ("node.admin_listen", "localhost", "node.admin_listen", "missing port"),
    ("node.limits.max_header_bytes", "lots", "node.limits.max_header_bytes", "not a size"),
    ("node.sendfile_max", "big", "node.sendfile_max", "not a size"),
    ("node.sendfile_max", -1, "node.sendfile_max", "negative"),
    ("node.sendfile", "yes", "node.sendfile", "true or false"),
    ("node.notsent_lowat", "low", "node.notsent_lowat", "not a size"),
    ("node.notsent_lowat", -1, "node.notsent_lowat", "negative"),
    ("node.notsent_lowat", "2GiB", "node.notsent_lowat", "too large; the most is 1GiB"),
    ("node.limits.idle_timeout", "0s", "node.limits.idle_timeout", "longer than 0s"),
    ("node.limits.idle_timeuot", "1s", "node.limits.idle_timeuot", 'did you mean "idle_timeout"'),
    ("polciy", [], "polciy", 'unknown key; did you mean "policy"?'),
    ("store.max_szie", "1GiB", "store.max_szie", 'unknown key; did you mean "max_size"?'),
    ("store.max_size", "10 GB", "store.max_size", '"10 GB" is not a size; use e.g. "10GiB"'),
    ("store.max_size", "10G", "store.max_size", "ambiguous"),
    ("store.max_size", "10XB", "store.max_size", "unknown unit"),
    ("store.max_size", 1.5, "store.max_size", "must be a size"),
    ("store.max_size", -1, "store.max_size", "negative"),
    ("store.max_size", 0, "store.max_size", "too small"),
    ("store.ram_object_max", "1GiB", "store.ram_object_max", "exceeds store.ram_size"),
    ("store.path", "", "store.path", "not a directory path"),
    ("store", "big", "store", "must be a table"),
    ("upstream.read_timeout", "5 minutes", "upstream.read_timeout", "is not a duration"),
    ("upstream.read_timeout", "5m5m", "upstream.read_timeout", "largest to the smallest"),
    ("upstream.connect_timeout", True, "upstream.connect_timeout", "must be a duration"),
    ("upstream.max_connections", 0, "upstream.max_connections", "out of range"),
    ("upstream.parents", "http://x", "upstream.parents", "must be an array of strings"),
    ("upstream.parents", [1], "upstream.parents", "must hold strings only"),
    ("upstream.parents", ["127.0.0.1:8081"], "upstream.parents", "not an http(s) URL"),
    ("upstream.parents", ["http://h:8081/x"], "upstream.parents", "no path"),
    ("upstream.parents", ["http://u:p@h:8081"], "upstream.parents", "no credentials"),
    ("upstream.parents", ["http://h:99999"], "upstream.parents", "is not a URL"),
    ("upstream.parents", ["http://h:1", "http://h:1/"], "upstream.parents", "listed twice"),
    ("upstream.parents", ["http://127.0.0.1:8080"], "upstream.parents", "a loop"),
    ("upstream.parents", [], "upstream", "neither parents nor [upstream.s3]"),
    ("upstream.s3", {"endpoint": "http://s3:8333", "bucket": "b"}, "upstream", "both parents"),
    ("upstream", _DELETE, "upstream", "missing required table"),
    ("node", _DELETE, "node", "missing required table"),
    ("policy", {"name": "a"}, "policy", "[[policy]]"),
    ("policy.0.name", _DELETE, "policy[0].name", "missing required key"),
    ("policy.0.default_ttl", _DELETE, "policy[0].default_ttl", 'add e.g. default_ttl = "1d"'),
    ("policy.0.default_tll", "1d", "policy[0].default_tll", 'did you mean "default_ttl"?'),
    ("policy.0.default_ttl", "1 day", "policy[0].default_ttl", "not a duration"),
    ("policy.0.min_ttl", "2d", "policy[0].min_ttl", "min_ttl <= default_ttl <= max_ttl"),
    ("policy.0.max_ttl", "1h", "policy[0].default_ttl", "min_ttl <= default_ttl <= max_ttl"),
    ("policy.1.name", "audio", "policy[1].name", "already the name of policy[0]"),
    ("policy.0.path", "audio/*", "policy[0].path", 'must start with "/"'),
    ("policy.0.path", "/a*b/*", "policy[0].path", "only allowed at the end"),
    ("policy.0.path", "/%7Eu/*", "policy[0].path", 'write "/~u/*"'),
    ("policy.0.path", "/a b/*", "policy[0].path", "not a valid path"),
    ("policy.0.path", "*", "policy[1].path", "unreachable"),
    ("policy.0.compress", "yes", "policy[0].compress", "must be true or false"),
    ("policy.0.methods", ["get"], "policy[0].methods", 'upper-case tokens; write "GET"'),
    ("policy.0.methods", ["GET", "GET"], "policy[0].methods", "twice"),
    ("policy.0.methods", [], "policy[0].methods", "is empty"),
    ("policy.0.methods", ["G T"], "policy[0].methods", "not a method name"),
    ("policy.0.other_methods", "drop", "policy[0].other_methods", '"refuse"'),
    ("policy.0.header_keys", ["Cookie"], "policy[0].header_keys", "cookies are never keyed"),
    ("policy.0.header_keys", ["authorization"], "policy[0].header_keys", "never keyed"),
    ("policy.0.header_keys", ["Connection"], "policy[0].header_keys", "hop-by-hop"),
    ("policy.0.header_keys", ["transfer-encoding"], "policy[0].header_keys", "hop-by-hop"),
    ("policy.0.header_keys", ["range"], "policy[0].header_keys", "Range is never keyed"),
    ("policy.0.header_keys", ["accept-encoding"], "policy[0].header_keys", "variant"),
    ("policy.0.header_keys", ["accept", "Accept"], "policy[0].header_keys", "twice"),
    ("policy.0.header_keys", ["a:b"], "policy[0].header_keys", "not a header field name"),
    ("policy.0.query_keys", ["X-Amz-Signature"], "policy[0].query_keys", "never keyed"),
    ("policy.0.query_keys", ["a=b"], "policy[0].query_keys", "not a query parameter name"),
    ("policy.0.query_keys", ["q", "q"], "policy[0].query_keys", "twice"),
    (
        "policy.0.response_headers",
        {"Content-Length": "1"},
        "policy[0].response_headers.Content-Length",
        "managed by the proxy",
    ),
    (
        "policy.0.response_headers",
        {"X-A": "1\r\nX-B: 2"},
        "policy[0].response_headers.X-A",
        "control characters",
    ),
    ("policy.0.response_headers", {"X-A": 1}, "policy[0].response_headers.X-A", "must be a string"),
    (
        "policy.0.response_headers",
        {"X-A": "1", "x-a": "2"},
        "policy[0].response_headers.x-a",
        "set twice",
    ),
    ("policy.0.response_headers", "X-A: 1", "policy[0].response_headers", "must be a table"),
]


@pytest.mark.parametrize(("path", "value", "key", "fragment"), ERRORS)
def test_errors_name_file_and_key(path: str, value: Any, key: str, fragment: str) -> None:
    assert_error(edit(base(), path, value), key, fragment)


S3_ERRORS: list[tuple[str, Any, str, str]] = [
    ("upstream.s3.endpoint", _DELETE, "upstream.s3.endpoint", "missing required key"),
    ("upstream.s3.endpoint", "s3.local", "upstream.s3.endpoint", "http(s) URL"),
    ("upstream.s3.endpoint", "http://s3/base", "upstream.s3.endpoint", "no path"),
    ("upstream.s3.buckets", ["music"], "upstream.s3", "both bucket and buckets"),
    ("upstream.s3.bucket", _DELETE, "upstream.s3", "neither bucket nor buckets"),
    ("upstream.s3.bucket", "a/b", "upstream.s3.bucket", "not a bucket name"),
    ("upstream.s3.regoin", "x", "upstream.s3.regoin", 'did you mean "region"?'),
    ("upstream.s3.access_key_env", "AWS_ACCESS_KEY_ID", "upstream.s3.secret_key_env", "missing"),
    ("upstream.s3.secret_key_env", "AWS_SECRET", "upstream.s3.access_key_env", "missing"),
    (
        "upstream.s3.session_token_env",
        "AWS_SESSION_TOKEN",
        "upstream.s3.session_token_env",
        "needs",
    ),
    ("upstream.s3.access_key_env", "AWS KEY", "upstream.s3.access_key_env", "not an environment"),
]


@pytest.mark.parametrize(("path", "value", "key", "fragment"), S3_ERRORS)
def test_s3_errors_name_file_and_key(path: str, value: Any, key: str, fragment: str) -> None:
    assert_error(edit(s3_base(), path, value), key, fragment)


def test_s3_buckets_drop_in() -> None:
    data = edit(edit(s3_base(), "upstream.s3.bucket", _DELETE), "upstream.s3.buckets", ["a", "b"])
    s3 = parse_config(data, FILE).upstream.s3
    assert s3 is not None and (s3.bucket, s3.buckets) == (None, ("a", "b"))
    assert_error(edit(data, "upstream.s3.buckets", []), "upstream.s3.buckets", "is empty")
    assert_error(edit(data, "upstream.s3.buckets", ["a", "a"]), "upstream.s3.buckets", "twice")


def test_values_are_quoted_on_one_line() -> None:
    err = error_of(edit(base(), "node.name", "edge\n1"))
    assert err.key == "node.name" and '"edge\\n1"' in err.message
    err = error_of(edit(base(), "node.limits", {"odd\nkey": 1}))
    assert err.key == 'node.limits."odd\\nkey"'


def test_top_level_wrong_type_of_node() -> None:
    assert_error(edit(base(), "node", "edge-1"), "node", "must be a table")


# --- files ----------------------------------------------------------------------------------


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[node]\nname = "edge-1"\nrole = edge\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    err = info.value
    assert (err.file, err.key) == (str(path), "(toml)")
    assert "line 3" in err.message and "column" in err.message
    assert "\n" not in str(err)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "missing.toml"))
    assert info.value.key == "(file)" and "cannot read" in info.value.message
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[node]\nname = "\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.key == "(toml)" and "UTF-8" in info.value.message


def test_load_config_resolves_store_path_against_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    path = conf / "edge.toml"
    path.write_text(
        '[node]\nname = "e"\nrole = "edge"\nlisten = "127.0.0.1:8080"\n'
        '[store]\npath = "../var/cache/e"\n'
        '[upstream]\nparents = ["http://127.0.0.1:8081"]\n'
    )
    assert load_config(str(path)).store.path == str(tmp_path / "var" / "cache" / "e")


# --- environment (read at start, not at load) -----------------------------------------------


def test_check_environment(tmp_path: Path) -> None:
    data = edit(s3_base(), "upstream.s3.access_key_env", "AWS_ACCESS_KEY_ID")
    data = edit(data, "upstream.s3.secret_key_env", "AWS_SECRET_ACCESS_KEY")
    data = edit(data, "store.path", str(tmp_path / "cache"))
    config = parse_config(data, FILE)  # loads although the variables are not set
    problems = check_environment(config, {"AWS_ACCESS_KEY_ID": "k"})
    assert problems == ["AWS_SECRET_ACCESS_KEY is not set (upstream.s3.secret_key_env); export it"]
    problems = check_environment(config, {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": ""})
    assert problems and problems[0].startswith("AWS_SECRET_ACCESS_KEY is empty")
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    assert check_environment(config, env) == []
    anonymous = parse_config(edit(s3_base(), "store.path", str(tmp_path / "c2")), FILE)
    assert check_environment(anonymous, {}) == []


def test_check_environment_store_path_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    config = parse_config(edit(base(), "store.path", str(tmp_path / "file")), FILE)
    assert any("not a directory" in p for p in check_environment(config, {}))


# --- sizes and durations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10GiB", 10 << 30),
        ("512MiB", 512 << 20),
        ("64KiB", 65536),
        ("1GB", 10**9),
        ("1kb", 1000),
        ("1024", 1024),
        ("1024B", 1024),
        (" 2TiB ", 2 << 40),
        ("1.5KiB", 1536),
        (0, 0),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "GiB",
        "10 GiB",
        "-1",
        "1.1B",
        "1e3",
        "1,024",
        "10G",
        "1 0",
        "0x10",
        "١٠",
        True,
        1.0,
        None,
        -5,
    ],
)
def test_parse_size_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", 7 * 86400),
        ("5m", 300),
        ("1h", 3600),
        ("30s", 30),
        ("250ms", 0.25),
        ("1y", 365 * 86400),
        ("365d", 365 * 86400),
        ("1h30m", 5400),
        ("1d12h", 1.5 * 86400),
        ("2w", 14 * 86400),
        ("1.5s", 1.5),
        ("30", 30),
        ("0", 0),
        (10, 10),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "5 m",
        "5M",
        "1m1h",
        "1s1s",
        "-5s",
        "5mins",
        "1e3",
        "nan",
        math.nan,
        math.inf,
        -1,
        True,
        None,
    ],
)
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_size_raises_only_value_error(value: Any) -> None:
    try:
        result = parse_size(value)
    except ValueError:
        return
    assert isinstance(result, int) and result >= 0


@given(st.text(alphabet="0123456789.KMGTiBbkmgt ", max_size=12))
def test_parse_size_near_misses_raise_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert parse_size(text) >= 0


@given(st.one_of(st.text(), st.integers(), st.floats(), st.booleans(), st.none()))
def test_parse_duration_raises_only_value_error(value: Any) -> None:
    try:
        result = parse_duration(value)
    except ValueError:
        return
    assert isinstance(result, float) and math.isfinite(result) and result >= 0


@given(st.text(alphabet="0123456789.ywdhms ", max_size=12))
def test_parse_duration_near_misses_raise_only_value_error(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert parse_duration(text) >= 0


@given(st.integers(0, 10**6), st.sampled_from(["", "B", "KiB", "MiB", "GiB", "KB", "MB", "GB"]))
def test_parse_size_units(number: int, unit: str) -> None:
    factor = {"": 1, "B": 1, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 1000}
    factor |= {"MB": 10**6, "GB": 10**9}
    assert parse_size(f"{number}{unit}") == number * factor[unit]


def test_port_zero_means_any_free_port() -> None:
    data = edit(base(), "node.listen", "127.0.0.1:0")
    node = parse_config(data, FILE).node
    assert (node.listen_port, node.admin_port) == (0, 0)
    data = edit(data, "node.admin_listen", "127.0.0.1:0")
    assert parse_config(data, FILE).node.admin_port == 0


def test_parse_listen() -> None:
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_listen("localhost:65535") == ("localhost", 65535)
    assert parse_listen("[::]:8080") == ("::", 8080)
