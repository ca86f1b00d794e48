"""TLS at the edge: server contexts from a PEM certificate chain and key, reloaded in place; and
the viewer protocol policy (CloudFront's ``allow-all`` | ``redirect-to-https`` | ``https-only``).

Contract:
- :func:`build_context` returns a server :class:`ssl.SSLContext` (TLS 1.2 minimum, ALPN
  ``http/1.1``, no compression, no renegotiation, the server's cipher order) or raises
  :class:`TlsError` naming the option at fault (``tls_cert`` or ``tls_key``) in one line:
  unreadable file, no certificate, no usable key, an encrypted key, a key that does not match.
  It never prompts for a passphrase.
- :class:`TlsContexts` is what a listener is created with. :meth:`TlsContexts.reload` builds a
  new context from the same files (a renewed certificate) and makes it the one new connections
  get; connections already established keep theirs. A failed reload raises and changes nothing.
  The swap happens in the listener context's ``sni_callback``, which OpenSSL calls for every
  ClientHello (with or without SNI), the documented way to switch a connection's context.
- :func:`viewer_answer` (pure) decides what a plain-HTTP request gets under a policy that wants
  HTTPS: CloudFront answers ``redirect-to-https`` with 301 and the https URL for GET and HEAD
  and refuses the other methods with 403 (it never redirects a POST, whose body has already
  crossed the network in clear); ``https-only`` is 403 for every method.
"""

from __future__ import annotations

import re
import ssl
from typing import Literal

MIN_VERSION = ssl.TLSVersion.TLSv1_2
ALPN = ("http/1.1",)

ViewerProtocol = Literal["allow-all", "redirect-to-https", "https-only"]
VIEWER_PROTOCOLS: tuple[str, ...] = ("allow-all", "redirect-to-https", "https-only")


class TlsError(ValueError):
    """A certificate or key that cannot be used; ``option`` is ``tls_cert`` or ``tls_key``."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message


def _check_readable(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as err:
        raise TlsError(option, f"cannot read {path}: {err.strerror or err}") from None


def build_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for the PEM certificate chain ``cert`` and private key ``key``.

    Raises :class:`TlsError` (see the module docstring). The key must not be encrypted: a
    passphrase would have to be typed at every start and reload.
    """
    cert_pem = _check_readable("tls_cert", cert)
    key_pem = _check_readable("tls_key", key)
    if b"-----BEGIN CERTIFICATE-----" not in cert_pem:
        raise TlsError("tls_cert", f"{cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    if b"PRIVATE KEY-----" not in key_pem:
        raise TlsError("tls_key", f"{key} holds no PEM private key (-----BEGIN PRIVATE KEY-----)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(list(ALPN))
    asked: list[bool] = []

    def no_passphrase() -> bytes:
        asked.append(True)
        return b""

    try:
        ctx.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as err:
        raise _diagnose(cert, key, err, bool(asked)) from None
    except OSError as err:  # replaced or removed between the read above and here
        raise TlsError("tls_cert", f"cannot load {cert}: {err.strerror or err}") from None
    return ctx


def _diagnose(cert: str, key: str, err: ssl.SSLError, asked: bool) -> TlsError:
    """Name the file at fault for a failed ``load_cert_chain``."""
    if asked:
        return TlsError(
            "tls_key", f"{key} is encrypted; give an unencrypted key (e.g. openssl pkey -in ...)"
        )
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError):
        return TlsError("tls_cert", f"{cert} holds no valid PEM certificate ({err.reason or err})")
    reason = str(err.reason or "")
    if "MISMATCH" in reason or "NO_CERTIFICATE_ASSIGNED" in reason:
        return TlsError("tls_key", f"{key} is not the private key of the certificate in {cert}")
    return TlsError("tls_key", f"{key} holds no usable PEM private key ({reason or err})")


class TlsContexts:
    """The TLS side of a listener: a fixed listener context that hands each new connection the
    current context (see the module docstring)."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert = cert
        self.key = key
        self.current = build_context(cert, key)
        self.listener = self.current
        self.listener.sni_callback = self._select
        self.reloads = 0

    def _select(self, ssl_obj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        current = self.current
        if ssl_obj.context is not current:
            ssl_obj.context = current

    def reload(self) -> None:
        """Read the certificate and key files again; new connections get the new context.
        Raises :class:`TlsError` and keeps the current context when they are not usable."""
        self.current = build_context(self.cert, self.key)
        self.reloads += 1


# ---- viewer protocol policy (pure) ------------------------------------------------------------

# a DNS name (labels of letters, digits and "-", one trailing dot allowed) or an IP literal;
# no nested quantifiers: a Host header cannot make the match slow
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,253}|\[[0-9A-Fa-f:.]{2,45}\]", re.ASCII)


def _host_only(authority: str) -> str | None:
    """The host of ``host[:port]`` (brackets kept for IPv6); None when it is not a host."""
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if end == -1 or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
    else:
        host, sep, port = authority.rpartition(":")
        if not sep:
            host = authority
        elif not port.isdigit():
            return None
    if not host or _HOST_RE.fullmatch(host) is None or ".." in host:
        return None
    return host.lower()


def https_location(target: str, host_header: str | None, https_port: int) -> str | None:
    """``https://host[:port]/path?query`` for a request received over plain HTTP, or None when
    no host can be named. RFC 9112 sec. 3.2.2: an absolute-form target's authority wins over
    Host. The port is the node's TLS port, left out when it is 443."""
    if target.startswith("/"):
        authority = host_header or ""
        rest = target
    else:
        scheme, sep, after = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            return None
        end = len(after)
        for delimiter in "/?#":
            position = after.find(delimiter)
            if position != -1 and position < end:
                end = position
        authority, rest = after[:end], after[end:]
        if "@" in authority:
            return None
        if not rest.startswith("/"):
            rest = "/" + rest
    rest = rest.partition("#")[0]
    host = _host_only(authority.strip())
    if host is None:
        return None
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{host}{port}{rest}"


def viewer_answer(
    mode: str, method: str, target: str, host_header: str | None, https_port: int
) -> tuple[int, str | None, str]:
    """What a request that arrived over plain HTTP gets when its policy's viewer protocol is
    ``mode`` (not ``allow-all``): ``(status, Location or None, text)``."""
    if mode == "redirect-to-https" and method in ("GET", "HEAD"):
        location = https_location(target, host_header, https_port)
        if location is None:
            return 400, None, "bad or missing Host: cannot name the https:// URL"
        return 301, location, f"use HTTPS: {location}"
    if mode == "redirect-to-https":
        return 403, None, f"HTTPS required: {method} is not redirected; send it over HTTPS"
    return 403, None, "HTTPS required"
