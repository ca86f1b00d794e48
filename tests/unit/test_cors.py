"""CORS rules at the edge (edgeproxy/http/cors.py) and their configuration."""

from __future__ import annotations

import pytest

from edgeproxy.config import ConfigError, parse_config
from edgeproxy.http.cors import (
    CorsRules,
    actual_fields,
    is_preflight,
    merge,
    origin_allowed,
    preflight,
    static_fields,
)

LISTED = CorsRules(
    allow_origins=("https://app.example", "https://*.music.example", "http://localhost:3000"),
    allow_methods=("GET", "HEAD", "PUT"),
    allow_headers=("content-type", "x-token"),
    expose_headers=("Content-Range", "ETag"),
    max_age=300,
)
ANY = CorsRules(allow_origins=("*",), expose_headers=("ETag",))
CREDENTIALED = CorsRules(allow_origins=("https://app.example",), allow_credentials=True)


def _names(fields: list[tuple[str, str]]) -> list[str]:
    return [name.lower() for name, _ in fields]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example", True),
        ("HTTPS://APP.EXAMPLE", True),
        ("https://app.example:443", False),
        ("http://app.example", False),
        ("https://app.example.evil", False),
        ("https://evilapp.example", False),
        ("https://a.music.example", True),
        ("https://a.b.music.example", True),
        ("https://music.example", False),
        ("https://.music.example", False),
        ("https://x.music.example:8443", False),
        ("https://evil.com/.music.example", False),
        ("http://localhost:3000", True),
        ("http://localhost:3001", False),
        ("null", False),
        ("", False),
    ],
)
def test_origin_matching(origin: str, allowed: bool) -> None:
    assert origin_allowed(LISTED, origin) is allowed


def test_any_origin_matches_all_but_null() -> None:
    assert origin_allowed(ANY, "https://whoever.example")
    assert not origin_allowed(ANY, "null")


def test_static_fields() -> None:
    assert static_fields(ANY) == [
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Expose-Headers", "ETag"),
    ]
    assert static_fields(LISTED) == [("Vary", "Origin")]
    assert static_fields(CREDENTIALED) == [("Vary", "Origin")]


def test_actual_fields_reflect_a_listed_origin_only() -> None:
    assert actual_fields(LISTED, "https://app.example") == [
        ("Access-Control-Allow-Origin", "https://app.example"),
        ("Access-Control-Expose-Headers", "Content-Range, ETag"),
    ]
    assert actual_fields(LISTED, "https://evil.example") == []
    assert actual_fields(LISTED, None) == []
    assert actual_fields(ANY, "https://app.example") == []  # the static "*" says it all
    assert actual_fields(CREDENTIALED, "https://app.example") == [
        ("Access-Control-Allow-Origin", "https://app.example"),
        ("Access-Control-Allow-Credentials", "true"),
    ]


def test_actual_block_is_the_fields_as_header_lines() -> None:
    block = LISTED.actual_block("https://app.example")
    assert block == (
        b"Access-Control-Allow-Origin: https://app.example\r\n"
        b"Access-Control-Expose-Headers: Content-Range, ETag\r\n"
    )
    assert LISTED.actual_block("https://evil.example") == b""
    assert LISTED.actual_block("https://app.example") is block  # memoized


def test_actual_block_memo_is_bounded() -> None:
    rules = CorsRules(allow_origins=("https://*.example",))
    for i in range(1000):
        rules.actual_block(f"https://h{i}.example")
    assert len(rules._blocks) <= 256
    assert rules.actual_block("https://h5.example").endswith(b"https://h5.example\r\n")


def test_merge_replaces_stored_cors_fields_and_keeps_one_vary_origin() -> None:
    stored = [
        ("Content-Type", "audio/mpeg"),
        ("Access-Control-Allow-Origin", "https://first-client.example"),
        ("access-control-allow-credentials", "true"),
        ("Vary", "Accept-Encoding"),
    ]
    out = merge(LISTED, stored, "https://app.example")
    assert ("Access-Control-Allow-Origin", "https://first-client.example") not in out
    assert ("access-control-allow-credentials", "true") not in out
    assert ("Access-Control-Allow-Origin", "https://app.example") in out
    assert ("Vary", "Origin") in out and ("Vary", "Accept-Encoding") in out
    assert merge(LISTED, [("Vary", "Accept-Encoding, origin")], None) == [
        ("Vary", "Accept-Encoding, origin")
    ]
    again = merge(LISTED, out, "https://app.example")
    assert sorted(again) == sorted(out)  # idempotent: no second Vary, no second ACAO
    evil = merge(LISTED, out, "https://evil.example")
    assert "access-control-allow-origin" not in _names(evil)


def test_is_preflight() -> None:
    headers = {"origin": "https://app.example", "access-control-request-method": "PUT"}
    assert is_preflight("OPTIONS", headers)
    assert not is_preflight("GET", headers)
    assert not is_preflight("OPTIONS", {"origin": "https://app.example"})
    assert not is_preflight("OPTIONS", {"access-control-request-method": "PUT"})


def test_preflight_allowed() -> None:
    answer = preflight(LISTED, "https://app.example", "PUT", "Content-Type, X-Token")
    assert answer.status == 204
    fields = dict(answer.fields)
    assert fields["Access-Control-Allow-Origin"] == "https://app.example"
    assert fields["Access-Control-Allow-Methods"] == "GET, HEAD, PUT"
    assert fields["Access-Control-Allow-Headers"] == "content-type, x-token"
    assert fields["Access-Control-Max-Age"] == "300"
    assert "Origin" in fields["Vary"]
    assert "Access-Control-Allow-Credentials" not in fields


@pytest.mark.parametrize(
    ("origin", "method", "headers", "fragment"),
    [
        ("https://evil.example", "GET", None, "origin"),
        ("https://app.example", "DELETE", None, "method"),
        ("https://app.example", "PUT", "content-type, x-admin", "x-admin"),
    ],
)
def test_preflight_refused(origin: str, method: str, headers, fragment: str) -> None:
    answer = preflight(LISTED, origin, method, headers)
    assert answer.status == 403
    assert answer.reason is not None and fragment in answer.reason
    assert "access-control-allow-origin" not in _names(answer.fields)


def test_preflight_any_origin_and_any_header() -> None:
    rules = CorsRules(allow_origins=("*",), allow_headers=("*",))
    answer = preflight(rules, "https://x.example", "GET", "X-One,x-two")
    assert answer.status == 204
    fields = dict(answer.fields)
    assert fields["Access-Control-Allow-Origin"] == "*"
    assert fields["Access-Control-Allow-Headers"] == "x-one, x-two"


def test_preflight_with_credentials_names_the_origin() -> None:
    answer = preflight(CREDENTIALED, "https://app.example", "GET", None)
    fields = dict(answer.fields)
    assert fields["Access-Control-Allow-Origin"] == "https://app.example"
    assert fields["Access-Control-Allow-Credentials"] == "true"


# ---- configuration ----------------------------------------------------------------------


def _policy(cors: dict):
    data = {
        "node": {"name": "e", "role": "edge", "listen": "127.0.0.1:0"},
        "upstream": {"parents": ["http://127.0.0.1:9"]},
        "policy": [{"name": "api", "path": "/api/*", "default_ttl": "1m", "cors": cors}],
    }
    return parse_config(data, "conf/test.toml").policies[0]


def test_config_cors() -> None:
    policy = _policy(
        {
            "allow_origins": ["https://App.Example", "https://*.music.example"],
            "allow_headers": ["Content-Type"],
            "expose_headers": ["ETag"],
            "max_age": "1h",
            "allow_credentials": True,
        }
    )
    assert policy.cors == CorsRules(
        allow_origins=("https://app.example", "https://*.music.example"),
        allow_methods=("GET", "HEAD"),
        allow_headers=("content-type",),
        expose_headers=("ETag",),
        max_age=3600,
        allow_credentials=True,
    )
    assert _policy({"allow_origins": ["*"]}).cors.any_origin


@pytest.mark.parametrize(
    ("cors", "key", "fragment"),
    [
        ({}, "allow_origins", "missing required key"),
        ({"allow_origins": []}, "allow_origins", "is empty"),
        ({"allow_origins": ["*", "https://a.example"]}, "allow_origins", "alone"),
        ({"allow_origins": ["https://a.example/"]}, "allow_origins", '"https://a.example"'),
        ({"allow_origins": ["https://a.example/x"]}, "allow_origins", "no path"),
        ({"allow_origins": ["app.example"]}, "allow_origins", "not an origin"),
        ({"allow_origins": ["null"]}, "allow_origins", "not an origin"),
        ({"allow_origins": ["https://a.*.example"]}, "allow_origins", "not an origin"),
        ({"allow_origins": ["https://a.example:99999"]}, "allow_origins", "not an origin"),
        ({"allow_origins": ["*"], "allow_credentials": True}, "allow_credentials", "cookies"),
        ({"allow_origins": ["*"], "allow_methods": ["get"]}, "allow_methods", "upper-case"),
        ({"allow_origins": ["*"], "allow_headers": ["a b"]}, "allow_headers", "not a header"),
        ({"allow_origins": ["*"], "allow_headers": ["A", "a"]}, "allow_headers", "twice"),
        ({"allow_origins": ["*"], "max_age": "1.5s"}, "max_age", "whole number"),
        ({"allow_origins": ["*"], "origins": ["*"]}, "origins", "did you mean"),
        (
            {"allow_origins": ["https://a.example"], "allow_credentials": True,
             "expose_headers": ["*"]},
            "expose_headers",
            "not a wildcard",
        ),
    ],
)  # fmt: skip
def test_config_cors_errors(cors: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        _policy(cors)
    assert info.value.key == f"policy[0].cors.{key}"
    assert fragment in info.value.message
    assert "\n" not in str(info.value)
