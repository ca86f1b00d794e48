"""SigV4 signing against AWS's published test suite, plus the signer's own contract.

Vectors: AWS "aws-sig-v4-test-suite" (2015-08-30 edition: AKIDEXAMPLE, 20150830T123600Z,
us-east-1, service "service"). Texts copied verbatim from the generated copy of the suite in
github.com/vkill/swift-aws-sigv4-official-test-suite,
``Tests/AwsSigv4OfficialTestSuiteTests/AwsSigv4OfficialTestSuiteContent.swift``; the ``.req``
layout ("GET /path HTTP/1.1" then ``Name:value`` lines) is the one of the suite's files as
vendored in github.com/smithy-lang/smithy-rs,
``aws/rust-runtime/aws-sigv4/aws-sig-v4-test-suite/<name>/<name>.req``.

Each case checks the three published stages separately (AWS SigV4 docs, "Create a canonical
request", "Create a string to sign", "Calculate the signature"): a wrong stage then names
itself instead of only producing a different signature.
"""

from __future__ import annotations

import calendar
import hashlib
import time
from dataclasses import dataclass

import pytest

from edgeproxy.proxy.s3 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    Credentials,
    SigV4Signer,
    amz_date,
    canonical_query_string,
    canonical_request,
    canonical_uri,
    credential_scope,
    derive_signing_key,
    s3_signable_header,
    string_to_sign,
)

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
SERVICE = "service"
REQUEST_DATE = "20150830T123600Z"
NOW = float(calendar.timegm(time.strptime(REQUEST_DATE, "%Y%m%dT%H%M%SZ")))
SCOPE = "20150830/us-east-1/service/aws4_request"
STS_TOKEN = (
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmx"
    "fpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPk"
    "yQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz"
    "+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
)


@dataclass(frozen=True)
class Vector:
    name: str
    req: str
    creq: str
    sts: str
    authz: str
    body: bytes = b""


def _v(name: str, req: str, creq: str, sts_hash: str, signed: str, signature: str) -> Vector:
    """Most vectors share the date and scope; spell out only what differs."""
    return Vector(
        name=name,
        req=req,
        creq=creq,
        sts=f"AWS4-HMAC-SHA256\n{REQUEST_DATE}\n{SCOPE}\n{sts_hash}",
        authz=(
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{SCOPE}, "
            f"SignedHeaders={signed}, Signature={signature}"
        ),
    )


_HOST_DATE = "Host:example.amazonaws.com\nX-Amz-Date:20150830T123600Z"
_CREQ_HEADERS = "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n"
_E = EMPTY_SHA256

VECTORS: list[Vector] = [
    _v(
        "get-vanilla",
        f"GET / HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    _v(
        "get-vanilla-query",
        f"GET / HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    _v(
        "get-vanilla-empty-query-key",
        f"GET /?Param1=value1 HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\nParam1=value1\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "1e24db194ed7d0eec2de28d7369675a243488e08526e8c1c73571282f7c517ab",
        "host;x-amz-date",
        "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb",
    ),
    _v(
        "get-vanilla-query-order-key",
        f"GET /?Param1=value2&Param1=Value1 HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\nParam1=Value1&Param1=value2\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "704b4cef673542d84cdff252633f065e8daeba5f168b77116f8b1bcaf3d38f89",
        "host;x-amz-date",
        "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1",
    ),
    _v(
        "get-vanilla-query-order-key-case",
        f"GET /?Param2=value2&Param1=value1 HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\nParam1=value1&Param2=value2\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
        "host;x-amz-date",
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    ),
    _v(
        "get-vanilla-query-order-value",
        f"GET /?Param1=value2&Param1=value1 HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\nParam1=value1&Param1=value2\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "c968629d70850097a2d8781c9bf7edcb988b04cac14cca9be4acc3595f884606",
        "host;x-amz-date",
        "5772eed61e12b33fae39ee5e7012498b51d56abc0abb7c60486157bd471c4694",
    ),
    _v(
        "get-vanilla-query-unreserved",
        "GET /?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        "=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1\n"
        f"{_HOST_DATE}",
        "GET\n/\n-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        "=-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n"
        f"{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "c30d4703d9f799439be92736156d47ccfb2d879ddf56f5befa6d1d6aab979177",
        "host;x-amz-date",
        "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
    ),
    _v(
        "get-vanilla-utf8-query",
        f"GET /?\u1234=bar HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\n%E1%88%B4=bar\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "eb30c5bed55734080471a834cc727ae56beb50e5f39d1bff6d0d38cb192a7073",
        "host;x-amz-date",
        "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
    ),
    _v(
        "get-unreserved",
        "GET /-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz HTTP/1.1\n"
        f"{_HOST_DATE}",
        "GET\n/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\n\n"
        f"{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "6a968768eefaa713e2a6b16b589a8ea192661f098f37349f4e2c0082757446f9",
        "host;x-amz-date",
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    ),
    _v(
        "get-utf8",
        f"GET /\u1234 HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/%E1%88%B4\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "2a0a97d02205e45ce2e994789806b19270cfbbb0921b278ccf58f5249ac42102",
        "host;x-amz-date",
        "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
    ),
    _v(
        "get-space",
        f"GET /example space/ HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/example%20space/\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "63ee75631ed7234ae61b5f736dfc7754cdccfedbff4b5128a915706ee9390d86",
        "host;x-amz-date",
        "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
    ),
    _v(
        "get-relative",
        f"GET /example/.. HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    _v(
        "get-relative-relative",
        f"GET /example1/example2/../.. HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    _v(
        "get-slash",
        f"GET // HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    _v(
        "get-slash-dot-slash",
        f"GET /./ HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    ),
    _v(
        "get-slash-pointless-dot",
        f"GET /./example HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/example\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "214d50c111a8edc4819da6a636336472c916b5240f51e9a51b5c3305180cf702",
        "host;x-amz-date",
        "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5",
    ),
    _v(
        "get-slashes",
        f"GET //example// HTTP/1.1\n{_HOST_DATE}",
        f"GET\n/example/\n\n{_CREQ_HEADERS}\nhost;x-amz-date\n{_E}",
        "cb96b4ac96d501f7c5c15bc6d67b3035061cfced4af6585ad927f7e6c985c015",
        "host;x-amz-date",
        "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84",
    ),
    _v(
        "get-header-key-duplicate",
        "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value2\nMy-Header1:value2\n"
        "My-Header1:value1\nX-Amz-Date:20150830T123600Z",
        "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value2,value2,value1\n"
        f"x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n{_E}",
        "dc7f04a3abfde8d472b0ab1a418b741b7c67174dad1551b4117b15527fbe966c",
        "host;my-header1;x-amz-date",
        "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    ),
    _v(
        "get-header-value-order",
        "GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1:value4\nMy-Header1:value1\n"
        "My-Header1:value3\nMy-Header1:value2\nX-Amz-Date:20150830T123600Z",
        "GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value4,value1,value3,value2\n"
        f"x-amz-date:20150830T123600Z\n\nhost;my-header1;x-amz-date\n{_E}",
        "31ce73cd3f3d9f66977ad3dd957dc47af14df92fcd8509f59b349e9137c58b86",
        "host;my-header1;x-amz-date",
        "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01",
    ),
    _v(
        "get-header-value-trim",
        'GET / HTTP/1.1\nHost:example.amazonaws.com\nMy-Header1: value1\nMy-Header2: "a   b   c"\n'
        "X-Amz-Date:20150830T123600Z",
        'GET\n/\n\nhost:example.amazonaws.com\nmy-header1:value1\nmy-header2:"a b c"\n'
        f"x-amz-date:20150830T123600Z\n\nhost;my-header1;my-header2;x-amz-date\n{_E}",
        "a726db9b0df21c14f559d0a978e563112acb1b9e05476f0a6a1c7d68f28605c7",
        "host;my-header1;my-header2;x-amz-date",
        "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    ),
    Vector(
        # A body: the payload hash is the body's SHA-256 (and content-type is signed).
        "post-x-www-form-urlencoded",
        "POST / HTTP/1.1\nContent-Type:application/x-www-form-urlencoded\n"
        f"{_HOST_DATE}\n\nParam1=value1",
        "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\n"
        f"{_CREQ_HEADERS}\ncontent-type;host;x-amz-date\n"
        "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
        f"AWS4-HMAC-SHA256\n{REQUEST_DATE}\n{SCOPE}\n"
        "42a5e5bb34198acb3e84da4f085bb7927f2bc277ca766e6d19c73c2154021281",
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{SCOPE}, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        body=b"Param1=value1",
    ),
]


def parse_req(text: str) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """Parse a suite ``.req`` file: request line, ``Name:value`` lines, blank line, body."""
    head, _, body = text.partition("\n\n")
    request_line, *header_lines = head.split("\n")
    method, rest = request_line.split(" ", 1)
    target = rest.rsplit(" ", 1)[0]  # the target may contain spaces (get-space)
    headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.append((name, value))
    return method, target, headers, body.encode()


def vector_signer(session_token: str | None = None) -> SigV4Signer:
    return SigV4Signer(Credentials(ACCESS_KEY, SECRET_KEY, session_token), REGION, SERVICE)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_published_vector_canonical_request(vector: Vector) -> None:
    method, target, headers, body = parse_req(vector.req)
    payload = hashlib.sha256(body).hexdigest()
    assert canonical_request(method, target, headers, payload, normalize_path=True) == vector.creq


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_published_vector_string_to_sign(vector: Vector) -> None:
    assert string_to_sign(REQUEST_DATE, SCOPE, vector.creq) == vector.sts


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_published_vector_authorization(vector: Vector) -> None:
    method, target, headers, body = parse_req(vector.req)
    signer = vector_signer()
    added = signer.sign(
        method,
        "https://example.amazonaws.com" + target,
        headers,
        now=NOW,
        payload_sha256=hashlib.sha256(body).hexdigest(),
        sign_header=lambda name: True,  # the suite signs every header of the request
    )
    assert added == {"X-Amz-Date": REQUEST_DATE, "Authorization": vector.authz}


def test_published_vector_session_token_is_signed() -> None:
    """post-sts-header-before: the token is sent as X-Amz-Security-Token and signed."""
    creq = (
        "POST\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n"
        f"x-amz-security-token:{STS_TOKEN}\n\nhost;x-amz-date;x-amz-security-token\n{_E}"
    )
    headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", REQUEST_DATE)]
    assert canonical_request(
        "POST", "/", [*headers, ("X-Amz-Security-Token", STS_TOKEN)], normalize_path=True
    ) == (creq)
    assert string_to_sign(REQUEST_DATE, SCOPE, creq) == (
        f"AWS4-HMAC-SHA256\n{REQUEST_DATE}\n{SCOPE}\n"
        "c237e1b440d4c63c32ca95b5b99481081cb7b13c7e40434868e71567c1a882f6"
    )
    added = vector_signer(STS_TOKEN).sign(
        "POST", "https://example.amazonaws.com/", headers, now=NOW
    )
    assert added == {
        "X-Amz-Date": REQUEST_DATE,
        "X-Amz-Security-Token": STS_TOKEN,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{SCOPE}, "
        "SignedHeaders=host;x-amz-date;x-amz-security-token, "
        "Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
    }


def test_vector_host_is_derived_from_the_url_when_absent() -> None:
    added = vector_signer().sign("GET", "https://example.amazonaws.com/", {}, now=NOW)
    assert added["Authorization"] == VECTORS[0].authz


# ---- signing key: "Calculate the signature", derived once per UTC day ----------------------


def test_signing_key_matches_the_documented_example() -> None:
    """AWS docs ("Derive a signing key" example; same key in the suite's README): secret
    wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, 20120215, us-east-1, iam."""
    key = derive_signing_key(SECRET_KEY, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_signing_key_is_derived_once_per_day() -> None:
    signer = vector_signer()
    signer.sign("GET", "https://example.amazonaws.com/", {}, now=NOW)
    signer.sign("GET", "https://example.amazonaws.com/a", {}, now=NOW + 3600)
    assert signer.derivations == 1
    next_day = NOW + 86400
    added = signer.sign("GET", "https://example.amazonaws.com/", {}, now=next_day)
    assert signer.derivations == 2
    assert (
        "Credential=AKIDEXAMPLE/20150831/us-east-1/service/aws4_request" in (added["Authorization"])
    )
    # A late request from just before midnight does not derive the old day's key again.
    signer.sign("GET", "https://example.amazonaws.com/", {}, now=NOW)
    assert signer.derivations == 2
    # A third day evicts the oldest one; the cache never grows past two days.
    signer.sign("GET", "https://example.amazonaws.com/", {}, now=NOW + 2 * 86400)
    assert signer.derivations == 3
    assert len(signer._keys) == 2


def test_day_boundary_is_utc() -> None:
    assert amz_date(NOW) == "20150830T123600Z"
    assert amz_date(1440979199.9) == "20150830T235959Z"
    assert amz_date(1440979200.0) == "20150831T000000Z"


# ---- S3 specifics -------------------------------------------------------------------------

S3_SIGNER = SigV4Signer(Credentials(ACCESS_KEY, SECRET_KEY), "us-east-1")


def test_s3_adds_content_sha256_and_signs_it() -> None:
    added = S3_SIGNER.sign("GET", "http://127.0.0.1:8333/music/a.mp3", {}, now=NOW)
    assert set(added) == {"X-Amz-Date", "X-Amz-Content-Sha256", "Authorization"}
    assert added["X-Amz-Content-Sha256"] == EMPTY_SHA256
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date," in added["Authorization"]
    assert "/us-east-1/s3/aws4_request" in added["Authorization"]


def test_s3_unsigned_payload() -> None:
    added = S3_SIGNER.sign("PUT", "http://h/b/k", {}, now=NOW, payload_sha256=UNSIGNED_PAYLOAD)
    assert added["X-Amz-Content-Sha256"] == "UNSIGNED-PAYLOAD"


def test_s3_signed_header_rule() -> None:
    headers = {
        "Range": "bytes=0-99",
        "If-None-Match": '"abc"',
        "Accept-Encoding": "gzip",
        "User-Agent": "edgeproxy",
        "X-Amz-Meta-Foo": "bar",
        "Content-Type": "audio/mpeg",
        "Authorization": "stale",
        "X-Amz-Date": "19990101T000000Z",
    }
    added = S3_SIGNER.sign("GET", "http://127.0.0.1:8333/music/a.mp3", headers, now=NOW)
    assert (
        "SignedHeaders=content-type;host;range;x-amz-content-sha256;x-amz-date;x-amz-meta-foo,"
        in added["Authorization"]
    )
    assert added["X-Amz-Date"] == REQUEST_DATE
    assert s3_signable_header("X-AMZ-anything") and s3_signable_header("range")
    assert not s3_signable_header("if-none-match")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://127.0.0.1:8333/b/k", "127.0.0.1:8333"),
        ("http://127.0.0.1:80/b/k", "127.0.0.1"),
        ("https://s3.example.com:443/b/k", "s3.example.com"),
        ("http://user:pw@[::1]:9000/b/k", "[::1]:9000"),
    ],
)
def test_s3_host_is_derived_like_an_http_client_does(url: str, host: str) -> None:
    """Host: port only when not the scheme's default, no userinfo (RFC 9110 sec. 7.2)."""
    derived = S3_SIGNER.sign("GET", url, {}, now=NOW)
    explicit = S3_SIGNER.sign("GET", url, {"Host": host}, now=NOW)
    assert derived == explicit


def test_s3_canonical_uri_is_encoded_once_and_not_normalized() -> None:
    assert canonical_uri("/music/a b.mp3") == "/music/a%20b.mp3"
    assert canonical_uri("/music/a%20b.mp3") == "/music/a%20b.mp3"  # no double encoding
    assert canonical_uri("/music/%7Ex(1)+y") == "/music/~x%281%29%2By"
    assert canonical_uri("/music/a/../b/./c//d") == "/music/a/../b/./c//d"  # no normalizing
    assert canonical_uri("/music/\u00e9t\u00e9") == "/music/%C3%A9t%C3%A9"
    assert canonical_uri("") == "/"
    # The generic rule double-encodes an existing escape, as the spec says for non-S3.
    assert canonical_uri("/a%20b", normalize_path=True) == "/a%2520b"


def test_canonical_query_string_rules() -> None:
    assert canonical_query_string("") == ""
    assert canonical_query_string("b=2&a=1&a=0") == "a=0&a=1&b=2"
    assert canonical_query_string("versionId") == "versionId="
    assert canonical_query_string("prefix=a b&x=%7e&y=a+b&&") == "prefix=a%20b&x=~&y=a%20b"
    assert canonical_query_string("k=a%2Fb/c") == "k=a%2Fb%2Fc"
    # Sorted by the encoded name: upper case before lower case (code point order).
    assert canonical_query_string("a=1&B=2") == "B=2&a=1"


def test_s3_signature_is_independent_of_escape_spelling() -> None:
    a = S3_SIGNER.sign("GET", "http://h/b/%7Ea%28b%29", {}, now=NOW)
    b = S3_SIGNER.sign("GET", "http://h/b/~a(b)", {}, now=NOW)
    assert a == b


def test_credentials_repr_hides_the_secret() -> None:
    text = repr(Credentials("AK", "very-secret", "tok"))
    assert "very-secret" not in text and "tok'" not in text and "AK" in text


def test_credential_scope_format() -> None:
    assert credential_scope("20150830", "us-east-1", "service") == SCOPE
