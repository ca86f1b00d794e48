"""Signed URLs for premium content: HMAC-SHA256 over path (or path prefix), key id and expiry.

Pure: no I/O, no clock (``now`` is an argument), no environment (secrets are passed in).

A signed URL carries four query parameters (names in :data:`PARAMS`)::

    /audio/album1/t1.mp3?quality=high&ep_expires=1767225600&ep_key=k2&ep_sig=3q2-...
    /audio/album1/t1.mp3?ep_expires=...&ep_key=k2&ep_prefix=%2Faudio%2Falbum1%2F&ep_sig=...

* ``ep_expires``: the expiry, a Unix time in whole seconds; the URL is refused from that
  second on (``now >= expires``);
* ``ep_key``: the key id naming the secret (several ids are active at once, so keys rotate:
  add the new id, sign with it, remove the old one once its URLs have expired);
* ``ep_prefix`` (optional): the signature covers every path starting with this prefix (one
  signature for ``/audio/album1/*``). It is compared with the normalized path as a plain
  string prefix, so end it with ``/``: ``/audio/album1`` also covers ``/audio/album10/x``;
* ``ep_sig``: base64url (no padding) of ``HMAC-SHA256(secret, message)`` where ``message`` is
  (:func:`message`)::

      edgeproxy-url-v1 \\n <key id> \\n <expires> \\n path|prefix \\n <normalized path or prefix>

The path signed and checked is the request path normalized as the cache key normalizes it
(RFC 3986 sec. 6.2.2, :func:`edgeproxy.cache.key.normalize_path`): what is verified is what is
served and keyed, whatever percent-encoding or dot segments a client uses. The query is not
signed: keyed query parameters select a variant of the same object, and every other parameter
(the signature's own included) never reaches the cache key nor the upstream request.

Verification (:func:`verify`) compares with :func:`hmac.compare_digest` (constant time) and
checks, in this order: parameters present and well formed, key id known, signature, expiry,
prefix coverage. A refusal is a :class:`Refusal` whose ``code`` is a short token (for
Cache-Status and counters) and whose ``message`` says why, for the 403 body.

Secrets come from one environment variable (``keys_env``), never from the TOML file:
``"k2:secret-two,k1:secret-one"`` (:func:`parse_keys`); the first id is the one
``edgeproxy sign`` uses by default.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from edgeproxy.cache.key import BadRequestTarget, normalize_path, split_target

__all__ = [
    "EXPIRES",
    "KEY_ID",
    "MIN_SECRET_BYTES",
    "PARAMS",
    "PREFIX",
    "SIGNATURE",
    "Refusal",
    "message",
    "parse_keys",
    "query_params",
    "sign",
    "sign_url",
    "strip_params",
    "verify",
]

EXPIRES = "ep_expires"
KEY_ID = "ep_key"
PREFIX = "ep_prefix"
SIGNATURE = "ep_sig"
#: the signature parameters: never keyed, never forwarded upstream
PARAMS = frozenset({EXPIRES, KEY_ID, PREFIX, SIGNATURE})
#: secrets shorter than this are refused (an HMAC key is as strong as its entropy)
MIN_SECRET_BYTES = 16
_VERSION = "edgeproxy-url-v1"
_KEY_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
_MAX_EXPIRES_DIGITS = 12  # Unix seconds up to year ~33658: anything longer is not an expiry


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused (403). ``code``: ``signature-missing``, ``signature-malformed``,
    ``unknown-key``, ``bad-signature``, ``signature-expired``, ``signature-scope`` (and, for
    S3 presigned URLs, ``presign-*`` codes, see :mod:`edgeproxy.presign`)."""

    code: str
    message: str


def parse_keys(text: str) -> dict[str, bytes]:
    """``"id:secret,id2:secret2"`` -> ``{id: secret bytes}``, in the order given.

    Items are separated by commas or whitespace; the id is ``[A-Za-z0-9._-]{1,64}``; the
    secret is everything after the first ``:`` (UTF-8), at least :data:`MIN_SECRET_BYTES`
    bytes. Raises ``ValueError`` naming the problem (never the secret).
    """
    keys: dict[str, bytes] = {}
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        key_id, sep, secret = item.partition(":")
        if not sep or not _KEY_ID_RE.fullmatch(key_id):
            raise ValueError(
                f"item {len(keys) + 1} is not ID:SECRET (ids: letters, digits, '.', '_', '-')"
            )
        raw = secret.encode("utf-8")
        if len(raw) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the secret of key id {key_id!r} is shorter than {MIN_SECRET_BYTES} bytes"
            )
        if key_id in keys:
            raise ValueError(f"key id {key_id!r} is listed twice")
        keys[key_id] = raw
    if not keys:
        raise ValueError("no keys; write ID:SECRET[,ID:SECRET...]")
    return keys


def message(key_id: str, expires: int, scope: str, *, prefix: bool) -> bytes:
    """The signed message: version, key id, expiry, scope kind and scope, one per line."""
    kind = "prefix" if prefix else "path"
    return f"{_VERSION}\n{key_id}\n{expires}\n{kind}\n{scope}".encode("utf-8", "surrogatepass")


def sign(secret: bytes, key_id: str, expires: int, scope: str, *, prefix: bool = False) -> str:
    """The ``ep_sig`` value for a normalized path (or a prefix when ``prefix``)."""
    digest = hmac.new(secret, message(key_id, expires, scope, prefix=prefix), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def query_params(raw_query: str, names: frozenset[str] = PARAMS) -> dict[str, list[str]]:
    """The percent-decoded values of the parameters ``names`` in a raw query (``+`` is kept)."""
    found: dict[str, list[str]] = {}
    for part in raw_query.split("&"):
        name, _, value = part.partition("=")
        if name in names:
            found.setdefault(name, []).append(unquote(value, errors="surrogateescape"))
    return found


def strip_params(raw_query: str, drop: frozenset[str] = PARAMS, *, amz: bool = False) -> str:
    """``raw_query`` without the parameters ``drop`` (and every ``X-Amz-*`` one when ``amz``),
    the rest kept as sent, in order."""
    kept = []
    for part in raw_query.split("&"):
        name = part.partition("=")[0]
        if not part or name in drop or (amz and name.lower().startswith("x-amz-")):
            continue
        kept.append(part)
    return "&".join(kept)


def verify(path: str, raw_query: str, keys: Mapping[str, bytes], *, now: float) -> Refusal | None:
    """None when ``raw_query`` carries a valid signature for the normalized ``path`` at
    ``now``; otherwise the :class:`Refusal` (see the module docstring for the order)."""
    params = query_params(raw_query)
    if not params:
        return Refusal(
            "signature-missing",
            f"this URL must be signed: {EXPIRES}, {KEY_ID} and {SIGNATURE} are missing",
        )
    for name in (EXPIRES, KEY_ID, SIGNATURE):
        if name not in params:
            return Refusal("signature-malformed", f"signed URL without {name}")
    for name, values in params.items():
        if len(values) > 1:
            return Refusal("signature-malformed", f"{name} is given twice")
    expires_text = params[EXPIRES][0]
    if not (expires_text.isascii() and expires_text.isdigit()) or (
        len(expires_text) > _MAX_EXPIRES_DIGITS
    ):
        return Refusal("signature-malformed", f"{EXPIRES} is not a Unix time in seconds")
    expires = int(expires_text)
    key_id = params[KEY_ID][0]
    secret = keys.get(key_id)
    if secret is None:
        return Refusal("unknown-key", f"unknown key id {_printable(key_id)}")
    prefix = params[PREFIX][0] if PREFIX in params else None
    scope = prefix if prefix is not None else path
    expected = sign(secret, key_id, expires, scope, prefix=prefix is not None)
    given = params[SIGNATURE][0]
    if not given.isascii() or not hmac.compare_digest(expected.encode(), given.encode()):
        return Refusal("bad-signature", "the signature does not match this URL")
    if now >= expires:
        return Refusal("signature-expired", "the signed URL has expired")
    if prefix is not None and not path.startswith(prefix):
        return Refusal("signature-scope", f"the signature covers {_printable(prefix)}* only")
    return None


def sign_url(
    url: str,
    secret: bytes,
    key_id: str,
    expires: int,
    *,
    prefix: str | None = None,
) -> str:
    """``url`` (absolute or origin-form) with the signature parameters appended (any given
    before are replaced). The signature covers the URL's normalized path, or ``prefix``, which
    must be a normalized path the URL's path starts with. Raises ``ValueError``."""
    if not _KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"{key_id!r} is not a key id (letters, digits, '.', '_', '-')")
    head, _, fragment = url.partition("#")
    if head.startswith("/"):
        base, path_start = "", 0
    else:
        scheme, sep, rest = head.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            raise ValueError(f"{url!r} is neither a path nor an http(s) URL")
        slash = rest.find("/")
        question = rest.find("?")
        ends = [i for i in (slash, question) if i != -1]
        path_start = len(scheme) + 3 + (min(ends) if ends else len(rest))
        base = head[:path_start]
    remainder = head[path_start:]
    if not remainder.startswith("/"):
        remainder = "/" + remainder  # "https://host?q" -> "/?q"
    try:
        raw_path, raw_query = split_target(remainder)
        path = normalize_path(raw_path)
    except BadRequestTarget as err:
        raise ValueError(f"{url!r}: {err}") from None
    if prefix is not None:
        try:
            normalized_prefix = normalize_path(prefix)
        except BadRequestTarget as err:
            raise ValueError(f"prefix {prefix!r}: {err}") from None
        if normalized_prefix != prefix:
            raise ValueError(f"prefix {prefix!r} is not normalized; use {normalized_prefix!r}")
        if not path.startswith(prefix):
            raise ValueError(f"the URL's path {path!r} does not start with the prefix {prefix!r}")
    signature = sign(secret, key_id, expires, prefix or path, prefix=prefix is not None)
    query = strip_params(raw_query)
    added = [f"{EXPIRES}={expires}", f"{KEY_ID}={key_id}"]
    if prefix is not None:
        added.append(f"{PREFIX}={quote(prefix, safe='')}")
    added.append(f"{SIGNATURE}={signature}")
    query = "&".join([query, *added] if query else added)
    signed = f"{base}{raw_path}?{query}"
    return f"{signed}#{fragment}" if fragment else signed


def _printable(text: str) -> str:
    """A client-supplied value, shortened and made safe for a one-line text answer."""
    shown = "".join(c if " " < c < "\x7f" else "?" for c in text[:80])
    return repr(shown)
