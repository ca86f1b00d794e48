"""TLS and viewer-protocol configuration (issue 10 item 9), the connection limit's key, the
context builder's diagnoses and the pure viewer-protocol decision."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.config import ConfigError, load_config, parse_config
from edgeproxy.tls import (
    MIN_VERSION,
    TlsContexts,
    TlsError,
    build_context,
    https_location,
    viewer_answer,
)
from tests.support.selfsigned import make_cert


def base(**node: Any) -> dict[str, Any]:
    return {
        "node": {"name": "edge-1", "role": "edge", "listen": "127.0.0.1:8080", **node},
        "upstream": {"parents": ["http://127.0.0.1:8081"]},
        "policy": [{"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"}],
    }


def error_of(data: dict[str, Any], file: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, file)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{file}: {info.value.key}: "), text
    return info.value


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls") / "tls")


@pytest.fixture(scope="module")
def other_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls2") / "tls", "other", "other.test")


# ---- config ----------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_file(pair: tuple[Path, Path]) -> None:
    """The cert lives in <dir>/tls/; the file names it relative to <dir>, wherever we run."""
    conf_dir = pair[0].parent.parent
    config = parse_config(
        base(tls_cert="tls/edge.crt", tls_key="tls/edge.key", tls_listen="127.0.0.1:8443"),
        str(conf_dir / "edge.toml"),
    )
    node = config.node
    assert node.tls_cert == str(pair[0]) and node.tls_key == str(pair[1])
    assert (node.tls_listen_host, node.tls_listen_port) == ("127.0.0.1", 8443)
    assert not node.tls_on_listen  # plain HTTP stays on listen


def test_without_tls_listen_the_listen_port_speaks_tls(pair: tuple[Path, Path]) -> None:
    config = parse_config(
        base(tls_cert=str(pair[0]), tls_key=str(pair[1])), str(pair[0].parent / "x.toml")
    )
    assert config.node.tls_on_listen and config.node.tls_listen_host is None


def test_no_tls_by_default() -> None:
    node = parse_config(base(), "/srv/e.toml").node
    assert node.tls_cert is None and not node.tls_on_listen


@pytest.mark.parametrize(
    ("node", "key", "fragment"),
    [
        ({"tls_cert": "tls/edge.crt"}, "node.tls_key", "tls_cert is set"),
        ({"tls_key": "tls/edge.key"}, "node.tls_cert", "tls_key is set"),
        ({"tls_listen": "127.0.0.1:8443"}, "node.tls_listen", "needs tls_cert"),
        ({"tls_cert": "tls/none.crt", "tls_key": "tls/edge.key"}, "node.tls_cert", "cannot read"),
        ({"tls_cert": "tls/edge.crt", "tls_key": "tls/none.key"}, "node.tls_key", "cannot read"),
        ({"tls_cert": "tls/edge.key", "tls_key": "tls/edge.key"}, "node.tls_cert", "no PEM cert"),
        ({"tls_cert": "tls/edge.crt", "tls_key": "tls/edge.crt"}, "node.tls_key", "no PEM priv"),
        ({"tls_cert": 3, "tls_key": "tls/edge.key"}, "node.tls_cert", "must be a string"),
        (
            {"tls_cert": "tls/edge.crt", "tls_key": "tls/edge.key", "tls_listen": "127.0.0.1:8080"},
            "node.tls_listen",
            "its own port",
        ),
        (
            {"tls_cert": "tls/edge.crt", "tls_key": "tls/edge.key", "tls_listen": "nowhere"},
            "node.tls_listen",
            "missing port",
        ),
    ],
)
def test_bad_tls_settings_are_one_line_errors_naming_the_key(
    pair: tuple[Path, Path], node: dict[str, Any], key: str, fragment: str
) -> None:
    file = str(pair[0].parent.parent / "edge.toml")
    err = error_of(base(**node), file)
    assert err.key == key, str(err)
    assert fragment in err.message, str(err)


def test_a_key_of_another_certificate_is_refused(
    pair: tuple[Path, Path], other_pair: tuple[Path, Path]
) -> None:
    err = error_of(base(tls_cert=str(pair[0]), tls_key=str(other_pair[1])), "/srv/e.toml")
    assert err.key == "node.tls_key" and "not the private key" in err.message, str(err)


def test_an_encrypted_key_is_refused_without_prompting(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to encrypt a key")
    encrypted = tmp_path / "enc.key"
    subprocess.run(
        [openssl, "pkey", "-in", str(pair[1]), "-aes256", "-passout", "pass:x"],
        check=True,
        stdout=encrypted.open("wb"),
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    err = error_of(base(tls_cert=str(pair[0]), tls_key=str(encrypted)), "/srv/e.toml")
    assert err.key == "node.tls_key" and "encrypted" in err.message, str(err)


def test_load_config_reports_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        '[node]\nname = "e"\nrole = "edge"\nlisten = "127.0.0.1:8080"\n'
        'tls_cert = "missing.crt"\ntls_key = "missing.key"\n'
        '[upstream]\nparents = ["http://127.0.0.1:8081"]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith(f"{path}: node.tls_cert: cannot read {tmp_path}/missing.crt")


@pytest.mark.parametrize("mode", ["allow-all", "redirect-to-https", "https-only"])
def test_viewer_protocol_values(pair: tuple[Path, Path], mode: str) -> None:
    data = base(tls_cert=str(pair[0]), tls_key=str(pair[1]), tls_listen="127.0.0.1:8443")
    data["policy"][0]["viewer_protocol"] = mode
    assert parse_config(data, "/srv/e.toml").policies[0].viewer_protocol == mode


def test_viewer_protocol_defaults_to_allow_all() -> None:
    assert parse_config(base(), "/srv/e.toml").policies[0].viewer_protocol == "allow-all"


def test_unknown_viewer_protocol_gets_a_hint(pair: tuple[Path, Path]) -> None:
    data = base(tls_cert=str(pair[0]), tls_key=str(pair[1]))
    data["policy"][0]["viewer_protocol"] = "redirect-https"
    err = error_of(data, "/srv/e.toml")
    assert err.key == "policy[0].viewer_protocol" and "redirect-to-https" in err.message


def test_https_policies_need_tls_on_the_node() -> None:
    """Without TLS every request would be redirected or refused (behind a TLS-terminating
    proxy: a redirect loop)."""
    data = base()
    data["policy"].insert(
        0,
        {
            "name": "premium",
            "path": "/premium/*",
            "default_ttl": "1h",
            "viewer_protocol": "https-only",
        },
    )
    err = error_of(data, "/srv/e.toml")
    assert err.key == "policy[0].viewer_protocol" and "needs TLS" in err.message


def test_max_connections_limit() -> None:
    data = base()
    assert parse_config(data, "/srv/e.toml").node.max_connections > 0
    data["node"]["limits"] = {"max_connections": 3}
    assert parse_config(data, "/srv/e.toml").node.max_connections == 3
    data["node"]["limits"] = {"max_connections": 0}
    err = error_of(data, "/srv/e.toml")
    assert err.key == "node.limits.max_connections" and "out of range" in err.message


# ---- contexts --------------------------------------------------------------------------------


def test_context_floor_is_tls_1_2(pair: tuple[Path, Path]) -> None:
    ctx = build_context(str(pair[0]), str(pair[1]))
    assert ctx.minimum_version == MIN_VERSION == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION


def test_a_failed_reload_keeps_the_current_context(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    shutil.copy(pair[0], cert)
    shutil.copy(pair[1], key)
    contexts = TlsContexts(str(cert), str(key))
    first = contexts.current
    cert.write_text("renewal in progress\n")
    with pytest.raises(TlsError) as info:
        contexts.reload()
    assert info.value.option == "tls_cert"
    assert contexts.current is first and contexts.reloads == 0
    shutil.copy(pair[0], cert)
    contexts.reload()
    assert contexts.current is not first and contexts.reloads == 1
    assert contexts.listener is first  # the listener keeps dispatching to the current one


# ---- viewer protocol (pure) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "host", "port", "expected"),
    [
        ("/a/b?x=1", "cdn.example", 443, "https://cdn.example/a/b?x=1"),
        ("/a", "cdn.example:8080", 8443, "https://cdn.example:8443/a"),
        ("/a", "[::1]:8080", 8443, "https://[::1]:8443/a"),
        ("/a", "CDN.Example.", 443, "https://cdn.example./a"),
        ("http://other.example:80/p?q", "ignored", 443, "https://other.example/p?q"),
        ("http://other.example?q", None, 443, "https://other.example/?q"),
        ("/a", None, 443, None),
        ("/a", "bad host", 443, None),
        ("/a", "evil.example/x", 443, None),
        ("/a", "h:port", 443, None),
        ("/a", "[::1", 443, None),
        ("/a", "a..b", 443, None),
        ("/a", "-a", 443, None),
        ("/a", "a" * 300, 443, None),
        ("http://user@evil.example/", "x", 443, None),
        ("ftp://x/y", "x", 443, None),
    ],
)
def test_https_location(target: str, host: str | None, port: int, expected: str | None) -> None:
    assert https_location(target, host, port) == expected


def test_redirect_to_https_redirects_get_and_head_only() -> None:
    for method in ("GET", "HEAD"):
        status, location, _ = viewer_answer("redirect-to-https", method, "/x", "h", 443)
        assert (status, location) == (301, "https://h/x")
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        status, location, _ = viewer_answer("redirect-to-https", method, "/x", "h", 443)
        assert (status, location) == (403, None)  # as CloudFront: never redirects a body


def test_https_only_refuses_every_method() -> None:
    for method in ("GET", "HEAD", "POST"):
        assert viewer_answer("https-only", method, "/x", "h", 443)[:2] == (403, None)


def test_redirect_without_a_host_is_a_400() -> None:
    assert viewer_answer("redirect-to-https", "GET", "/x", None, 443)[:2] == (400, None)
