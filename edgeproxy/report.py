"""The operators' report over a topology: figures per tier, latency per region, top paths and
recommendations (``edgeproxy report``). Pure: scraped text and JSON in, a :class:`Report` out.

Contract:
- Input: one :class:`NodeScrape` per node (its ``/metrics`` text, its ``GET /popular`` and
  ``GET /popular?of=misses`` paths, or the error that kept it from being scraped), as
  :mod:`edgeproxy.ops` fetches them; :func:`build_report` does no I/O and reads no clock.
- A tier is a role (edge, regional, shield). Per tier, summed over its nodes:

  * **hit ratio**: answers from the cache (results ``hit``, ``stale``, ``collapsed`` and
    ``revalidated``: a 304 moved no body, as CloudFront's RefreshHit) over the cacheable
    requests (every result but ``pass`` and ``bad-request``);
  * **byte hit ratio**: body bytes served with those results over all body bytes served;
  * **upstream offload**: 1 - body bytes fetched from upstream / body bytes served;
  * **bandwidth saved**: bytes served - bytes fetched, and its cost at ``price_per_gb``
    (GB = 2^30 bytes, as cloud providers bill transfer);
  * p50/p99 **TTFB** from the summed ``edgeproxy_ttfb_seconds`` histograms (linear within a
    bucket, as PromQL's ``histogram_quantile``), also per (tier, region);
  * top paths (``/popular`` counts summed; trend recomputed from the sums) and the paths and
    policies that miss most.

- The topology as a whole: the client tier is ``edge`` (else the lowest tier present); the
  **origin** is every upstream target that is not one of the scraped nodes (an S3 node's
  ``origin``, the fallback's ``direct``, a plain HTTP origin). **Origin offload** = 1 - origin
  body bytes / client tier body bytes (and the same by requests); its bandwidth saved is what
  the price applies to.
- :func:`recommend` follows the reference deployment's monitor: hit ratio ratings (excellent
  >= 95%, good >= 90%, fair >= 80%, else poor); below 90% -> TTLs and key whitelists, with the
  policies and paths that miss most as evidence; 5xx and 4xx rates; an origin fetched by
  several nodes -> a shield; regions above the 20 ms target; paths rising at an upper tier
  that the client tier does not list yet -> preload. A tier with fewer than ``min_requests``
  (default ``MIN_REQUESTS``) cacheable requests is not judged.
- :func:`render_text` renders the report for a terminal (the HTML page is
  :mod:`edgeproxy.report_html`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from edgeproxy.popularity import trend

TIER_ORDER = ("edge", "regional", "shield")
HIT_RESULTS = frozenset({"hit", "stale", "collapsed", "revalidated"})
NOT_CACHEABLE = frozenset({"pass", "bad-request"})
MISS_RESULTS = ("miss", "expired", "revalidated")
GB = 2**30
MIN_REQUESTS = 20
RATINGS = ((0.95, "excellent"), (0.90, "good"), (0.80, "fair"), (0.0, "poor"))
REGION_TARGET = 0.020  # seconds: the reference rollout's "< 20 ms globally"
ERROR_5XX_LIMIT = 0.01
ERROR_4XX_LIMIT = 0.05
ORIGIN_SLOW_P99 = 0.5
TOP = 10


# ---- parsed figures of one node ---------------------------------------------------------------


@dataclass
class Hist:
    """Non-cumulative bucket counts over ``bounds`` (+Inf last) and a sum."""

    bounds: tuple[float, ...]
    counts: list[float]
    total: float = 0.0

    @property
    def count(self) -> float:
        return sum(self.counts)

    def merged(self, other: Hist) -> Hist:
        if other.bounds != self.bounds:
            raise ValueError("histograms with other buckets")
        return Hist(
            self.bounds,
            [a + b for a, b in zip(self.counts, other.counts, strict=True)],
            self.total + other.total,
        )

    def quantile(self, q: float) -> float | None:
        """PromQL's histogram_quantile: linear within the bucket; the +Inf bucket reports the
        highest finite bound. None without observations."""
        n = self.count
        if n <= 0:
            return None
        rank = q * n
        running = 0.0
        lower = 0.0
        for bound, c in zip(self.bounds, self.counts, strict=True):
            if c > 0 and running + c >= rank:
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * max(0.0, rank - running) / c
            running += c
            if not math.isinf(bound):
                lower = bound
        return lower


def _hist_from_cumulative(buckets: Mapping[float, float], total: float) -> Hist:
    bounds = tuple(sorted(buckets))
    counts = []
    previous = 0.0
    for bound in bounds:
        counts.append(max(0.0, buckets[bound] - previous))
        previous = buckets[bound]
    return Hist(bounds, counts, total)


def _merge_all(hists: Iterable[Hist]) -> Hist | None:
    result: Hist | None = None
    for h in hists:
        result = h if result is None else result.merged(h)
    return result


@dataclass
class UpstreamTarget:
    requests: float = 0.0
    failures: float = 0.0
    bytes: float = 0.0
    latency: Hist | None = None


@dataclass
class NodeFigures:
    """What the report reads from one node's ``/metrics``."""

    name: str
    role: str
    region: str = ""
    results: dict[str, float] = field(default_factory=dict)
    responses: dict[tuple[str, str], float] = field(default_factory=dict)
    served_bytes: dict[str, float] = field(default_factory=dict)
    ttfb: dict[str, Hist] = field(default_factory=dict)
    upstream: dict[str, UpstreamTarget] = field(default_factory=dict)
    policy_misses: dict[tuple[str, str], float] = field(default_factory=dict)
    coalesced: float = 0.0
    compression_saved_bytes: float = 0.0
    store_bytes: float = 0.0
    store_objects: float = 0.0
    evictions: float = 0.0
    invalidations: float = 0.0


def parse_metrics(text: str, name: str, role: str) -> NodeFigures:
    """A node's Prometheus text exposition -> :class:`NodeFigures` (unknown samples ignored;
    raises ValueError on text that is not the exposition format)."""
    fig = NodeFigures(name=name, role=role)
    ttfb_buckets: dict[str, dict[float, float]] = {}
    ttfb_sums: dict[str, float] = {}
    up_buckets: dict[str, dict[float, float]] = {}
    up_sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            value = float(sample.value)
            sname = sample.name
            if not fig.region and labels.get("region"):
                fig.region = labels["region"]
            if labels.get("role") and role == "":
                fig.role = labels["role"]
            if sname == "edgeproxy_requests_total":
                fig.results[labels.get("result", "")] = value
            elif sname == "edgeproxy_responses_total":
                fig.responses[(labels.get("result", ""), labels.get("code", ""))] = value
            elif sname == "edgeproxy_served_bytes_total":
                fig.served_bytes[labels.get("result", "")] = value
            elif sname == "edgeproxy_ttfb_seconds_bucket":
                le = float(labels["le"])
                ttfb_buckets.setdefault(labels.get("result", ""), {})[le] = value
            elif sname == "edgeproxy_ttfb_seconds_sum":
                ttfb_sums[labels.get("result", "")] = value
            elif (
                sname.startswith("edgeproxy_upstream_") or sname == "edgeproxy_fetched_bytes_total"
            ):
                parent = labels.get("parent")
                if parent is None:
                    continue
                target = fig.upstream.setdefault(parent, UpstreamTarget())
                if sname == "edgeproxy_upstream_requests_total":
                    target.requests = value
                elif sname == "edgeproxy_upstream_failures_total":
                    target.failures = value
                elif sname == "edgeproxy_fetched_bytes_total":
                    target.bytes = value
                elif sname == "edgeproxy_upstream_response_seconds_bucket":
                    up_buckets.setdefault(parent, {})[float(labels["le"])] = value
                elif sname == "edgeproxy_upstream_response_seconds_sum":
                    up_sums[parent] = value
            elif sname == "edgeproxy_policy_misses_total":
                fig.policy_misses[(labels.get("policy", ""), labels.get("result", ""))] = value
            elif sname == "edgeproxy_coalesced_total":
                fig.coalesced = value
            elif sname == "edgeproxy_compression_saved_bytes_total":
                fig.compression_saved_bytes = value
            elif sname == "edgeproxy_store_bytes":
                fig.store_bytes = value
            elif sname == "edgeproxy_store_objects":
                fig.store_objects = value
            elif sname == "edgeproxy_evictions_total":
                fig.evictions = value
            elif sname == "edgeproxy_invalidations_total":
                fig.invalidations = value
    for result, buckets in ttfb_buckets.items():
        fig.ttfb[result] = _hist_from_cumulative(buckets, ttfb_sums.get(result, 0.0))
    for parent, buckets in up_buckets.items():
        fig.upstream.setdefault(parent, UpstreamTarget()).latency = _hist_from_cumulative(
            buckets, up_sums.get(parent, 0.0)
        )
    return fig


# ---- input and model --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeScrape:
    """What :mod:`edgeproxy.ops` fetched from one node (``error``: why it could not)."""

    name: str
    role: str
    admin_url: str = ""
    metrics: str | None = None
    popular: Sequence[Mapping[str, Any]] = ()
    missed: Sequence[Mapping[str, Any]] = ()
    error: str | None = None


@dataclass(frozen=True)
class PathCount:
    path: str
    count: float
    recent: float
    trend: str


@dataclass(frozen=True)
class Latency:
    count: float
    p50: float | None
    p99: float | None


@dataclass
class TierReport:
    role: str
    nodes: list[str]
    requests: float  # every counted request
    cacheable: float
    hits: float
    results: dict[str, float]
    hit_ratio: float | None
    rating: str | None
    served_bytes: float
    hit_bytes: float
    byte_hit_ratio: float | None
    fetched_bytes: float
    upstream_requests: float
    upstream_failures: float
    upstream_offload: float | None
    saved_bytes: float
    saved_cost: float
    ttfb: Latency
    ttfb_hist: Hist | None
    responses_by_code: dict[str, float]
    rate_4xx: float | None
    rate_5xx: float | None
    coalesced: float
    compression_saved_bytes: float
    store_bytes: float
    store_objects: float
    evictions: float
    top_paths: list[PathCount]
    missed_paths: list[PathCount]
    policy_misses: dict[str, dict[str, float]]  # policy -> result -> n, most first
    upstream_by_parent: dict[str, UpstreamTarget]


@dataclass(frozen=True)
class RegionReport:
    role: str
    region: str
    nodes: list[str]
    ttfb: Latency


@dataclass(frozen=True)
class Recommendation:
    severity: str  # "ok" | "info" | "warning" | "critical"
    title: str
    advice: str
    evidence: tuple[str, ...] = ()


@dataclass
class Report:
    tiers: list[TierReport]
    regions: list[RegionReport]
    client_tier: str | None
    client_requests: float
    client_bytes: float
    origin_requests: float
    origin_bytes: float
    origin_fetchers: list[str]
    origin_latency: Latency
    origin_offload: float | None  # by bytes
    origin_request_offload: float | None
    saved_bytes: float
    saved_cost: float
    price_per_gb: float
    unreachable: list[tuple[str, str]]
    bucket_bounds: tuple[float, ...]
    recommendations: list[Recommendation] = field(default_factory=list)


# ---- computation ------------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def rating(hit_ratio: float | None) -> str | None:
    if hit_ratio is None:
        return None
    for floor, name in RATINGS:
        if hit_ratio >= floor:
            return name
    return "poor"


def _latency(hist: Hist | None) -> Latency:
    if hist is None:
        return Latency(0.0, None, None)
    return Latency(hist.count, hist.quantile(0.5), hist.quantile(0.99))


def merge_paths(lists: Iterable[Sequence[Mapping[str, Any]]], top: int) -> list[PathCount]:
    """``/popular`` answers of several nodes, counts summed per path, hottest ``top``."""
    counts: dict[str, list[float]] = {}
    for items in lists:
        for item in items:
            path = item.get("path")
            if not isinstance(path, str):
                continue
            pair = counts.setdefault(path, [0.0, 0.0])
            pair[0] += float(item.get("count", 0.0) or 0.0)
            pair[1] += float(item.get("recent", 0.0) or 0.0)
    best = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]
    return [PathCount(p, c, r, trend(r, c)) for p, (c, r) in best]


def _tier_order(roles: Iterable[str]) -> list[str]:
    present = set(roles)
    return [r for r in TIER_ORDER if r in present] + sorted(present - set(TIER_ORDER))


def build_report(
    scrapes: Sequence[NodeScrape],
    price_per_gb: float = 0.0,
    top: int = TOP,
    min_requests: int = MIN_REQUESTS,
) -> Report:
    """The report of ``scrapes`` (see the module docstring); unreachable nodes are listed.
    A tier's hit ratio is judged from ``min_requests`` cacheable requests on."""
    figures: list[tuple[NodeScrape, NodeFigures]] = []
    unreachable: list[tuple[str, str]] = []
    for scrape in scrapes:
        if scrape.error is not None or scrape.metrics is None:
            unreachable.append((scrape.name, scrape.error or "no metrics"))
            continue
        try:
            figures.append((scrape, parse_metrics(scrape.metrics, scrape.name, scrape.role)))
        except (ValueError, KeyError) as exc:
            unreachable.append((scrape.name, f"unreadable metrics: {exc}"))
    names = {s.name for s in scrapes}
    bounds: tuple[float, ...] = ()
    tiers: list[TierReport] = []
    regions: list[RegionReport] = []
    for role in _tier_order(f.role for _, f in figures):
        members = [(s, f) for s, f in figures if f.role == role]
        tier = _tier(role, members, price_per_gb, top)
        tiers.append(tier)
        if tier.ttfb_hist is not None and not bounds:
            bounds = tier.ttfb_hist.bounds
        by_region: dict[str, list[NodeFigures]] = {}
        for _, f in members:
            by_region.setdefault(f.region or "-", []).append(f)
        for region in sorted(by_region):
            hist = _merge_all(h for f in by_region[region] for h in f.ttfb.values())
            regions.append(
                RegionReport(role, region, [f.name for f in by_region[region]], _latency(hist))
            )
    client = tiers[0] if tiers else None
    origin_requests = origin_bytes = 0.0
    fetchers: list[str] = []
    origin_hists: list[Hist] = []
    for _, f in figures:
        for parent, target in f.upstream.items():
            if parent in names:
                continue
            origin_requests += target.requests
            origin_bytes += target.bytes
            if target.requests and f.name not in fetchers:
                fetchers.append(f.name)
            if target.latency is not None:
                origin_hists.append(target.latency)
    client_requests = client.cacheable if client else 0.0
    client_bytes = client.served_bytes if client else 0.0
    saved = max(0.0, client_bytes - origin_bytes)
    report = Report(
        tiers=tiers,
        regions=regions,
        client_tier=client.role if client else None,
        client_requests=client_requests,
        client_bytes=client_bytes,
        origin_requests=origin_requests,
        origin_bytes=origin_bytes,
        origin_fetchers=sorted(fetchers),
        origin_latency=_latency(_merge_all(origin_hists)),
        origin_offload=_offload(origin_bytes, client_bytes),
        origin_request_offload=_offload(origin_requests, client_requests),
        saved_bytes=saved,
        saved_cost=saved / GB * price_per_gb,
        price_per_gb=price_per_gb,
        unreachable=unreachable,
        bucket_bounds=bounds,
    )
    report.recommendations = recommend(report, min_requests)
    return report


def _offload(upstream: float, served: float) -> float | None:
    if served <= 0:
        return None
    return max(0.0, 1.0 - upstream / served)


def _tier(
    role: str,
    members: list[tuple[NodeScrape, NodeFigures]],
    price_per_gb: float,
    top: int,
) -> TierReport:
    results: dict[str, float] = {}
    served: dict[str, float] = {}
    codes: dict[str, float] = {}
    policy: dict[str, dict[str, float]] = {}
    upstream: dict[str, UpstreamTarget] = {}
    hists: list[Hist] = []
    for _, f in members:
        for k, v in f.results.items():
            results[k] = results.get(k, 0.0) + v
        for k, v in f.served_bytes.items():
            served[k] = served.get(k, 0.0) + v
        for (_, code), v in f.responses.items():
            codes[code] = codes.get(code, 0.0) + v
        for (name, result), v in f.policy_misses.items():
            row = policy.setdefault(name, {})
            row[result] = row.get(result, 0.0) + v
        for parent, t in f.upstream.items():
            u = upstream.setdefault(parent, UpstreamTarget())
            u.requests += t.requests
            u.failures += t.failures
            u.bytes += t.bytes
            if t.latency is not None:
                u.latency = t.latency if u.latency is None else u.latency.merged(t.latency)
        hists.extend(f.ttfb.values())
    requests = sum(results.values())
    cacheable = sum(v for k, v in results.items() if k not in NOT_CACHEABLE)
    hits = sum(v for k, v in results.items() if k in HIT_RESULTS)
    served_total = sum(served.values())
    hit_bytes = sum(v for k, v in served.items() if k in HIT_RESULTS)
    fetched = sum(u.bytes for u in upstream.values())
    answers = sum(codes.values())
    hit_ratio = _ratio(hits, cacheable)
    ttfb_hist = _merge_all(hists)
    saved = max(0.0, served_total - fetched)
    ordered_policy = dict(sorted(policy.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])))
    return TierReport(
        role=role,
        nodes=[f.name for _, f in members],
        requests=requests,
        cacheable=cacheable,
        hits=hits,
        results=results,
        hit_ratio=hit_ratio,
        rating=rating(hit_ratio),
        served_bytes=served_total,
        hit_bytes=hit_bytes,
        byte_hit_ratio=_ratio(hit_bytes, served_total),
        fetched_bytes=fetched,
        upstream_requests=sum(u.requests for u in upstream.values()),
        upstream_failures=sum(u.failures for u in upstream.values()),
        upstream_offload=_offload(fetched, served_total),
        saved_bytes=saved,
        saved_cost=saved / GB * price_per_gb,
        ttfb=_latency(ttfb_hist),
        ttfb_hist=ttfb_hist,
        responses_by_code=dict(sorted(codes.items())),
        rate_4xx=_ratio(codes.get("4xx", 0.0), answers),
        rate_5xx=_ratio(codes.get("5xx", 0.0), answers),
        coalesced=sum(f.coalesced for _, f in members),
        compression_saved_bytes=sum(f.compression_saved_bytes for _, f in members),
        store_bytes=sum(f.store_bytes for _, f in members),
        store_objects=sum(f.store_objects for _, f in members),
        evictions=sum(f.evictions for _, f in members),
        top_paths=merge_paths((s.popular for s, _ in members), top),
        missed_paths=merge_paths((s.missed for s, _ in members), top),
        policy_misses=ordered_policy,
        upstream_by_parent=upstream,
    )


# ---- recommendations --------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f} ms"


def recommend(report: Report, min_requests: int = MIN_REQUESTS) -> list[Recommendation]:
    """The monitor's advice for ``report``, most severe first (see the module docstring)."""
    out: list[Recommendation] = []
    for name, why in report.unreachable:
        out.append(
            Recommendation(
                "warning",
                f"{name} was not scraped",
                "Its figures are missing from this report: check the node and its admin "
                "listener (edgeproxy topology status).",
                (why,),
            )
        )
    for tier in report.tiers:
        out.extend(_tier_advice(tier, min_requests))
    if len(report.origin_fetchers) > 1:
        out.append(
            Recommendation(
                "warning",
                f"{len(report.origin_fetchers)} nodes fetch from the origin",
                "Enable the shield: route the origin-facing nodes through one shield node, so "
                "each object is fetched from the origin once for the whole topology.",
                tuple(f"origin fetcher: {n}" for n in report.origin_fetchers),
            )
        )
    lat = report.origin_latency
    if lat.p99 is not None and lat.p99 > ORIGIN_SLOW_P99:
        out.append(
            Recommendation(
                "info",
                f"origin p99 latency {ms(lat.p99)}",
                "The origin is slow: keep stale-while-revalidate and stale-if-error on the "
                "policies, and preload what is about to be asked for.",
                (f"origin latency p50 {ms(lat.p50)}, p99 {ms(lat.p99)} over {lat.count:.0f}",),
            )
        )
    client = report.client_tier
    for region in report.regions:
        if region.role != client or region.ttfb.p50 is None:
            continue
        if region.ttfb.p50 > REGION_TARGET:
            out.append(
                Recommendation(
                    "warning",
                    f"region {region.region}: p50 TTFB {ms(region.ttfb.p50)} at the {client}",
                    f"Above the {REGION_TARGET * 1000:.0f} ms target: raise the hit ratio of "
                    "the region's edges (TTLs, preloading) or add edge capacity there.",
                    (
                        f"{', '.join(region.nodes)}: p50 {ms(region.ttfb.p50)}, "
                        f"p99 {ms(region.ttfb.p99)} over {region.ttfb.count:.0f} answers",
                    ),
                )
            )
    rising = _rising_upstream(report)
    if rising:
        out.append(
            Recommendation(
                "info",
                f"{len(rising)} rising path(s) upstream of the {client}",
                "Preload popular content before it trends at the edges: edgeproxy warm "
                "--topology FILE --from shield --top N.",
                tuple(f"{p.path} ({p.trend}, count {p.count:.1f})" for p in rising[:5]),
            )
        )
    order = {"critical": 0, "warning": 1, "info": 2, "ok": 3}
    return sorted(out, key=lambda r: order.get(r.severity, 9))


def _tier_advice(tier: TierReport, min_requests: int) -> list[Recommendation]:
    out: list[Recommendation] = []
    role = tier.role
    if tier.cacheable < min_requests or tier.hit_ratio is None:
        if tier.cacheable > 0:
            out.append(
                Recommendation(
                    "info",
                    f"{role}: {tier.cacheable:.0f} cacheable request(s), too few to judge",
                    f"The hit ratio is judged from {min_requests} requests on.",
                )
            )
        return out
    if tier.hit_ratio >= 0.90:
        out.append(
            Recommendation(
                "ok",
                f"{role} hit ratio {pct(tier.hit_ratio)} ({tier.rating})",
                "Nothing to do for the hit ratio.",
            )
        )
    else:
        evidence: list[str] = []
        upstream = sum(sum(row.values()) for row in tier.policy_misses.values())
        for policy, row in list(tier.policy_misses.items())[:3]:
            parts = ", ".join(f"{int(n)} {r}" for r, n in sorted(row.items()) if n)
            share = pct(_ratio(sum(row.values()), upstream))
            evidence.append(f"policy {policy}: {parts} ({share} of the tier's upstream requests)")
        for p in tier.missed_paths[:5]:
            evidence.append(f"missed most: {p.path} (count {p.count:.1f})")
        revalidated = tier.results.get("revalidated", 0.0)
        misses = tier.results.get("miss", 0.0) + tier.results.get("expired", 0.0)
        advice = (
            "Look at the TTLs (default_ttl/min_ttl of the policies above) and the key "
            "whitelists (query_keys, header_keys): a keyed parameter that changes per request "
            "(a cache-busting token) or a keyed header makes every request a miss."
        )
        if revalidated > misses:
            advice += (
                " Most upstream requests are revalidations: the content outlives its TTL, "
                "raise default_ttl (or min_ttl)."
            )
        out.append(
            Recommendation(
                "critical" if tier.hit_ratio < 0.80 else "warning",
                f"{role} hit ratio {pct(tier.hit_ratio)} ({tier.rating}; target >= 90%)",
                advice,
                tuple(evidence),
            )
        )
    if tier.rate_5xx is not None and tier.rate_5xx >= ERROR_5XX_LIMIT:
        failing = sorted(tier.upstream_by_parent.items(), key=lambda kv: -kv[1].failures)
        out.append(
            Recommendation(
                "warning",
                f"{role}: {pct(tier.rate_5xx)} of answers are 5xx",
                "Upstream errors reach clients: check the parents below, and give the policies "
                "a stale-if-error window so stored objects cover an outage.",
                tuple(
                    f"upstream {name}: {u.failures:.0f} failed of {u.requests:.0f}"
                    for name, u in failing[:3]
                    if u.failures
                ),
            )
        )
    if tier.rate_4xx is not None and tier.rate_4xx >= ERROR_4XX_LIMIT:
        out.append(
            Recommendation(
                "info",
                f"{role}: {pct(tier.rate_4xx)} of answers are 4xx",
                "Clients ask for what does not exist (or is refused): check links and signed "
                "URLs; 404s are cached for the policies' error_ttl.",
                (f"answers by class: {_codes(tier.responses_by_code)}",),
            )
        )
    return out


def _codes(codes: Mapping[str, float]) -> str:
    return ", ".join(f"{c} {n:.0f}" for c, n in codes.items())


def _rising_upstream(report: Report) -> list[PathCount]:
    """Rising paths of the upper tiers that are not (yet) among the client tier's top paths:
    what to preload before it trends there."""
    if report.client_tier is None:
        return []
    client = next(t for t in report.tiers if t.role == report.client_tier)
    seen_at_client = {p.path for p in client.top_paths}
    rising: dict[str, PathCount] = {}
    for tier in report.tiers:
        if tier.role == report.client_tier:
            continue
        for p in tier.top_paths:
            if p.trend == "rising" and p.path not in seen_at_client and p.path not in rising:
                rising[p.path] = p
    return list(rising.values())


# ---- text ---------------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def money(x: float) -> str:
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def render_text(report: Report) -> str:
    """The report as plain text, for a terminal."""
    lines: list[str] = []
    add = lines.append
    add("edgeproxy report")
    add("")
    if report.client_tier is not None:
        add(
            f"clients ({report.client_tier}): {report.client_requests:.0f} cacheable requests, "
            f"{human_bytes(report.client_bytes)} served"
        )
        add(
            f"origin: {report.origin_requests:.0f} requests, {human_bytes(report.origin_bytes)} "
            f"fetched by {', '.join(report.origin_fetchers) or 'no node'}; latency p50 "
            f"{ms(report.origin_latency.p50)}, p99 {ms(report.origin_latency.p99)}"
        )
        add(
            f"origin offload: {pct(report.origin_offload)} of bytes, "
            f"{pct(report.origin_request_offload)} of requests; bandwidth saved "
            f"{human_bytes(report.saved_bytes)} = {money(report.saved_cost)} at "
            f"{money(report.price_per_gb)}/GB"
        )
        add("")
    header = (
        f"{'tier':<9} {'nodes':>5} {'requests':>9} {'hit ratio':>10} {'byte hit':>9} "
        f"{'offload':>8} {'saved':>10} {'cost':>9} {'p50 TTFB':>9} {'p99 TTFB':>9}"
    )
    add(header)
    add("-" * len(header))
    for t in report.tiers:
        add(
            f"{t.role:<9} {len(t.nodes):>5} {t.requests:>9.0f} {pct(t.hit_ratio):>10} "
            f"{pct(t.byte_hit_ratio):>9} {pct(t.upstream_offload):>8} "
            f"{human_bytes(t.saved_bytes):>10} {money(t.saved_cost):>9} {ms(t.ttfb.p50):>9} "
            f"{ms(t.ttfb.p99):>9}"
        )
    add("")
    add("TTFB by tier and region")
    for r in report.regions:
        add(
            f"  {r.role:<9} {r.region:<12} p50 {ms(r.ttfb.p50):>9}  p99 {ms(r.ttfb.p99):>9}"
            f"  ({r.ttfb.count:.0f} answers; {', '.join(r.nodes)})"
        )
    for t in report.tiers:
        add("")
        results = ", ".join(f"{k} {v:.0f}" for k, v in sorted(t.results.items()) if v)
        add(f"{t.role}: {results or 'no requests'}")
        add(
            f"  answers {_codes(t.responses_by_code) or '-'}; coalesced {t.coalesced:.0f}; "
            f"compression saved {human_bytes(t.compression_saved_bytes)}; store "
            f"{t.store_objects:.0f} objects, {human_bytes(t.store_bytes)}"
        )
        if t.top_paths:
            add("  top paths:")
            for p in t.top_paths:
                add(f"    {p.count:>10.1f}  {p.trend:<8} {p.path}")
        if t.missed_paths:
            add("  missed most:")
            for p in t.missed_paths:
                add(f"    {p.count:>10.1f}  {p.path}")
    add("")
    add("recommendations")
    if not report.recommendations:
        add("  (none)")
    for rec in report.recommendations:
        add(f"  [{rec.severity}] {rec.title}")
        add(f"      {rec.advice}")
        for item in rec.evidence:
            add(f"      - {item}")
    return "\n".join(lines) + "\n"
