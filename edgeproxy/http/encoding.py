"""Content codings: Accept-Encoding negotiation and what may be compressed (pure, no I/O).

Contract
--------
* :func:`negotiate` maps any ``Accept-Encoding`` field value (RFC 9110 sec. 12.5.3) to one of
  three buckets, ``"br"``, ``"gzip"`` or ``"identity"``, or to ``None`` when the client accepts
  none of them (the caller answers 406 if the policy asks for it, else identity). The bucket,
  never the raw header, is what selects a stored variant, so ``Vary: Accept-Encoding`` cannot
  fragment the cache into one copy per browser string. Memoized on the raw string (bounded).
* :func:`key_variant` turns a bucket into the ``variant`` argument of
  :func:`edgeproxy.cache.key.build_key` (``""`` for identity: the identity entry keeps the
  plain key, so invalidation and the existing entries are unaffected).
* :func:`is_compressible_type` / :func:`should_compress` decide whether a response may be
  compressed by this cache (policy, media type, size, status, existing coding, ``no-transform``,
  Range).
* :func:`variant_etag`, :func:`add_vary_accept_encoding`, :func:`variant_headers` and
  :func:`identity_headers` derive the header section of a compressed variant from the stored
  identity response.

Nothing here raises on malformed input: garbage in a request field degrades to the most
conservative answer (identity; not compressible).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final, Literal

__all__ = [
    "BUCKETS",
    "Bucket",
    "acceptable_codings",
    "add_vary_accept_encoding",
    "coding_of",
    "decoded_headers",
    "identity_headers",
    "is_compressible_type",
    "key_variant",
    "must_decode",
    "negotiate",
    "should_compress",
    "variant_etag",
    "variant_headers",
]

Bucket = Literal["br", "gzip", "identity"]
BUCKETS: Final[tuple[Bucket, ...]] = ("br", "gzip", "identity")
"""The normalized content-coding buckets, in order of preference (ties: br > gzip > identity)."""

DEFAULT_MIN_SIZE: Final = 1000
DEFAULT_MAX_SIZE: Final = 10 * 1024 * 1024
COMPRESSIBLE_STATUSES: Final = frozenset({200, 403, 404})

# ---------------------------------------------------------------------------------------------
# Accept-Encoding (RFC 9110 sec. 12.5.3)
# ---------------------------------------------------------------------------------------------

# "identity" when it is neither listed nor matched by "*": acceptable, but the last choice
# (sec. 12.5.3: "acceptable by default unless specifically excluded").
_IMPLICIT_IDENTITY: Final = 1e-9
_QVALUE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)").fullmatch
_MEMO_MAX: Final = 1024
_memo: dict[str, tuple[Bucket | None, frozenset[str]]] = {}
_IDENTITY_ONLY: Final[tuple[Bucket | None, frozenset[str]]] = ("identity", frozenset({"identity"}))


def _qvalue(text: str) -> float | None:
    """``qvalue`` (RFC 9110 sec. 12.4.2), leniently: any plain decimal, clamped to [0, 1].

    The grammar allows at most three decimals and nothing above 1; a value such as
    ``0.0001`` or ``1.5`` is read as a number anyway. Anything that is not a decimal number
    (empty, ``abc``, ``-1``, ``nan``) gives ``None``: the member is then ignored.
    """
    if not _QVALUE(text):
        return None
    return min(float(text), 1.0)


def _parse(value: str) -> tuple[Bucket | None, frozenset[str]]:
    """Negotiate ``value`` (the un-memoized work of :func:`negotiate`)."""
    explicit: dict[str, float] = {}
    star: float | None = None
    for member in value.split(","):
        coding, _, params = member.partition(";")
        coding = coding.strip(" \t").lower()
        if not coding:
            continue
        weight = 1.0
        if params:
            valid = True
            for param in params.split(";"):
                name, eq, raw = param.partition("=")
                if eq and name.strip(" \t").lower() == "q":
                    q = _qvalue(raw.strip(" \t"))
                    if q is None:
                        valid = False
                        break
                    weight = q
            if not valid:
                continue  # a member with a garbage weight is ignored, as if not sent
        if coding == "x-gzip":
            coding = "gzip"  # RFC 9110 sec. 8.4.1.3: "x-gzip" is equivalent to "gzip"
        if coding == "*":
            star = weight if star is None else max(star, weight)
        elif coding in ("br", "gzip", "identity"):
            explicit[coding] = max(explicit.get(coding, 0.0), weight)
    if not explicit and star is None:
        # empty or only unknown codings: no content coding wanted (sec. 12.5.3)
        return _IDENTITY_ONLY
    best: Bucket | None = None
    best_q = 0.0
    accepted: set[str] = set()
    for bucket in BUCKETS:  # preference order: only a strictly higher q displaces
        q = explicit.get(bucket)
        if q is None:
            q = star if star is not None else _IMPLICIT_IDENTITY if bucket == "identity" else 0.0
        if q > 0.0:
            accepted.add(bucket)
            if q > best_q:
                best, best_q = bucket, q
    return best, frozenset(accepted)


def _remember(accept_encoding: str) -> tuple[Bucket | None, frozenset[str]]:
    result = _parse(accept_encoding)
    if len(_memo) >= _MEMO_MAX:
        _memo.clear()  # bounded: a client sending random strings only costs re-parsing
    _memo[accept_encoding] = result
    return result


def negotiate(accept_encoding: str | None) -> Bucket | None:
    """The content coding to answer with, for a cache holding br, gzip and identity.

    RFC 9110 sec. 12.5.3, applied to the three codings this cache produces:

    * absent field (``None``): "the user agent has no preferences"; we answer ``"identity"``
      (what nginx and CDNs do: a client that does not ask gets no coding);
    * empty value, or only codings we do not produce (``deflate``, ``zstd``...): "does not
      want any content coding" / nothing better available -> ``"identity"``;
    * otherwise each of ``br``, ``gzip`` (``x-gzip`` is an alias, sec. 8.4.1.3) and
      ``identity`` gets its own ``q`` (sec. 12.4.2) if listed (case-insensitive; listed twice:
      the higher weight), else the weight of ``*`` if present, else 0 -- except ``identity``,
      which stays acceptable (as the last choice) unless ``identity;q=0`` or ``*;q=0`` without
      an ``identity`` member excludes it;
    * the highest ``q > 0`` wins; ties go to ``br``, then ``gzip``, then ``identity``;
    * nothing with ``q > 0`` -> ``None``: the caller answers 406 Not Acceptable (sec. 15.5.7)
      if the policy asks for it, else identity -- sec. 12.1 allows "sending a response that
      doesn't conform to the user agent's preferences" rather than a 406.

    Garbage-tolerant: a member with an unparseable weight (``gzip;q=x``) is ignored; a weight
    outside the grammar but numeric (``q=1.5``, ``q=0.0001``) is clamped to [0, 1]; unknown
    parameters are ignored. Never raises. Cost: one dict lookup for a value seen before (the
    memo holds up to 1024 distinct values and is cleared when full): ~60 ns; ~1.7 us to parse
    a new value.
    """
    if accept_encoding is None:
        return "identity"
    hit = _memo.get(accept_encoding)
    if hit is None:
        hit = _remember(accept_encoding)
    return hit[0]


def acceptable_codings(accept_encoding: str | None) -> frozenset[str]:
    """Every bucket the client accepts (``q > 0`` as in :func:`negotiate`), e.g. to decide
    whether a stored pre-compressed (origin-encoded) variant may be served to this request."""
    if accept_encoding is None:
        return _IDENTITY_ONLY[1]
    hit = _memo.get(accept_encoding)
    if hit is None:
        hit = _remember(accept_encoding)
    return hit[1]


def key_variant(bucket: Bucket) -> str:
    """The ``variant`` argument of ``build_key`` for a bucket: ``""`` for identity (the plain
    key, so the identity entry is the one every other code path already knows), else the
    coding name (``"br"``, ``"gzip"``)."""
    return "" if bucket == "identity" else bucket


def coding_of(content_encoding: str | None) -> Bucket | None:
    """The bucket a response's ``Content-Encoding`` (RFC 9110 sec. 8.4) puts it in.

    Absent, empty or ``identity`` -> ``"identity"``; ``br`` -> ``"br"``; ``gzip``/``x-gzip``
    -> ``"gzip"`` (case-insensitive). Anything else (``deflate``, ``zstd``, several codings
    such as ``gzip, br``) -> ``None``: not one of our buckets, so such a response must not be
    stored as a variant (pass it through, or store it only for the exact request).
    """
    if content_encoding is None:
        return "identity"
    value = content_encoding.strip(" \t").lower()
    if not value or value == "identity":
        return "identity"
    if value == "br":
        return "br"
    if value in ("gzip", "x-gzip"):
        return "gzip"
    return None


def must_decode(accept_encoding: str | None, coded: str) -> bool:
    """Whether a response coded ``coded`` (``"br"``/``"gzip"``, from the origin) has to be
    decoded for a request with this ``Accept-Encoding`` (RFC 9110 sec. 12.5.3).

    Absent field: no -- "the user agent has no preferences regarding content-codings", so
    the coded bytes may be sent as the origin sent them (that is also what S3 does for an
    object stored with Content-Encoding, and what lets tiers pass such objects on coded).
    Present: yes unless ``coded`` is among the codings it accepts with ``q > 0``
    (``Accept-Encoding: identity``, ``br`` for a gzip object, ``gzip;q=0``...).
    """
    if accept_encoding is None:
        return False
    hit = _memo.get(accept_encoding)
    if hit is None:
        hit = _remember(accept_encoding)
    return coded not in hit[1]


# ---------------------------------------------------------------------------------------------
# What may be compressed
# ---------------------------------------------------------------------------------------------

_COMPRESSIBLE_APPLICATION: Final = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/xml",
        "application/xml-dtd",
        "application/wasm",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/graphql",
        "application/x-sh",
        "application/rtf",
        "application/vnd.apple.mpegurl",  # HLS playlists (m3u8)
        "application/x-mpegurl",
        "application/vnd.ms-fontobject",  # fonts stored without a coding of their own
        "application/x-font-ttf",
        "application/x-font-truetype",
        "application/x-font-otf",
        "application/x-font-opentype",
        "application/font-sfnt",
    }
)
# Already compressed, whatever their name suggests.
_NEVER: Final = frozenset(
    {
        "font/woff",
        "font/woff2",
        "application/font-woff",
        "application/font-woff2",
        "application/x-font-woff",
        "text/event-stream",  # a live stream: compressing would buffer the events
    }
)
_COMPRESSIBLE_FONTS: Final = frozenset({"font/ttf", "font/otf", "font/sfnt", "font/collection"})


@lru_cache(maxsize=1024)
def is_compressible_type(content_type: str | None) -> bool:
    """Whether a representation of this media type (RFC 9110 sec. 8.3.1) is worth compressing.

    Parameters (``; charset=utf-8``) and case are ignored. True for: ``text/*`` (but
    ``text/event-stream``); JSON, JavaScript, XML, YAML, WebAssembly; any structured suffix
    ``+json``/``+xml``/``+yaml`` (RFC 6839: ``application/ld+json``, ``application/rss+xml``,
    ``application/dash+xml``, ``model/gltf+json``...); ``image/svg+xml``; uncompressed fonts
    (``font/ttf``, ``font/otf``, ``font/collection``, EOT); HLS playlists
    (``application/vnd.apple.mpegurl``, ``application/x-mpegurl``).

    Never for ``audio/*`` (including ``audio/mpegurl``, which some servers use for m3u8:
    the rule "never audio" stays simple), ``video/*``, ``image/*`` other than SVG, WOFF/WOFF2
    fonts (compressed inside), archives and compressed formats (``application/zip``,
    ``application/gzip``, ``+zip``...), ``application/octet-stream`` and anything unknown,
    absent or malformed. Memoized (bounded).
    """
    if not content_type:
        return False
    mtype = content_type.partition(";")[0].strip(" \t").lower()
    top, slash, sub = mtype.partition("/")
    if not slash or not top or not sub or mtype in _NEVER:
        return False
    if top in ("audio", "video"):
        return False
    if top == "image":
        return mtype == "image/svg+xml"
    if top == "text":
        return True
    if top == "font":
        return mtype in _COMPRESSIBLE_FONTS
    if mtype in _COMPRESSIBLE_APPLICATION:
        return True
    return sub.endswith(("+json", "+xml", "+yaml", "+json-seq"))


def should_compress(
    *,
    policy_compress: bool,
    status: int,
    content_type: str | None,
    content_encoding: str | None,
    content_length: int | None,
    resp_cc_no_transform: bool,
    has_range: bool,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int = DEFAULT_MAX_SIZE,
) -> bool:
    """Whether this cache may produce a br/gzip variant of a response. All must hold:

    * the cache policy has ``compress`` on;
    * ``status`` is 200, 403 or 404 (other statuses are small, bodiless or, for 206, a range
      of an identity representation);
    * :func:`is_compressible_type` of ``content_type``;
    * no ``Content-Encoding`` from upstream (``identity`` counts as none): a coded body is
      never coded twice; an origin-encoded body is passed through as its own variant;
    * the response's Cache-Control has no ``no-transform`` (RFC 9111 sec. 5.2.2.6: "an
      intermediary ... MUST NOT transform the content"; RFC 9110 sec. 7.7);
    * the request has no ``Range`` (RFC 9110 sec. 14: ranges address the selected
      representation's bytes; the cache serves ranges from the identity entry only);
    * ``min_size <= content_length <= max_size`` (defaults 1,000 B - 10 MiB). ``None``
      (length not yet known, chunked upstream) passes this test: the caller re-checks the
      final size before publishing a variant.
    """
    if not policy_compress or has_range or resp_cc_no_transform:
        return False
    if status not in COMPRESSIBLE_STATUSES:
        return False
    if content_encoding is not None and coding_of(content_encoding) != "identity":
        return False
    if content_length is not None and not (min_size <= content_length <= max_size):
        return False
    return is_compressible_type(content_type)


# ---------------------------------------------------------------------------------------------
# Header sections of variants
# ---------------------------------------------------------------------------------------------


def variant_etag(etag: str | None, encoding: str) -> str | None:
    """The entity-tag of the ``encoding`` variant of a representation tagged ``etag``.

    RFC 9110 sec. 8.8.3: an entity-tag is "an opaque validator for differentiating between
    multiple representations of the same resource"; sec. 8.8.3.3 shows this very case (the
    gzip-coded representation of a negotiated resource has its own tag). The coded and the
    identity representation need different entity-tags, otherwise an
    ``If-None-Match``/``If-Range`` made with one would validate the other (a 304 for the
    wrong bytes, or a range spliced from another representation). The variant's tag is the
    identity's opaque-tag with ``-<coding>`` appended inside the quotes; weakness (``W/``) is
    kept: a weak identity tag makes a weak variant tag, a strong one stays strong, which is
    sound because a node's compressor is deterministic for one body, and ranges are only ever
    served from the identity entry. ``"abc"`` -> ``"abc-br"``, ``W/"abc"`` -> ``W/"abc-br"``;
    an unquoted (malformed) tag is quoted first (``abc`` -> ``"abc-br"``); ``None``/empty ->
    ``None``; ``identity`` returns ``etag`` unchanged. Deliberately not idempotent: an origin
    tag that happens to end in ``-br`` still gets a distinct variant tag (``"v-br-br"``).
    """
    if not etag:
        return None
    if encoding == "identity":
        return etag
    text = etag.strip(" \t")
    prefix = ""
    if text[:2] in ("W/", "w/"):
        prefix = "W/"
        text = text[2:].lstrip(" \t")
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        opaque = text[1:-1]
    else:
        opaque = text.replace('"', "")
    return f'{prefix}"{opaque}-{encoding}"'


def add_vary_accept_encoding(vary_value: str | None) -> str:
    """A ``Vary`` value (RFC 9110 sec. 12.5.5) that lists ``Accept-Encoding``.

    ``None``/empty -> ``"Accept-Encoding"``; a value already listing it (any case) or ``*``
    is returned unchanged; otherwise ``", Accept-Encoding"`` is appended.
    """
    if vary_value is None or not vary_value.strip(" \t,"):
        return "Accept-Encoding"
    for name in vary_value.split(","):
        token = name.strip(" \t").lower()
        if token in ("accept-encoding", "*"):
            return vary_value
    return vary_value.rstrip(" \t,") + ", Accept-Encoding"


# Fields of the identity response that do not describe the coded variant.
_NOT_IN_VARIANT: Final = frozenset(
    {
        "content-length",  # regenerated from the variant's size
        "content-encoding",
        "content-md5",  # digest of the identity bytes (obsolete field, but never wrong)
        "content-digest",  # RFC 9530: digest of the content as sent, i.e. of the coded bytes
        "accept-ranges",  # ranges are served from the identity entry only (as nginx's gzip)
    }
)


def variant_headers(
    headers: Iterable[tuple[str, str]], encoding: Literal["br", "gzip"]
) -> list[tuple[str, str]]:
    """The stored header section of the ``encoding`` variant, derived from the identity one.

    Order and spelling are kept. Removed: Content-Length (the writer sets the variant's own),
    Content-Encoding, Content-MD5, Content-Digest and Accept-Ranges. ETag -> :func:`variant_etag`
    (RFC 9110 sec. 8.8.3). Vary -> :func:`add_vary_accept_encoding` (all Vary lines folded into
    the first). Appended: ``Content-Encoding: <encoding>`` (RFC 9110 sec. 8.4), and ``Vary:
    Accept-Encoding`` if there was no Vary. ``Repr-Digest`` stays (it describes the selected
    representation, RFC 9530 sec. 3, which a cache may leave alone: the lead may drop it).
    """
    out: list[tuple[str, str]] = []
    vary_at: int | None = None
    vary_values: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower in _NOT_IN_VARIANT:
            continue
        if lower == "etag":
            tag = variant_etag(value, encoding)
            if tag is not None:
                out.append((name, tag))
            continue
        if lower == "vary":
            if vary_at is None:
                vary_at = len(out)
                out.append((name, ""))
            vary_values.append(value)
            continue
        out.append((name, value))
    if vary_at is None:
        out.append(("Vary", "Accept-Encoding"))
    else:
        name = out[vary_at][0]
        out[vary_at] = (name, add_vary_accept_encoding(", ".join(vary_values)))
    out.append(("Content-Encoding", encoding))
    return out


def decoded_headers(headers: Iterable[tuple[str, str]], coded: str) -> list[tuple[str, str]]:
    """The header section of the identity (decoded) form of a response the origin sent coded
    ``coded``: the inverse of :func:`variant_headers`.

    Removed: Content-Length (set from the decoded size), Content-Encoding, Content-MD5 and
    Content-Digest (both describe the coded bytes). ETag -> :func:`variant_etag` with the
    suffix ``-identity`` (RFC 9110 sec. 8.8.3: the decoded representation is another one and
    must not validate the coded bytes, nor the other way round). ``Vary: Accept-Encoding``
    is added (the answer now depends on the field). Accept-Ranges stays: ranges of the
    decoded form are served from its own bytes.
    """
    out: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower in ("content-length", "content-encoding", "content-md5", "content-digest"):
            continue
        if lower == "etag":
            tag = variant_etag(value, f"{coded}-identity")
            if tag is not None:
                out.append((name, tag))
            continue
        out.append((name, value))
    return identity_headers(out)


def identity_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The identity response's header section with ``Vary: Accept-Encoding`` added.

    For a resource this cache compresses, every answer -- identity included -- must carry
    ``Vary: Accept-Encoding`` (RFC 9110 sec. 12.5.5): otherwise a downstream cache would hand
    the identity bytes (or, worse, a coded variant) to clients that asked differently. Several
    Vary lines are folded into the first; nothing else changes.
    """
    out: list[tuple[str, str]] = []
    vary_at: int | None = None
    vary_values: list[str] = []
    for name, value in headers:
        if name.lower() == "vary":
            if vary_at is None:
                vary_at = len(out)
                out.append((name, ""))
            vary_values.append(value)
            continue
        out.append((name, value))
    if vary_at is None:
        out.append(("Vary", "Accept-Encoding"))
    else:
        out[vary_at] = (out[vary_at][0], add_vary_accept_encoding(", ".join(vary_values)))
    return out
