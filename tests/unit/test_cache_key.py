"""The cache key (pure): RFC 3986 sec. 6.2.2 normalization, keyed query and headers only."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from edgeproxy.cache.key import (
    BadRequestTarget,
    CacheKey,
    build_key,
    normalize_path,
    split_target,
)
from edgeproxy.config import PolicyConfig

AUDIO = PolicyConfig(
    name="audio",
    path="/audio/*",
    default_ttl=86400.0,
    max_ttl=365 * 86400.0,
    query_keys=("quality", "format", "bitrate"),
)
IMAGES = PolicyConfig(
    name="images",
    path="/images/*",
    default_ttl=7 * 86400.0,
    max_ttl=365 * 86400.0,
    query_keys=("w", "h", "q", "format"),
    header_keys=("accept",),
)
PLAIN = PolicyConfig(name="default", path="*", default_ttl=0.0, max_ttl=365 * 86400.0)
NO_HEADERS: CIMultiDict[str] = CIMultiDict()


def key(
    target: str, policy: PolicyConfig = AUDIO, headers=NO_HEADERS, variant: str = ""
) -> CacheKey:
    return build_key(policy, target, headers, variant)


# --- the key object -------------------------------------------------------------------------


def test_key_fields() -> None:
    k = key("/audio/a.mp3?quality=high")
    assert len(k.digest) == 16 and k.hex == k.digest.hex() and len(k.hex) == 32
    assert k.path == "/audio/a.mp3"
    assert k.upstream_target == "/audio/a.mp3?quality=high"
    assert k.forwarded_headers == ()
    assert key("/audio/a.mp3").upstream_target == "/audio/a.mp3"  # no "?" without a query


def test_key_is_deterministic_and_path_sensitive() -> None:
    assert key("/audio/a.mp3") == key("/audio/a.mp3")
    assert key("/audio/a.mp3").digest != key("/audio/b.mp3").digest


# --- RFC 3986 sec. 6.2.2 path normalization --------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/", "/"),
        ("/audio/a.mp3", "/audio/a.mp3"),
        ("/%7E", "/~"),  # 6.2.2.2: unreserved decoded
        ("/%7e", "/~"),
        ("/%41%62%2d%5f%2E", "/Ab-_."),
        ("/a%2fb", "/a%2Fb"),  # 6.2.2.1: hex upper-cased; reserved "/" stays encoded
        ("/a%2Fb", "/a%2Fb"),
        ("/%e2%82%ac", "/%E2%82%AC"),
        ("/a%20b", "/a%20b"),
        ("/a|b", "/a%7Cb"),  # not allowed raw: encoded
        ("/a[1]", "/a%5B1%5D"),
        ("/é", "/%C3%A9"),
        ("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;="),  # pchar kept raw
        ("/a/./b", "/a/b"),  # 6.2.2.3 / 5.2.4: dot segments
        ("/a/../b", "/b"),
        ("/a/../../b", "/b"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/.", "/"),
        ("/a/%2E%2E/b", "/b"),  # decoded before segments are removed
        ("/a/.%2e/b", "/b"),
        ("/a/..b/.c", "/a/..b/.c"),  # not dot segments
        ("/a//b", "/a//b"),  # empty segments kept: S3 keys may contain "//"
        ("//a", "//a"),
        ("/a//../b", "/a/b"),
    ],
)
def test_normalize_path(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized
    assert normalize_path(normalized) == normalized


@pytest.mark.parametrize(
    "raw",
    [
        "/%zz",
        "/%4",
        "/a%",
        "/%g0",
        "/% 1",
        "/%+1",
        "/%00",
        "/a b",
        "/a\tb",
        "/a\x00",
        "/\x7f",
        "/a#frag",
        "a/b",
        "",
        "/a?b",
        "/\ud800",
    ],
)
def test_normalize_path_rejects(raw: str) -> None:
    with pytest.raises(BadRequestTarget):
        normalize_path(raw)


def test_bad_request_target_is_a_value_error() -> None:
    assert issubclass(BadRequestTarget, ValueError)


def test_unreserved_encoded_or_not_is_one_key() -> None:
    assert key("/audio/%7Euser/a%2Dmp3") == key("/audio/~user/a-mp3")
    assert key("/audio/a%2Fb").digest != key("/audio/a/b").digest
    assert key("/audio/x/../a.mp3") == key("/audio/a.mp3")
    assert key("/audio//a.mp3").digest != key("/audio/a.mp3").digest


# --- request-target forms (RFC 9112 sec. 3.2) -----------------------------------------------


def test_split_target() -> None:
    assert split_target("/a?b=1") == ("/a", "b=1")
    assert split_target("/a") == ("/a", "")
    assert split_target("http://host:8080/a/b?q=1") == ("/a/b", "q=1")
    assert split_target("HTTPS://host") == ("/", "")
    assert split_target("http://host?x=1") == ("/", "x=1")


@pytest.mark.parametrize("target", ["*", "host:443", "ftp://h/a", "http:///a", "a/b", ""])
def test_targets_without_a_key(target: str) -> None:
    with pytest.raises(BadRequestTarget):
        key(target)


def test_absolute_form_keys_like_origin_form() -> None:
    assert key("http://edge.example/audio/a.mp3?quality=high") == key("/audio/a.mp3?quality=high")


# --- query -----------------------------------------------------------------------------------


def test_unkeyed_params_change_nothing_and_are_not_forwarded() -> None:
    base = key("/audio/a.mp3?quality=high")
    noisy = key("/audio/a.mp3?utm_source=x&quality=high&cb=123&Quality=low")
    assert noisy == base
    assert noisy.upstream_target == "/audio/a.mp3?quality=high"
    assert key("/audio/a.mp3?cb=1") == key("/audio/a.mp3") == key("/audio/a.mp3?")


def test_presigned_params_are_dropped() -> None:
    signed = key(
        "/audio/a.mp3?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F20250101%2Fus"
        "&X-Amz-Date=20250101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=abcdef&format=mp3"
    )
    assert signed == key("/audio/a.mp3?format=mp3")
    assert "Amz" not in signed.upstream_target


def test_param_order_is_irrelevant_and_output_sorted() -> None:
    a = key("/audio/a.mp3?quality=high&format=mp3&bitrate=320")
    b = key("/audio/a.mp3?bitrate=320&format=mp3&quality=high")
    assert a == b
    assert a.upstream_target == "/audio/a.mp3?bitrate=320&format=mp3&quality=high"


def test_repeated_params_keep_all_values_sorted() -> None:
    a = key("/audio/a.mp3?format=ogg&format=mp3")
    assert a.upstream_target == "/audio/a.mp3?format=mp3&format=ogg"
    assert a == key("/audio/a.mp3?format=mp3&format=ogg")
    assert a.digest != key("/audio/a.mp3?format=mp3").digest


def test_query_names_are_case_sensitive() -> None:
    assert key("/audio/a.mp3?QUALITY=high") == key("/audio/a.mp3")


def test_query_values_are_canonically_encoded() -> None:
    assert key("/audio/a?format=%6d%70%33") == key("/audio/a?format=mp3")
    assert key("/audio/a?format=a,b").upstream_target == "/audio/a?format=a%2Cb"
    assert key("/audio/a?format=a%2cb") == key("/audio/a?format=a,b")
    assert key("/audio/a?format=x%3Dy") == key("/audio/a?format=x=y")
    assert key("/audio/a?format=a%26b").digest != key("/audio/a?format=a&b").digest
    assert key("/audio/a?f%6Frmat=mp3") == key("/audio/a?format=mp3")  # names decoded too
    assert key("/audio/a?format") == key("/audio/a?format=")
    assert key("/audio/a?format=é").upstream_target == "/audio/a?format=%C3%A9"
    # "+" is kept as sent: origins disagree whether it is a space
    assert key("/audio/a?format=a+b").upstream_target == "/audio/a?format=a+b"
    assert key("/audio/a?format=a+b").digest != key("/audio/a?format=a%20b").digest


@pytest.mark.parametrize(
    "target",
    [
        "/audio/a?format=%zz",
        "/audio/a?format=%00",
        "/audio/a?x=%4",
        "/audio/a?x=a b",
        "/audio/a?format=1#frag",
        "/a?q=\x01",
    ],
)
def test_bad_query_encodings_raise(target: str) -> None:
    with pytest.raises(BadRequestTarget):
        key(target)
    with pytest.raises(BadRequestTarget):
        key(target, PLAIN)  # even when nothing of the query is kept


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["quality", "format", "bitrate", "utm", "X-Amz-Date"]),
            st.text(alphabet="abc%20+,é", max_size=4),
        ),
        max_size=6,
    ),
    st.randoms(),
)
def test_param_order_never_matters(pairs: list[tuple[str, str]], rnd) -> None:
    def target(items: list[tuple[str, str]]) -> str:
        return "/audio/a.mp3?" + "&".join(f"{n}={v}" for n, v in items)

    try:
        first = key(target(pairs))
    except BadRequestTarget:
        return
    shuffled = list(pairs)
    rnd.shuffle(shuffled)
    assert key(target(shuffled)) == first
    assert "utm" not in first.upstream_target and "Amz" not in first.upstream_target


# --- headers ---------------------------------------------------------------------------------


def test_keyed_headers() -> None:
    webp = key("/images/a.jpg", IMAGES, CIMultiDict({"Accept": "image/webp"}))
    assert webp.forwarded_headers == (("accept", "image/webp"),)
    assert webp == key("/images/a.jpg", IMAGES, CIMultiDict({"ACCEPT": "  image/webp\t"}))
    jpeg = key("/images/a.jpg", IMAGES, CIMultiDict({"Accept": "image/jpeg"}))
    assert jpeg.digest != webp.digest


def test_unkeyed_headers_change_nothing_and_are_not_forwarded() -> None:
    headers = CIMultiDict({"Accept": "image/webp", "Cookie": "s=1", "User-Agent": "x"})
    k = key("/images/a.jpg", IMAGES, headers)
    assert k == key("/images/a.jpg", IMAGES, CIMultiDict({"Accept": "image/webp"}))
    assert k.forwarded_headers == (("accept", "image/webp"),)
    assert key("/audio/a", AUDIO, headers) == key("/audio/a")


def test_absent_header_differs_from_empty() -> None:
    absent = key("/images/a.jpg", IMAGES)
    empty = key("/images/a.jpg", IMAGES, CIMultiDict({"Accept": ""}))
    assert absent.digest != empty.digest
    assert absent.forwarded_headers == () and empty.forwarded_headers == (("accept", ""),)


def test_plain_dict_with_lower_case_names_works() -> None:
    assert key("/images/a", IMAGES, {"accept": "x"}) == key(
        "/images/a", IMAGES, CIMultiDict(Accept="x")
    )


# --- variant and delimiter games ------------------------------------------------------------


def test_variant_changes_the_key_only() -> None:
    plain, br = key("/audio/a.mp3"), key("/audio/a.mp3", variant="br")
    assert plain.digest != br.digest
    assert (plain.path, plain.upstream_target) == (br.path, br.upstream_target)


def test_method_independent() -> None:
    # build_key takes no method: GET and HEAD of one target share one key by construction
    assert "method" not in build_key.__code__.co_varnames


TWO = PolicyConfig(name="two", path="*", default_ttl=0, max_ttl=1, header_keys=("a", "b"))


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (({"a": "x\n1:y"}, ""), ({"a": "x"}, "y")),
        (({"a": "x!"}, ""), ({}, "")),
        (({"a": "1:b=1:x"}, ""), ({"a": "1"}, "")),
        (({"a": "", "b": "x"}, ""), ({"a": "x"}, "")),
        (({"a": "x", "b": ""}, ""), ({"b": "x"}, "")),
        (({}, "1:a!"), ({}, "")),
        (({"a": "x"}, "\n1:y"), ({"a": "x\n1:y"}, "")),
    ],
)
def test_delimiter_games_do_not_collide(left, right) -> None:
    assert key("/p", TWO, left[0], left[1]).digest != key("/p", TWO, right[0], right[1]).digest


def test_path_and_query_cannot_be_confused() -> None:
    q = PolicyConfig(name="q", path="*", default_ttl=0, max_ttl=1, query_keys=("a",))
    assert key("/x%3Fa=1", q).digest != key("/x?a=1", q).digest
    assert key("/x%3Fa=1", q).path == "/x%3Fa=1"


# --- properties -----------------------------------------------------------------------------

_CANONICAL = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-F]{2})*")
_UNRESERVED_CODES = {
    f"%{ord(c):02X}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
}

paths = st.one_of(
    st.text(),
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "/",
                    ".",
                    "..",
                    "%",
                    "%2e",
                    "%2E",
                    "%7e",
                    "%2F",
                    "%00",
                    "%zz",
                    "a",
                    "~",
                    "é",
                    " ",
                    "#",
                    "?",
                    "|",
                    "%C3",
                    "\x00",
                    "//",
                    "/./",
                    "/../",
                    "\ud800",
                ]
            ),
            st.text(max_size=3),
        ),
        max_size=12,
    ).map(lambda parts: "/" + "".join(parts)),
)


@given(paths)
def test_normalize_path_is_idempotent_and_raises_only_bad_request_target(raw: str) -> None:
    try:
        once = normalize_path(raw)
    except BadRequestTarget:
        return
    assert normalize_path(once) == once
    assert _CANONICAL.fullmatch(once), once
    assert not any(code in once for code in _UNRESERVED_CODES)
    assert "%00" not in once
    segments = once.split("/")
    assert "." not in segments and ".." not in segments


@given(st.text(alphabet="ABCxyz019-._~/", min_size=0, max_size=20))
def test_percent_encoding_unreserved_never_changes_the_path(text: str) -> None:
    raw = "/" + text
    encoded = "/" + "".join(c if c == "/" else f"%{ord(c):02x}" for c in text)
    assert normalize_path(encoded) == normalize_path(raw)


@given(st.text(), st.text(max_size=3))
def test_build_key_raises_only_bad_request_target(target: str, variant: str) -> None:
    for policy in (AUDIO, IMAGES, PLAIN):
        try:
            k = build_key(policy, target, {"accept": variant}, variant)
        except BadRequestTarget:
            continue
        assert k.upstream_target.startswith(k.path)
        # forwarding the upstream target keys the same on the next tier
        assert build_key(policy, k.upstream_target, {"accept": variant}, variant) == k


def test_fast_path_equals_slow_path() -> None:
    # a canonical path goes through the fast path; the same path with an encoded unreserved
    # character goes through the slow one
    assert key("/audio/artist/01-track.mp3") == key("/audio/artist/01%2Dtrack.mp3")


@given(st.text(alphabet="qualityformat=&+~-._3%", max_size=30))
def test_query_fast_path_equals_slow_path(query: str) -> None:
    # "%61" is "a" encoded: it sends the same query through the slow path. An "a" right after
    # a "%" (or one after it) is a hex digit of a triplet, not a character: leave those alone.
    slow = re.sub(r"(?<!%)(?<!%.)a", "%61", query)
    try:
        fast_key = key("/audio/a?" + query)
    except BadRequestTarget:
        with pytest.raises(BadRequestTarget):
            key("/audio/a?" + slow)
        return
    assert key("/audio/a?" + slow) == fast_key


# ---- secondary keys of Vary variants (RFC 9111 sec. 4.1) ------------------------------------


def test_vary_variant_is_order_free_and_value_exact() -> None:
    from edgeproxy.cache.key import vary_variant

    a = vary_variant({"accept": "text/html", "accept-language": None})
    assert a == vary_variant({"accept-language": None, "accept": "text/html"})
    assert a.startswith("vary:")
    assert a != vary_variant({"accept": "text/html", "accept-language": ""})  # absent != empty
    assert a != vary_variant({"accept": "text/html"})
    # lengths are in the material: one value cannot spell another pair
    assert vary_variant({"a": "1!1:b"}) != vary_variant({"a": "1", "b": None})


def test_vary_variant_key_differs_from_primary_and_keeps_upstream_target() -> None:
    from edgeproxy.cache.key import vary_variant
    from edgeproxy.config import PolicyConfig

    policy = PolicyConfig(name="p", path="*", default_ttl=60.0, max_ttl=60.0)
    primary = build_key(policy, "/doc?x=1", {})
    secondary = build_key(policy, "/doc?x=1", {}, variant=vary_variant({"accept": "a"}))
    assert secondary.hex != primary.hex
    assert secondary.upstream_target == primary.upstream_target
    assert secondary.variant.startswith("vary:") and primary.variant == ""
