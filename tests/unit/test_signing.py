"""Signed URLs (edgeproxy/signing.py): HMAC-SHA256 over key id, expiry and path or prefix."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit

import pytest

from edgeproxy import signing
from edgeproxy.cache.key import normalize_path
from edgeproxy.config import ConfigError, check_environment, parse_config
from edgeproxy.signing import (
    Refusal,
    parse_keys,
    sign,
    sign_url,
    strip_params,
    verify,
)

K1 = b"k1-secret-0123456789abcdef"
K2 = b"k2-secret-fedcba9876543210"
KEYS = {"k1": K1, "k2": K2}
NOW = 1_800_000_000
PATH = "/audio/album1/t1.mp3"


def _query(path: str, key_id: str, expires: int, *, secret: bytes, prefix: str | None = None):
    sig = sign(secret, key_id, expires, prefix or path, prefix=prefix is not None)
    parts = [f"ep_expires={expires}", f"ep_key={key_id}", f"ep_sig={sig}"]
    if prefix is not None:
        parts.append("ep_prefix=" + prefix.replace("/", "%2F"))
    return "&".join(parts)


def _code(refusal: Refusal | None) -> str | None:
    return None if refusal is None else refusal.code


# ---- the signature ----------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_the_documented_message() -> None:
    # computed here from the format in the module docstring, not with signing.sign
    msg = f"edgeproxy-url-v1\nk1\n{NOW}\npath\n{PATH}".encode()
    expected = base64.urlsafe_b64encode(hmac.new(K1, msg, hashlib.sha256).digest())
    assert sign(K1, "k1", NOW, PATH) == expected.rstrip(b"=").decode()
    prefix_msg = f"edgeproxy-url-v1\nk1\n{NOW}\nprefix\n/audio/".encode()
    prefixed = base64.urlsafe_b64encode(hmac.new(K1, prefix_msg, hashlib.sha256).digest())
    assert sign(K1, "k1", NOW, "/audio/", prefix=True) == prefixed.rstrip(b"=").decode()


def test_valid_until_the_expiry_second() -> None:
    query = _query(PATH, "k1", NOW + 60, secret=K1)
    assert verify(PATH, query, KEYS, now=NOW) is None
    assert verify(PATH, query, KEYS, now=NOW + 59.9) is None
    refusal = verify(PATH, query, KEYS, now=NOW + 60)
    assert _code(refusal) == "signature-expired"
    assert "expired" in refusal.message


def test_other_query_parameters_are_not_signed() -> None:
    query = _query(PATH, "k1", NOW + 60, secret=K1)
    assert verify(PATH, "quality=high&" + query + "&utm=x", KEYS, now=NOW) is None


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda q: q, None),
        (
            lambda q: q.replace(f"ep_expires={NOW + 60}", f"ep_expires={NOW + 6000}"),
            "bad-signature",
        ),
        (lambda q: q.replace("ep_key=k1", "ep_key=k2"), "bad-signature"),
        (lambda q: q.replace("ep_key=k1", "ep_key=k9"), "unknown-key"),
        (lambda q: q[:-2] + ("AA" if not q.endswith("AA") else "BB"), "bad-signature"),
        (lambda q: q.replace("ep_sig=", "ep_sig=é"), "bad-signature"),
        (lambda q: q.replace("ep_expires", "ep_expiry"), "signature-malformed"),
        (lambda q: q + "&ep_key=k1", "signature-malformed"),
        (lambda q: q.replace(f"ep_expires={NOW + 60}", "ep_expires=12x"), "signature-malformed"),
        (lambda q: q.replace(f"ep_expires={NOW + 60}", "ep_expires=-5"), "signature-malformed"),
        (lambda q: "quality=high", "signature-missing"),
        (lambda q: "", "signature-missing"),
    ],
)
def test_tampering_is_refused_with_its_reason(tamper, code) -> None:
    query = tamper(_query(PATH, "k1", NOW + 60, secret=K1))
    assert _code(verify(PATH, query, KEYS, now=NOW)) == code


def test_tampered_path_is_refused() -> None:
    query = _query(PATH, "k1", NOW + 60, secret=K1)
    assert _code(verify("/audio/album1/t2.mp3", query, KEYS, now=NOW)) == "bad-signature"


def test_a_signature_with_a_bad_key_id_is_not_checked_before_the_expiry() -> None:
    # an unknown key id is reported as such even when the URL is also expired
    query = _query(PATH, "k9", NOW - 10, secret=K1)
    assert _code(verify(PATH, query, KEYS, now=NOW)) == "unknown-key"


def test_an_expired_url_with_a_bad_signature_is_a_bad_signature() -> None:
    query = _query(PATH, "k1", NOW - 10, secret=K2)
    assert _code(verify(PATH, query, KEYS, now=NOW)) == "bad-signature"


# ---- prefixes ---------------------------------------------------------------------------


def test_prefix_signature_covers_the_paths_under_it_only() -> None:
    query = _query("", "k1", NOW + 60, secret=K1, prefix="/audio/album1/")
    assert verify("/audio/album1/t1.mp3", query, KEYS, now=NOW) is None
    assert verify("/audio/album1/disc2/t9.mp3", query, KEYS, now=NOW) is None
    refusal = verify("/audio/album2/t1.mp3", query, KEYS, now=NOW)
    assert _code(refusal) == "signature-scope"
    assert "/audio/album1/" in refusal.message
    # dot segments cannot step out: the node verifies the normalized path
    escaped = normalize_path("/audio/album1/../album2/t1.mp3")
    assert _code(verify(escaped, query, KEYS, now=NOW)) == "signature-scope"


def test_a_widened_prefix_is_a_bad_signature() -> None:
    query = _query("", "k1", NOW + 60, secret=K1, prefix="/audio/album1/")
    widened = query.replace("%2Faudio%2Falbum1%2F", "%2Faudio%2F")
    assert _code(verify("/audio/album2/t1.mp3", widened, KEYS, now=NOW)) == "bad-signature"


def test_a_path_signature_is_not_a_prefix_signature() -> None:
    query = _query(PATH, "k1", NOW + 60, secret=K1)
    as_prefix = query + "&ep_prefix=" + PATH.replace("/", "%2F")
    assert _code(verify(PATH, as_prefix, KEYS, now=NOW)) == "bad-signature"


# ---- rotation ---------------------------------------------------------------------------


def test_two_active_key_ids_rotate() -> None:
    old = _query(PATH, "k1", NOW + 60, secret=K1)
    new = _query(PATH, "k2", NOW + 60, secret=K2)
    assert verify(PATH, old, KEYS, now=NOW) is None
    assert verify(PATH, new, KEYS, now=NOW) is None
    retired = {"k2": K2}  # k1 removed once its URLs have expired
    assert _code(verify(PATH, old, retired, now=NOW)) == "unknown-key"
    assert verify(PATH, new, retired, now=NOW) is None


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(signing.hmac, "compare_digest", spy)
    good = _query(PATH, "k1", NOW + 60, secret=K1)
    assert verify(PATH, good, KEYS, now=NOW) is None
    assert verify(PATH, good.replace("ep_sig=", "ep_sig=x"), KEYS, now=NOW) is not None
    assert len(calls) == 2


# ---- keys from the environment ----------------------------------------------------------


def test_parse_keys() -> None:
    text = "k2:" + K2.decode() + ", k1:" + K1.decode() + "\n"
    assert parse_keys(text) == {"k2": K2, "k1": K1}
    assert list(parse_keys(text)) == ["k2", "k1"]  # order kept: the first signs by default
    assert parse_keys("a:" + "x:y=" * 5) == {"a": b"x:y=" * 5}  # ":" in a secret is fine


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no keys"),
        ("k1", "not ID:SECRET"),
        ("k 1:" + "s" * 20, "not ID:SECRET"),
        ("k1:short", "shorter than 16"),
        (f"k1:{'s' * 20},k1:{'t' * 20}", "twice"),
    ],
)
def test_parse_keys_refuses(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        parse_keys(text)
    assert "s" * 20 not in str(info.value)  # never the secret


# ---- signing URLs -----------------------------------------------------------------------


def test_sign_url_keeps_the_url_and_verifies_on_the_normalized_path() -> None:
    url = sign_url("https://cdn.example:8443/audio/a/t%7E1.mp3?quality=hi#top", K1, "k1", NOW)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path, parts.fragment) == (
        "https",
        "cdn.example:8443",
        "/audio/a/t%7E1.mp3",
        "top",
    )
    assert parse_qs(parts.query)["quality"] == ["hi"]
    assert verify(normalize_path(parts.path), parts.query, {"k1": K1}, now=NOW - 1) is None


def test_sign_url_replaces_an_earlier_signature() -> None:
    first = sign_url("/audio/t.mp3", K1, "k1", NOW)
    again = sign_url(first, K2, "k2", NOW + 5)
    query = urlsplit(again).query
    assert query.count("ep_sig=") == 1 and "ep_key=k2" in query
    assert verify("/audio/t.mp3", query, KEYS, now=NOW) is None


def test_sign_url_with_a_prefix() -> None:
    url = sign_url("/audio/album1/t1.mp3", K1, "k1", NOW, prefix="/audio/album1/")
    query = urlsplit(url).query
    assert verify("/audio/album1/t7.mp3", query, KEYS, now=NOW - 1) is None
    with pytest.raises(ValueError, match="does not start with"):
        sign_url("/audio/album2/t1.mp3", K1, "k1", NOW, prefix="/audio/album1/")
    with pytest.raises(ValueError, match="not normalized"):
        sign_url("/audio/album1/t1.mp3", K1, "k1", NOW, prefix="/audio/x/../album1/")


def test_strip_params() -> None:
    query = "a=1&ep_sig=x&b=2&ep_expires=3&X-Amz-Signature=y&ep_key=k&&ep_prefix=%2F"
    assert strip_params(query) == "a=1&b=2&X-Amz-Signature=y"
    assert strip_params(query, frozenset(), amz=True) == (
        "a=1&ep_sig=x&b=2&ep_expires=3&ep_key=k&ep_prefix=%2F"
    )


# ---- configuration ----------------------------------------------------------------------


def _config(policy_extra: dict, upstream: dict | None = None, query_keys=None):
    policy = {"name": "premium", "path": "/audio/*", "default_ttl": "1d", **policy_extra}
    if query_keys is not None:
        policy["query_keys"] = query_keys
    data = {
        "node": {"name": "e", "role": "edge", "listen": "127.0.0.1:0"},
        "upstream": upstream or {"parents": ["http://127.0.0.1:9"]},
        "policy": [policy],
    }
    return parse_config(data, "conf/test.toml")


def test_config_signed_urls() -> None:
    config = _config({"signed_urls": {"keys_env": "MY_KEYS"}})
    signed = config.policies[0].signed_urls
    assert signed is not None
    assert (signed.type, signed.required, signed.keys_env) == ("hmac", True, "MY_KEYS")
    assert config.policies[-1].signed_urls is None
    problems = check_environment(config, {})
    assert any("MY_KEYS is not set (policy[0].signed_urls.keys_env)" in p for p in problems)
    problems = check_environment(config, {"MY_KEYS": "k1:short"})
    assert any("shorter than 16" in p for p in problems)
    assert not any("MY_KEYS" in p for p in check_environment(config, {"MY_KEYS": "k:" + "s" * 16}))


@pytest.mark.parametrize(
    ("extra", "key", "fragment"),
    [
        ({"signed_urls": {"type": "jwt"}}, "policy[0].signed_urls.type", "hmac"),
        ({"signed_urls": {"keys_env": "a-b"}}, "policy[0].signed_urls.keys_env", "variable"),
        ({"signed_urls": {"secret": "x"}}, "policy[0].signed_urls.secret", "unknown key"),
        ({"signed_urls": {"required": "yes"}}, "policy[0].signed_urls.required", "true or"),
        ({"signed_urls": {"type": "s3-presigned"}}, "policy[0].signed_urls.type", "credentials"),
        (
            {"signed_urls": {"type": "s3-presigned", "keys_env": "K"}},
            "policy[0].signed_urls.keys_env",
            "S3 credentials",
        ),
    ],
)
def test_config_signed_urls_errors(extra: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        _config(extra)
    assert info.value.key == key
    assert fragment in info.value.message
    assert "\n" not in str(info.value)


def test_config_refuses_keying_signature_parameters() -> None:
    with pytest.raises(ConfigError) as info:
        _config({}, query_keys=["quality", "ep_sig"])
    assert info.value.key == "policy[0].query_keys"


def test_config_s3_presigned_with_origin_credentials() -> None:
    upstream = {
        "s3": {
            "endpoint": "http://127.0.0.1:9000",
            "buckets": ["music"],
            "access_key_env": "AK",
            "secret_key_env": "SK",
        }
    }
    config = _config({"signed_urls": {"type": "s3-presigned"}}, upstream)
    signed = config.policies[0].signed_urls
    assert signed is not None and signed.type == "s3-presigned"
