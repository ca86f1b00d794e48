"""Prometheus metrics, in one place: a per-node registry whose collector reads plain counters.

Contract:
- The request path never touches prometheus-client: it increments plain integers (a dict entry
  in ``Node._count``, attributes of the store, upstream, variants and slicer). At scrape time
  :class:`NodeCollector` reads them and builds the families, so a scrape costs the scraper,
  not the requests.
- One :class:`~prometheus_client.CollectorRegistry` per node (never the global one): several
  nodes in one process (the tests) each expose only their own figures.
- Every family carries the labels ``node``, ``role`` and ``region`` (a tier is a role), so a
  dashboard can sum per tier without relabelling. Names follow Prometheus conventions: base unit
  in the name (``_bytes``), ``_total`` for counters (added by the exposition).
- A multi-process node's master exposes the store figures of its cache manager, workers and
  restarts, and invalidations (:class:`MasterCollector`); the request and upstream counters live
  in the worker processes and are not aggregated yet.

Families (N = node, role, region labels):
  edgeproxy_requests_total{N, result}        requests by cache result (Phase values)
  edgeproxy_upstream_requests_total{N}       requests sent to parents or the origin
  edgeproxy_store_bytes{N}                   bytes of stored bodies
  edgeproxy_store_max_bytes{N}               the store's byte budget
  edgeproxy_store_objects{N}                 stored entries (variants and slices included)
  edgeproxy_evictions_total{N}               entries evicted to keep the budget
  edgeproxy_coalesced_total{N}               requests answered from another request's fetch
  edgeproxy_compression_variants_total{N}    br/gzip variants produced
  edgeproxy_compression_saved_bytes_total{N} bytes saved by those variants (once per variant)
  edgeproxy_invalidations_total{N}           invalidation requests accepted (POST /invalidations)
  edgeproxy_bans{N}                          active bans (invalidations not yet walked)
  edgeproxy_slices_fetched_total{N}          slices fetched from upstream
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edgeproxy.admin import Invalidations
    from edgeproxy.cache.manager import StoreManager
    from edgeproxy.config import NodeConfig
    from edgeproxy.proxy.handler import Node

LABELS = ("node", "role", "region")


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


class NodeCollector(Collector):
    """A single-process node's figures, read at scrape time."""

    def __init__(self, node: Node, invalidations: Invalidations | None = None) -> None:
        self.node = node
        self.invalidations = invalidations

    def collect(self) -> Iterator[Metric]:
        from edgeproxy.proxy.handler import Phase

        node = self.node
        labels = _labels(node.config.node)
        counters = dict(node.counters)
        requests = CounterMetricFamily(
            "edgeproxy_requests",
            "Client requests by cache result.",
            labels=(*LABELS, "result"),
        )
        for phase in Phase:
            requests.add_metric([*labels, phase.value], counters.get(phase.value, 0))
        yield requests
        yield _counter(
            "edgeproxy_upstream_requests",
            "Requests sent to parents or the origin.",
            node.upstream.requests_sent,
            labels,
        )
        store = node.store
        yield from _store_families(
            labels, len(store.index), store.used_bytes, store.max_size, store.evictions
        )
        yield _counter(
            "edgeproxy_coalesced",
            "Requests answered from another request's upstream fetch (collapsed).",
            counters.get(Phase.COLLAPSED.value, 0),
            labels,
        )
        yield _counter(
            "edgeproxy_compression_variants",
            "Compressed (br/gzip) variants produced.",
            node.variants.produced,
            labels,
        )
        yield _counter(
            "edgeproxy_compression_saved_bytes",
            "Bytes saved by the compressed variants produced (counted once per variant).",
            node.variants.bytes_saved,
            labels,
        )
        yield from _invalidation_families(labels, self.invalidations)
        yield _counter(
            "edgeproxy_slices_fetched",
            "Slices of large objects fetched from upstream.",
            node.slicer.slices_fetched,
            labels,
        )


class MasterCollector(Collector):
    """A multi-process node's master: the cache manager's store figures, workers,
    invalidations (the workers' request counters are not aggregated yet)."""

    def __init__(
        self,
        config: Callable[[], NodeConfig],
        manager: Callable[[], StoreManager | None],
        workers: Callable[[], int],
        restarts: Callable[[], int],
        invalidations: Callable[[], Invalidations | None],
    ) -> None:
        self.config = config
        self.manager = manager
        self.workers = workers
        self.restarts = restarts
        self.invalidations = invalidations

    def collect(self) -> Iterator[Metric]:
        labels = _labels(self.config())
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
