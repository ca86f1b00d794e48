"""Node configuration: TOML (stdlib ``tomllib``) -> frozen dataclasses.

Contract: ``load_config(path)`` returns a :class:`Config` or raises :class:`ConfigError`, whose
``str()`` is ONE line naming the file, the key and what is wrong (and the fix where obvious), e.g.
``conf/edge.toml: store.max_size: "10 GB" is not a size; use e.g. "10GiB", "512MiB" or bytes``.
Role (edge | regional | shield) only fills defaults; everything else is data. Nothing outside
the file is read at load time but the TLS certificate and key (so ``edgeproxy check`` and a
SIGHUP reload refuse a broken pair): the credentials' environment variables are checked at start
by :func:`check_environment`.

Schema (``#`` marks the defaults; keys not listed here are errors, with a did-you-mean hint)::

    [node]
    name = "edge-1"                 # required; letters, digits, ".", "_", "-"
    role = "edge"                   # required; "edge" | "regional" | "shield"
    listen = "127.0.0.1:8080"       # required; "host:port" or "[v6addr]:port", port 1-65535
                                    # (0 = any free port, for tests)
    admin_listen = "127.0.0.1:9080" # default: 127.0.0.1 and the listen port + 1000 (0 if 0)
    region = "local"
    workers = 1                     # or "auto": one per core (a master + N workers when > 1)
    targeted_cache_control = ["EdgeProxy-Cache-Control", "CDN-Cache-Control"]  # RFC 9213
    strip_targeted = true           # not sent downstream; default: true on the edge only
    admin_token_env = "EDGEPROXY_ADMIN_TOKEN"  # the variable holding the admin API's bearer
                                    # token; unset: the protected admin calls answer 503
    access_log = "off"              # "off" | "stdout" | a file path (relative: to this file);
                                    # one JSON line per request, reopened on SIGUSR1. Off by
                                    # default: a line costs about as much as a RAM hit itself
    sendfile = true                 # stored bodies over 64 KiB and up to sendfile_max go by
                                    # sendfile(2) (plain TCP; nginx's `sendfile on`)
    sendfile_max = "1MiB"           # larger ones are copied from their mapping: faster for a
                                    # client on the same host; raise it behind a real network
    notsent_lowat = "512KiB"        # TCP_NOTSENT_LOWAT while a body over 1 MiB is sent: the
                                    # unsent bytes the kernel holds per connection ("0": the
                                    # system's, net.ipv4.tcp_notsent_lowat)
    tls_cert = "tls/edge.crt"       # PEM certificate chain (relative: to this file); with
    tls_key = "tls/edge.key"        # its unencrypted PEM key: both or neither. Checked at load
                                    # (the one thing read at load), read again on SIGHUP
    tls_listen = "0.0.0.0:8443"     # optional: HTTPS here and plain HTTP on listen; without
                                    # it, listen itself serves HTTPS (and nothing plain)

    [node.limits]                   # optional; limits of the client-facing HTTP/1.1 server
    max_header_bytes = "16KiB"
    max_header_count = 100
    max_url_bytes = "8KiB"
    max_body_bytes = "64MiB"
    idle_timeout = "60s"
    header_timeout = "10s"
    max_connections = 4096          # open client connections per process (each worker); more
                                    # are closed right after accept, as nginx does beyond
                                    # worker_connections

    [store]                         # optional table
    path = "var/cache/edge-1"       # default "var/cache/<node.name>"
    max_size = "1GiB"               # default by role: edge 1GiB, regional/shield 20GiB
    ram_size = "256MiB"             # default by role: edge 256MiB, regional/shield 128MiB; 0 = off
    ram_object_max = "64KiB"        # <= ram_size; larger bodies are mapped (page cache)
    min_free = "0"                  # free space kept on the store's file system: a size, or a
                                    # share of the file system such as "5%"; 0 = no watermark
    max_object_share = 0.5          # objects larger than this share of max_size pass through

    [upstream]                      # required: exactly one of `parents` and [upstream.s3]
    parents = ["http://127.0.0.1:8081"]   # base URLs (http/https, no path), tried by rendezvous
    # or, with options per parent (items may mix strings and tables):
    # parents = [{url = "http://127.0.0.1:8081", weight = 2, health_url = "http://127.0.0.1:9081"}]
    connect_timeout = "5s"
    read_timeout = "30s"
    max_connections = 256

    [[upstream.parent]]             # the same as a table array (instead of `parents`)
    url = "http://127.0.0.1:8081"   # required; base URL of the parent's client listener
    weight = 1                      # > 0; the parent's share of keys is weight / sum(weights)
    health_url = "http://127.0.0.1:9081"  # the parent's admin listener; "/healthz" is appended
                                    # when no path is given; absent = passive checks only
    name = "regional-1"             # its identity in the rendezvous hash, logs and stats
                                    # (default: the url, so keys move when the url changes)

    [upstream.health]               # parents only: active and passive health checks
    interval = "2s"                 # active: one GET health_url per parent per interval
    timeout = "1s"                  # active: <= interval; an answer other than 200 is a failure
    healthy_threshold = 2           # active: consecutive successes that put a parent back in
    unhealthy_threshold = 2         # active: consecutive failures that take it out
    fail_threshold = 3              # passive: consecutive failed requests (connect error,
                                    # timeout, 5xx) that take a parent out ...
    retry_time = "10s"              # ... for this long; then requests try it again

    [upstream.fallback_s3]          # parents only, optional: "go direct" to this S3 origin
                                    # (GET/HEAD) when every parent is out or failed; the same
                                    # keys as [upstream.s3], so this node needs S3 credentials

    [upstream.s3]
    endpoint = "http://127.0.0.1:8333"    # required; base URL, no path
    region = "us-east-1"
    bucket = "music"                # fixed bucket: "/audio/x" -> s3://music/audio/x   (or)
    buckets = ["music"]             # drop-in: "/music/audio/x" -> s3://music/audio/x (allow-list)
    access_key_env = "AWS_ACCESS_KEY_ID"        # names of environment variables; set both
    secret_key_env = "AWS_SECRET_ACCESS_KEY"    # or neither (neither = anonymous requests)
    session_token_env = "AWS_SESSION_TOKEN"     # optional, needs the two above

    [[policy]]                      # zero or more, first match wins
    name = "audio"                  # required, unique
    path = "/audio/*"               # required; "/prefix*", an exact normalized path, or "*"
    default_ttl = "1d"              # required; used when the origin gives no freshness
    max_ttl = "365d"                # default 365d; caps the origin's freshness
    min_ttl = "0s"                  # min_ttl <= default_ttl <= max_ttl
    compress = false
    compress_min_size = 1000        # bytes; bodies outside min..max are served as they are
    compress_max_size = "10MiB"
    unacceptable_encoding = "identity"  # or "406": nothing in Accept-Encoding is acceptable
    query_keys = ["quality", "format", "bitrate"]  # case-sensitive names; the rest is dropped
    header_keys = []                # lower-cased; never hop-by-hop, cookie, authorization,
                                    # range (slices) nor accept-encoding (the variant)
    forward_headers = []            # forwarded but not keyed; responses that Vary on them
                                    # are stored per value (default: only keyed is forwarded)
    methods = ["GET", "HEAD"]       # upper-case tokens, served from the cache
    other_methods = "pass"          # "pass" (forward) | "refuse" (405)
    error_ttl = "10s"               # negative caching of 404/410 without origin freshness
    slice_size = "1MiB"             # ranges of objects over slice_threshold are fetched and
    slice_threshold = "8MiB"        # cached as aligned slices (default slice_size 0: off)
    stale_while_revalidate = "0s"   # RFC 5861 windows used when the origin says nothing
    stale_if_error = "0s"           # (never with s-maxage); 0 = off
    viewer_protocol = "allow-all"   # CloudFront's: "allow-all" | "redirect-to-https" (plain
                                    # GET/HEAD -> 301 to https://, other methods 403) |
                                    # "https-only" (plain -> 403); the last two need node TLS
    [policy.response_headers]       # added to responses (e.g. on the edge only)
    "Strict-Transport-Security" = "max-age=31536000; includeSubDomains"
    [policy.signed_urls]            # optional: checked before any cache lookup, 403 otherwise
    type = "hmac"                   # "hmac": edgeproxy's own (see edgeproxy/signing.py) |
                                    # "s3-presigned": S3 SigV4 presigned URLs made with the
                                    # origin's credentials ([upstream.s3] or fallback_s3)
    required = true                 # false: unsigned requests pass, bad signatures do not
    keys_env = "EDGEPROXY_URL_KEYS" # hmac: the variable holding "id:secret,id2:secret2"
                                    # (several ids: keys rotate); never secrets in this file
    [policy.cors]                   # optional: the edge owns CORS for this policy
    allow_origins = ["https://app.example"]  # required; ["*"], or "https://*.example.com"
    allow_methods = ["GET", "HEAD"] # preflight OPTIONS is answered at the edge (204 / 403)
    allow_headers = []              # request headers a preflight may ask for; ["*"]: any
    expose_headers = []             # Access-Control-Expose-Headers
    max_age = "10m"                 # Access-Control-Max-Age
    allow_credentials = false       # true needs listed origins (never with "*")

Values:

* sizes (:func:`parse_size`): a whole number of bytes, or a string ``<number><unit>`` with the
  unit ``B``, ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024) or ``KB``/``MB``/``GB``/``TB``
  (powers of 1000), e.g. ``"10GiB"``, ``"1.5MiB"``, ``"1024"``; no space inside;
* durations (:func:`parse_duration`): a number of seconds, or ``<number><unit>`` parts from
  largest to smallest with the units ``y`` (365 d), ``w``, ``d``, ``h``, ``m``, ``s``, ``ms``,
  e.g. ``"7d"``, ``"1h30m"``, ``"250ms"``;
* relative paths (``store.path``, also its default) are resolved against the directory of the
  config file, never against the working directory: ``conf/edge.toml`` with
  ``path = "../var/cache/edge-1"`` means ``<repo>/var/cache/edge-1`` wherever it is started;
* policies: when the last policy is not a catch-all (``"*"``), a built-in default policy
  (name ``"default"``, path ``"*"``, ``default_ttl = 0`` meaning "only what the origin says",
  ``max_ttl`` 1 year, no query or header keys) is appended, so :meth:`Config.policy_for` always
  finds one. A catch-all anywhere but last is an error (the policies after it are unreachable).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, NoReturn
from urllib.parse import SplitResult, urlsplit

from edgeproxy.cache.key import BadRequestTarget, normalize_path  # pure, imports no config
from edgeproxy.http.cors import CorsRules  # pure
from edgeproxy.signing import PARAMS as SIGNED_URL_PARAMS  # pure
from edgeproxy.signing import parse_keys
from edgeproxy.tls import VIEWER_PROTOCOLS, TlsError, build_context  # imports no config

Role = Literal["edge", "regional", "shield"]


class ConfigError(Exception):
    """A configuration problem; ``str(err)`` is one line: ``FILE: KEY: message``."""

    def __init__(self, file: str, key: str, message: str) -> None:
        self.file = file
        self.key = key
        self.message = " ".join(message.splitlines())  # one line, whatever the message quoted
        super().__init__(f"{file}: {key}: {self.message}")


@dataclass(frozen=True, slots=True)
class NodeConfig:
    name: str
    role: Role
    listen_host: str
    listen_port: int
    admin_host: str
    admin_port: int
    region: str = "local"
    workers: int = 1
    # limits of the client-facing HTTP/1.1 server
    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    max_url_bytes: int = 8 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    idle_timeout: float = 60.0
    header_timeout: float = 10.0
    # RFC 9213: the targeted fields this cache obeys, first valid one wins over Cache-Control
    targeted_cache_control: tuple[str, ...] = ("EdgeProxy-Cache-Control", "CDN-Cache-Control")
    # not forwarded downstream (default: on the edge, the outermost tier)
    strip_targeted: bool = False
    # the environment variable holding the admin API's bearer token
    admin_token_env: str = "EDGEPROXY_ADMIN_TOKEN"
    # "off" | "stdout" | an absolute file path: one JSON line per request
    access_log: str = "off"
    # TLS (absolute paths); None: no TLS. Without tls_listen, listen serves HTTPS only
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_listen_host: str | None = None  # set: HTTPS here, plain HTTP on listen
    tls_listen_port: int = 0
    # open client connections per process; more are closed right after accept
    max_connections: int = 4096
    # send stored bodies of more than 64 KiB and at most ``sendfile_max`` bytes with
    # sendfile(2) on plain-TCP connections (nginx's ``sendfile on``), their head with
    # MSG_MORE: the kernel sends them from the page cache without a copy through this
    # process. ``benchmarks/hit_bench.py --sendfile-ab`` on loopback, one core
    # (``benchmarks/results/hit-sendfile-ab-msg-more-2026-11-29.md``): 256 KiB hits 17.2k
    # req/s by sendfile vs 16.5k by copy (nginx 16.1k), 512 KiB 8.8k vs 5.2k (4.9-5.8k), 1 MiB
    # 4.6k vs 4.2k (2.0k) at half the copy's CPU; 8 MiB (sent by sendfile as the socket
    # frees room) 0.29k vs 0.33k at 0.6x the CPU, p99 0.3 s vs 0.7-2.7 s: larger bodies are
    # copied from their mapping by default, as a client on the same host reads them faster;
    # behind a real network (clients elsewhere) raise it.
    sendfile: bool = True
    sendfile_max: int = 1024 * 1024
    # TCP_NOTSENT_LOWAT while a body over 1 MiB is sent (0: the system's): the kernel then
    # holds at most this many unsent bytes of it beyond those in flight, instead of as much
    # as an autotuned send buffer takes (MBs per connection); in-flight bytes are not
    # limited. ``benchmarks/hit_bench.py --sizes 8MiB,4MiB,1MiB --lowat-ab`` (loopback, one
    # core; ``benchmarks/results/hit-lowat-ab-2026-11-29.md``): 8 MiB hits 403 vs 339 req/s,
    # p99 0.46 vs 0.88 s; 4 MiB 1,015 vs 634. See HttpConnection.pace.
    notsent_lowat: int = 512 * 1024

    @property
    def tls_on_listen(self) -> bool:
        """The main listener itself speaks TLS (a certificate and no ``tls_listen``)."""
        return self.tls_cert is not None and self.tls_listen_host is None


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: str
    max_size: int  # bytes
    ram_size: int  # bytes of the RAM layer
    # objects up to this size are held in RAM; larger ones are mapped from the page cache,
    # which is as fast for them (benchmarks/README.md: disk vs memory) and lets sendfile(2)
    # send them without a copy. A mapped body the page cache no longer holds is read from
    # the disk while it is sent (on the event loop, as nginx without aio threads)
    ram_object_max: int = 64 * 1024
    min_free: int = 0  # bytes kept free on the store's file system (0: no watermark)
    min_free_percent: float = 0.0  # or this share (0-100) of the file system's size
    max_object_share: float = 0.5  # larger objects (share of max_size) are not stored
    # eviction: "popularity" (GreedyDual with frequency and admission, edgeproxy/cache/
    # eviction.py) or "lru"; object_weight: 1 counts object hits only (small objects win),
    # 0 byte hits only (size-neutral)
    eviction: str = "popularity"
    object_weight: float = 0.8


@dataclass(frozen=True, slots=True)
class S3OriginConfig:
    endpoint: str  # e.g. "http://127.0.0.1:9000", no trailing slash
    region: str = "us-east-1"
    # fixed-bucket mapping: "/audio/x.mp3" -> bucket/audio/x.mp3
    bucket: str | None = None
    # drop-in mapping: "/music/audio/x.mp3" -> bucket "music", key "audio/x.mp3"; allow-list
    buckets: tuple[str, ...] = ()
    # names of the environment variables holding the credentials; None -> anonymous
    access_key_env: str | None = None
    secret_key_env: str | None = None
    session_token_env: str | None = None


@dataclass(frozen=True, slots=True)
class ParentConfig:
    """One parent: where to send misses, its share of keys, where to check its health."""

    url: str  # base URL without a path, e.g. "http://127.0.0.1:8081"
    weight: float = 1.0  # > 0; share of keys = weight / sum of the parents' weights
    # full URL of the parent's health endpoint (its admin listener's /healthz); None = the
    # parent is only checked passively, by the outcome of real requests
    health_url: str | None = None
    name: str | None = None  # identity in the rendezvous hash and in stats; None = the url

    @property
    def ident(self) -> str:
        """What the rendezvous hash is computed on: ``name``, or the url."""
        return self.name if self.name is not None else self.url


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """Active (health_url) and passive (request outcome) health checks of the parents."""

    interval: float = 2.0
    timeout: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2
    fail_threshold: int = 3  # consecutive failed requests that take a parent out ...
    retry_time: float = 10.0  # ... for this many seconds


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    # plain HTTP parents (other edgeproxy nodes or any HTTP origin), base URLs without a path
    parents: tuple[str, ...] = ()
    s3: S3OriginConfig | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0  # idle time between bytes / before the first byte
    max_connections: int = 256
    # the parents with their options, in the order of ``parents`` (same urls); empty when the
    # config was built in code with ``parents`` only: read it through :meth:`parent_list`
    parent_specs: tuple[ParentConfig, ...] = ()
    health: HealthConfig = field(default_factory=HealthConfig)
    # "go direct": the S3 origin used when every parent is out or failed (parents only)
    fallback_s3: S3OriginConfig | None = None

    def parent_list(self) -> tuple[ParentConfig, ...]:
        """The parents with their options (weight 1, passive checks only when not given)."""
        if self.parent_specs:
            return self.parent_specs
        return tuple(ParentConfig(url=url) for url in self.parents)


@dataclass(frozen=True, slots=True)
class SignedUrlConfig:
    """``[policy.signed_urls]``: signed URLs are checked before any cache lookup."""

    type: Literal["hmac", "s3-presigned"] = "hmac"
    required: bool = True  # False: unsigned requests pass; a signature present must be valid
    keys_env: str = "EDGEPROXY_URL_KEYS"  # hmac: "id:secret,id2:secret2" (edgeproxy.signing)


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    name: str
    path: str  # pattern: "/audio/*" (prefix when it ends with "*"), an exact path, or "*"
    default_ttl: float
    max_ttl: float
    min_ttl: float = 0.0
    compress: bool = False
    # compress bodies of compress_min_size..compress_max_size bytes (issue 5 item 2)
    compress_min_size: int = 1000
    compress_max_size: int = 10 * 1024 * 1024
    # nothing acceptable in Accept-Encoding (e.g. "identity;q=0" alone): answer identity
    # anyway (RFC 9110 sec. 12.5.3 allows it) or 406 Not Acceptable
    unacceptable_encoding: Literal["identity", "406"] = "identity"
    query_keys: tuple[str, ...] = ()  # names as written (matched case-sensitively)
    header_keys: tuple[str, ...] = ()  # lower-case names
    # forwarded upstream but not keyed (CloudFront's origin request policy): a response that
    # varies on one of them is stored per value (RFC 9111 sec. 4.1), never shared across values
    forward_headers: tuple[str, ...] = ()
    methods: tuple[str, ...] = ("GET", "HEAD")  # cacheable methods served from the cache
    # unsafe/other methods: "pass" (forward upstream) or "refuse" (405)
    other_methods: Literal["pass", "refuse"] = "pass"
    error_ttl: float = 10.0  # negative caching of 404/410 when the origin says nothing
    # Range requests for objects larger than slice_threshold are fetched and cached as aligned
    # slices of slice_size bytes (0: off)
    slice_size: int = 0
    slice_threshold: int = 8 * 1024 * 1024
    response_headers: tuple[tuple[str, str], ...] = ()
    # RFC 5861 windows (seconds) applied when the stored response carries no such directive
    # (a cache "configured" to serve stale, RFC 9111 sec. 4.2.4); never with s-maxage
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    # CloudFront's viewer protocol policy for requests that arrive over plain HTTP
    viewer_protocol: Literal["allow-all", "redirect-to-https", "https-only"] = "allow-all"
    # signed URLs required or accepted (None: off); CORS answered by the edge (None: off)
    signed_urls: SignedUrlConfig | None = None
    cors: CorsRules | None = None

    def matches(self, path: str) -> bool:
        """First-match rule: "*" matches all; "/x/*" is a prefix; otherwise exact."""
        pattern = self.path
        if pattern == "*" or pattern == "/*":
            return True
        if pattern.endswith("*"):
            return path.startswith(pattern[:-1])
        return path == pattern


@dataclass(frozen=True, slots=True)
class Config:
    file: str
    node: NodeConfig
    store: StoreConfig
    upstream: UpstreamConfig
    policies: tuple[PolicyConfig, ...] = field(default_factory=tuple)

    def policy_for(self, path: str) -> PolicyConfig:
        """The first policy whose pattern matches ``path`` (the default policy is last)."""
        for policy in self.policies:
            if policy.matches(path):
                return policy
        return self.policies[-1]


# ---------------------------------------------------------------------------------------------
# Scalars: sizes, durations, addresses
# ---------------------------------------------------------------------------------------------

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
YEAR = 365 * 86400.0

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", re.ASCII)
_SIZE_HINT = 'use e.g. "10GiB", "512MiB", "1GB" (decimal) or a whole number of bytes'
_MAX_SIZE = 2**63 - 1
NOTSENT_LOWAT_MAX = 1 << 30  # TCP_NOTSENT_LOWAT is a C int
_MAX_DIGITS = 30  # longer numbers are not sizes nor durations anyone means

_DURATION_UNITS: dict[str, Decimal] = {
    "y": Decimal(365 * 86400),
    "w": Decimal(7 * 86400),
    "d": Decimal(86400),
    "h": Decimal(3600),
    "m": Decimal(60),
    "s": Decimal(1),
    "ms": Decimal("0.001"),
}
_DURATION_ORDER = tuple(_DURATION_UNITS)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|[ywdhms])", re.ASCII)
_NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)
_DURATION_HINT = 'use e.g. "30s", "5m", "1h30m", "7d", "1y", "250ms" or a number of seconds'


def _show(value: object) -> str:
    """A value quoted on one line (JSON-style strings, repr otherwise)."""
    if isinstance(value, str):
        return json.dumps(value)
    return " ".join(repr(value).splitlines())


def parse_size(text: str | int) -> int:
    """Parse a size in bytes: an ``int`` >= 0, or ``"<number><unit>"``.

    Units (case-insensitive): ``B``; ``KiB``, ``MiB``, ``GiB``, ``TiB`` (powers of 1024);
    ``KB``, ``MB``, ``GB``, ``TB`` (powers of 1000); none = bytes. Fractions are allowed when
    the result is a whole number of bytes (``"1.5KiB"`` = 1536). No space between number and
    unit. ``K``/``M``/``G`` alone are refused as ambiguous. Raises ``ValueError`` (with the
    fix in its message) for anything else, including ``bool`` and ``float``.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        raise ValueError(f"{_show(text)} is not a size; {_SIZE_HINT}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text} is negative; a size is a number of bytes >= 0")
        if text > _MAX_SIZE:
            raise ValueError(f"{text} is too large for a size (at most 2**63 - 1 bytes)")
        return text
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{_show(text)} is not a size; {_SIZE_HINT}")
    number, unit = match.groups()
    multiplier = _SIZE_UNITS.get(unit.lower())
    if multiplier is None:
        letter = unit.upper()
        if letter in ("K", "M", "G", "T"):
            raise ValueError(
                f'{_show(text)}: unit "{unit}" is ambiguous; write "{number}{letter[0]}iB" '
                f'(powers of 1024) or "{number}{letter}B" (powers of 1000)'
            )
        raise ValueError(
            f'{_show(text)}: unknown unit "{unit}"; use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB'
        )
    if len(number) > _MAX_DIGITS:
        raise ValueError(f"{_show(text)} is too large for a size")
    value = Decimal(number) * multiplier
    if value != value.to_integral_value():
        raise ValueError(f"{_show(text)} is not a whole number of bytes")
    result = int(value)
    if result > _MAX_SIZE:
        raise ValueError(f"{_show(text)} is too large for a size (at most 2**63 - 1 bytes)")
    return result


def parse_duration(text: str | int | float) -> float:
    """Parse a duration in seconds: a finite number >= 0, or a string of ``<number><unit>``.

    Units: ``y`` (365 days), ``w``, ``d``, ``h``, ``m``, ``s``, ``ms``; several parts go from
    the largest unit to the smallest, each unit once (``"1h30m"``, ``"1d12h"``, ``"1.5s"``).
    A plain number (``30``, ``"30"``, ``2.5``) is seconds. Raises ``ValueError`` (with the fix
    in its message) for anything else, including ``bool``, NaN and negative values.
    """
    if isinstance(text, bool) or not isinstance(text, int | float | str):
        raise ValueError(f"{_show(text)} is not a duration; {_DURATION_HINT}")
    if isinstance(text, int | float):
        try:
            seconds = float(text)
        except OverflowError:
            raise ValueError(f"{text} is too large for a duration") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"{_show(text)} is not a duration >= 0; {_DURATION_HINT}")
        return seconds
    spec = text.strip()
    if _NUMBER_RE.fullmatch(spec):
        if len(spec) > _MAX_DIGITS:
            raise ValueError(f"{_show(text)} is too large for a duration")
        return float(Decimal(spec))
    total = Decimal(0)
    position = 0
    last_rank = -1
    while position < len(spec):
        match = _DURATION_PART.match(spec, position)
        if match is None:
            raise ValueError(f"{_show(text)} is not a duration; {_DURATION_HINT}")
        number, unit = match.groups()
        rank = _DURATION_ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(
                f"{_show(text)}: units must go from the largest to the smallest, each once "
                '(e.g. "1h30m")'
            )
        if len(number) > _MAX_DIGITS:
            raise ValueError(f"{_show(text)} is too large for a duration")
        total += Decimal(number) * _DURATION_UNITS[unit]
        last_rank = rank
        position = match.end()
    if last_rank == -1:
        raise ValueError(f"{_show(text)} is not a duration; {_DURATION_HINT}")
    return float(total)


_HOSTNAME_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*\.?", re.ASCII
)


def parse_listen(text: str) -> tuple[str, int]:
    """Parse a listen address ``"host:port"`` or ``"[v6addr]:port"`` -> ``(host, port)``.

    The host is an IPv4 address, a host name, or an IPv6 address in brackets (returned without
    them, e.g. ``("::1", 8080)``); the port is 1-65535, or 0 to let the OS pick a free port
    (tests). Raises ``ValueError`` with the fix.
    """
    if not isinstance(text, str):
        raise ValueError(f'{_show(text)} is not an address; use e.g. "127.0.0.1:8080"')
    if text.startswith("["):
        end = text.find("]")
        if end == -1:
            raise ValueError(f'{_show(text)}: missing "]"; write IPv6 as "[::1]:8080"')
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{_show(text)}: {_show(host)} is not an IPv6 address") from None
        if not rest.startswith(":"):
            raise ValueError(f'{_show(text)}: missing port; write e.g. "[{host}]:8080"')
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f'{_show(text)}: missing port; write "host:port", e.g. "{text}:8080"')
        if ":" in host:
            raise ValueError(f'{_show(text)}: put IPv6 addresses in brackets, e.g. "[::1]:8080"')
        if not host:
            raise ValueError(
                f'{_show(text)}: missing host; use "127.0.0.1:{port_text}" (local) '
                f'or "0.0.0.0:{port_text}" (all interfaces)'
            )
        if not _HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"{_show(text)}: {_show(host)} is not a host name nor an address")
        if host.replace(".", "").isdigit():
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"{_show(text)}: {_show(host)} is not an IPv4 address") from None
    if (
        not (port_text.isascii() and port_text.isdigit())
        or len(port_text) > 5
        or not 0 <= int(port_text) <= 65535
    ):
        raise ValueError(
            f"{_show(text)}: the port must be a number from 1 to 65535 (0: any free port)"
        )
    return host, int(port_text)


def _http_url(text: str, hint: str, credentials_hint: str) -> SplitResult:
    """The parts of an http(s) URL with a host, no credentials and no port 0 (shared checks of
    base URLs and health URLs); ``ValueError`` naming the problem and ``hint`` otherwise."""
    if any(c <= " " or c == "\x7f" for c in text):
        raise ValueError(f"{_show(text)} contains spaces or control characters; {hint}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        raise ValueError(f"{_show(text)} is not a URL ({err}); {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{_show(text)} is not an http(s) URL with a host; {hint}")
    if port == 0:
        raise ValueError(f"{_show(text)}: port 0 is not a port; {hint}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{_show(text)}: no credentials in URLs; {credentials_hint}")
    return parts


def _base_url(text: str, example: str = "http://127.0.0.1:8081") -> str:
    """Validate a base URL (http/https, a host, no path/query/credentials); no trailing "/"."""
    hint = f'use a base URL such as "{example}"'
    parts = _http_url(text, hint, "use upstream.s3.access_key_env")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{_show(text)}: no path, query or fragment allowed; {hint}")
    return f"{parts.scheme}://{parts.netloc}"


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

_MISSING: Any = object()
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"float {value}"
    if isinstance(value, str):
        return f"string {_show(value)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"{type(value).__name__} {_show(value)}"


def _did_you_mean(name: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f'did you mean "{close[0]}"?'
    return "expected one of: " + ", ".join(choices)


class _Table:
    """One TOML table being read: typed getters, defaults, and errors naming the full key."""

    def __init__(
        self, file: str, prefix: str, data: Mapping[str, Any], allowed: tuple[str, ...]
    ) -> None:
        self.file = file
        self.prefix = prefix
        self.data = data
        for name in data:
            if name not in allowed:
                self.fail(name, "unknown key; " + _did_you_mean(name, allowed))

    def key(self, name: str) -> str:
        shown = name if _BARE_KEY.fullmatch(name) else _show(name)
        return f"{self.prefix}.{shown}" if self.prefix else shown

    def fail(self, name: str | None, message: str) -> NoReturn:
        key = self.prefix if name is None else self.key(name)
        raise ConfigError(self.file, key or "(top level)", message)

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def value(self, name: str, default: Any, example: str | None) -> Any:
        if name in self.data:
            return self.data[name]
        if default is _MISSING:
            self.fail(name, f"missing required key; add e.g. {name} = {example}")
        return default

    def _wrong_type(self, name: str, expected: str, value: object, example: str | None) -> NoReturn:
        fix = f"; write e.g. {name} = {example}" if example else ""
        self.fail(name, f"must be {expected}, got {_describe(value)}{fix}")

    def string(self, name: str, default: Any = _MISSING, example: str | None = None) -> Any:
        value = self.value(name, default, example)
        if value is not default and not isinstance(value, str):
            self._wrong_type(name, "a string", value, example)
        return value

    def word(self, name: str, default: Any = _MISSING, example: str | None = None) -> Any:
        """A non-empty string without spaces or control characters."""
        value = self.string(name, default, example)
        if value is not default and (not value or any(c <= " " or c == "\x7f" for c in value)):
            fix = f"; write e.g. {name} = {example}" if example else ""
            self.fail(name, f"{_show(value)} must be non-empty, without spaces{fix}")
        return value

    def integer(self, name: str, default: Any, minimum: int, maximum: int) -> int:
        value = self.value(name, default, str(minimum))
        if isinstance(value, bool) or not isinstance(value, int):
            self._wrong_type(name, "an integer", value, str(default))
        if not minimum <= value <= maximum:
            self.fail(name, f"{value} is out of range; use {minimum} to {maximum}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        value = self.value(name, default, None)
        if not isinstance(value, bool):
            self._wrong_type(name, "true or false", value, "true")
        return value

    def size(self, name: str, default: int, minimum: int = 0) -> int:
        value = self.value(name, default, None)
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.fail(
                name,
                f'must be a size (a string such as "1GiB" or a number of bytes), '
                f"got {_describe(value)}",
            )
        try:
            size = parse_size(value)
        except ValueError as err:
            self.fail(name, str(err))
        if size < minimum:
            self.fail(name, f"{_show(value)} is too small; the minimum is {minimum} byte(s)")
        return size

    def duration(
        self, name: str, default: float, positive: bool = False, example: str = '"30s"'
    ) -> float:
        value = self.value(name, default, example)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            self.fail(
                name,
                f'must be a duration (a string such as "30s" or a number of '
                f"seconds), got {_describe(value)}",
            )
        try:
            seconds = parse_duration(value)
        except ValueError as err:
            self.fail(name, str(err))
        if positive and seconds <= 0:
            self.fail(name, f"{_show(value)} must be longer than 0s")
        return seconds

    def strings(self, name: str, default: Any, example: str) -> Any:
        """An array of strings -> tuple (``default`` as is when absent)."""
        value = self.value(name, default, example)
        if value is default:
            return value
        if not isinstance(value, list):
            self._wrong_type(name, "an array of strings", value, example)
        for item in value:
            if not isinstance(item, str):
                self.fail(
                    name,
                    f"must hold strings only, got {_describe(item)}; write e.g. {name} = {example}",
                )
        return tuple(value)

    def table(
        self, name: str, allowed: tuple[str, ...], required: bool = False, example: str = ""
    ) -> _Table | None:
        if name not in self.data:
            if required:
                self.fail(name, f"missing required table; add {example}")
            return None
        value = self.data[name]
        if not isinstance(value, dict):
            self.fail(name, f"must be a table, got {_describe(value)}; write [{self.key(name)}]")
        return _Table(self.file, self.key(name), value, allowed)


def _empty(table: _Table, name: str, allowed: tuple[str, ...]) -> _Table:
    return _Table(table.file, table.key(name), {}, allowed)


def _field_default(cls: type, name: str) -> Any:
    return cls.__dataclass_fields__[name].default  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------

_TOP_KEYS = ("node", "store", "upstream", "policy")
_NODE_KEYS = (
    "name",
    "role",
    "listen",
    "admin_listen",
    "region",
    "workers",
    "limits",
    "targeted_cache_control",
    "strip_targeted",
    "admin_token_env",
    "access_log",
    "sendfile",
    "sendfile_max",
    "notsent_lowat",
    "tls_cert",
    "tls_key",
    "tls_listen",
)
_LIMIT_KEYS = (
    "max_header_bytes",
    "max_header_count",
    "max_url_bytes",
    "max_body_bytes",
    "idle_timeout",
    "header_timeout",
    "max_connections",
)
_STORE_KEYS = (
    "path",
    "max_size",
    "ram_size",
    "ram_object_max",
    "min_free",
    "max_object_share",
    "eviction",
    "object_weight",
)
_UPSTREAM_KEYS = (
    "parents",
    "parent",
    "s3",
    "fallback_s3",
    "health",
    "connect_timeout",
    "read_timeout",
    "max_connections",
)
_PARENT_KEYS = ("url", "weight", "health_url", "name")
_HEALTH_KEYS = (
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
    "fail_threshold",
    "retry_time",
)
_S3_KEYS = (
    "endpoint",
    "region",
    "bucket",
    "buckets",
    "access_key_env",
    "secret_key_env",
    "session_token_env",
)
_POLICY_KEYS = (
    "name",
    "path",
    "default_ttl",
    "max_ttl",
    "min_ttl",
    "compress",
    "compress_min_size",
    "compress_max_size",
    "unacceptable_encoding",
    "query_keys",
    "header_keys",
    "forward_headers",
    "methods",
    "other_methods",
    "error_ttl",
    "slice_size",
    "slice_threshold",
    "response_headers",
    "stale_while_revalidate",
    "stale_if_error",
    "viewer_protocol",
    "signed_urls",
    "cors",
)

_ROLES: tuple[str, ...] = ("edge", "regional", "shield")
# role -> (store.max_size, store.ram_size)
ROLE_DEFAULTS: dict[str, tuple[int, int]] = {
    "edge": (1 * GiB, 256 * MiB),
    "regional": (20 * GiB, 128 * MiB),
    "shield": (20 * GiB, 128 * MiB),
}

_NODE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_BUCKET_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}", re.ASCII)
# RFC 9110 sec. 5.6.2 token
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", re.ASCII)
# RFC 9110 sec. 7.6.1 and the fields it names; proxy-connection and keep-alive by practice
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NEVER_KEYED = {
    "cookie": "cookies are never keyed (responses to them are private); remove it",
    "authorization": "credentials are never keyed (responses to them are private); remove it",
    "range": "Range is never keyed: ranges are served from the whole object or its slices",
    "accept-encoding": "Accept-Encoding is never keyed: the content-coding variant "
    "(br/gzip/identity) is a separate part of the key",
}
_NOT_ADDED = frozenset({"content-length", "set-cookie", "date"})


def _parse_node(root: _Table, base_dir: str = "") -> NodeConfig:
    t = root.table("node", _NODE_KEYS, required=True, example="[node] with name, role and listen")
    assert t is not None
    name = t.string("name", example='"edge-1"')
    if not _NODE_NAME_RE.fullmatch(name):
        t.fail(
            "name",
            f'{_show(name)} is not a node name; use up to 64 letters, digits, ".", "_" '
            'and "-", e.g. "edge-1"',
        )
    role = t.string("role", example='"edge"')
    if role not in _ROLES:
        t.fail("role", f"{_show(role)} is not a role; " + _did_you_mean(role, _ROLES))
    listen = t.string("listen", example='"127.0.0.1:8080"')
    try:
        host, port = parse_listen(listen)
    except ValueError as err:
        t.fail("listen", str(err))
    if "admin_listen" in t:
        admin = t.string("admin_listen", example='"127.0.0.1:9080"')
        try:
            admin_host, admin_port = parse_listen(admin)
        except ValueError as err:
            t.fail("admin_listen", str(err))
    else:
        admin_host, admin_port = "127.0.0.1", port + 1000 if port else 0
        if admin_port > 65535:
            t.fail(
                "admin_listen",
                f"no default: listen port {port} + 1000 is above 65535; "
                'set admin_listen, e.g. "127.0.0.1:9080"',
            )
    if (
        admin_port
        and admin_port == port
        and (admin_host == host or "0.0.0.0" in (host, admin_host))
    ):
        t.fail("admin_listen", "the admin API needs its own port; pick one other than listen's")
    region = t.word("region", "local", '"local"')
    if t.data.get("workers") == "auto":
        workers = os.cpu_count() or 1  # one worker per core, as nginx's worker_processes auto
    else:
        workers = t.integer("workers", 1, 1, 1024)

    limits = t.table("limits", _LIMIT_KEYS) or _empty(t, "limits", _LIMIT_KEYS)
    targeted = t.strings(
        "targeted_cache_control",
        ("EdgeProxy-Cache-Control", "CDN-Cache-Control"),
        '["EdgeProxy-Cache-Control", "CDN-Cache-Control"]',
    )
    for field_name in targeted:
        if not _TOKEN_RE.fullmatch(field_name):
            t.fail("targeted_cache_control", f"{_show(field_name)} is not a header field name")
    strip_targeted = t.boolean("strip_targeted", role == "edge")
    admin_token_env = t.string(
        "admin_token_env", "EDGEPROXY_ADMIN_TOKEN", '"EDGEPROXY_ADMIN_TOKEN"'
    )
    if not _ENV_NAME_RE.fullmatch(admin_token_env):
        t.fail(
            "admin_token_env",
            f"{_show(admin_token_env)} is not an environment variable name; write e.g. "
            '"EDGEPROXY_ADMIN_TOKEN"',
        )
    access_log = t.string("access_log", "off", '"stdout"')
    if access_log not in ("off", "stdout"):
        if not access_log or "\0" in access_log or access_log.endswith(("/", os.sep)):
            t.fail(
                "access_log",
                f'{_show(access_log)} is not a file path; write "off", "stdout" or e.g. '
                '"var/log/edge-1.access.log"',
            )
        access_log = os.path.normpath(os.path.join(base_dir, access_log))
    tls_cert, tls_key, tls_host, tls_port = _parse_tls(
        t, base_dir, (host, port), (admin_host, admin_port)
    )

    def limit_default(field_name: str) -> Any:
        return _field_default(NodeConfig, field_name)

    notsent_lowat = t.size("notsent_lowat", _field_default(NodeConfig, "notsent_lowat"))
    if notsent_lowat > NOTSENT_LOWAT_MAX:
        t.fail("notsent_lowat", f"{_show(t.data['notsent_lowat'])} is too large; the most is 1GiB")

    return NodeConfig(
        name=name,
        role=role,
        listen_host=host,
        listen_port=port,
        admin_host=admin_host,
        admin_port=admin_port,
        region=region,
        workers=workers,
        max_header_bytes=limits.size("max_header_bytes", limit_default("max_header_bytes"), 1),
        max_header_count=limits.integer(
            "max_header_count", limit_default("max_header_count"), 1, 10_000
        ),
        max_url_bytes=limits.size("max_url_bytes", limit_default("max_url_bytes"), 1),
        max_body_bytes=limits.size("max_body_bytes", limit_default("max_body_bytes")),
        idle_timeout=limits.duration("idle_timeout", limit_default("idle_timeout"), True),
        header_timeout=limits.duration("header_timeout", limit_default("header_timeout"), True),
        targeted_cache_control=tuple(targeted),
        strip_targeted=strip_targeted,
        admin_token_env=admin_token_env,
        access_log=access_log,
        sendfile=t.boolean("sendfile", _field_default(NodeConfig, "sendfile")),
        sendfile_max=t.size("sendfile_max", _field_default(NodeConfig, "sendfile_max")),
        notsent_lowat=notsent_lowat,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_listen_host=tls_host,
        tls_listen_port=tls_port,
        max_connections=limits.integer(
            "max_connections", limit_default("max_connections"), 1, 1_000_000
        ),
    )


def _same_socket(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Two listen addresses that would compete for one port (port 0 never does)."""
    wildcard = ("0.0.0.0", "::")
    return bool(a[1]) and a[1] == b[1] and (a[0] == b[0] or a[0] in wildcard or b[0] in wildcard)


def _parse_tls(
    t: _Table, base_dir: str, listen: tuple[str, int], admin: tuple[str, int]
) -> tuple[str | None, str | None, str | None, int]:
    """``tls_cert``, ``tls_key`` (both or neither; loaded once here so a bad pair is a config
    error) and ``tls_listen`` -> (cert path, key path, TLS host, TLS port)."""
    paths: dict[str, str] = {}
    for option in ("tls_cert", "tls_key"):
        value = t.string(option, None, f'"tls/edge.{option[4:]}.pem"')
        if value is None:
            continue
        if not value or "\0" in value or value.endswith(("/", os.sep)):
            t.fail(option, f'{_show(value)} is not a file path; write e.g. "tls/edge.pem"')
        paths[option] = os.path.normpath(os.path.join(base_dir, value))
    if len(paths) == 1:
        (given,) = paths
        other = "tls_key" if given == "tls_cert" else "tls_cert"
        t.fail(other, f"missing: {given} is set, so set {other} too (or remove both: no TLS)")
    if "tls_listen" in t and not paths:
        t.fail("tls_listen", "needs tls_cert and tls_key; set them or remove tls_listen")
    tls_host: str | None = None
    tls_port = 0
    if "tls_listen" in t:
        try:
            tls_host, tls_port = parse_listen(t.string("tls_listen", example='"0.0.0.0:8443"'))
        except ValueError as err:
            t.fail("tls_listen", str(err))
        if _same_socket((tls_host, tls_port), listen):
            t.fail("tls_listen", "is the listen address; HTTPS needs its own port (e.g. 443)")
        if _same_socket((tls_host, tls_port), admin):
            t.fail("tls_listen", "is the admin_listen address; pick another port")
    if paths:
        try:
            build_context(paths["tls_cert"], paths["tls_key"])
        except TlsError as err:
            t.fail(err.option, err.message)
    return paths.get("tls_cert"), paths.get("tls_key"), tls_host, tls_port


def _parse_store(root: _Table, node: NodeConfig, base_dir: str) -> StoreConfig:
    t = root.table("store", _STORE_KEYS) or _empty(root, "store", _STORE_KEYS)
    path = t.string("path", f"var/cache/{node.name}")
    if not path or "\0" in path:
        t.fail(
            "path",
            f'{_show(path)} is not a directory path; write e.g. path = "var/cache/{node.name}"',
        )
    max_default, ram_default = ROLE_DEFAULTS[node.role]
    max_size = t.size("max_size", max_default, 1)
    ram_size = t.size("ram_size", ram_default)
    ram_object_max = t.size("ram_object_max", _field_default(StoreConfig, "ram_object_max"))
    if ram_size and ram_object_max > ram_size:
        t.fail(
            "ram_object_max",
            f"{ram_object_max} bytes exceeds store.ram_size ({ram_size} "
            "bytes); lower it or raise ram_size",
        )
    min_free, min_free_percent = _min_free(t)
    share = t.value("max_object_share", _field_default(StoreConfig, "max_object_share"), "0.5")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        t.fail("max_object_share", f"must be a number in (0, 1], got {_describe(share)}")
    eviction = t.string("eviction", "popularity", '"popularity"')
    if eviction not in ("popularity", "lru"):
        t.fail("eviction", f'{_show(eviction)} is not "popularity" nor "lru"')
    weight = t.value("object_weight", _field_default(StoreConfig, "object_weight"), "0.8")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
        t.fail("object_weight", f"must be a number in [0, 1], got {_describe(weight)}")
    return StoreConfig(
        path=os.path.normpath(os.path.join(base_dir, path)),
        max_size=max_size,
        ram_size=ram_size,
        ram_object_max=ram_object_max,
        min_free=min_free,
        min_free_percent=min_free_percent,
        max_object_share=float(share),
        eviction=eviction,
        object_weight=float(weight),
    )


def _min_free(t: _Table) -> tuple[int, float]:
    """``store.min_free``: a size ("1GiB", bytes) or a share of the file system ("5%")."""
    raw = t.value("min_free", 0, '"1GiB"')
    if isinstance(raw, str) and raw.strip().endswith("%"):
        try:
            percent = float(raw.strip()[:-1])
        except ValueError:
            percent = -1.0
        if not 0 <= percent < 100:
            t.fail("min_free", f'{_show(raw)} is not a share; write e.g. min_free = "5%"')
        return 0, percent
    return t.size("min_free", 0), 0.0


def _is_own_address(url: str, node: NodeConfig) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port != node.listen_port:
        return False
    host = (parts.hostname or "").lower()
    listen = node.listen_host.lower()
    if host == listen:
        return True
    local = {"localhost", "127.0.0.1", "::1"}
    return listen in ("0.0.0.0", "::") and host in local


def _env_name(t: _Table, name: str) -> str | None:
    value = t.string(name, None, '"AWS_ACCESS_KEY_ID"')
    if value is not None and not _ENV_NAME_RE.fullmatch(value):
        t.fail(
            name,
            f'{_show(value)} is not an environment variable name; write e.g. "AWS_ACCESS_KEY_ID"',
        )
    return value


def _parse_s3(t: _Table) -> S3OriginConfig:
    try:
        endpoint = _base_url(
            t.string("endpoint", example='"http://127.0.0.1:8333"'), "http://127.0.0.1:8333"
        )
    except ValueError as err:
        t.fail("endpoint", str(err))
    region = t.word("region", "us-east-1", '"us-east-1"')
    bucket = t.string("bucket", None, '"music"')
    buckets = t.strings("buckets", None, '["music"]')
    if bucket is not None and buckets is not None:
        t.fail(
            None,
            'both bucket and buckets are set; use bucket = "NAME" (one fixed bucket) '
            'or buckets = ["NAME", ...] (drop-in: the first path segment), not both',
        )
    if bucket is None and buckets is None:
        t.fail(
            None,
            'neither bucket nor buckets is set; add bucket = "music" (fixed bucket) '
            'or buckets = ["music"] (drop-in)',
        )
    names = (bucket,) if bucket is not None else buckets
    which = "bucket" if bucket is not None else "buckets"
    if not names:
        t.fail("buckets", 'is empty; list the buckets to serve, e.g. buckets = ["music"]')
    for name in names:
        if not _BUCKET_RE.fullmatch(name):
            t.fail(
                which,
                f"{_show(name)} is not a bucket name; use letters, digits, "
                '".", "-" and "_", e.g. "music"',
            )
    if len(set(names)) != len(names):
        t.fail("buckets", "lists a bucket twice; list each once")
    access = _env_name(t, "access_key_env")
    secret = _env_name(t, "secret_key_env")
    token = _env_name(t, "session_token_env")
    if access is not None and secret is None:
        t.fail(
            "secret_key_env",
            "missing: access_key_env is set, so set secret_key_env too, "
            'e.g. secret_key_env = "AWS_SECRET_ACCESS_KEY" (or remove both: anonymous)',
        )
    if secret is not None and access is None:
        t.fail(
            "access_key_env",
            "missing: secret_key_env is set, so set access_key_env too, "
            'e.g. access_key_env = "AWS_ACCESS_KEY_ID" (or remove both: anonymous)',
        )
    if token is not None and access is None:
        t.fail(
            "session_token_env",
            "needs access_key_env and secret_key_env; set them or remove session_token_env",
        )
    return S3OriginConfig(
        endpoint=endpoint,
        region=region,
        bucket=bucket,
        buckets=buckets if buckets is not None else (),
        access_key_env=access,
        secret_key_env=secret,
        session_token_env=token,
    )


_PARENTS_EXAMPLE = 'parents = ["http://HOST:PORT"] or [{url = "http://HOST:PORT", weight = 2}]'


def _health_url(text: str) -> str:
    """Validate a parent's health URL (http/https, a host, no query/credentials); a URL
    without a path gets ``/healthz``."""
    example = "http://127.0.0.1:9081/healthz"
    hint = f'use the URL of the parent\'s admin listener, e.g. "{example}"'
    parts = _http_url(text, hint, hint)
    if parts.query or parts.fragment:
        raise ValueError(f"{_show(text)}: no query or fragment allowed; {hint}")
    path = parts.path if parts.path not in ("", "/") else "/healthz"
    return f"{parts.scheme}://{parts.netloc}{path}"


def _weight(t: _Table) -> float:
    value = t.value("weight", 1.0, "2")
    if isinstance(value, bool) or not isinstance(value, int | float):
        t._wrong_type("weight", "a number > 0", value, "2")
    if not math.isfinite(value) or not 0 < value <= 1_000_000:
        t.fail("weight", f"{_show(value)} is out of range; use a number > 0 and <= 1000000")
    return float(value)


def _parse_parent(t: _Table, raw: object, key: str, index: int) -> ParentConfig:
    """One parent: a base URL string, or a table with url, weight, health_url and name."""
    if isinstance(raw, str):
        try:
            return ParentConfig(url=_base_url(raw))
        except ValueError as err:
            t.fail(key, str(err))
    if not isinstance(raw, dict):
        t.fail(
            key,
            "must hold strings only (base URLs) or tables with a url, got "
            f"{_describe(raw)}; write e.g. {_PARENTS_EXAMPLE}",
        )
    item = _Table(t.file, f"{t.key(key)}[{index}]", raw, _PARENT_KEYS)
    try:
        url = _base_url(item.string("url", example='"http://127.0.0.1:8081"'))
    except ValueError as err:
        item.fail("url", str(err))
    health_url: str | None = None
    if "health_url" in item:
        try:
            health_url = _health_url(
                item.string("health_url", example='"http://127.0.0.1:9081/healthz"')
            )
        except ValueError as err:
            item.fail("health_url", str(err))
    name = item.word("name", None, '"regional-1"')
    if name is not None and not _NODE_NAME_RE.fullmatch(name):
        item.fail(
            "name",
            f'{_show(name)} is not a parent name; use up to 64 letters, digits, ".", "_" '
            'and "-", e.g. "regional-1"',
        )
    return ParentConfig(url=url, weight=_weight(item), health_url=health_url, name=name)


def _parse_parents(t: _Table, node: NodeConfig) -> tuple[ParentConfig, ...]:
    """``parents = [...]`` (strings or tables) or ``[[upstream.parent]]`` tables."""
    if "parents" in t and "parent" in t:
        t.fail(
            None,
            "both parents and [[upstream.parent]] are set; list the parents in one of them",
        )
    key = "parent" if "parent" in t else "parents"
    raw_list = t.data.get(key, [])
    if not isinstance(raw_list, list):
        if key == "parent":
            t.fail(key, "must be an array of tables; write [[upstream.parent]] (double brackets)")
        t._wrong_type(key, "an array of strings", raw_list, '["http://127.0.0.1:8081"]')
    parents: list[ParentConfig] = []
    for index, raw in enumerate(raw_list):
        if key == "parent" and not isinstance(raw, dict):
            t.fail(key, "must be an array of tables; write [[upstream.parent]] (double brackets)")
        parent = _parse_parent(t, raw, key, index)
        shown = _show(raw if isinstance(raw, str) else parent.url)
        if any(p.url == parent.url for p in parents):
            t.fail(key, f"{shown} is listed twice; list each parent once")
        if any(p.ident == parent.ident for p in parents):
            t.fail(key, f"two parents are named {_show(parent.ident)}; give each its own name")
        if _is_own_address(parent.url, node):
            t.fail(
                key,
                f"{shown} is this node's own listen address (a loop); "
                "parents are nodes of the next tier",
            )
        parents.append(parent)
    return tuple(parents)


def _parse_health(t: _Table) -> HealthConfig:
    h = t.table("health", _HEALTH_KEYS) or _empty(t, "health", _HEALTH_KEYS)

    def default(name: str) -> Any:
        return _field_default(HealthConfig, name)

    interval = h.duration("interval", default("interval"), True, '"2s"')
    timeout = h.duration("timeout", default("timeout"), True, '"1s"')
    if timeout > interval:
        h.fail(
            "timeout", f"{timeout:g}s exceeds interval ({interval:g}s); need timeout <= interval"
        )
    return HealthConfig(
        interval=interval,
        timeout=timeout,
        healthy_threshold=h.integer("healthy_threshold", default("healthy_threshold"), 1, 100),
        unhealthy_threshold=h.integer(
            "unhealthy_threshold", default("unhealthy_threshold"), 1, 100
        ),
        fail_threshold=h.integer("fail_threshold", default("fail_threshold"), 1, 1000),
        retry_time=h.duration("retry_time", default("retry_time"), True, '"10s"'),
    )


def _parse_upstream(root: _Table, node: NodeConfig) -> UpstreamConfig:
    t = root.table(
        "upstream",
        _UPSTREAM_KEYS,
        required=True,
        example='[upstream] with parents = ["http://HOST:PORT"] or an [upstream.s3] table',
    )
    assert t is not None
    specs = _parse_parents(t, node)
    s3_table = t.table("s3", _S3_KEYS)
    fallback_table = t.table("fallback_s3", _S3_KEYS)
    if specs and s3_table is not None:
        t.fail(
            None,
            "both parents and [upstream.s3] are set; a node fetches from its parent "
            "nodes or from the S3 origin: remove one",
        )
    if not specs and s3_table is None:
        t.fail(
            None,
            'neither parents nor [upstream.s3] is set; add parents = ["http://HOST:PORT"]'
            " or an [upstream.s3] table",
        )
    if not specs:
        for name in ("fallback_s3", "health"):
            if name in t:
                t.fail(
                    name,
                    "applies to nodes with parents only; this node fetches from [upstream.s3]:"
                    " remove it",
                )
    return UpstreamConfig(
        parents=tuple(p.url for p in specs),
        s3=_parse_s3(s3_table) if s3_table is not None else None,
        connect_timeout=t.duration(
            "connect_timeout", _field_default(UpstreamConfig, "connect_timeout"), True
        ),
        read_timeout=t.duration(
            "read_timeout", _field_default(UpstreamConfig, "read_timeout"), True
        ),
        max_connections=t.integer(
            "max_connections", _field_default(UpstreamConfig, "max_connections"), 1, 65535
        ),
        parent_specs=specs,
        health=_parse_health(t) if specs else HealthConfig(),
        fallback_s3=_parse_s3(fallback_table) if fallback_table is not None else None,
    )


def _query_keys(t: _Table) -> tuple[str, ...]:
    keys = t.strings("query_keys", (), '["quality", "format"]')
    for name in keys:
        if not name or any(c in "&=#%?+" or c <= " " or c == "\x7f" for c in name):
            t.fail(
                "query_keys",
                f"{_show(name)} is not a query parameter name; write names "
                "decoded, without spaces or any of & = # % ? +",
            )
        if name.lower().startswith("x-amz-") or name in SIGNED_URL_PARAMS:
            t.fail(
                "query_keys",
                f"{_show(name)}: presigned-URL signature parameters are never keyed; remove it",
            )
    if len(set(keys)) != len(keys):
        t.fail("query_keys", "lists a name twice; list each once")
    return keys


def _header_keys(t: _Table, option: str = "header_keys") -> tuple[str, ...]:
    keys = t.strings(option, (), '["accept"]')
    lowered: list[str] = []
    for name in keys:
        if not _TOKEN_RE.fullmatch(name):
            t.fail(option, f"{_show(name)} is not a header field name")
        low = name.lower()
        if low in _HOP_BY_HOP:
            t.fail(
                option,
                f"{_show(name)} is a hop-by-hop field, never forwarded nor keyed; remove it",
            )
        if low in _NEVER_KEYED:
            t.fail(option, f"{_show(name)}: {_NEVER_KEYED[low]}")
        if low in lowered:
            t.fail(option, f"{_show(name)} is listed twice; list each once")
        lowered.append(low)
    return tuple(lowered)


def _methods(t: _Table) -> tuple[str, ...]:
    default = _field_default(PolicyConfig, "methods")
    methods = t.strings("methods", default, '["GET", "HEAD"]')
    if not methods:
        t.fail("methods", 'is empty; list the methods served from the cache, e.g. ["GET", "HEAD"]')
    for method in methods:
        if not _TOKEN_RE.fullmatch(method):
            t.fail("methods", f'{_show(method)} is not a method name; write e.g. "GET"')
        if method != method.upper():
            t.fail(
                "methods",
                f"{_show(method)}: methods are case-sensitive upper-case tokens; "
                f"write {_show(method.upper())}",
            )
    if len(set(methods)) != len(methods):
        t.fail("methods", "lists a method twice; list each once")
    return methods


def _response_headers(t: _Table) -> tuple[tuple[str, str], ...]:
    if "response_headers" not in t:
        return ()
    raw = t.data["response_headers"]
    key = t.key("response_headers")
    if not isinstance(raw, dict):
        t.fail(
            "response_headers",
            f"must be a table, got {_describe(raw)}; write [policy.response_headers] (after "
            'its [[policy]]) with "Name" = "value" lines',
        )
    headers = _Table(t.file, key, {}, ())
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    for name, value in raw.items():
        if not _TOKEN_RE.fullmatch(name):
            headers.fail(name, "is not a header field name")
        low = name.lower()
        if low in _HOP_BY_HOP or low in _NOT_ADDED:
            headers.fail(name, "is managed by the proxy; it cannot be added by a policy")
        if low in seen:
            headers.fail(name, "is set twice (header names are case-insensitive); keep one")
        if not isinstance(value, str):
            headers.fail(name, f"must be a string, got {_describe(value)}")
        if any((c < " " and c != "\t") or c == "\x7f" for c in value):
            headers.fail(name, "the value contains control characters (CR, LF...); remove them")
        seen.add(low)
        pairs.append((name, value.strip(" \t")))
    return tuple(pairs)


_SIGNED_URL_KEYS = ("type", "required", "keys_env")
_CORS_KEYS = (
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "max_age",
    "allow_credentials",
)
_ORIGIN_RE = re.compile(
    r"(https?)://(\*\.)?([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(:[0-9]{1,5})?",
    re.ASCII,
)


def _signed_urls(t: _Table) -> SignedUrlConfig | None:
    s = t.table("signed_urls", _SIGNED_URL_KEYS)
    if s is None:
        return None
    kind = s.string("type", "hmac", '"hmac"')
    if kind not in ("hmac", "s3-presigned"):
        s.fail(
            "type",
            f'{_show(kind)} is not "hmac" (edgeproxy sign) nor "s3-presigned" (S3 SigV4 URLs)',
        )
    keys_env = s.string("keys_env", "EDGEPROXY_URL_KEYS", '"EDGEPROXY_URL_KEYS"')
    if not _ENV_NAME_RE.fullmatch(keys_env):
        s.fail(
            "keys_env",
            f"{_show(keys_env)} is not an environment variable name; the secrets live in the "
            'environment, e.g. keys_env = "EDGEPROXY_URL_KEYS"',
        )
    if kind == "s3-presigned" and "keys_env" in s:
        s.fail("keys_env", "s3-presigned URLs are verified with the origin's S3 credentials")
    return SignedUrlConfig(
        type=kind,
        required=s.boolean("required", True),
        keys_env=keys_env,
    )


def _cors_origins(c: _Table) -> tuple[str, ...]:
    origins = c.strings("allow_origins", _MISSING, '["https://app.example"]')
    if not origins:
        c.fail("allow_origins", 'is empty; list origins, e.g. ["https://app.example"], or ["*"]')
    if "*" in origins:
        if len(origins) > 1:
            c.fail("allow_origins", '"*" allows every origin; list it alone or remove it')
        return ("*",)
    lowered: list[str] = []
    for origin in origins:
        low = origin.lower()
        match = _ORIGIN_RE.fullmatch(low)
        if match is None or (match.group(4) and not 0 < int(match.group(4)[1:]) < 65536):
            fix = low.rstrip("/") if low.endswith("/") else "https://app.example"
            c.fail(
                "allow_origins",
                f"{_show(origin)} is not an origin (scheme://host[:port], no path; "
                f'"https://*.example.com" for subdomains); write e.g. {_show(fix)}',
            )
        if low in lowered:
            c.fail("allow_origins", f"{_show(origin)} is listed twice; list each once")
        lowered.append(low)
    return tuple(lowered)


def _cors_names(c: _Table, option: str, credentials: bool, lower: bool) -> tuple[str, ...]:
    names = c.strings(option, (), '["content-type"]')
    if names == ("*",) or "*" in names:
        if len(names) > 1:
            c.fail(option, '"*" allows every header; list it alone or remove it')
        if option == "expose_headers" and credentials:
            c.fail(option, '"*" is not a wildcard with allow_credentials = true; list the names')
        return ("*",)
    for name in names:
        if not _TOKEN_RE.fullmatch(name):
            c.fail(option, f"{_show(name)} is not a header field name")
    if len({n.lower() for n in names}) != len(names):
        c.fail(option, "lists a name twice (names are case-insensitive); list each once")
    return tuple(n.lower() for n in names) if lower else tuple(names)


def _cors(t: _Table) -> CorsRules | None:
    c = t.table("cors", _CORS_KEYS)
    if c is None:
        return None
    origins = _cors_origins(c)
    credentials = c.boolean("allow_credentials", False)
    if credentials and origins == ("*",):
        c.fail(
            "allow_credentials",
            'true with allow_origins = ["*"] would let every site read answers made with the '
            "user's cookies; list the allowed origins",
        )
    methods = c.strings("allow_methods", ("GET", "HEAD"), '["GET", "HEAD"]')
    for method in methods:
        if not _TOKEN_RE.fullmatch(method) or method != method.upper():
            c.fail("allow_methods", f"{_show(method)} is not an upper-case method name")
    max_age = c.duration("max_age", 600.0, example='"10m"')
    if max_age != int(max_age):
        c.fail("max_age", f"{max_age:g}s is not a whole number of seconds")
    return CorsRules(
        allow_origins=origins,
        allow_methods=tuple(methods),
        allow_headers=_cors_names(c, "allow_headers", credentials, lower=True),
        expose_headers=_cors_names(c, "expose_headers", credentials, lower=False),
        max_age=int(max_age),
        allow_credentials=credentials,
    )


def _policy_path(t: _Table) -> str:
    path = t.string("path", example='"/audio/*"')
    if path == "*":
        return path
    if not path.startswith("/"):
        t.fail(
            "path",
            f'{_show(path)} must start with "/" (or be "*" for the default policy), '
            f'e.g. "/{path.lstrip("*")}"',
        )
    if "*" in path[:-1]:
        t.fail("path", f'{_show(path)}: "*" is only allowed at the end (a prefix match)')
    if "?" in path:
        t.fail("path", f"{_show(path)}: policies match the path only; remove the query")
    prefix = path[:-1] if path.endswith("*") else path
    try:
        normalized = normalize_path(prefix)
    except BadRequestTarget as err:
        t.fail("path", f"{_show(path)} is not a valid path: {err}")
    if normalized != prefix:
        suffix = "*" if path.endswith("*") else ""
        t.fail(
            "path",
            f"{_show(path)} is not normalized, so no request would match it; write "
            f"{_show(normalized + suffix)}",
        )
    return path


def builtin_default_policy(name: str = "default") -> PolicyConfig:
    """The policy appended when the config has no catch-all: ``default_ttl`` 0 ("only what
    the origin says"), ``max_ttl`` 1 year, nothing keyed but the path."""
    return PolicyConfig(name=name, path="*", default_ttl=0.0, max_ttl=YEAR)


def _parse_policy(t: _Table) -> PolicyConfig:
    name = t.word("name", example='"audio"')
    path = _policy_path(t)
    default_ttl = t.duration("default_ttl", _MISSING, example='"1d"')
    max_ttl = t.duration("max_ttl", YEAR)
    min_ttl = t.duration("min_ttl", 0.0)
    if min_ttl > default_ttl:
        t.fail(
            "min_ttl",
            f"{min_ttl:g}s exceeds default_ttl ({default_ttl:g}s); "
            "need min_ttl <= default_ttl <= max_ttl",
        )
    if default_ttl > max_ttl:
        t.fail(
            "default_ttl",
            f"{default_ttl:g}s exceeds max_ttl ({max_ttl:g}s); "
            "need min_ttl <= default_ttl <= max_ttl",
        )
    other = t.string("other_methods", "pass", '"pass"')
    if other not in ("pass", "refuse"):
        t.fail(
            "other_methods", f'{_show(other)} is not "pass" (forward upstream) nor "refuse" (405)'
        )
    unacceptable = t.string("unacceptable_encoding", "identity", '"identity"')
    if unacceptable not in ("identity", "406"):
        t.fail(
            "unacceptable_encoding",
            f'{_show(unacceptable)} is not "identity" (answer uncoded anyway) nor "406"',
        )
    compress_min = t.size("compress_min_size", 1000)
    compress_max = t.size("compress_max_size", 10 * 1024 * 1024)
    if compress_min > compress_max:
        t.fail(
            "compress_min_size",
            f"{compress_min} bytes exceeds compress_max_size ({compress_max} bytes)",
        )
    return PolicyConfig(
        name=name,
        path=path,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        min_ttl=min_ttl,
        compress=t.boolean("compress", False),
        compress_min_size=compress_min,
        compress_max_size=compress_max,
        unacceptable_encoding=unacceptable,  # type: ignore[arg-type]
        query_keys=_query_keys(t),
        header_keys=_header_keys(t),
        forward_headers=_header_keys(t, "forward_headers"),
        methods=_methods(t),
        other_methods=other,
        error_ttl=t.duration("error_ttl", _field_default(PolicyConfig, "error_ttl")),
        slice_size=t.size("slice_size", 0),
        slice_threshold=t.size("slice_threshold", 8 * 1024 * 1024),
        response_headers=_response_headers(t),
        stale_while_revalidate=t.duration("stale_while_revalidate", 0.0),
        stale_if_error=t.duration("stale_if_error", 0.0),
        viewer_protocol=_viewer_protocol(t),
        signed_urls=_signed_urls(t),
        cors=_cors(t),
    )


def _viewer_protocol(t: _Table) -> Any:
    value = t.string("viewer_protocol", "allow-all", '"redirect-to-https"')
    if value not in VIEWER_PROTOCOLS:
        t.fail(
            "viewer_protocol",
            f"{_show(value)} is not a viewer protocol; " + _did_you_mean(value, VIEWER_PROTOCOLS),
        )
    return value


def _check_viewer_protocols(
    file: str, node: NodeConfig, policies: tuple[PolicyConfig, ...]
) -> None:
    """A policy that wants HTTPS on a node without TLS would answer every request with a
    redirect or a 403 (behind a TLS-terminating proxy: a redirect loop)."""
    if node.tls_cert is not None:
        return
    for index, policy in enumerate(policies):
        if policy.viewer_protocol != "allow-all":
            raise ConfigError(
                file,
                f"policy[{index}].viewer_protocol",
                f"{_show(policy.viewer_protocol)} needs TLS on this node; set node.tls_cert and "
                'node.tls_key (and node.tls_listen to keep plain HTTP), or use "allow-all"',
            )


def presign_origin(upstream: UpstreamConfig) -> S3OriginConfig | None:
    """The S3 origin whose credentials verify presigned URLs: ``[upstream.s3]``, else
    ``[upstream.fallback_s3]``; None when neither has credentials."""
    for s3 in (upstream.s3, upstream.fallback_s3):
        if s3 is not None and s3.access_key_env and s3.secret_key_env:
            return s3
    return None


def _check_presigned(
    file: str, upstream: UpstreamConfig, policies: tuple[PolicyConfig, ...]
) -> None:
    """S3 presigned URLs are verified with the origin's credentials: the node needs them."""
    if presign_origin(upstream) is not None:
        return
    for index, policy in enumerate(policies):
        if policy.signed_urls is not None and policy.signed_urls.type == "s3-presigned":
            raise ConfigError(
                file,
                f"policy[{index}].signed_urls.type",
                '"s3-presigned" needs the origin\'s credentials: set access_key_env and '
                "secret_key_env in [upstream.s3] (or [upstream.fallback_s3])",
            )


def _is_catch_all(policy: PolicyConfig) -> bool:
    return policy.path in ("*", "/*")


def _parse_policies(root: _Table) -> tuple[PolicyConfig, ...]:
    raw = root.data.get("policy", [])
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        root.fail(
            "policy",
            "must be an array of tables; write [[policy]] (double brackets) before each policy",
        )
    policies: list[PolicyConfig] = []
    names: dict[str, int] = {}
    for index, item in enumerate(raw):
        t = _Table(root.file, f"policy[{index}]", item, _POLICY_KEYS)
        policy = _parse_policy(t)
        if policy.name in names:
            t.fail(
                "name",
                f"{_show(policy.name)} is already the name of policy[{names[policy.name]}]"
                "; give each policy a unique name",
            )
        if policies and _is_catch_all(policies[-1]):
            t.fail(
                "path",
                f"unreachable: policy[{index - 1}] ({_show(policies[-1].path)}) "
                "matches every path; put the catch-all last",
            )
        names[policy.name] = index
        policies.append(policy)
    if not policies or not _is_catch_all(policies[-1]):
        name = "default"
        while name in names:
            name = "builtin-" + name
        policies.append(builtin_default_policy(name))
    return tuple(policies)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def parse_config(data: Mapping[str, Any], file: str) -> Config:
    """Build a :class:`Config` from parsed TOML ``data``; ``file`` names it in errors and is
    the base of relative paths (its directory). Raises :class:`ConfigError`.

    When the policies do not end with a catch-all ``"*"``, the built-in default policy
    (:func:`builtin_default_policy`: ``default_ttl`` 0, i.e. only what the origin says;
    ``max_ttl`` 1 year) is appended.
    """
    root = _Table(file, "", data, _TOP_KEYS)
    base_dir = os.path.dirname(os.path.abspath(file))
    node = _parse_node(root, base_dir)
    store = _parse_store(root, node, base_dir)
    upstream = _parse_upstream(root, node)
    policies = _parse_policies(root)
    _check_viewer_protocols(file, node, policies)
    _check_presigned(file, upstream, policies)
    return Config(file=file, node=node, store=store, upstream=upstream, policies=policies)


def load_config(path: str) -> Config:
    """Read and validate the TOML file ``path`` (see the module docstring for the schema).

    Raises :class:`ConfigError`: key ``(file)`` when it cannot be read, ``(toml)`` for a
    syntax error (tomllib's message carries the line and column), otherwise the offending key.
    A built-in default policy is appended when the last policy is not ``"*"``.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise ConfigError(path, "(file)", f"cannot read it: {err.strerror or err}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(
            path, "(toml)", f"not UTF-8 text (byte {err.start}); save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(path, "(toml)", f"{err}; fix the TOML syntax there") from None
    return parse_config(data, path)


def check_environment(config: Config, environ: Mapping[str, str] | None = None) -> list[str]:
    """Problems that prevent starting ``config`` in this environment (empty list: none).

    Checks that the credentials' environment variables named by ``upstream.s3`` (and
    ``upstream.fallback_s3``) are set and
    non-empty (e.g. ``"AWS_SECRET_ACCESS_KEY is not set (upstream.s3.secret_key_env)"``), that
    the signed-URL keys named by each hmac ``[policy.signed_urls]`` are set and parse, and
    that ``store.path`` is, or can be created as, a writable directory. ``environ`` defaults
    to ``os.environ``. Called at start, never at load.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    for table, s3 in (("s3", config.upstream.s3), ("fallback_s3", config.upstream.fallback_s3)):
        if s3 is None:
            continue
        for key, name in (
            ("access_key_env", s3.access_key_env),
            ("secret_key_env", s3.secret_key_env),
            ("session_token_env", s3.session_token_env),
        ):
            if name is None:
                continue
            if name not in env:
                problems.append(f"{name} is not set (upstream.{table}.{key}); export it")
            elif not env[name]:
                problems.append(f"{name} is empty (upstream.{table}.{key}); export its value")
    for index, policy in enumerate(config.policies):
        signed = policy.signed_urls
        if signed is None or signed.type != "hmac":
            continue
        where = f"policy[{index}].signed_urls.keys_env"
        if signed.keys_env not in env:
            problems.append(f'{signed.keys_env} is not set ({where}); export "id:secret,..."')
            continue
        try:
            parse_keys(env[signed.keys_env])
        except ValueError as err:
            problems.append(f"{signed.keys_env} ({where}): {err}")
    path = config.store.path
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if probe == path and not os.path.isdir(path):
        problems.append(f"store.path {path} exists and is not a directory")
    elif not os.access(probe, os.W_OK | os.X_OK):
        problems.append(f"store.path {path}: {probe} is not writable")
    return problems
