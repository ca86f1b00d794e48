"""The S3 origin's pure parts: SigV4 signing, path-style URL mapping, S3 error mapping.

Nothing here does I/O. The pipeline builds an origin URL with :func:`object_url`, asks a
:class:`SigV4Signer` for the headers to add, and sends the request with its own aiohttp
``ClientSession``. When it sends, it should pass ``yarl.URL(url, encoded=True)`` so the path
on the wire is byte-for-byte the one that was signed (the canonical URI below is idempotent, so
a re-quoting client still signs correctly, but there is no reason to let it re-quote).

Signing follows "Signature Version 4 signing process" of the AWS General Reference
(docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html) and the
S3 variant in "Authenticating Requests: Using the Authorization Header (AWS Signature Version
4)" (docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html):

1. canonical request: method, canonical URI, canonical query string, canonical headers,
   signed headers, hashed payload, joined by ``\\n``  (:func:`canonical_request`);
2. string to sign: ``AWS4-HMAC-SHA256``, request date, credential scope, hex SHA-256 of the
   canonical request  (:func:`string_to_sign`);
3. signing key: HMAC chain ``"AWS4"+secret -> date -> region -> service -> "aws4_request"``
   (:func:`derive_signing_key`, cached per UTC day by :class:`SigV4Signer`);
4. signature: hex HMAC-SHA256 of the string to sign with the signing key, sent in the
   ``Authorization`` header  (:meth:`SigV4Signer.sign`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote_to_bytes, urlsplit

__all__ = [
    "ALGORITHM",
    "CREDENTIAL_ERRORS",
    "EMPTY_SHA256",
    "UNSIGNED_PAYLOAD",
    "Credentials",
    "Headers",
    "S3Target",
    "SigV4Signer",
    "amz_date",
    "authorization_header",
    "canonical_headers",
    "canonical_query_string",
    "canonical_request",
    "canonical_uri",
    "credential_scope",
    "derive_signing_key",
    "map_drop_in",
    "map_fixed_bucket",
    "map_s3_status",
    "normalize_key",
    "object_url",
    "s3_error_code",
    "s3_signable_header",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
#: Hex SHA-256 of the empty string: the payload hash of every GET and HEAD.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#: S3 only: the payload is not covered by the signature (``x-amz-content-sha256`` says so).
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

#: Headers as a mapping (``dict``, or a ``multidict`` whose ``items()`` repeats names) or as
#: a sequence of ``(name, value)`` pairs.
Headers = Mapping[str, str] | Iterable[tuple[str, str]]

_SPACES = re.compile(r" {2,}")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


# --------------------------------------------------------------------------------------------
# Credentials and the canonical request (spec "Create a canonical request")
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """An access key pair, and the session token of temporary (STS) credentials if any."""

    access_key: str
    secret_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never print the secret into a log
        token = ", session_token=***" if self.session_token else ""
        return f"Credentials(access_key={self.access_key!r}, secret_key=***{token})"


def _uri_encode(raw: bytes | str, safe: str = "") -> str:
    """URI-encode per the spec: every byte except the RFC 3986 unreserved characters
    ``A-Z a-z 0-9 - . _ ~`` becomes ``%XY`` with upper-case hex (``safe`` adds exceptions)."""
    return quote(raw, safe=safe)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 sec. 5.2.4 applied segment-wise, also dropping empty segments ("//")
    as the generic SigV4 test suite expects (get-slashes: ``//example//`` -> ``/example/``)."""
    out: list[str] = []
    segments = path.split("/")
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    trailing = len(segments) > 1 and segments[-1] in ("", ".", "..") and bool(out)
    return "/" + "/".join(out) + ("/" if trailing else "")


def canonical_uri(path: str, *, normalize_path: bool = False) -> str:
    """The CanonicalURI line: the URI-encoded absolute path (``/`` when empty).

    - S3 (``normalize_path=False``): the spec says "do not normalize URI paths for Amazon S3"
      and "each path segment must be URI-encoded ... once". ``path`` is the path as sent on the
      wire (already percent-encoded); it is decoded once and re-encoded, keeping ``/``. So the
      result is idempotent and independent of how a client chose to escape (``%7E`` vs ``~``,
      ``(`` vs ``%28``); ``%2F`` becomes ``/``, as S3 servers also decode it to a separator.
    - Other services (``normalize_path=True``): "Normalize URI paths according to RFC 3986.
      Remove redundant and relative path components", then encode each segment; ``path`` is
      taken as it stands, so existing ``%XX`` escapes are encoded a second time (``%2520``) -
      the spec's "URI-encoded twice" for non-S3 services.
    """
    if not path:
        return "/"
    if normalize_path:
        return _uri_encode(_remove_dot_segments(path), safe="/")
    if not path.startswith("/"):
        path = "/" + path
    return _uri_encode(unquote_to_bytes(path), safe="/")


def canonical_query_string(query: str) -> str:
    """The CanonicalQueryString line.

    Each ``name=value`` pair (``name`` alone means an empty value) is percent-decoded and
    URI-encoded again (spec: "URI-encode each parameter name and value"; unreserved characters
    stay, everything else is ``%XY``, so a space is ``%20``), then the pairs are "sorted by
    parameter name" and, for equal names, by value, both compared on the encoded form (code
    point order). ``+`` is read as a space, as ``application/x-www-form-urlencoded`` and the
    S3 servers' query parsers read it; callers should send ``%20`` or ``%2B`` explicitly.
    """
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append(
            (
                _uri_encode(unquote_to_bytes(name.replace("+", " "))),
                _uri_encode(unquote_to_bytes(value.replace("+", " "))),
            )
        )
    pairs.sort()
    return "&".join(f"{name}={value}" for name, value in pairs)


def _header_items(headers: Headers) -> Iterable[tuple[str, str]]:
    """Header pairs in order, repeated names kept (a ``multidict`` or a list of pairs)."""
    items = getattr(headers, "items", None)
    if callable(items):
        return items()  # type: ignore[no-any-return]
    return headers  # type: ignore[return-value]


def canonical_headers(headers: Headers) -> tuple[str, str]:
    """The CanonicalHeaders block and the SignedHeaders line, for exactly ``headers``.

    Spec: names lower-cased and sorted; values trimmed, "sequential spaces in a header value
    converted to a single space"; a name that appears more than once gets one line with its
    values joined by ``,`` in the order they were given. Each entry ends with ``\\n``.
    """
    values: dict[str, list[str]] = {}
    for name, value in _header_items(headers):
        values.setdefault(name.strip().lower(), []).append(_SPACES.sub(" ", value.strip()))
    names = sorted(values)
    block = "".join(f"{name}:{','.join(values[name])}\n" for name in names)
    return block, ";".join(names)


def _path_and_query(url: str) -> tuple[str, str]:
    """Path and query of an absolute or origin-form URL (``//a//`` stays a path)."""
    if url.startswith("/"):
        path, _, query = url.partition("#")[0].partition("?")
        return path, query
    parts = urlsplit(url)
    return parts.path, parts.query


def canonical_request(
    method: str,
    url: str,
    headers: Headers,
    payload_sha256: str = EMPTY_SHA256,
    *,
    normalize_path: bool = False,
) -> str:
    """The canonical request (spec "Create a canonical request"), signing every header given.

    ``url`` is absolute (``http://host/path?query``) or origin-form (``/path?query``); only its
    path and query are used - the Host header must be among ``headers``.
    """
    path, query = _path_and_query(url)
    block, signed = canonical_headers(headers)
    return "\n".join(
        (
            method.upper(),
            canonical_uri(path, normalize_path=normalize_path),
            canonical_query_string(query),
            block,
            signed,
            payload_sha256,
        )
    )


# --------------------------------------------------------------------------------------------
# String to sign, signing key, signature (spec "Create a string to sign", "Calculate the
# signature")
# --------------------------------------------------------------------------------------------


def amz_date(now: float) -> str:
    """ISO 8601 basic format in UTC, as sent in ``X-Amz-Date``: ``20150830T123600Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def credential_scope(date: str, region: str, service: str) -> str:
    """``YYYYMMDD/region/service/aws4_request``."""
    return f"{date}/{region}/{service}/aws4_request"


def string_to_sign(request_date: str, scope: str, creq: str) -> str:
    """``AWS4-HMAC-SHA256\\n<X-Amz-Date>\\n<scope>\\n<hex sha256(canonical request)>``."""
    digest = hashlib.sha256(creq.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{request_date}\n{scope}\n{digest}"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def derive_signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The signing key: HMAC chain ``"AWS4"+secret -> date -> region -> service -> aws4_request``.

    It depends only on the day, so :class:`SigV4Signer` derives it once per UTC day.
    """
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def authorization_header(access_key: str, scope: str, signed_headers: str, signature: str) -> str:
    """``AWS4-HMAC-SHA256 Credential=AK/scope, SignedHeaders=a;b, Signature=hex``."""
    return (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


def s3_signable_header(name: str) -> bool:
    """Which of the caller's headers :meth:`SigV4Signer.sign` signs by default.

    The rule: ``host``, every ``x-amz-*`` header, ``range``, ``content-type`` and
    ``content-md5``. The S3 spec requires host, content-type (when present) and all x-amz-*
    headers; range is signed so an edge's Range requests cannot be widened by anything in
    between; content-md5 protects an upload's body. Everything else (Accept-Encoding,
    If-None-Match, User-Agent, Connection...) stays unsigned, so a hop-by-hop rewrite or a
    header aiohttp adds by itself can never break the signature.
    """
    name = name.lower()
    return name in ("host", "range", "content-type", "content-md5") or name.startswith("x-amz-")


def _host_header(url: str) -> str:
    """The Host header value an HTTP client derives from ``url`` (port only when not default)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    port = parts.port
    if port is not None and str(port) == _DEFAULT_PORTS.get(parts.scheme.lower()):
        netloc = netloc[: netloc.rfind(":")]
    return netloc


class SigV4Signer:
    """AWS Signature Version 4 (header auth) for one region+service.

    The signing key is derived once per UTC day and cached (HMAC chain
    date->region->service->aws4_request); ``derivations`` counts the derivations made. The two
    most recent days are kept, so requests signed around midnight with slightly different
    ``now`` values do not derive the key back and forth.

    Which headers get signed: see :func:`s3_signable_header` (host, x-amz-*, range,
    content-type, content-md5); ``sign_header`` overrides the rule per call.
    """

    __slots__ = ("_keys", "credentials", "derivations", "normalize_path", "region", "service")

    def __init__(self, credentials: Credentials, region: str, service: str = "s3") -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        #: RFC 3986 path normalization: on for every service but S3 (spec "Canonical URI").
        self.normalize_path = service != "s3"
        self.derivations = 0
        self._keys: dict[str, bytes] = {}

    def signing_key(self, date: str) -> bytes:
        """The signing key for ``date`` (``YYYYMMDD``), derived on first use that day."""
        key = self._keys.get(date)
        if key is None:
            key = derive_signing_key(self.credentials.secret_key, date, self.region, self.service)
            self.derivations += 1
            if len(self._keys) >= 2:
                del self._keys[min(self._keys)]
            self._keys[date] = key
        return key

    def sign(
        self,
        method: str,
        url: str,
        headers: Headers,
        *,
        now: float,
        payload_sha256: str = EMPTY_SHA256,
        sign_header: Callable[[str], bool] = s3_signable_header,
    ) -> dict[str, str]:
        """Return the headers to ADD to the request: ``Authorization``, ``X-Amz-Date``,
        ``X-Amz-Content-Sha256`` (service ``s3`` only, as S3 requires it) and
        ``X-Amz-Security-Token`` when the credentials carry a session token.

        ``url`` is the absolute URL that will be requested; ``headers`` the other headers that
        will be sent (a mapping, a multidict or a list of pairs). ``Host`` is derived from the
        URL when absent. Any ``Authorization``/``X-Amz-Date``/``X-Amz-Content-Sha256``/
        ``X-Amz-Security-Token`` in ``headers`` is ignored: the returned values replace them.
        ``payload_sha256`` is the hex SHA-256 of the body (default: the empty body, right for
        GET and HEAD) or :data:`UNSIGNED_PAYLOAD` (S3 only).
        """
        request_date = amz_date(now)
        date = request_date[:8]
        added: dict[str, str] = {"X-Amz-Date": request_date}
        if self.service == "s3":
            added["X-Amz-Content-Sha256"] = payload_sha256
        if self.credentials.session_token:
            added["X-Amz-Security-Token"] = self.credentials.session_token
        replaced = {name.lower() for name in added} | {"authorization"}

        to_sign: list[tuple[str, str]] = []
        has_host = False
        for name, value in _header_items(headers):
            lower = name.lower()
            if lower in replaced or not sign_header(lower):
                continue
            has_host = has_host or lower == "host"
            to_sign.append((lower, value))
        if not has_host:
            to_sign.append(("host", _host_header(url)))
        to_sign.extend((name.lower(), value) for name, value in added.items())

        creq = canonical_request(
            method, url, to_sign, payload_sha256, normalize_path=self.normalize_path
        )
        scope = credential_scope(date, self.region, self.service)
        sts = string_to_sign(request_date, scope, creq)
        signature = hmac.new(self.signing_key(date), sts.encode("utf-8"), hashlib.sha256)
        _, signed = canonical_headers(to_sign)
        added["Authorization"] = authorization_header(
            self.credentials.access_key, scope, signed, signature.hexdigest()
        )
        return added


# --------------------------------------------------------------------------------------------
# URL mapping (client path -> bucket + key -> path-style origin URL)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3Target:
    """An object at the origin. ``key`` has no leading slash and is percent-encoded in the
    canonical form of :func:`normalize_key` (so it can be pasted into a URL as is)."""

    bucket: str
    key: str


def normalize_key(key: str) -> str | None:
    """The canonical encoding of an object key as received in a URL path, or None when the key
    cannot be served.

    Decoded once and re-encoded like the S3 canonical URI (unreserved characters and ``/``
    literal, everything else ``%XY``), so ``%7E``/``~`` or ``%2F``/``/`` spellings of one key
    map to one string - the same one that gets signed. Refused (None): an empty key; a ``.`` or
    ``..`` segment (after decoding, so ``%2E%2E`` too), which some servers or intermediaries
    would resolve and so step out of the bucket or allow-list; an empty segment other than a
    trailing one (``a//b``, ``/a``), which servers collapse inconsistently. A trailing slash is
    kept: ``dir/`` is a real (folder marker) key.
    """
    decoded = unquote_to_bytes(key)
    if not decoded:
        return None
    segments = decoded.split(b"/")
    for index, segment in enumerate(segments):
        if segment in (b".", b".."):
            return None
        if not segment and index != len(segments) - 1:
            return None
    return _uri_encode(decoded, safe="/")


def map_fixed_bucket(path: str, bucket: str) -> S3Target | None:
    """One bucket behind the whole host: ``/audio/x.mp3`` -> ``S3Target(bucket, "audio/x.mp3")``.

    ``path`` is the request path without the query. ``/`` or ``""`` (no object) and keys
    refused by :func:`normalize_key` give None.
    """
    key = normalize_key(path.removeprefix("/"))
    return None if key is None else S3Target(bucket, key)


def map_drop_in(path: str, buckets: Collection[str]) -> S3Target | None:
    """Path-style drop-in for S3 clients: ``/music/audio/x.mp3`` -> ``S3Target("music",
    "audio/x.mp3")`` when ``music`` is in the allow-list ``buckets``, else None.

    The bucket segment must match an allow-listed name exactly (S3 bucket names are plain
    ``[a-z0-9.-]``, so an escaped spelling is refused rather than decoded). A bucket without a
    key (``/music``, ``/music/``: a listing) is None too.
    """
    bucket, sep, rest = path.removeprefix("/").partition("/")
    if not sep or bucket not in buckets:
        return None
    key = normalize_key(rest)
    return None if key is None else S3Target(bucket, key)


def object_url(endpoint: str, target: S3Target, query: str = "") -> str:
    """Path-style object URL: ``{endpoint}/{bucket}/{key}`` (+ ``?query`` when given).

    ``endpoint`` is ``scheme://host[:port]`` (a trailing slash is tolerated); ``query`` is
    already encoded. Path-style works for every S3-compatible server and for dotted bucket
    names under TLS, which virtual-hosted style does not.
    """
    url = f"{endpoint.rstrip('/')}/{target.bucket}/{target.key}"
    return f"{url}?{query}" if query else url


# --------------------------------------------------------------------------------------------
# S3 errors -> client status (S3 API Reference, "Error responses")
# --------------------------------------------------------------------------------------------

# The error body is small; look at a bounded prefix only, and never run an XML parser on it
# (no DTD, no entity expansion: a regex cannot be made to blow up the way an entity bomb can).
_ERROR_SCAN_LIMIT = 16 * 1024
_ERROR_START = re.compile(rb"<Error[\s>]")
_ERROR_CODE = re.compile(rb"<Code>\s*([A-Za-z0-9.\-_:]{1,128})\s*</Code>")

#: 403 codes meaning "the origin refused our credentials or signature" (our fault, not the
#: client's: the client gets 502 and the log names the code).
CREDENTIAL_ERRORS = frozenset(
    {
        "AccessDenied",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "RequestTimeTooSkewed",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
    }
)


def s3_error_code(body: bytes) -> str | None:
    """The ``<Code>`` of an S3 XML error body (``<Error><Code>NoSuchKey</Code>...``), or None.

    Only the first 16 KiB are scanned, with a regex (no XML parser, hence no entity expansion
    or external entities). Codes are restricted to the characters S3 codes use.
    """
    head = body[:_ERROR_SCAN_LIMIT]
    start = _ERROR_START.search(head)  # two linear scans: no backtracking to exploit
    match = _ERROR_CODE.search(head, start.end()) if start else None
    return match.group(1).decode("ascii") if match else None


def map_s3_status(status: int, code: str | None) -> tuple[int, str]:
    """Map an origin answer to (status for our client, reason for the log).

    - 200, 206: unchanged ("ok"); 304: 304 ("not modified", an answer to our revalidation).
    - 404 (NoSuchKey, or no body as for HEAD): 404.
    - NoSuchBucket: 404 as well - to a client a missing bucket is a missing object, and a 502
      would invite retries that cannot succeed - but the reason says ``origin bucket missing``
      so the operator sees the misconfiguration in logs and metrics.
    - 403 with a credential code (:data:`CREDENTIAL_ERRORS`: SignatureDoesNotMatch,
      InvalidAccessKeyId, AccessDenied, RequestTimeTooSkewed, ...) or without a body: 502, the
      origin refused *our* credentials; the client is not at fault and must not see 403
      (nor cache it). Note S3 answers AccessDenied for a missing key when the credentials lack
      s3:ListBucket.
    - 412 and 416 pass through: they answer the client's own conditional/Range headers that
      the pipeline forwarded (deliberate addition to "others -> 502").
    - 5xx: 502; every other status (400, 301 PermanentRedirect, 409, ...): 502 with the code.
    """
    label = f"{status} {code}" if code else str(status)
    if status in (200, 206):
        return status, "ok"
    if status == 304:
        return 304, "not modified"
    if code == "NoSuchBucket":
        return 404, f"origin bucket missing: {label}"
    if status == 404:
        return 404, f"origin not found: {label}"
    if status == 403 and (code is None or code in CREDENTIAL_ERRORS):
        return 502, f"origin refused our credentials: {label}"
    if status in (412, 416):
        return status, f"origin precondition: {label}"
    if status >= 500:
        return 502, f"origin error: {label}"
    return 502, f"origin unexpected answer: {label}"
