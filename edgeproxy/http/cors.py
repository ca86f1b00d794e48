"""CORS at the edge (Fetch Standard, "CORS protocol", fetch.spec.whatwg.org/#http-cors-protocol).
Pure rules: no I/O; the handler applies them to every answer of a policy with ``[policy.cors]``.

Contract:

* **The edge owns CORS** for such a policy: ``Access-Control-*`` fields from the origin or a
  stored entry are dropped from every answer and replaced by the policy's (:func:`merge`), so
  a stored answer never carries one client's ``Origin`` to another.
* **Static part** (:func:`static_fields`, the same for every request, so it may sit in a
  cached hit head): with ``allow_origins = ["*"]`` (never with credentials) every answer
  carries ``Access-Control-Allow-Origin: *`` (and ``Access-Control-Expose-Headers``);
  otherwise every answer, with or without an ``Origin``, carries ``Vary: Origin`` (unless its
  Vary already names it) so caches downstream key the per-origin answers apart.
* **Per-request part** (:func:`actual_fields`, :meth:`CorsRules.actual_block`): for a listed
  origin, ``Access-Control-Allow-Origin: <that origin>``, ``Access-Control-Allow-Credentials:
  true`` when allowed, ``Access-Control-Expose-Headers``; nothing for an origin not listed
  (the browser then refuses the answer to the page; the answer itself is unchanged).
* **Preflight** (:func:`is_preflight`: ``OPTIONS`` with ``Origin`` and
  ``Access-Control-Request-Method``) is answered at the edge, never upstream
  (:func:`preflight`): 204 with ``Access-Control-Allow-Origin/-Methods/-Headers/-Max-Age``
  (and ``-Credentials``) when the origin, the method and every requested header are allowed;
  otherwise 403 with the reason.

Origins are matched case-insensitively against ``allow_origins``: exact serialized origins
(``https://app.example``, ``http://localhost:3000``), or one leading wildcard label
(``https://*.example.com`` matches ``https://a.b.example.com`` but not
``https://example.com`` nor another port). ``allow_headers = ["*"]`` allows any requested
header (answered by echoing the request's list, which is valid with credentials too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "CorsRules",
    "Preflight",
    "actual_fields",
    "is_preflight",
    "merge",
    "origin_allowed",
    "preflight",
    "static_fields",
]

_MANAGED_PREFIX = "access-control-"
_HOST_RE = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?", re.ASCII)
_MEMO_MAX = 256
_PREFLIGHT_VARY = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


@dataclass(frozen=True, slots=True)
class CorsRules:
    """A policy's CORS settings (``[policy.cors]``), validated by the config loader.

    ``allow_origins``: lower-case origins or ``https://*.domain`` patterns, or ``("*",)``;
    ``allow_headers``: lower-case names, or ``("*",)``; ``max_age`` in seconds.
    """

    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = ("GET", "HEAD")
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int = 600
    allow_credentials: bool = False
    # per-origin header lines of the fast path (bounded); not part of equality
    _blocks: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def any_origin(self) -> bool:
        """``allow_origins = ["*"]``: one answer for every origin (``*``)."""
        return self.allow_origins == ("*",)

    def actual_block(self, origin: str) -> bytes:
        """:func:`actual_fields` for ``origin`` as header lines (``b"Name: value\\r\\n"...``),
        memoized per origin (at most a few hundred; the memo is cleared when full)."""
        block = self._blocks.get(origin)
        if block is None:
            lines = "".join(f"{n}: {v}\r\n" for n, v in actual_fields(self, origin))
            block = lines.encode("latin-1")
            if len(self._blocks) >= _MEMO_MAX:
                self._blocks.clear()
            self._blocks[origin] = block
        return block


def origin_allowed(rules: CorsRules, origin: str) -> bool:
    """Whether the ``Origin`` value is listed (``*`` lists every origin but ``null``)."""
    low = origin.strip().lower()
    if rules.any_origin:
        return low != "null" and bool(low)
    for allowed in rules.allow_origins:
        if low == allowed:
            return True
        star = allowed.find("://*.")
        if star != -1:
            scheme, suffix = allowed[: star + 3], allowed[star + 4 :]  # suffix: ".example.com"
            if low.startswith(scheme) and low.endswith(suffix):
                label = low[len(scheme) : len(low) - len(suffix)]
                if _HOST_RE.fullmatch(label):
                    return True
    return False


def static_fields(rules: CorsRules) -> list[tuple[str, str]]:
    """The fields every answer of the policy carries, whatever the request."""
    if rules.any_origin and not rules.allow_credentials:
        fields = [("Access-Control-Allow-Origin", "*")]
        if rules.expose_headers:
            fields.append(("Access-Control-Expose-Headers", ", ".join(rules.expose_headers)))
        return fields
    return [("Vary", "Origin")]


def actual_fields(rules: CorsRules, origin: str | None) -> list[tuple[str, str]]:
    """The per-request fields of an actual (non-preflight) answer to a request with ``origin``
    (None: no ``Origin`` field): empty when the static part says it all or the origin is not
    allowed."""
    if origin is None or (rules.any_origin and not rules.allow_credentials):
        return []
    if not origin_allowed(rules, origin):
        return []
    fields = [("Access-Control-Allow-Origin", origin.strip())]
    if rules.allow_credentials:
        fields.append(("Access-Control-Allow-Credentials", "true"))
    if rules.expose_headers:
        fields.append(("Access-Control-Expose-Headers", ", ".join(rules.expose_headers)))
    return fields


def _names_origin(vary_value: str) -> bool:
    return any(part.strip().lower() in ("origin", "*") for part in vary_value.split(","))


def merge(
    rules: CorsRules, fields: Iterable[tuple[str, str]], origin: str | None
) -> list[tuple[str, str]]:
    """``fields`` of an answer without their ``Access-Control-*`` fields, plus the static
    fields (no second ``Vary: Origin``) and those for ``origin`` (None: static only)."""
    out: list[tuple[str, str]] = []
    varies_on_origin = False
    for name, value in fields:
        low = name.lower()
        if low.startswith(_MANAGED_PREFIX):
            continue
        if low == "vary" and _names_origin(value):
            varies_on_origin = True
        out.append((name, value))
    for name, value in static_fields(rules):
        if name == "Vary" and varies_on_origin:
            continue
        out.append((name, value))
    out.extend(actual_fields(rules, origin))
    return out


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    """A CORS preflight: ``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``
    (``headers``: lower-case names)."""
    return (
        method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers
    )


@dataclass(frozen=True, slots=True)
class Preflight:
    """The edge's answer to a preflight: 204 with ``fields``, or 403 with ``reason``."""

    status: int
    fields: list[tuple[str, str]]
    reason: str | None = None


def preflight(
    rules: CorsRules, origin: str, request_method: str, request_headers: str | None
) -> Preflight:
    """Answer a preflight (Fetch "CORS-preflight fetch"): ``request_method`` and
    ``request_headers`` are the values of ``Access-Control-Request-Method`` and
    ``-Headers``."""
    vary = [("Vary", _PREFLIGHT_VARY)]
    if not origin_allowed(rules, origin):
        return Preflight(403, vary, f"CORS: origin {_printable(origin)} is not allowed")
    method = request_method.strip()
    if method not in rules.allow_methods:
        return Preflight(403, vary, f"CORS: method {_printable(method)} is not allowed")
    requested = [h.strip().lower() for h in (request_headers or "").split(",") if h.strip()]
    wildcard_headers = rules.allow_headers == ("*",)
    if not wildcard_headers:
        for name in requested:
            if name not in rules.allow_headers:
                return Preflight(403, vary, f"CORS: header {_printable(name)} is not allowed")
    if rules.any_origin and not rules.allow_credentials:
        fields = [("Access-Control-Allow-Origin", "*")]
    else:
        fields = [("Access-Control-Allow-Origin", origin.strip())]
    if rules.allow_credentials:
        fields.append(("Access-Control-Allow-Credentials", "true"))
    fields.append(("Access-Control-Allow-Methods", ", ".join(rules.allow_methods)))
    allowed_headers = ", ".join(requested) if wildcard_headers else ", ".join(rules.allow_headers)
    if allowed_headers:
        fields.append(("Access-Control-Allow-Headers", allowed_headers))
    fields.append(("Access-Control-Max-Age", str(rules.max_age)))
    fields.extend(vary)
    return Preflight(204, fields)


def _printable(text: str) -> str:
    return repr("".join(c if " " <= c < "\x7f" else "?" for c in text[:80]))
