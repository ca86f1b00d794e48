"""Conditional requests answered by a cache (RFC 9110 sec. 13, RFC 9111 sec. 4.3.2). Pure.

Entity-tags are handled as ``(weak, opaque_tag)`` where ``opaque_tag`` keeps its double
quotes (``'"abc"'``). Leniency (checked by the public cache-tests suite,
``conditional-etag.mjs``): the weakness prefix is matched case-insensitively (``w/``), and an
unquoted tag (``abc``) is normalized to its quoted form (``"abc"``) on both sides, so that
identical malformed values still compare equal.
"""

from __future__ import annotations

from typing import Any, Literal

from edgeproxy.http.dates import parse_http_date

__all__ = [
    "if_range_allows_partial",
    "not_modified",
    "not_modified_matches",
    "parse_etag",
    "parse_etag_list",
    "strong_match",
    "weak_match",
]

ETag = tuple[bool, str]


def _member(text: str) -> ETag | None:
    text = text.strip(" \t")
    if not text:
        return None
    weak = False
    if text[:2] in ("W/", "w/"):
        weak = True
        text = text[2:].lstrip(" \t")
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"' and '"' not in text[1:-1]:
        return weak, text
    return weak, '"' + text + '"'


def parse_etag_list(value: str | None) -> list[ETag] | Literal["*"]:
    """Parse ``If-None-Match`` / ``If-Match`` (RFC 9110 sec. 13.1.1/13.1.2).

    ``"*"`` (alone or as any member) gives ``"*"``; otherwise a list of ``(weak, tag)``.
    Commas inside a quoted opaque-tag (allowed by ``etagc``) do not split. Garbage members
    are kept as opaque text (normalized with quotes); empty members are skipped.
    Never raises.
    """
    if not value:
        return []
    out: list[ETag] = []
    start = 0
    in_quotes = False
    for i, ch in enumerate(value):
        if ch == '"':
            in_quotes = not in_quotes
        elif ch == "," and not in_quotes:
            part = value[start:i]
            if part.strip(" \t") == "*":
                return "*"
            tag = _member(part)
            if tag is not None:
                out.append(tag)
            start = i + 1
    part = value[start:]
    if part.strip(" \t") == "*":
        return "*"
    tag = _member(part)
    if tag is not None:
        out.append(tag)
    return out


def parse_etag(value: str | None) -> ETag | None:
    """Parse one ETag field value (RFC 9110 sec. 8.8.3); ``None`` if absent or empty."""
    if not value:
        return None
    return _member(value)


def weak_match(a: ETag, b: ETag) -> bool:
    """Weak comparison (RFC 9110 sec. 8.8.3.2): opaque-tags equal, weakness ignored."""
    return a[1] == b[1]


def strong_match(a: ETag, b: ETag) -> bool:
    """Strong comparison (RFC 9110 sec. 8.8.3.2): both strong and opaque-tags equal."""
    return not a[0] and not b[0] and a[1] == b[1]


def not_modified(
    method: str,
    req_headers: Any,
    etag: str | None,
    last_modified: str | None,
    *,
    date: str | None = None,
    received_at: float | None = None,
) -> bool:
    """True if a cache should answer the request with 304 from its selected stored response.

    RFC 9111 sec. 4.3.2 / RFC 9110 sec. 13.2.2, for GET and HEAD only (other methods are
    never answered from cache):

    * ``If-None-Match`` takes precedence: "*" or any member weakly matching ``etag``
      (sec. 13.1.2: "A recipient MUST use the weak comparison function").
    * Otherwise ``If-Modified-Since``, ignored when it is not a valid HTTP-date or has more
      than one member (sec. 13.1.3). 304 if the stored ``Last-Modified`` is earlier than or
      equal to it; without Last-Modified, the stored ``date`` (Date field) is used, and
      without either, ``received_at`` (RFC 9111 sec. 4.3.2 cases 1-3). An unparseable
      Last-Modified never yields 304.
    """
    if method not in ("GET", "HEAD"):
        return False
    inm = req_headers.getall("If-None-Match", None)
    if inm:
        tags = parse_etag_list(", ".join(inm))
        if tags == "*":
            return True
        stored = parse_etag(etag)
        if stored is None:
            return False
        return any(weak_match(stored, t) for t in tags)
    ims_lines = req_headers.getall("If-Modified-Since", None)
    if not ims_lines or len(ims_lines) != 1:
        return False
    ims = parse_http_date(ims_lines[0])
    if ims is None:
        return False
    if last_modified is not None:
        lm = parse_http_date(last_modified)
        return lm is not None and lm <= ims
    if date is not None:
        d = parse_http_date(date)
        return d is not None and d <= ims
    if received_at is not None:
        return received_at <= ims
    return False


def if_range_allows_partial(
    if_range_value: str | None,
    etag: str | None,
    last_modified: str | None,
    *,
    date: str | None = None,
) -> bool:
    """Evaluate ``If-Range`` (RFC 9110 sec. 13.1.5) against the selected stored response.

    True means the Range may be honoured (206); False means send the whole representation.
    An entity-tag (recognised by a leading DQUOTE or ``W/``) matches only by strong
    comparison, so a weak tag is always false. A date matches only if it equals the stored
    ``Last-Modified`` and that Last-Modified is a strong validator: per sec. 8.8.2.2 a cache
    may deem it strong only when the stored ``Date`` is at least one second after it; without
    ``date`` the condition is false. Absent/empty/invalid values are false (the caller
    applies If-Range only when a Range is present).
    """
    if not if_range_value:
        return False
    value = if_range_value.strip(" \t")
    if value.startswith('"') or value[:2] in ("W/", "w/"):
        tag = _member(value)
        stored = parse_etag(etag)
        return tag is not None and stored is not None and strong_match(tag, stored)
    if last_modified is None or date is None:
        return False
    when = parse_http_date(value)
    lm = parse_http_date(last_modified)
    sent = parse_http_date(date)
    if when is None or lm is None or sent is None:
        return False
    return when == lm and sent - lm >= 1.0


def not_modified_matches(
    stored_etag: str | None,
    stored_last_modified: str | None,
    fresh_etag: str | None,
    fresh_last_modified: str | None,
) -> bool:
    """Whether a 304 received for a validation identifies the stored response for update
    (RFC 9111 sec. 4.3.4), for a cache that validates one stored response at a time.

    * "If the new response contains one or more strong validators ..., then each of those
      strong validators identifies a selected representation for update. ... If none of the
      stored responses contain at least one of the same strong validators, then the cache
      MUST NOT use the new response to update any stored responses": a strong ETag in the
      304 must equal the stored one by the strong comparison (a weak stored tag does not
      contain it).
    * "If the new response contains no strong validators but does contain one or more weak
      validators, and those validators correspond to one of the cache's stored responses":
      a weak ETag must match the stored one by the weak comparison; without an ETag, a
      Last-Modified must equal the stored Last-Modified (same instant).
    * A 304 without any validator is taken as confirming the validators the cache sent. The
      RFC identifies a stored response for such a 304 only when it also lacks validators,
      but RFC 9110 sec. 15.4.5 has servers send the ETag they would send on a 200, so a
      304 without one comes from a server that does not send validators on 304 at all;
      refusing it would turn every revalidation into a full fetch.
    """
    fresh = parse_etag(fresh_etag)
    if fresh is not None:
        stored = parse_etag(stored_etag)
        if stored is None:
            return False
        return strong_match(fresh, stored) if not fresh[0] else weak_match(fresh, stored)
    if fresh_last_modified:
        new = parse_http_date(fresh_last_modified)
        old = parse_http_date(stored_last_modified) if stored_last_modified else None
        return new is not None and new == old
    return True
