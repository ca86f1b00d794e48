"""Cache-Control (RFC 9111 sec. 5.2) and CDN-Cache-Control (RFC 9213) parsing. Pure.

``parse_cache_control`` never raises: it is robust to case, whitespace, empty members,
quoted-string arguments (commas inside quotes), duplicates and garbage. Rules about what the
directives *mean* live in ``freshness.py``; this module only turns text into a frozen
``CacheControl`` value.

Choices where the RFC leaves room (each documented on the field or function below):

* Directive names are case-insensitive (sec. 5.2: "compared case-insensitively").
* Arguments may use token or quoted-string form, also for delta-seconds directives
  (sec. 5.2: "recipients ought to accept both forms"), so ``max-age="3600"`` is 3600.
* An invalid delta-seconds argument (single-quoted, negative, non-numeric, decimal,
  missing, or with whitespace around ``=``) is represented as ``0``: sec. 4.2.1 says "Caches
  are encouraged to consider responses that have invalid freshness information (e.g., a
  max-age directive with non-integer content) to be stale", and ``0`` does exactly that
  without letting a later field (e.g. Expires) make the response fresh.
* Duplicate directives: the FIRST occurrence wins (sec. 4.2.1: "either the first occurrence
  should be used or the response should be considered stale"). Boolean directives are
  simply present if they occur anywhere.
* Values above 2^31 are capped at 2147483648 (sec. 1.2.2).
* ``no-cache`` / ``private`` are split into the unqualified flag and the field list: the flag
  is set only by the unqualified form (or an empty / unparseable argument, the conservative
  reading); ``no-cache="a, b"`` only fills ``no_cache_fields``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any

__all__ = [
    "DELTA_SECONDS_CAP",
    "EMPTY_CACHE_CONTROL",
    "MAX_STALE_ANY",
    "CacheControl",
    "fields_to_strip",
    "parse_cache_control",
    "parse_cdn_cache_control",
    "request_no_cache",
    "select_response_cache_control",
]

DELTA_SECONDS_CAP = 2147483648
"""RFC 9111 sec. 1.2.2: a delta-seconds value too large is treated as 2^31."""

MAX_STALE_ANY = sys.maxsize
"""Value of ``max_stale`` for a bare ``max-stale`` (sec. 5.2.1.2: "will accept a stale
response of any age")."""

_EMPTY_RAW: Mapping[str, str | None] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CacheControl:
    """Parsed cache directives of one message (request or response).

    Booleans are ``True`` when the directive is present. Delta-seconds fields are ``None``
    when absent, ``0`` when present but invalid (see module docstring), else the integer
    value capped at 2147483648. ``raw`` holds unknown (extension) directives, lower-case name
    -> unquoted argument or ``None``; the rules ignore it (sec. 5.2.3). ``targeted`` is set
    when the value came from a targeted field such as CDN-Cache-Control (RFC 9213), in which
    case Expires must be ignored (RFC 9213 sec. 2.1).
    """

    no_store: bool = False
    no_cache: bool = False
    """Unqualified ``no-cache`` (sec. 5.2.2.4 / 5.2.1.4); the qualified form only fills
    ``no_cache_fields``."""
    no_cache_fields: tuple[str, ...] = ()
    private: bool = False
    """Unqualified ``private`` (sec. 5.2.2.7); the qualified form only fills
    ``private_fields``."""
    private_fields: tuple[str, ...] = ()
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    no_transform: bool = False
    immutable: bool = False
    only_if_cached: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    max_stale: int | None = None
    """Request only; a bare ``max-stale`` gives ``MAX_STALE_ANY``."""
    min_fresh: int | None = None
    raw: Mapping[str, str | None] = field(
        default_factory=lambda: _EMPTY_RAW, compare=False, hash=False
    )
    targeted: bool = False

    @property
    def has_explicit_lifetime(self) -> bool:
        """True if ``s-maxage`` or ``max-age`` is present (valid or not)."""
        return self.s_maxage is not None or self.max_age is not None


EMPTY_CACHE_CONTROL = CacheControl()

_DELTA = {
    "max-age": "max_age",
    "s-maxage": "s_maxage",
    "stale-while-revalidate": "stale_while_revalidate",
    "stale-if-error": "stale_if_error",
    "min-fresh": "min_fresh",
}
_FLAGS = {
    "no-store": "no_store",
    "public": "public",
    "must-revalidate": "must_revalidate",
    "proxy-revalidate": "proxy_revalidate",
    "must-understand": "must_understand",
    "no-transform": "no_transform",
    "immutable": "immutable",
    "only-if-cached": "only_if_cached",
}
_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)
_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)
_CACHE_MAX_LEN = 1024  # longer field values are parsed but not memoized


def _split_members(line: str) -> list[str]:
    """Split a field line at commas that are not inside a quoted-string."""
    if '"' not in line:
        return line.split(",")
    members: list[str] = []
    start = 0
    in_quotes = False
    escaped = False
    for i, ch in enumerate(line):
        if in_quotes:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == ",":
            members.append(line[start:i])
            start = i + 1
    members.append(line[start:])
    return members


def _unquote(value: str) -> tuple[str, bool]:
    """Return (value, ok). A double-quoted string is unescaped; ok=False if unterminated."""
    if not value.startswith('"'):
        return value, True
    if len(value) < 2 or not value.endswith('"'):
        return value, False
    out: list[str] = []
    escaped = False
    for ch in value[1:-1]:
        if escaped:
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return value, False  # a quote in the middle: garbage after the string
        else:
            out.append(ch)
    if escaped:
        return value, False
    return "".join(out), True


def _delta_seconds(value: str | None, well_formed: bool) -> int:
    """RFC 9111 sec. 1.2.2 delta-seconds = 1*DIGIT; invalid -> 0 (see module docstring)."""
    if value is None or not well_formed:
        return 0
    text, ok = _unquote(value)
    if not ok or not _DIGITS_RE.fullmatch(text):
        return 0
    if len(text) > 10:
        return DELTA_SECONDS_CAP
    return min(int(text), DELTA_SECONDS_CAP)


def _field_names(value: str | None, well_formed: bool) -> tuple[str, ...] | None:
    """Parse a ``#field-name`` argument; None means "treat as unqualified"."""
    if value is None or not well_formed:
        return None
    text, ok = _unquote(value)
    if not ok:
        return None
    names: list[str] = []
    for part in text.split(","):
        name = part.strip(" \t").lower()
        if not name:
            continue
        if not _TOKEN_RE.fullmatch(name):
            return None
        if name not in names:
            names.append(name)
    return tuple(names) or None


class _Builder:
    __slots__ = ("fields_seen", "raw", "values")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.raw: dict[str, str | None] = {}
        self.fields_seen: set[str] = set()

    def add(self, name: str, value: str | None, well_formed: bool) -> None:
        attr = _FLAGS.get(name)
        if attr is not None:
            # Arguments are not defined for these; the directive still counts (conservative
            # for restrictive ones, harmless for the others).
            self.values[attr] = True
            return
        attr = _DELTA.get(name)
        if attr is not None:
            if attr not in self.values:  # first occurrence wins (sec. 4.2.1)
                self.values[attr] = _delta_seconds(value, well_formed)
            return
        if name == "max-stale":
            if "max_stale" not in self.values:
                if value is None and well_formed:
                    self.values["max_stale"] = MAX_STALE_ANY
                else:
                    self.values["max_stale"] = _delta_seconds(value, well_formed)
            return
        if name in ("no-cache", "private"):
            names = _field_names(value, well_formed)
            base = name.replace("-", "_")
            if names is None:
                self.values[base] = True
            else:
                key = base + "_fields"
                existing = self.values.get(key, ())
                self.values[key] = existing + tuple(n for n in names if n not in existing)
            return
        if name not in self.raw:
            if value is not None:
                text, ok = _unquote(value)
                value = text if ok else value
            self.raw[name] = value

    def build(self, targeted: bool = False) -> CacheControl:
        if not self.values and not self.raw and not targeted:
            return EMPTY_CACHE_CONTROL
        raw = MappingProxyType(self.raw) if self.raw else _EMPTY_RAW
        return CacheControl(raw=raw, targeted=targeted, **self.values)


def _parse_line(builder: _Builder, line: str) -> None:
    for member in _split_members(line):
        member = member.strip(" \t")
        if not member:
            continue  # empty list elements are allowed (RFC 9110 sec. 5.6.1)
        eq = member.find("=")
        if eq < 0:
            name, value, well_formed = member, None, True
        else:
            raw_name = member[:eq]
            name = raw_name.rstrip(" \t")
            value = member[eq + 1 :]
            # No whitespace is allowed around "=" (cache-directive = token [ "=" ... ]).
            well_formed = name == raw_name and value[:1] not in (" ", "\t", "")
        if not _TOKEN_RE.fullmatch(name):
            continue  # garbage member: ignored
        builder.add(name.lower(), value, well_formed)


@lru_cache(maxsize=4096)
def _parse_cached(lines: tuple[str, ...]) -> CacheControl:
    builder = _Builder()
    for line in lines:
        _parse_line(builder, line)
    return builder.build()


def parse_cache_control(values: Iterable[str] | str | None) -> CacheControl:
    """Parse the Cache-Control field lines of a message (RFC 9111 sec. 5.2).

    ``values`` is the list from ``headers.getall("Cache-Control", [])``; several lines are
    equivalent to one comma-joined line (RFC 9110 sec. 5.3), but each line is parsed on its
    own so that a broken quoted-string cannot swallow the next line. A single ``str`` is
    accepted too. Results are memoized on the raw text (values are immutable). Never raises.
    """
    if not values:
        return EMPTY_CACHE_CONTROL
    if isinstance(values, str):
        lines: tuple[str, ...] = (values,)
    else:
        try:
            lines = tuple(v for v in values if isinstance(v, str))
        except TypeError:
            return EMPTY_CACHE_CONTROL
    if not lines:
        return EMPTY_CACHE_CONTROL
    if sum(len(line) for line in lines) > _CACHE_MAX_LEN:
        return _parse_cached.__wrapped__(lines)
    return _parse_cached(lines)


def request_no_cache(req_cc: CacheControl, req_headers: Any) -> bool:
    """True if the request asks not to be served from cache without validation.

    ``Cache-Control: no-cache`` (RFC 9111 sec. 5.2.1.4), or ``Pragma: no-cache`` when the
    request has no Cache-Control field at all: RFC 9111 sec. 5.4 deprecates Pragma, which
    was defined so that HTTP/1.0 clients "could specify a no-cache request (as Cache-Control
    was not defined until HTTP/1.1)"; RFC 7234 sec. 5.4 had it ignored whenever Cache-Control
    is present, which we keep.
    """
    if req_cc.no_cache:
        return True
    if req_headers.getall("Cache-Control", None):
        return False
    for line in req_headers.getall("Pragma", ()):
        for member in line.split(","):
            if member.strip(" \t").lower() == "no-cache":
                return True
    return False


def fields_to_strip(resp_cc: CacheControl) -> tuple[str, ...]:
    """Lower-case names of response fields a shared cache must not store or reuse.

    ``private="a"`` (RFC 9111 sec. 5.2.2.7): "a shared cache MUST NOT store the listed
    header fields ... but MAY store the remainder of the response message without those
    header fields". ``no-cache="a"`` (sec. 5.2.2.4): the cache "MAY use the response to
    satisfy a subsequent request ... if the listed header fields are excluded from the
    subsequent response"; we take that option by not storing them (a later revalidation
    brings them back through the header update of sec. 3.2).
    """
    if not resp_cc.private_fields:
        return resp_cc.no_cache_fields
    if not resp_cc.no_cache_fields:
        return resp_cc.private_fields
    extra = tuple(n for n in resp_cc.no_cache_fields if n not in resp_cc.private_fields)
    return resp_cc.private_fields + extra


# --- RFC 9213 targeted fields (CDN-Cache-Control) ------------------------------------------
# Targeted fields are RFC 8941 Dictionaries. A value that is not a valid Dictionary, or whose
# known directives carry the wrong type, is invalid and the field is ignored (RFC 9213
# sec. 2.1; suite tests cdn-cc-invalid-sh-type-*).

_SF_KEY_RE = re.compile(r"[a-z*][a-z0-9_\-.*]*", re.ASCII)
_SF_TOKEN_RE = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*", re.ASCII)
_SF_NUMBER_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)
_SF_BYTES_RE = re.compile(r":[A-Za-z0-9+/=]*:", re.ASCII)


class _SfError(ValueError):
    pass


class _SfParser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def _match(self, regex: re.Pattern[str]) -> str:
        m = regex.match(self.text, self.pos)
        if m is None:
            raise _SfError(self.pos)
        self.pos = m.end()
        return m.group(0)

    def _bare_item(self) -> object:
        ch = self._peek()
        if ch == '"':
            return self._string()
        if ch == "-" or ch.isdigit():
            num = self._match(_SF_NUMBER_RE)
            int_part = num.lstrip("-").split(".")[0]
            if "." in num:
                if len(int_part) > 12 or len(num.split(".")[1]) > 3:
                    raise _SfError(self.pos)
                return float(num)
            if len(int_part) > 15:
                raise _SfError(self.pos)
            return int(num)
        if ch == "?":
            flag = self.text[self.pos + 1 : self.pos + 2]
            if flag not in ("0", "1"):
                raise _SfError(self.pos)
            self.pos += 2
            return flag == "1"
        if ch == ":":
            return ("bytes", self._match(_SF_BYTES_RE))
        if ch == "*" or ch.isalpha():
            return ("token", self._match(_SF_TOKEN_RE))
        raise _SfError(self.pos)

    def _string(self) -> str:
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "\\":
                nxt = self.text[self.pos : self.pos + 1]
                if nxt not in ('"', "\\"):
                    raise _SfError(self.pos)
                out.append(nxt)
                self.pos += 1
            elif ch == '"':
                return "".join(out)
            elif not " " <= ch <= "~":
                raise _SfError(self.pos)
            else:
                out.append(ch)
        raise _SfError(self.pos)

    def _parameters(self) -> None:
        while self._peek() == ";":
            self.pos += 1
            while self._peek() == " ":
                self.pos += 1
            self._match(_SF_KEY_RE)
            if self._peek() == "=":
                self.pos += 1
                self._bare_item()

    def _item_or_inner_list(self) -> object:
        if self._peek() == "(":
            self.pos += 1
            items: list[object] = []
            while True:
                while self._peek() == " ":
                    self.pos += 1
                if self._peek() == ")":
                    self.pos += 1
                    self._parameters()
                    return ("list", items)
                items.append(self._bare_item())
                self._parameters()
                if self._peek() not in (" ", ")"):
                    raise _SfError(self.pos)
        value = self._bare_item()
        self._parameters()
        return value

    def dictionary(self) -> list[tuple[str, object]]:
        self.text = self.text.strip(" ")
        members: list[tuple[str, object]] = []
        if not self.text:
            return members
        while True:
            key = self._match(_SF_KEY_RE)
            if self._peek() == "=":
                self.pos += 1
                value = self._item_or_inner_list()
            else:
                value = True
                self._parameters()
            members.append((key, value))
            while self._peek() in (" ", "\t"):
                self.pos += 1
            if self.pos >= len(self.text):
                return members
            if self._peek() != ",":
                raise _SfError(self.pos)
            self.pos += 1
            while self._peek() in (" ", "\t"):
                self.pos += 1
            if self.pos >= len(self.text):
                raise _SfError(self.pos)  # trailing comma


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@lru_cache(maxsize=1024)
def _parse_cdn_cached(joined: str) -> CacheControl | None:
    try:
        members = _SfParser(joined).dictionary()
    except (_SfError, ValueError, IndexError):
        return None
    builder = _Builder()
    for key, value in members:
        if key in _DELTA or key == "max-stale":
            if value is True and key == "max-stale":
                builder.add(key, None, True)
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return None  # wrong type: the whole field is invalid
            builder.add(key, str(value), True)
        elif key in ("no-cache", "private"):
            if isinstance(value, str):
                builder.add(key, _quote(value), True)
            else:
                builder.add(key, None, True)  # conservative: unqualified
        elif key in _FLAGS:
            builder.add(key, None, True)
        else:
            if isinstance(value, str):
                builder.add(key, _quote(value), True)
            elif isinstance(value, tuple):  # token / byte sequence text, or an inner list
                builder.add(key, str(value[1]) if value[0] != "list" else None, True)
            else:
                builder.add(key, None if value is True else str(value), True)
    return builder.build(targeted=True)


def parse_cdn_cache_control(values: Iterable[str] | str | None) -> CacheControl | None:
    """Parse a targeted cache-control field such as CDN-Cache-Control (RFC 9213).

    Returns ``None`` when the field is absent or invalid (not an RFC 8941 Dictionary, or a
    known delta-seconds directive that is not a non-negative Integer, e.g.
    ``max-age="10000"``): RFC 9213 sec. 2.1 then has the cache fall back to Cache-Control.
    Keys are case-sensitive lower-case per RFC 8941, so ``MaX-AgE=1`` makes the field
    invalid. The result has ``targeted=True``. Never raises.
    """
    if not values:
        return None
    if isinstance(values, str):
        values = (values,)
    try:
        joined = ", ".join(v for v in values if isinstance(v, str))
    except TypeError:
        return None
    if not joined.strip(" \t"):
        return None
    if len(joined) > _CACHE_MAX_LEN:
        return _parse_cdn_cached.__wrapped__(joined)
    return _parse_cdn_cached(joined)


def select_response_cache_control(
    resp_headers: Any, targets: Iterable[str] = ("CDN-Cache-Control",)
) -> CacheControl:
    """The directives a CDN cache obeys for a response (RFC 9213 sec. 2.1).

    "the cache MUST select the first (in target list order) field with a valid value and use
    its value to determine the caching policy for the response, and it MUST ignore the
    Cache-Control and Expires header fields in that response, unless no valid value is
    available from the listed header fields." Pass ``targets=()`` to use only Cache-Control.
    The returned value has ``targeted=True`` when a targeted field was chosen; the freshness
    rules then ignore Expires.
    """
    for name in targets:
        cc = parse_cdn_cache_control(resp_headers.getall(name, ()))
        if cc is not None:
            return cc
    return parse_cache_control(resp_headers.getall("Cache-Control", ()))
