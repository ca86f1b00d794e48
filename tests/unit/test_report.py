"""The report's arithmetic (edgeproxy.report) and page (edgeproxy.report_html), from figures
exposed by the real collector code: Figures -> Prometheus text -> NodeFigures -> Report."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from edgeproxy.metrics import TTFB_BUCKETS, Figures, Histogram, UpstreamFigures, figure_families
from edgeproxy.report import (
    GB,
    Hist,
    NodeScrape,
    build_report,
    merge_paths,
    parse_metrics,
    rating,
    render_text,
)
from edgeproxy.report_html import render_html


class _Fixed(Collector):
    def __init__(self, labels: list[str], fig: Figures) -> None:
        self.labels = labels
        self.fig = fig

    def collect(self) -> Iterator[object]:
        yield from figure_families(self.labels, self.fig)


def exposition(name: str, role: str, region: str, fig: Figures) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([name, role, region], fig))
    return generate_latest(registry).decode()


def hist(*seconds: float) -> Histogram:
    h = Histogram()
    for s in seconds:
        h.observe(s)
    return h


def figures(
    *,
    hits: int,
    misses: int,
    size: int,
    upstream: dict[str, tuple[int, int]],
    revalidated: int = 0,
    ttfb_hit: float = 0.0005,
    ttfb_miss: float = 0.03,
    policy: str = "api",
    errors_5xx: int = 0,
) -> Figures:
    """A node that answered ``hits`` + ``misses`` (+ ``revalidated``) requests of ``size``
    bytes; ``upstream``: parent -> (requests, bytes)."""
    fig = Figures()
    fig.results = {"hit": hits, "miss": misses}
    fig.served_bytes = {"hit": hits * size, "miss": misses * size}
    fig.responses = {"hit": {"2xx": hits}, "miss": {"2xx": misses - errors_5xx}}
    if errors_5xx:
        fig.responses["miss"]["5xx"] = errors_5xx
    fig.ttfb = {"hit": hist(*[ttfb_hit] * hits), "miss": hist(*[ttfb_miss] * misses)}
    if revalidated:
        fig.results["revalidated"] = revalidated
        fig.served_bytes["revalidated"] = revalidated * size
        fig.responses["revalidated"] = {"2xx": revalidated}
        fig.ttfb["revalidated"] = hist(*[ttfb_miss] * revalidated)
    fig.policy_misses = {policy: {"miss": misses}}
    if revalidated:
        fig.policy_misses[policy]["revalidated"] = revalidated
    for parent, (requests, nbytes) in upstream.items():
        fig.upstream[parent] = UpstreamFigures(requests, 0, nbytes, hist(*[0.02] * requests))
    return fig


SIZE = 1000


def three_tier_scrapes() -> list[NodeScrape]:
    # edge-1 (eu-west): 90 hits, 10 misses; edge-2 (us-east): 40 hits, 10 misses
    # regional-1: 20 requests from the edges, 15 hits, 5 misses; shield-1: 5 misses, origin
    edge1 = figures(hits=90, misses=10, size=SIZE, upstream={"regional-1": (10, 10 * SIZE)})
    edge2 = figures(
        hits=40, misses=10, size=SIZE, upstream={"regional-1": (10, 10 * SIZE)}, ttfb_hit=0.03
    )
    regional = figures(hits=15, misses=5, size=SIZE, upstream={"shield-1": (5, 5 * SIZE)})
    shield = figures(hits=0, misses=5, size=SIZE, upstream={"origin": (5, 5 * SIZE)})
    popular = [{"path": "/a", "count": 5.0, "recent": 5.0, "trend": "rising"}]
    return [
        NodeScrape("edge-1", "edge", metrics=exposition("edge-1", "edge", "eu-west", edge1),
                   popular=popular, missed=[{"path": "/b", "count": 3.0, "recent": 1.0}]),
        NodeScrape("edge-2", "edge", metrics=exposition("edge-2", "edge", "us-east", edge2),
                   popular=popular),
        NodeScrape("regional-1", "regional",
                   metrics=exposition("regional-1", "regional", "eu-west", regional)),
        NodeScrape("shield-1", "shield",
                   metrics=exposition("shield-1", "shield", "us-east", shield),
                   popular=[{"path": "/new", "count": 2.0, "recent": 2.0}]),
    ]  # fmt: skip


def test_histogram_quantile_interpolates_within_the_bucket() -> None:
    h = Hist((0.01, 0.1, float("inf")), [10.0, 10.0, 0.0])
    assert h.quantile(0.5) == pytest.approx(0.01)
    assert h.quantile(0.75) == pytest.approx(0.01 + 0.09 * 0.5)
    assert h.quantile(0.25) == pytest.approx(0.005)
    assert Hist((0.01, float("inf")), [1.0, 3.0]).quantile(0.99) == pytest.approx(0.01)
    assert Hist((0.01, float("inf")), [0.0, 0.0]).quantile(0.5) is None


def test_exposed_figures_parse_back() -> None:
    fig = figures(hits=7, misses=3, size=SIZE, upstream={"p-a": (2, 2 * SIZE), "origin": (1, 5)})
    parsed = parse_metrics(exposition("n1", "edge", "eu-west", fig), "n1", "edge")
    assert parsed.region == "eu-west"
    assert parsed.results["hit"] == 7 and parsed.results["miss"] == 3
    assert parsed.served_bytes == {"hit": 7 * SIZE, "miss": 3 * SIZE}
    assert parsed.ttfb["hit"].count == 7 and parsed.ttfb["miss"].count == 3
    assert parsed.ttfb["miss"].total == pytest.approx(3 * 0.03)
    assert parsed.ttfb["hit"].bounds == (*TTFB_BUCKETS, float("inf"))
    assert parsed.upstream["p-a"].requests == 2 and parsed.upstream["p-a"].bytes == 2 * SIZE
    assert parsed.upstream["origin"].latency is not None
    assert parsed.upstream["origin"].latency.count == 1
    assert parsed.policy_misses[("api", "miss")] == 3


def test_tier_figures_match_the_requests() -> None:
    report = build_report(three_tier_scrapes(), price_per_gb=0.09)
    assert [t.role for t in report.tiers] == ["edge", "regional", "shield"]
    edge, regional, shield = report.tiers
    assert edge.requests == 150 and edge.hits == 130
    assert edge.hit_ratio == pytest.approx(130 / 150)
    assert edge.byte_hit_ratio == pytest.approx(130 / 150)
    assert edge.fetched_bytes == 20 * SIZE
    assert edge.upstream_offload == pytest.approx(1 - 20 / 150)
    assert edge.saved_bytes == 130 * SIZE
    assert edge.saved_cost == pytest.approx(130 * SIZE / GB * 0.09)
    assert regional.hit_ratio == pytest.approx(0.75) and regional.rating == "poor"
    assert shield.hit_ratio == 0.0
    # the whole topology: clients are the edges, the origin is the shield's "origin"
    assert report.client_tier == "edge"
    assert report.origin_requests == 5 and report.origin_bytes == 5 * SIZE
    assert report.origin_fetchers == ["shield-1"]
    assert report.origin_offload == pytest.approx(1 - 5 / 150)
    assert report.origin_request_offload == pytest.approx(1 - 5 / 150)
    assert report.saved_bytes == 145 * SIZE
    assert report.saved_cost == pytest.approx(145 * SIZE / GB * 0.09)
    # TTFB: edge-1's hits in the first bucket, edge-2's at 30 ms
    regions = {(r.role, r.region): r for r in report.regions}
    eu, us = regions[("edge", "eu-west")], regions[("edge", "us-east")]
    assert eu.ttfb.count == 100 and us.ttfb.count == 50
    assert eu.ttfb.p50 is not None and eu.ttfb.p50 <= 0.001
    assert us.ttfb.p50 is not None and 0.025 < us.ttfb.p50 <= 0.05
    assert edge.ttfb.p99 is not None and 0.025 < edge.ttfb.p99 <= 0.05
    assert [p.path for p in edge.top_paths] == ["/a"]
    assert edge.top_paths[0].count == pytest.approx(10.0)


def test_recommendations_carry_their_evidence() -> None:
    report = build_report(three_tier_scrapes(), price_per_gb=0.09)
    by_title = {r.title: r for r in report.recommendations}
    edge = next(r for t, r in by_title.items() if t.startswith("edge hit ratio"))
    assert edge.severity == "warning"  # 86.7%: fair
    assert any("policy api" in e for e in edge.evidence)
    assert any("/b" in e for e in edge.evidence)  # the path that missed most
    regional = next(r for t, r in by_title.items() if t.startswith("regional hit ratio"))
    assert regional.severity == "critical"
    # shield: 5 requests, too few to judge
    assert any(t.startswith("shield: 5 cacheable") for t in by_title)
    # us-east answers at 30 ms: above the 20 ms target; eu-west does not
    assert any("region us-east" in t for t in by_title)
    assert not any("region eu-west" in t for t in by_title)
    # the shield's rising path that the edges do not serve from cache: preload it
    preload = next(r for t, r in by_title.items() if "rising path" in t)
    assert any("/new" in e for e in preload.evidence)
    order = [r.severity for r in report.recommendations]
    assert order.index("critical") < order.index("warning") < order.index("info")


def test_an_excellent_tier_and_several_origin_fetchers() -> None:
    good = figures(hits=99, misses=1, size=SIZE, upstream={"origin": (1, SIZE)})
    other = figures(hits=99, misses=1, size=SIZE, upstream={"origin": (1, SIZE)})
    scrapes = [
        NodeScrape("e1", "edge", metrics=exposition("e1", "edge", "r", good)),
        NodeScrape("e2", "edge", metrics=exposition("e2", "edge", "r", other)),
        NodeScrape("e3", "edge", error="e3 (http://x) is unreachable: refused"),
    ]
    report = build_report(scrapes)
    assert report.tiers[0].rating == "excellent"
    assert report.unreachable == [("e3", "e3 (http://x) is unreachable: refused")]
    titles = [r.title for r in report.recommendations]
    assert "e3 was not scraped" in titles
    assert "2 nodes fetch from the origin" in titles
    assert any(r.severity == "ok" and "excellent" in r.title for r in report.recommendations)


def test_error_rates_are_reported_with_the_failing_parent() -> None:
    fig = figures(hits=50, misses=50, size=SIZE, upstream={"regional-9": (50, 0)}, errors_5xx=10)
    fig.upstream["regional-9"].failures = 10
    report = build_report([NodeScrape("e1", "edge", metrics=exposition("e1", "edge", "r", fig))])
    assert report.tiers[0].rate_5xx == pytest.approx(0.1)
    rec = next(r for r in report.recommendations if "5xx" in r.title)
    assert rec.evidence == ("upstream regional-9: 10 failed of 50",)


def test_ratings_and_path_merging() -> None:
    assert [rating(x) for x in (0.99, 0.95, 0.9, 0.85, 0.5, None)] == [
        "excellent",
        "excellent",
        "good",
        "fair",
        "poor",
        None,
    ]
    merged = merge_paths(
        [
            [{"path": "/a", "count": 1.0, "recent": 1.0}, {"path": "/b", "count": 3.0}],
            [{"path": "/a", "count": 4.0, "recent": 0.1}],
        ],
        top=5,
    )
    assert [(p.path, p.count) for p in merged] == [("/a", 5.0), ("/b", 3.0)]


def test_text_and_page_render_the_model() -> None:
    scrapes = three_tier_scrapes()
    scrapes[0] = NodeScrape(
        "edge-1",
        "edge",
        metrics=scrapes[0].metrics,
        popular=[{"path": "/<script>alert(1)</script>", "count": 9.0, "recent": 9.0}],
    )
    report = build_report(scrapes, price_per_gb=0.09)
    text = render_text(report)
    assert "86.7%" in text and "origin offload" in text and "recommendations" in text
    page = render_html(report)
    assert page.count('class="bar"') == 2 * len(report.tiers)
    assert 'id="ttfb-chart"' in page and 'class="bucket"' in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no fetches
