"""Storability, freshness lifetime, age and the fresh/stale decision for a SHARED cache
(RFC 9111 sec. 3 and 4.2, RFC 5861). Pure: ``now`` and all times are arguments (float POSIX
seconds); nothing here reads a clock or does I/O.

Typical use::

    resp_cc = select_response_cache_control(resp_headers)        # or parse_cache_control
    reason = storability(method, status, req_headers, req_cc, resp_headers, resp_cc,
                         policy_default_ttl=policy.default_ttl)
    if reason is None:
        lifetime, source = freshness_lifetime(status, resp_headers, resp_cc,
                                              response_time=response_time)
        ttl = apply_policy_ttl(lifetime, source, min_ttl=..., default_ttl=..., max_ttl=...)
        age0 = corrected_initial_age(resp_headers, request_time, response_time)
        ...  # store (ttl, age0, response_time) with the entry
    # later, per request:
    state = decide(now=now, response_time=..., corrected_initial_age=age0, lifetime=ttl,
                   resp_cc=resp_cc, req_cc=req_cc,
                   req_pragma_no_cache=request_no_cache(req_cc, req_headers))
"""

from __future__ import annotations

import enum
import re
from typing import Any

from edgeproxy.http.cache_control import (
    DELTA_SECONDS_CAP,
    CacheControl,
    fields_to_strip,
)
from edgeproxy.http.dates import parse_http_date

__all__ = [
    "CACHEABLE_METHODS",
    "HEURISTICALLY_CACHEABLE",
    "UNDERSTOOD_STATUSES",
    "Freshness",
    "NoStoreReason",
    "apply_policy_ttl",
    "corrected_initial_age",
    "current_age",
    "decide",
    "fields_to_strip",
    "freshness_lifetime",
    "has_explicit_freshness",
    "parse_age",
    "stale_if_error_ok",
    "storability",
]

CACHEABLE_METHODS = frozenset({"GET", "HEAD"})
"""Methods whose responses this cache stores (RFC 9111 sec. 3: "the request method is
understood by the cache"). HEAD responses are stored so they can update/answer HEADs."""

HEURISTICALLY_CACHEABLE = frozenset(
    {200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 451, 501}
)
"""RFC 9110 sec. 15.1: "Responses with status codes that are defined as heuristically
cacheable (e.g., 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, and 501 in this
specification)"; 451 per RFC 7725 sec. 3 ("cacheable by default")."""

UNDERSTOOD_STATUSES = frozenset(
    {200, 201, 202, 203, 204, 205, 300, 301, 302, 303, 305, 307, 308}
    | set(range(400, 418))
    | {421, 422, 426, 429, 451}
    | {500, 501, 502, 503, 504, 505}
)
"""Final status codes whose caching requirements this cache implements (for
``must-understand``, RFC 9111 sec. 5.2.2.3). 206 and 304 are handled separately: this
function never stores them as responses."""


class NoStoreReason(enum.Enum):
    """Why a response is not stored; ``as_str()`` feeds logs, metrics and Cache-Status."""

    METHOD = "method"
    STATUS = "status"
    PARTIAL = "partial-content"
    REQUEST_NO_STORE = "request-no-store"
    NO_STORE = "no-store"
    MUST_UNDERSTAND = "must-understand"
    PRIVATE = "private"
    AUTHORIZATION = "authorization"
    VARY_STAR = "vary-star"
    NO_FRESHNESS = "no-freshness"
    POLICY_FORBIDS = "policy-forbids"
    """Not returned by ``storability``; for callers applying a cache policy."""

    def as_str(self) -> str:
        return self.value


class Freshness(enum.Enum):
    """Outcome of ``decide`` for a stored response."""

    FRESH = "fresh"
    """May be served without contacting the origin: fresh, or stale within the client's
    ``max-stale`` allowance (RFC 9111 sec. 5.2.1.2)."""
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"
    """Stale, servable now; refresh in the background (RFC 5861 sec. 3)."""
    STALE = "stale"
    """Must be validated (conditional request) or refetched before use."""

    def as_str(self) -> str:
        return self.value


# --- storing (RFC 9111 sec. 3) --------------------------------------------------------------


def _has_vary_star(resp_headers: Any) -> bool:
    for line in resp_headers.getall("Vary", ()):
        for member in line.split(","):
            if member.strip(" \t") == "*":
                return True
    return False


def has_explicit_freshness(resp_headers: Any, resp_cc: CacheControl) -> bool:
    """True if the response carries s-maxage, max-age or (unless targeted) Expires."""
    if resp_cc.s_maxage is not None or resp_cc.max_age is not None:
        return True
    return not resp_cc.targeted and bool(resp_headers.getall("Expires", None))


def storability(
    method: str,
    status: int,
    req_headers: Any,
    req_cc: CacheControl,
    resp_headers: Any,
    resp_cc: CacheControl,
    *,
    policy_default_ttl: float,
) -> NoStoreReason | None:
    """``None`` if a shared cache may store the response, else the first reason it may not.

    RFC 9111 sec. 3: "A cache MUST NOT store a response to a request unless" - checked in
    this order:

    1. method GET or HEAD (``METHOD``; methods are case-sensitive);
    2. status final: 1xx and codes outside 100-599 -> ``STATUS``; 304 -> ``STATUS`` (it only
       updates a stored response); 206 -> ``PARTIAL`` (slices are stored by their own path);
    3. no ``no-store`` in the request (sec. 5.2.1.5) -> ``REQUEST_NO_STORE``;
    4. ``must-understand`` with a status not in ``UNDERSTOOD_STATUSES`` -> ``MUST_UNDERSTAND``;
       ``no-store`` in the response -> ``NO_STORE``, unless ``must-understand`` is present and
       the status understood (sec. 5.2.2.3: "the cache SHOULD ignore the no-store directive if
       it understands and implements the status code's caching requirements");
    5. unqualified ``private`` -> ``PRIVATE`` (``private="f"`` is storable without the listed
       fields: see ``fields_to_strip``);
    6. ``Authorization`` in the request without ``must-revalidate``, ``public`` or
       ``s-maxage`` (sec. 3.5) -> ``AUTHORIZATION``;
    7. ``Vary: *`` -> ``VARY_STAR`` (it "always fails to match", sec. 4.1);
    8. "the response contains at least one of": Expires, max-age, s-maxage, ``public``, or a
       heuristically cacheable status. Other statuses (e.g. 302, 500, 299) without explicit
       freshness -> ``NO_FRESHNESS``. Among the admitted ones, a response with no explicit
       freshness is stored only if it can be useful: it has a validator (ETag or
       Last-Modified: it can be revalidated, and Last-Modified allows a heuristic lifetime)
       or ``policy_default_ttl > 0``; otherwise ``NO_FRESHNESS`` (sec. 3: "some caches will
       not store a response that has neither a cache validator nor an explicit expiration
       time, as such responses are not usually useful to store").
    """
    if method not in CACHEABLE_METHODS:
        return NoStoreReason.METHOD
    if status == 206:
        return NoStoreReason.PARTIAL
    if status < 200 or status > 599 or status == 304:
        return NoStoreReason.STATUS
    if req_cc.no_store:
        return NoStoreReason.REQUEST_NO_STORE
    understood = status in UNDERSTOOD_STATUSES
    if resp_cc.must_understand and not understood:
        return NoStoreReason.MUST_UNDERSTAND
    if resp_cc.no_store and not (resp_cc.must_understand and understood):
        return NoStoreReason.NO_STORE
    if resp_cc.private:
        return NoStoreReason.PRIVATE
    if (
        req_headers.getall("Authorization", None)
        and not resp_cc.must_revalidate
        and not resp_cc.public
        and resp_cc.s_maxage is None
    ):
        return NoStoreReason.AUTHORIZATION
    if _has_vary_star(resp_headers):
        return NoStoreReason.VARY_STAR
    if has_explicit_freshness(resp_headers, resp_cc):
        return None
    if not (resp_cc.public or status in HEURISTICALLY_CACHEABLE):
        return NoStoreReason.NO_FRESHNESS
    if policy_default_ttl > 0:
        return None
    if resp_headers.getall("ETag", None) or resp_headers.getall("Last-Modified", None):
        return None
    return NoStoreReason.NO_FRESHNESS


# --- freshness lifetime (RFC 9111 sec. 4.2.1, 4.2.2) ----------------------------------------


def _first_date(headers: Any, name: str) -> tuple[bool, float | None]:
    """(present, parsed) for a singleton date field; the first line is used."""
    lines = headers.getall(name, None)
    if not lines:
        return False, None
    return True, parse_http_date(lines[0])


def freshness_lifetime(
    status: int,
    resp_headers: Any,
    resp_cc: CacheControl,
    *,
    response_time: float,
    heuristic_fraction: float = 0.1,
    heuristic_max: float = 86400.0,
) -> tuple[float | None, str]:
    """Freshness lifetime in seconds and its source, for a shared cache.

    RFC 9111 sec. 4.2.1, "using the first match":

    * ``s-maxage`` -> ``(value, "s-maxage")``;
    * ``max-age`` -> ``(value, "max-age")`` (an invalid value was parsed as 0);
    * ``Expires`` (ignored when ``resp_cc.targeted``, RFC 9213) -> ``Expires - Date``, with
      the response time standing in for a missing or invalid Date ("using the time the
      message was received if it is not present"); an invalid Expires such as ``0`` means
      "already expired" (sec. 5.3) -> ``(0.0, "expires")``; negative results are 0. Several
      Expires lines are "already expired" too: sec. 4.2.1 allows "either the first occurrence
      should be used or the response should be considered stale", and we take the second
      reading because the lines combine into one field value (RFC 9110 sec. 5.3) that is
      not an HTTP-date, i.e. an invalid one (sec. 5.3);
    * heuristic (sec. 4.2.2), only for heuristically cacheable statuses or ``public``, and
      only with a valid Last-Modified: ``heuristic_fraction * (Date - Last-Modified)``
      capped at ``heuristic_max`` -> ``(value, "heuristic")``;
    * otherwise ``(None, "none")``.
    """
    if resp_cc.s_maxage is not None:
        return float(resp_cc.s_maxage), "s-maxage"
    if resp_cc.max_age is not None:
        return float(resp_cc.max_age), "max-age"
    _, date_value = _first_date(resp_headers, "Date")
    if date_value is None:
        date_value = response_time
    if not resp_cc.targeted:
        expires_lines = resp_headers.getall("Expires", None)
        if expires_lines:
            expires = parse_http_date(expires_lines[0]) if len(expires_lines) == 1 else None
            if expires is None:
                return 0.0, "expires"
            return max(0.0, expires - date_value), "expires"
    if status in HEURISTICALLY_CACHEABLE or resp_cc.public:
        _, last_modified = _first_date(resp_headers, "Last-Modified")
        if last_modified is not None:
            lifetime = max(0.0, date_value - last_modified) * heuristic_fraction
            return min(lifetime, heuristic_max), "heuristic"
    return None, "none"


def apply_policy_ttl(
    lifetime: float | None,
    source: str,
    *,
    min_ttl: float,
    default_ttl: float,
    max_ttl: float,
) -> float:
    """The lifetime the cache uses after applying a policy's TTLs (CloudFront semantics).

    * Explicit freshness from the origin (``source`` in s-maxage, max-age, expires): the
      origin's value clamped into ``[min_ttl, max_ttl]``.
    * No explicit freshness (``"heuristic"`` or ``"none"``): ``default_ttl`` when it is > 0;
      when ``default_ttl`` is 0, the heuristic lifetime (or 0 for ``"none"``), in both cases
      clamped into ``[min_ttl, max_ttl]``.

    ``min_ttl`` wins if ``min_ttl > max_ttl``. This only sets a lifetime: it is applied after
    ``storability`` has admitted the response and never makes storable what that refused;
    ``no-cache`` still forces validation in ``decide`` whatever the TTL.
    """
    if source in ("s-maxage", "max-age", "expires") and lifetime is not None:
        value = lifetime
    elif default_ttl > 0:
        value = default_ttl
    else:
        value = lifetime if lifetime is not None else 0.0
    return max(min_ttl, min(value, max_ttl), 0.0)


# --- age (RFC 9111 sec. 4.2.3, 5.1) ---------------------------------------------------------

_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)


def parse_age(resp_headers: Any) -> int | None:
    """The Age value (RFC 9111 sec. 5.1), or ``None`` if absent or invalid.

    "a cache encountering a message with a list-based Age field value SHOULD use the first
    member of the field value, discarding subsequent ones" (several lines count as a list,
    so the first line's first member is used). "If the field value (after discarding
    additional members ...) is invalid (e.g., it contains something other than a
    non-negative integer), a cache SHOULD ignore the field": negative, decimal (``7200.0``)
    and non-numeric values give ``None``. Values are capped at 2147483648 (sec. 1.2.2).
    """
    lines = resp_headers.getall("Age", None)
    if not lines:
        return None
    first = lines[0].split(",", 1)[0].strip(" \t")
    if not _DIGITS_RE.fullmatch(first):
        return None
    if len(first) > 10:
        return DELTA_SECONDS_CAP
    return min(int(first), DELTA_SECONDS_CAP)


def corrected_initial_age(resp_headers: Any, request_time: float, response_time: float) -> float:
    """RFC 9111 sec. 4.2.3, the conservative form::

        apparent_age = max(0, response_time - date_value)
        response_delay = response_time - request_time
        corrected_age_value = age_value + response_delay
        corrected_initial_age = max(apparent_age, corrected_age_value)

    ``age_value`` is 0 when Age is absent or invalid (``parse_age``); a missing or invalid
    Date counts as ``response_time`` (RFC 9110 sec. 6.6.1), i.e. apparent age 0. A negative
    response delay (clock stepped back) counts as 0.
    """
    age_value = parse_age(resp_headers) or 0
    _, date_value = _first_date(resp_headers, "Date")
    apparent_age = 0.0 if date_value is None else max(0.0, response_time - date_value)
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, age_value + response_delay)


def current_age(corrected_initial_age: float, response_time: float, now: float) -> float:
    """RFC 9111 sec. 4.2.3: ``corrected_initial_age + (now - response_time)``; a ``now``
    earlier than ``response_time`` adds nothing."""
    return corrected_initial_age + max(0.0, now - response_time)


# --- decisions (RFC 9111 sec. 4.2, 4.2.4, 5.2; RFC 5861) -------------------------------------


def _stale_forbidden(resp_cc: CacheControl) -> bool:
    """RFC 9111 sec. 4.2.4: "A cache MUST NOT generate a stale response if it is prohibited
    by an explicit in-protocol directive (e.g., by a no-cache response directive, a
    must-revalidate response directive, or an applicable s-maxage or proxy-revalidate
    response directive". s-maxage is handled by the callers (see ``decide``)."""
    return resp_cc.no_cache or resp_cc.must_revalidate or resp_cc.proxy_revalidate


def decide(
    *,
    now: float,
    response_time: float,
    corrected_initial_age: float,
    lifetime: float | None,
    resp_cc: CacheControl,
    req_cc: CacheControl,
    req_pragma_no_cache: bool,
    stale_while_revalidate_default: float = 0.0,
) -> Freshness:
    """Whether a stored response may be served as is, served stale while revalidating, or
    must be validated first. ``lifetime`` is the (policy-adjusted) freshness lifetime;
    ``None`` counts as 0. Evaluated in order:

    1. request ``no-cache`` or ``req_pragma_no_cache`` (see ``request_no_cache``) -> STALE
       (sec. 5.2.1.4);
    2. response unqualified ``no-cache`` -> STALE always (sec. 5.2.2.4: "MUST NOT be used to
       satisfy any other request without forwarding it for validation");
    3. request ``max-age`` smaller than the current age -> STALE (sec. 5.2.1.1);
    4. fresh (``lifetime > current_age``, sec. 4.2) -> FRESH, unless the remaining freshness
       is below the request's ``min-fresh`` -> STALE (sec. 5.2.1.3);
    5. stale and ``must-revalidate`` / ``proxy-revalidate`` -> STALE (sec. 4.2.4);
    6. stale by no more than the response's ``stale-while-revalidate`` -> STALE_WHILE_REVALIDATE
       (RFC 5861 sec. 3). Choice: an explicit origin directive is honoured even with
       ``s-maxage`` (the origin that sent both explicitly allowed it, RFC 9111 sec. 4.2.4
       "explicitly permitted by the ... origin server (e.g., by ... extension directives such
       as those defined in [RFC5861])"; this is how CDNs treat ``s-maxage=60,
       stale-while-revalidate=30``). Without the directive, ``stale_while_revalidate_default``
       (policy) applies, but never with ``s-maxage`` (it implies proxy-revalidate for a
       shared cache, sec. 5.2.2.10);
    7. stale by no more than the request's ``max-stale`` -> FRESH (served without
       revalidation), but not with ``s-maxage`` (sec. 5.2.2.10);
    8. otherwise STALE.

    Windows are inclusive ("up to the indicated number of seconds").
    """
    if req_cc.no_cache or req_pragma_no_cache:
        return Freshness.STALE
    if resp_cc.no_cache:
        return Freshness.STALE
    age = current_age(corrected_initial_age, response_time, now)
    if req_cc.max_age is not None and age > req_cc.max_age:
        return Freshness.STALE
    remaining = (lifetime or 0.0) - age
    if remaining > 0:
        if req_cc.min_fresh is not None and remaining < req_cc.min_fresh:
            return Freshness.STALE
        return Freshness.FRESH
    if _stale_forbidden(resp_cc):
        return Freshness.STALE
    staleness = -remaining
    if resp_cc.stale_while_revalidate is not None:
        window = float(resp_cc.stale_while_revalidate)
    elif resp_cc.s_maxage is None:
        window = stale_while_revalidate_default
    else:
        window = 0.0
    if window > 0 and staleness <= window:
        return Freshness.STALE_WHILE_REVALIDATE
    if req_cc.max_stale is not None and resp_cc.s_maxage is None and staleness <= req_cc.max_stale:
        return Freshness.FRESH
    return Freshness.STALE


def stale_if_error_ok(
    *,
    now: float,
    response_time: float,
    corrected_initial_age: float,
    lifetime: float | None,
    resp_cc: CacheControl,
    req_cc: CacheControl,
    default_window: float,
) -> bool:
    """True if a stored response may be served because the origin/parent failed (error 500,
    502, 503, 504 or no answer), per RFC 5861 sec. 4 and RFC 9111 sec. 4.2.4.

    * Never when the response has unqualified ``no-cache``, ``must-revalidate`` or
      ``proxy-revalidate`` (sec. 4.2.4; sec. 5.2.2.2 "if a cache is disconnected, the cache
      MUST generate an error response rather than reuse the stale response").
    * A still-fresh response is always servable.
    * Otherwise allowed if the staleness is within any applicable window: the response's
      ``stale-if-error`` (honoured even with ``s-maxage``, same choice as in ``decide``), the
      request's ``stale-if-error`` and the policy ``default_window`` (a disconnected cache
      "by configuration", sec. 4.2.4) - the last two not with ``s-maxage``.
    """
    if _stale_forbidden(resp_cc):
        return False
    age = current_age(corrected_initial_age, response_time, now)
    staleness = age - (lifetime or 0.0)
    if staleness < 0:
        return True
    windows: list[float] = []
    if resp_cc.stale_if_error is not None:
        windows.append(float(resp_cc.stale_if_error))
    if resp_cc.s_maxage is None:
        if req_cc.stale_if_error is not None:
            windows.append(float(req_cc.stale_if_error))
        windows.append(default_window)
    return any(w > 0 and staleness <= w for w in windows)
