"""S3 presigned URLs (SigV4 query-string authentication) verified at the edge. Pure: ``now``
is an argument; the only state is a cache of derived signing keys.

An application that hands out presigned URLs for a private bucket keeps working behind the
cache: the node verifies them itself with the origin's credentials (those of its
``[upstream.s3]``, or ``[upstream.fallback_s3]``), serves from the cache, and the ``X-Amz-*``
parameters never enter the cache key nor the upstream request (the node signs its own request
to the origin with the Authorization header).

The spec: "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)"
(docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html). The canonical request,
string to sign and signing key are those of :mod:`edgeproxy.proxy.s3`; what differs from header
authentication:

* the canonical query string holds every parameter except ``X-Amz-Signature``;
* the payload line is ``UNSIGNED-PAYLOAD``;
* the credential, date, expiry and signed headers come from ``X-Amz-Credential``,
  ``X-Amz-Date``, ``X-Amz-Expires`` (1 s to 7 days) and ``X-Amz-SignedHeaders`` (which must
  name ``host``; values are the request's own).

Checks, in order (a :class:`~edgeproxy.signing.Refusal` names the first that fails):
parameters present and well formed (``AWS4-HMAC-SHA256``, a 5-part credential whose date is
that of ``X-Amz-Date``); credential scope (the access key id is the origin's, the region the
origin's, the service ``s3``); the signature (constant-time compare); ``X-Amz-Date`` not more
than :data:`MAX_SKEW` seconds in the future; not expired (``now > date + expires``, as S3:
valid through the last second). A session token, when the origin's credentials have one, must
be the ``X-Amz-Security-Token`` signed into the URL.

Which path is verified: the request path as the node normalizes it for its cache key (RFC 3986
sec. 6.2.2), i.e. exactly what is served. The node verifies the request as an S3 server would
verify the same request sent to it: the URL must be presigned for the node's own address
(``Host`` is signed), as an S3 client configured with the node as its endpoint makes them.
With the drop-in mapping (``buckets = [...]``) that is a path-style URL ``/bucket/key``, the
path the node maps to the same bucket and key. With a fixed bucket (``bucket = "music"``) the
node serves ``/key``: a presigned URL for it is virtual-hosted style (the bucket in the host
name the client uses, e.g. ``music.cdn.example``) or one made for an endpoint whose path is the
key; a path-style URL ``/music/key`` would name another object (``music/key``) and is refused
with a bad signature rather than served from a guessed mapping. A HEAD request needs a URL
presigned for HEAD, as at S3.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
from collections.abc import Mapping

from edgeproxy.proxy.s3 import (
    ALGORITHM,
    UNSIGNED_PAYLOAD,
    Credentials,
    canonical_request,
    credential_scope,
    derive_signing_key,
    string_to_sign,
)
from edgeproxy.signing import Refusal, query_params

__all__ = ["MAX_EXPIRES", "MAX_SKEW", "PARAMS", "PresignVerifier"]

#: the query parameters of a presigned URL
PARAMS = frozenset(
    {
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    }
)
_REQUIRED = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
#: the longest validity S3 accepts (7 days)
MAX_EXPIRES = 7 * 86400
#: how far in the future X-Amz-Date may be (S3's allowed clock skew, 15 minutes)
MAX_SKEW = 900
_DATE_RE = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z", re.ASCII)
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+", re.ASCII)
_KEY_CACHE = 8  # signing keys of this many days (URLs live up to 7 days)


def _parse_amz_date(text: str) -> int | None:
    """``20130524T000000Z`` -> Unix seconds, or None."""
    match = _DATE_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        return None
    try:
        return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return None


def _without_signature(raw_query: str) -> str:
    return "&".join(
        part for part in raw_query.split("&") if part.partition("=")[0] != "X-Amz-Signature"
    )


class PresignVerifier:
    """Verifies presigned URLs made with ``credentials`` for ``region`` (service ``s3``)."""

    __slots__ = ("_keys", "credentials", "derivations", "region", "service")

    def __init__(self, credentials: Credentials, region: str, service: str = "s3") -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self.derivations = 0
        self._keys: dict[str, bytes] = {}

    def signing_key(self, date: str) -> bytes:
        """The SigV4 signing key of ``date`` (``YYYYMMDD``); a few days are kept."""
        key = self._keys.get(date)
        if key is None:
            key = derive_signing_key(self.credentials.secret_key, date, self.region, self.service)
            self.derivations += 1
            if len(self._keys) >= _KEY_CACHE:
                del self._keys[min(self._keys)]
            self._keys[date] = key
        return key

    def verify(
        self,
        method: str,
        path: str,
        raw_query: str,
        headers: Mapping[str, str],
        *,
        now: float,
    ) -> Refusal | None:
        """None when the presigned URL ``path?raw_query`` is valid for ``method`` at ``now``.

        ``path`` is the normalized request path; ``headers`` maps lower-case names to the
        request's values (``host`` at least).
        """
        params = query_params(raw_query, PARAMS)
        if not params:
            return Refusal(
                "signature-missing", "this URL must be presigned (X-Amz-Signature is missing)"
            )
        for name in _REQUIRED:
            if name not in params:
                return Refusal("signature-malformed", f"presigned URL without {name}")
        for name, values in params.items():
            if len(values) > 1:
                return Refusal("signature-malformed", f"{name} is given twice")
        if params["X-Amz-Algorithm"][0] != ALGORITHM:
            return Refusal("signature-malformed", f"X-Amz-Algorithm is not {ALGORITHM}")
        request_date = params["X-Amz-Date"][0]
        signed_at = _parse_amz_date(request_date)
        if signed_at is None:
            return Refusal("signature-malformed", "X-Amz-Date is not YYYYMMDDTHHMMSSZ")
        expires_text = params["X-Amz-Expires"][0]
        if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 7:
            return Refusal("signature-malformed", "X-Amz-Expires is not a number of seconds")
        expires = int(expires_text)
        if not 1 <= expires <= MAX_EXPIRES:
            return Refusal(
                "signature-malformed", f"X-Amz-Expires must be 1 to {MAX_EXPIRES} seconds"
            )
        parts = params["X-Amz-Credential"][0].split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or parts[1] != request_date[:8]:
            return Refusal(
                "signature-malformed",
                "X-Amz-Credential is not AKID/YYYYMMDD/region/s3/aws4_request of X-Amz-Date",
            )
        access_key, date, region, service, _ = parts
        if not hmac.compare_digest(
            access_key.encode("utf-8", "surrogateescape"),
            self.credentials.access_key.encode("utf-8"),
        ):
            return Refusal("unknown-key", "the presigned URL names another access key id")
        if region != self.region or service != self.service:
            return Refusal(
                "signature-scope",
                f"the credential scope must be region {self.region}, service {self.service}",
            )
        signed_names = params["X-Amz-SignedHeaders"][0].split(";")
        if (
            "host" not in signed_names
            or signed_names != sorted(set(signed_names))
            or not all(_HEADER_NAME_RE.fullmatch(name) for name in signed_names)
        ):
            return Refusal(
                "signature-malformed",
                "X-Amz-SignedHeaders must list lower-case names, sorted, host among them",
            )
        fields: list[tuple[str, str]] = []
        for name in signed_names:
            value = headers.get(name)
            if value is None:
                return Refusal("bad-signature", f"the signed header {name} is missing")
            fields.append((name, value))
        token = self.credentials.session_token
        if token is not None:
            given_token = params.get("X-Amz-Security-Token", [""])[0]
            if not hmac.compare_digest(
                given_token.encode("utf-8", "surrogateescape"), token.encode("utf-8")
            ):
                return Refusal("bad-signature", "X-Amz-Security-Token is not the origin's")
        creq = canonical_request(
            method, f"{path}?{_without_signature(raw_query)}", fields, UNSIGNED_PAYLOAD
        )
        sts = string_to_sign(request_date, credential_scope(date, region, service), creq)
        expected = hmac.new(self.signing_key(date), sts.encode("utf-8"), hashlib.sha256)
        given = params["X-Amz-Signature"][0]
        if not _SIGNATURE_RE.fullmatch(given) or not hmac.compare_digest(
            expected.hexdigest().encode("ascii"), given.encode("ascii")
        ):
            return Refusal("bad-signature", "the signature does not match this request")
        if signed_at > now + MAX_SKEW:
            return Refusal("signature-not-yet-valid", "X-Amz-Date is in the future")
        if now > signed_at + expires:
            return Refusal("signature-expired", "the presigned URL has expired")
        return None
