"""S3 presigned URLs verified at the edge (edgeproxy/presign.py).

URLs are made by AWS's documented example (a known answer) or by :func:`presign_query`
below, a small implementation written from the AWS spec independently of edgeproxy/proxy/s3.py
(the integration tests also check it against SeaweedFS itself).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote

import pytest

from edgeproxy import presign as presign_module
from edgeproxy.presign import PresignVerifier
from edgeproxy.proxy.s3 import Credentials

# AWS S3 API Reference, "Authenticating Requests: Using Query Parameters (AWS Signature
# Version 4)", example "GET object"
AWS_ACCESS = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_HOST = "examplebucket.s3.amazonaws.com"
AWS_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
)
AWS_SIGNED_AT = 1369353600  # 2013-05-24T00:00:00Z


def presign_query(
    method: str,
    host: str,
    path: str,
    *,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    signed_at: float,
    expires: int = 3600,
    extra: dict[str, str] | None = None,
    token: str | None = None,
) -> str:
    """The query string of a presigned URL for ``path`` (decoded, e.g. ``/music/a b.mp3``)
    as the AWS spec builds it; the caller puts ``quote(path, safe="/-_.~")`` before it."""

    def enc(text: str) -> str:
        return quote(text, safe="-_.~")

    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at))
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    params = {
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Credential": f"{access_key}/{scope}",
        "X-Amz-Date": amz_date,
        "X-Amz-Expires": str(expires),
        "X-Amz-SignedHeaders": "host",
        **(extra or {}),
    }
    if token is not None:
        params["X-Amz-Security-Token"] = token
    query = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(params.items()))
    creq = "\n".join(
        [method, quote(path, safe="/-_.~"), query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    sts = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (amz_date[:8], region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    return f"{query}&X-Amz-Signature={signature}"


ACCESS = "edge-test-access"
SECRET = "edge-test-secret-0123456789"
HOST = "cdn.example:8080"
PATH = "/music/audio/track 1 (live)+extra.mp3"
WIRE_PATH = quote(PATH, safe="/-_.~")
NOW = 1_800_000_000


def _verifier(token: str | None = None) -> PresignVerifier:
    return PresignVerifier(Credentials(ACCESS, SECRET, token), "us-east-1")


def _query(**kwargs) -> str:
    args = {"access_key": ACCESS, "secret_key": SECRET, "signed_at": NOW, **kwargs}
    return presign_query("GET", HOST, PATH, **args)


def _code(refusal) -> str | None:
    return None if refusal is None else refusal.code


def test_aws_documented_example_is_a_known_answer() -> None:
    verifier = PresignVerifier(Credentials(AWS_ACCESS, AWS_SECRET), "us-east-1")
    headers = {"host": AWS_HOST}
    ok = verifier.verify("GET", "/test.txt", AWS_QUERY, headers, now=AWS_SIGNED_AT + 60)
    assert ok is None
    assert _code(
        verifier.verify("GET", "/test.txt", AWS_QUERY, headers, now=AWS_SIGNED_AT + 86401)
    ) == ("signature-expired")
    tampered = AWS_QUERY.replace("aeeed9bb", "aeeed9bc")
    assert _code(verifier.verify("GET", "/test.txt", tampered, headers, now=AWS_SIGNED_AT)) == (
        "bad-signature"
    )


def test_independent_presigner_round_trip() -> None:
    verifier = _verifier()
    query = _query(extra={"response-content-type": "audio/mpeg"})
    headers = {"host": HOST, "user-agent": "x"}
    assert verifier.verify("GET", WIRE_PATH, query, headers, now=NOW + 10) is None
    assert verifier.derivations == 1
    assert verifier.verify("GET", WIRE_PATH, query, headers, now=NOW + 20) is None
    assert verifier.derivations == 1  # the signing key of the day is derived once


def test_expiry_and_clock_skew() -> None:
    verifier = _verifier()
    query = _query(expires=600)
    headers = {"host": HOST}
    assert verifier.verify("GET", WIRE_PATH, query, headers, now=NOW + 600) is None
    assert _code(verifier.verify("GET", WIRE_PATH, query, headers, now=NOW + 601)) == (
        "signature-expired"
    )
    assert verifier.verify("GET", WIRE_PATH, query, headers, now=NOW - 900) is None
    assert _code(verifier.verify("GET", WIRE_PATH, query, headers, now=NOW - 901)) == (
        "signature-not-yet-valid"
    )


@pytest.mark.parametrize(
    ("method", "path", "host", "code"),
    [
        ("GET", WIRE_PATH, HOST, None),
        ("HEAD", WIRE_PATH, HOST, "bad-signature"),  # presigned for GET, as at S3
        ("GET", "/music/audio/other.mp3", HOST, "bad-signature"),
        ("GET", WIRE_PATH, "evil.example", "bad-signature"),
    ],
)
def test_method_path_and_host_are_signed(method: str, path: str, host: str, code) -> None:
    refusal = _verifier().verify(method, path, _query(), {"host": host}, now=NOW + 10)
    assert _code(refusal) == code


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        ("X-Amz-Algorithm", "quality=high&X-Amz-Algorithm", "bad-signature"),
        ("Expires=3600", "Expires=7200", "bad-signature"),
        (ACCESS, "someone-else", "unknown-key"),
        ("us-east-1", "eu-west-1", "signature-scope"),
        ("%2Fs3%2F", "%2Fs4%2F", "signature-scope"),
        ("X-Amz-Date=", "X-Amz-Date=x", "signature-malformed"),
        ("Expires=3600", "Expires=604801", "signature-malformed"),
        ("HMAC-SHA256", "HMAC-SHA1", "signature-malformed"),
        ("SignedHeaders=host", "SignedHeaders=x", "signature-malformed"),
        ("X-Amz-Expires", "X-Amz-Date=20300101T000000Z&X-Amz-Expires", "signature-malformed"),
        ("X-Amz-Signature=", "X-Amz-Sig=", "signature-malformed"),
        ("X-Amz-Signature=", "X-Amz-Signature=00", "bad-signature"),
    ],
)
def test_query_tampering_is_refused(old: str, new: str, code: str) -> None:
    query = _query()
    assert old in query
    refusal = _verifier().verify(
        "GET", WIRE_PATH, query.replace(old, new, 1), {"host": HOST}, now=NOW
    )
    assert _code(refusal) == code


def test_a_flipped_signature_digit_is_refused() -> None:
    query = _query()
    flipped = query[:-1] + ("0" if query[-1] != "0" else "1")
    refusal = _verifier().verify("GET", WIRE_PATH, flipped, {"host": HOST}, now=NOW)
    assert _code(refusal) == "bad-signature"


def test_an_unsigned_url_is_missing_its_signature() -> None:
    refusal = _verifier().verify("GET", WIRE_PATH, "quality=high", {"host": HOST}, now=NOW)
    assert _code(refusal) == "signature-missing"


def test_a_signed_header_missing_from_the_request_is_refused() -> None:
    assert _code(_verifier().verify("GET", WIRE_PATH, _query(), {}, now=NOW)) == "bad-signature"


def test_session_token_must_be_the_origins() -> None:
    verifier = _verifier(token="tok-1")
    headers = {"host": HOST}
    assert verifier.verify("GET", WIRE_PATH, _query(token="tok-1"), headers, now=NOW) is None
    assert _code(verifier.verify("GET", WIRE_PATH, _query(token="tok-2"), headers, now=NOW)) == (
        "bad-signature"
    )
    assert _code(verifier.verify("GET", WIRE_PATH, _query(), headers, now=NOW)) == "bad-signature"


def test_signing_keys_of_several_days_are_cached() -> None:
    verifier = _verifier()
    headers = {"host": HOST}
    for day in range(3):
        query = _query(signed_at=NOW - day * 86400, expires=604800)
        assert verifier.verify("GET", WIRE_PATH, query, headers, now=NOW) is None
    for day in range(3):
        query = _query(signed_at=NOW - day * 86400, expires=604800)
        assert verifier.verify("GET", WIRE_PATH, query, headers, now=NOW) is None
    assert verifier.derivations == 3


def test_the_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(presign_module.hmac, "compare_digest", spy)
    query = _query()
    assert _verifier().verify("GET", WIRE_PATH, query, {"host": HOST}, now=NOW) is None
    signature = query.rpartition("=")[2].encode()
    assert signature in compared
