"""Prometheus metrics, in one place: plain counters on the request path, families at scrape time.

Contract:
- The request path never touches prometheus-client: it increments plain integers and plain
  bucket arrays (a dict entry in ``Node.counters``, :class:`Histogram` rows, attributes of the
  store, upstream, variants and slicer). At scrape time the figures are read into one
  :class:`Figures` and the families are built from it, so a scrape costs the scraper, not the
  requests.
- The hit path (``Node.try_fast``) counts its answers into a pre-bucketed array of its own
  (``Node.fast_ttfb``, bucket index found by :func:`bisect.bisect_left` on
  :data:`TTFB_BUCKETS`), plus a sum and a byte count; :func:`figures_of` folds them into the
  ``hit`` row, so fast hits appear in the same histogram as every other answer.
- Time to first byte (TTFB) runs from the parsed request head (``Request.received_at``, the
  event loop's clock: millisecond resolution on uvloop, so a fast hit reads 0-1 ms) to the
  moment the answer's head is ready: for the slow path, when the request's cache result is
  decided (:func:`mark_phase`, called where the phase is counted); for a fast hit, when its
  bytes are written. Upstream latency runs from sending a request to its response head.
- One :class:`~prometheus_client.CollectorRegistry` per node (never the global one): several
  nodes in one process (the tests) each expose only their own figures.
- Every family carries the labels ``node``, ``role`` and ``region`` (a tier is a role), so a
  dashboard can sum per tier without relabelling. Names follow Prometheus conventions: base unit
  in the name (``_bytes``, ``_seconds``), ``_total`` for counters (added by the exposition).
- A multi-process node (``workers`` > 1): each worker sends its :class:`Figures` (cumulative,
  JSON, one line) to the master over the report socket pair it already has, at most every
  ``REPORT_INTERVAL`` and only when they changed, plus its per-path request and miss tallies
  (:func:`worker_report_lines`). The master's :class:`WorkerFigures` keeps the latest figures
  of each live worker and folds those of a worker that exited into a retired total, so the sum
  it exposes never goes back when a worker is restarted (:class:`MasterCollector`). Chosen over
  prometheus-client's multiprocess mode (a directory of mmap files, a process-wide environment
  variable, no custom collectors) and over snapshot files (disk writes, stale files of dead
  workers): the channel exists, and the master learns of a worker's exit from its EOF.

Families (N = node, role, region labels):
  edgeproxy_requests_total{N, result}            requests by cache result (Phase values)
  edgeproxy_responses_total{N, result, code}     answers by cache result and status class (2xx)
  edgeproxy_ttfb_seconds{N, result}              histogram: time to first byte (see above)
  edgeproxy_served_bytes_total{N, result}        body bytes sent to clients, by cache result
  edgeproxy_upstream_requests_total{N, parent}   requests sent upstream, by parent ("origin"
                                                 for an S3 node, "direct" for the fallback)
  edgeproxy_upstream_failures_total{N, parent}   of which failed (no answer, or a 5xx)
  edgeproxy_upstream_response_seconds{N, parent} histogram: time to the upstream's head
  edgeproxy_fetched_bytes_total{N, parent}       body bytes received from upstream (complete
                                                 bodies; a transfer cut short is not counted)
  edgeproxy_policy_misses_total{N, policy, result} requests that went upstream (miss, expired,
                                                 revalidated), by cache policy
  edgeproxy_store_bytes{N}                       bytes of stored bodies
  edgeproxy_store_max_bytes{N}                   the store's byte budget
  edgeproxy_store_objects{N}                     stored entries (variants and slices included)
  edgeproxy_evictions_total{N}                   entries evicted to keep the budget
  edgeproxy_store_admissions_refused_total{N}    objects not stored: over the size share
  edgeproxy_ram_bytes{N}, edgeproxy_ram_objects{N}   the RAM layer's bodies (single process)
  edgeproxy_ram_evictions_total{N}               bodies the RAM layer's policy evicted
  edgeproxy_coalesced_total{N}                   requests answered from another request's fetch
  edgeproxy_compression_variants_total{N}        br/gzip variants produced
  edgeproxy_compression_saved_bytes_total{N}     bytes saved by those variants (once per variant)
  edgeproxy_invalidations_total{N}               invalidation requests accepted
  edgeproxy_bans{N}                              active bans (invalidations not yet walked)
  edgeproxy_slices_fetched_total{N}              slices fetched from upstream
  edgeproxy_connections_refused_total{N}         client connections closed at accept
                                                 (max_connections; single-process nodes)
  edgeproxy_workers{N}, edgeproxy_worker_restarts_total{N}   (a multi-process master only)
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edgeproxy.admin import Invalidations
    from edgeproxy.cache.manager import StoreManager
    from edgeproxy.cache.store import DiskStore
    from edgeproxy.config import NodeConfig
    from edgeproxy.popularity import Popularity
    from edgeproxy.proxy.handler import Node

LABELS = ("node", "role", "region")
#: Upper bounds (seconds) of the latency buckets, TTFB and upstream alike; +Inf is implied.
TTFB_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Results whose request went upstream because the cache could not answer it fresh.
MISSED_RESULTS = frozenset({"miss", "expired", "revalidated"})
FIGURES_VERSION = 1


# ---- plain figures (the request path writes these) -------------------------------------------


class Histogram:
    """Bucket counts (non-cumulative, the last one +Inf) and a sum; no prometheus-client."""

    __slots__ = ("counts", "sum")

    def __init__(self, counts: list[int] | None = None, total: float = 0.0) -> None:
        self.counts = counts if counts is not None else [0] * (len(TTFB_BUCKETS) + 1)
        self.sum = total

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(TTFB_BUCKETS, seconds)] += 1  # le: a bound is inclusive
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.sum += other.sum

    def as_json(self) -> list[Any]:
        return [self.counts, self.sum]

    @classmethod
    def from_json(cls, data: Any) -> Histogram:
        counts, total = data
        if not isinstance(counts, list) or len(counts) != len(TTFB_BUCKETS) + 1:
            raise ValueError("histogram with other buckets")
        return cls([int(n) for n in counts], float(total))


@dataclass
class UpstreamFigures:
    """One upstream target (a parent, ``origin`` or ``direct``) as :class:`Upstream` counts it."""

    requests: int = 0
    failures: int = 0
    bytes: int = 0
    latency: Histogram = field(default_factory=Histogram)

    def add_body(self, content: Any) -> None:
        """``StreamReader.on_eof`` callback: the complete body's size."""
        self.bytes += int(getattr(content, "total_bytes", 0) or 0)

    def merge(self, other: UpstreamFigures) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.bytes += other.bytes
        self.latency.merge(other.latency)


class RequestMark:
    """What one slow-path request learns while it runs: its first cache result and when it
    was decided (the TTFB end), its path and policy (for the miss evidence)."""

    __slots__ = ("at", "path", "phase", "policy")

    def __init__(self) -> None:
        self.phase: str | None = None
        self.at: float | None = None
        self.path: str | None = None
        self.policy: str | None = None


# the slow-path request being handled in this task (each runs in its own task)
REQUEST_MARK: ContextVar[RequestMark | None] = ContextVar("edgeproxy_request_mark", default=None)


def mark_phase(phase: str, now_mono: float) -> None:
    """The first phase counted for the current request fixes its result and TTFB end."""
    mark = REQUEST_MARK.get()
    if mark is not None and mark.phase is None:
        mark.phase = phase
        mark.at = now_mono


def mark_request(path: str, policy: str) -> None:
    mark = REQUEST_MARK.get()
    if mark is not None:
        mark.path = path
        mark.policy = policy


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Traffic:
    """The slow path's per-answer figures (one :meth:`answered` per request)."""

    __slots__ = ("missed", "policy_misses", "responses", "served_bytes", "ttfb")

    def __init__(self, missed: Any) -> None:
        self.ttfb: dict[str, Histogram] = {}
        self.served_bytes: dict[str, int] = {}
        self.responses: dict[tuple[str, str], int] = {}
        self.policy_misses: dict[tuple[str, str], int] = {}
        self.missed = missed  # a Popularity (or a worker's Tally) of missed paths

    def answered(
        self, mark: RequestMark, status: int, nbytes: int, received_at: float, now_mono: float
    ) -> None:
        result = mark.phase or "none"
        at = mark.at if mark.at is not None else now_mono
        hist = self.ttfb.get(result)
        if hist is None:
            hist = self.ttfb[result] = Histogram()
        hist.observe(max(0.0, at - received_at))
        self.served_bytes[result] = self.served_bytes.get(result, 0) + nbytes
        if status:
            key = (result, status_class(status))
            self.responses[key] = self.responses.get(key, 0) + 1
        if result in MISSED_RESULTS and mark.policy is not None:
            pkey = (mark.policy, result)
            self.policy_misses[pkey] = self.policy_misses.get(pkey, 0) + 1
            if mark.path is not None:
                self.missed.hit(mark.path, time.time())


# ---- the figures of a node, at scrape time ---------------------------------------------------


@dataclass
class Figures:
    """Every per-process counter of a node (what a worker sends its master); summable."""

    results: dict[str, int] = field(default_factory=dict)
    responses: dict[str, dict[str, int]] = field(default_factory=dict)  # result -> code -> n
    ttfb: dict[str, Histogram] = field(default_factory=dict)
    served_bytes: dict[str, int] = field(default_factory=dict)
    policy_misses: dict[str, dict[str, int]] = field(default_factory=dict)  # policy -> result
    upstream: dict[str, UpstreamFigures] = field(default_factory=dict)
    compression_variants: int = 0
    compression_saved_bytes: int = 0
    slices_fetched: int = 0

    def merge(self, other: Figures) -> None:
        _add_counts(self.results, other.results)
        _add_counts(self.served_bytes, other.served_bytes)
        for result, codes in other.responses.items():
            _add_counts(self.responses.setdefault(result, {}), codes)
        for policy, results in other.policy_misses.items():
            _add_counts(self.policy_misses.setdefault(policy, {}), results)
        for result, hist in other.ttfb.items():
            self.ttfb.setdefault(result, Histogram()).merge(hist)
        for name, up in other.upstream.items():
            self.upstream.setdefault(name, UpstreamFigures()).merge(up)
        self.compression_variants += other.compression_variants
        self.compression_saved_bytes += other.compression_saved_bytes
        self.slices_fetched += other.slices_fetched

    def as_json(self) -> dict[str, Any]:
        return {
            "v": FIGURES_VERSION,
            "results": self.results,
            "responses": self.responses,
            "ttfb": {r: h.as_json() for r, h in self.ttfb.items()},
            "served_bytes": self.served_bytes,
            "policy_misses": self.policy_misses,
            "upstream": {
                name: [u.requests, u.failures, u.bytes, u.latency.as_json()]
                for name, u in self.upstream.items()
            },
            "compression": [self.compression_variants, self.compression_saved_bytes],
            "slices_fetched": self.slices_fetched,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Figures:
        """Raises ValueError (or KeyError/TypeError) on a line of another version."""
        if data.get("v") != FIGURES_VERSION:
            raise ValueError("figures of another version")
        upstream = {}
        for name, (requests, failures, nbytes, latency) in data["upstream"].items():
            upstream[name] = UpstreamFigures(
                int(requests), int(failures), int(nbytes), Histogram.from_json(latency)
            )
        variants, saved = data["compression"]
        return cls(
            results={k: int(v) for k, v in data["results"].items()},
            responses={r: {c: int(n) for c, n in v.items()} for r, v in data["responses"].items()},
            ttfb={r: Histogram.from_json(h) for r, h in data["ttfb"].items()},
            served_bytes={k: int(v) for k, v in data["served_bytes"].items()},
            policy_misses={
                p: {r: int(n) for r, n in v.items()} for p, v in data["policy_misses"].items()
            },
            upstream=upstream,
            compression_variants=int(variants),
            compression_saved_bytes=int(saved),
            slices_fetched=int(data["slices_fetched"]),
        )


def _add_counts(into: dict[str, int], other: Mapping[str, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


def figures_of(node: Node) -> Figures:
    """A copy of ``node``'s counters (fast hits folded into the ``hit`` rows)."""
    traffic: Traffic = node.traffic
    ttfb = {r: Histogram(list(h.counts), h.sum) for r, h in traffic.ttfb.items()}
    fast = Histogram(list(node.fast_ttfb), node.fast_ttfb_sum)
    if fast.count:
        ttfb.setdefault("hit", Histogram()).merge(fast)
    served = dict(traffic.served_bytes)
    if node.fast_bytes:
        served["hit"] = served.get("hit", 0) + node.fast_bytes
    responses: dict[str, dict[str, int]] = {}
    for (result, code), n in traffic.responses.items():
        responses.setdefault(result, {})[code] = n
    fast_odd = dict(node.fast_odd_status)
    fast_2xx = node.fast_hits - sum(fast_odd.values())
    hit_codes = responses.setdefault("hit", {}) if node.fast_hits else None
    if hit_codes is not None:
        if fast_2xx:
            hit_codes["2xx"] = hit_codes.get("2xx", 0) + fast_2xx
        for status, n in fast_odd.items():
            code = status_class(status)
            hit_codes[code] = hit_codes.get(code, 0) + n
    policy_misses: dict[str, dict[str, int]] = {}
    for (policy, result), n in traffic.policy_misses.items():
        policy_misses.setdefault(policy, {})[result] = n
    upstream = {}
    for name, up in node.upstream.figures.items():
        upstream[name] = UpstreamFigures(
            up.requests, up.failures, up.bytes, Histogram(list(up.latency.counts), up.latency.sum)
        )
    return Figures(
        results=dict(node.counters),
        responses=responses,
        ttfb=ttfb,
        served_bytes=served,
        policy_misses=policy_misses,
        upstream=upstream,
        compression_variants=node.variants.produced,
        compression_saved_bytes=node.variants.bytes_saved,
        slices_fetched=node.slicer.slices_fetched,
    )


# ---- families --------------------------------------------------------------------------------


def _labels(cfg: NodeConfig) -> list[str]:
    return [cfg.name, cfg.role, cfg.region]


def _counter(name: str, doc: str, value: float, labels: list[str]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=LABELS)
    family.add_metric(labels, value)
    return family


def _gauge(name: str, doc: str, value: float, labels: list[str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=LABELS)
    family.add_metric(labels, value)
    return family


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    buckets = []
    running = 0
    for bound, n in zip((*TTFB_BUCKETS, float("inf")), hist.counts, strict=True):
        running += n
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    family.add_metric(labels, buckets, hist.sum)


def _store_families(
    labels: list[str], objects: int, used: int, budget: int, evictions: int
) -> Iterator[Metric]:
    yield _gauge("edgeproxy_store_bytes", "Bytes of stored bodies.", used, labels)
    yield _gauge("edgeproxy_store_max_bytes", "The store's byte budget.", budget, labels)
    yield _gauge(
        "edgeproxy_store_objects", "Stored entries (variants and slices included).", objects, labels
    )
    yield _counter(
        "edgeproxy_evictions", "Entries evicted to keep the byte budget.", evictions, labels
    )


def _admission_families(labels: list[str], store: DiskStore) -> Iterator[Metric]:
    """What the eviction policies refused and what the RAM layer holds (issue 7)."""
    yield _counter(
        "edgeproxy_store_admissions_refused",
        "Objects not stored because they exceed the store's max_object_share.",
        store.admissions_refused,
        labels,
    )
    ram = store.ram
    yield _gauge(
        "edgeproxy_ram_bytes", "Bytes of bodies held in the RAM layer.", ram.currsize, labels
    )
    yield _gauge("edgeproxy_ram_objects", "Bodies held in the RAM layer.", len(ram), labels)
    yield _counter(
        "edgeproxy_ram_evictions", "Bodies the RAM layer's policy evicted.", ram.evictions, labels
    )


def _invalidation_families(labels: list[str], inv: Invalidations | None) -> Iterator[Metric]:
    yield _counter(
        "edgeproxy_invalidations",
        "Invalidation requests accepted.",
        inv.total if inv is not None else 0,
        labels,
    )
    yield _gauge(
        "edgeproxy_bans",
        "Active bans (invalidations the background walk has not applied yet).",
        len(inv.bans) if inv is not None else 0,
        labels,
    )


def figure_families(labels: list[str], fig: Figures) -> Iterator[Metric]:
    """The request-side families of one node (or of a master's workers, summed)."""
    from edgeproxy.proxy.handler import Phase

    requests = CounterMetricFamily(
        "edgeproxy_requests", "Client requests by cache result.", labels=(*LABELS, "result")
    )
    for phase in Phase:
        requests.add_metric([*labels, phase.value], fig.results.get(phase.value, 0))
    yield requests
    responses = CounterMetricFamily(
        "edgeproxy_responses",
        "Answers by cache result and status class.",
        labels=(*LABELS, "result", "code"),
    )
    for result in sorted(fig.responses):
        for code in sorted(fig.responses[result]):
            responses.add_metric([*labels, result, code], fig.responses[result][code])
    yield responses
    ttfb = HistogramMetricFamily(
        "edgeproxy_ttfb_seconds",
        "Time from the parsed request head to the answer's head, by cache result.",
        labels=(*LABELS, "result"),
    )
    for result in sorted(fig.ttfb):
        _histogram(ttfb, [*labels, result], fig.ttfb[result])
    yield ttfb
    served = CounterMetricFamily(
        "edgeproxy_served_bytes",
        "Body bytes sent to clients, by cache result.",
        labels=(*LABELS, "result"),
    )
    for result in sorted(fig.served_bytes):
        served.add_metric([*labels, result], fig.served_bytes[result])
    yield served
    up_labels = (*LABELS, "parent")
    up_requests = CounterMetricFamily(
        "edgeproxy_upstream_requests",
        "Requests sent upstream, by parent (origin: an S3 node's origin; direct: the fallback).",
        labels=up_labels,
    )
    up_failures = CounterMetricFamily(
        "edgeproxy_upstream_failures",
        "Upstream requests that got no answer or a 5xx, by parent.",
        labels=up_labels,
    )
    up_latency = HistogramMetricFamily(
        "edgeproxy_upstream_response_seconds",
        "Time from sending an upstream request to its response head, by parent.",
        labels=up_labels,
    )
    fetched = CounterMetricFamily(
        "edgeproxy_fetched_bytes",
        "Body bytes received from upstream (complete bodies), by parent.",
        labels=up_labels,
    )
    for name in sorted(fig.upstream):
        up = fig.upstream[name]
        up_requests.add_metric([*labels, name], up.requests)
        up_failures.add_metric([*labels, name], up.failures)
        _histogram(up_latency, [*labels, name], up.latency)
        fetched.add_metric([*labels, name], up.bytes)
    yield up_requests
    yield up_failures
    yield up_latency
    yield fetched
    misses = CounterMetricFamily(
        "edgeproxy_policy_misses",
        "Requests that went upstream (miss, expired, revalidated), by cache policy.",
        labels=(*LABELS, "policy", "result"),
    )
    for policy in sorted(fig.policy_misses):
        for result in sorted(fig.policy_misses[policy]):
            misses.add_metric([*labels, policy, result], fig.policy_misses[policy][result])
    yield misses
    yield _counter(
        "edgeproxy_coalesced",
        "Requests answered from another request's upstream fetch (collapsed).",
        fig.results.get(Phase.COLLAPSED.value, 0),
        labels,
    )
    yield _counter(
        "edgeproxy_compression_variants",
        "Compressed (br/gzip) variants produced.",
        fig.compression_variants,
        labels,
    )
    yield _counter(
        "edgeproxy_compression_saved_bytes",
        "Bytes saved by the compressed variants produced (counted once per variant).",
        fig.compression_saved_bytes,
        labels,
    )
    yield _counter(
        "edgeproxy_slices_fetched",
        "Slices of large objects fetched from upstream.",
        fig.slices_fetched,
        labels,
    )


class NodeCollector(Collector):
    """A single-process node's figures, read at scrape time."""

    def __init__(self, node: Node, invalidations: Invalidations | None = None) -> None:
        self.node = node
        self.invalidations = invalidations

    def collect(self) -> Iterator[Metric]:
        node = self.node
        labels = _labels(node.config.node)
        yield from figure_families(labels, figures_of(node))
        store = node.store
        yield from _store_families(
            labels, len(store.index), store.used_bytes, store.max_size, store.evictions
        )
        yield from _admission_families(labels, store)
        yield from _invalidation_families(labels, self.invalidations)
        yield _counter(
            "edgeproxy_connections_refused",
            "Client connections closed right after accept (node.limits.max_connections).",
            node.connections_refused,
            labels,
        )


# ---- a multi-process node --------------------------------------------------------------------


def worker_report_lines(node: Node, last: list[str]) -> list[str]:
    """The lines a worker adds to its report batch: per-path tallies (``H n path`` requests,
    ``X n path`` misses) and its figures (``S {json}``) when they changed since ``last[0]``."""
    lines = []
    for kind, tally in (("H", node.popularity), ("X", node.traffic.missed)):
        drain = getattr(tally, "drain", None)
        if drain is not None:
            lines.extend(f"{kind} {n} {path}\n" for path, n in drain().items())
    text = json.dumps(figures_of(node).as_json(), separators=(",", ":"))
    if text != last[0]:
        last[0] = text
        lines.append(f"S {text}\n")
    return lines


class WorkerFigures:
    """The master's view of its workers' report lines (see the module docstring)."""

    def __init__(self, popularity: Popularity, missed: Popularity) -> None:
        self.popularity = popularity
        self.missed = missed
        self.live: dict[int, Figures] = {}
        self.retired = Figures()
        self.bad_lines = 0

    def handle_line(self, worker: int, line: str, now: float) -> bool:
        """Take ``line`` if it is one of ours (True); other lines are the cache manager's."""
        kind = line[:2]
        if kind == "S ":
            try:
                self.live[worker] = Figures.from_json(json.loads(line[2:]))
            except (ValueError, KeyError, TypeError):
                self.bad_lines += 1
            return True
        if kind == "H " or kind == "X ":
            parts = line.rstrip("\n").split(" ", 2)
            if len(parts) == 3 and parts[1].isdigit():
                target = self.popularity if kind == "H " else self.missed
                target.add(parts[2], now, float(parts[1]))
            else:
                self.bad_lines += 1
            return True
        return False

    def retire(self, worker: int) -> None:
        """``worker`` exited: its last figures stay in the sum."""
        last = self.live.pop(worker, None)
        if last is not None:
            self.retired.merge(last)

    def total(self) -> Figures:
        result = Figures()
        result.merge(self.retired)
        for fig in list(self.live.values()):
            result.merge(fig)
        return result


class MasterCollector(Collector):
    """A multi-process node's master: its workers' figures summed, the cache manager's store
    figures, workers and restarts, invalidations."""

    def __init__(
        self,
        config: Callable[[], NodeConfig],
        manager: Callable[[], StoreManager | None],
        workers: Callable[[], int],
        restarts: Callable[[], int],
        invalidations: Callable[[], Invalidations | None],
        figures: Callable[[], Figures] | None = None,
    ) -> None:
        self.config = config
        self.manager = manager
        self.workers = workers
        self.restarts = restarts
        self.invalidations = invalidations
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        labels = _labels(self.config())
        if self.figures is not None:
            yield from figure_families(labels, self.figures())
        m = self.manager()
        if m is not None:
            yield from _store_families(labels, len(m.sizes), m.used_bytes, m.max_size, m.evictions)
        yield _gauge("edgeproxy_workers", "Running worker processes.", self.workers(), labels)
        yield _counter(
            "edgeproxy_worker_restarts",
            "Worker processes restarted after an exit.",
            self.restarts(),
            labels,
        )
        yield from _invalidation_families(labels, self.invalidations())


def registry_for(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition format and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
