"""RFC 9110 sec. 7.6.1 (Connection) and hop-by-hop fields."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from edgeproxy.http.headers import HOP_BY_HOP, connection_listed, strip_hop_by_hop


def test_fixed_hop_by_hop_fields_are_dropped() -> None:
    """RFC 9110 sec. 7.6.1: "... and then remove the Connection header field itself";
    "Intermediaries SHOULD remove or replace fields that are known to require removal before
    forwarding, whether or not they appear as a connection-option, after applying those
    fields' semantics. This includes but is not limited to: Proxy-Connection, Keep-Alive, TE,
    Transfer-Encoding, Upgrade" (Trailer only describes this message's framing)."""
    headers = CIMultiDict(
        [
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Content-Type", "text/plain"),
        ]
    )
    assert list(strip_hop_by_hop(headers).items()) == [("Content-Type", "text/plain")]
    assert {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    } == HOP_BY_HOP


def test_fields_listed_in_connection_are_dropped() -> None:
    """RFC 9110 sec. 7.6.1: "Intermediaries MUST parse a received Connection header field
    before a message is forwarded and, for each connection-option in this field, remove any
    header or trailer field(s) from the message with the same name as the connection-option"
    ("Connection options are case-insensitive"; several Connection lines are combined)."""
    headers = CIMultiDict(
        [
            ("Connection", "X-Foo, x-BAR"),
            ("Connection", "close"),
            ("x-foo", "1"),
            ("X-Bar", "2"),
            ("X-Bar", "3"),
            ("X-Baz", "4"),
        ]
    )
    assert list(strip_hop_by_hop(headers).items()) == [("X-Baz", "4")]
    assert connection_listed(headers) == {"x-foo", "x-bar", "close"}


def test_other_fields_kept_in_order_with_duplicates() -> None:
    """RFC 9110 sec. 5.3: the order of field lines with the same name is significant;
    end-to-end fields (including unknown ones) are forwarded unchanged."""
    headers = CIMultiDict(
        [
            ("Set-Cookie", "a=1"),
            ("X-Unknown", "u"),
            ("Set-Cookie", "b=2"),
            ("Content-Length", "3"),
            ("Proxy-Authenticate", "Basic"),
        ]
    )
    out = strip_hop_by_hop(headers)
    assert list(out.items()) == list(headers.items())
    assert out is not headers


def test_accepts_proxy_and_does_not_mutate() -> None:
    """The function is pure: it accepts read-only views and returns a new mutable copy."""
    base = CIMultiDict([("Connection", "X-A"), ("X-A", "1"), ("X-B", "2")])
    proxy = CIMultiDictProxy(base)
    out = strip_hop_by_hop(proxy)
    assert list(out.items()) == [("X-B", "2")]
    assert len(base) == 3
    out.add("X-C", "3")
    assert "X-C" not in base
