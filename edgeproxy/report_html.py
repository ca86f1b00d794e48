"""The report as one self-contained HTML page (``edgeproxy report --html FILE``).

Contract: :func:`render_html` turns a :class:`~edgeproxy.report.Report` into a page with its
CSS inline and its charts as inline SVG (no script, no external file, no font download), so
it opens from disk in any browser and can be mailed. Charts: ``svg#hit-ratio-chart`` (request
and byte hit ratio per tier, with the 90% and 95% marks) and ``svg#ttfb-chart`` (the share of
answers per TTFB bucket, one series per tier); then the tables of the text report and the
recommendations. Every name and path is escaped. Pure: no I/O.
"""

from __future__ import annotations

import math
from html import escape

from edgeproxy.report import (
    Report,
    TierReport,
    human_bytes,
    money,
    ms,
    pct,
)

PALETTE = ("#2f6fde", "#e8871e", "#2aa876", "#c2417a", "#7b5cd6", "#8a8a8a")
SEVERITY_COLORS = {"critical": "#b3261e", "warning": "#b26a00", "info": "#2f6fde", "ok": "#2aa876"}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #1d1d1f; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child, td.path { text-align: left; }
.summary { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ddd; border-radius: 8px; padding: 0.6em 1em; min-width: 12em; }
.card b { display: block; font-size: 1.4em; }
.charts { display: flex; flex-wrap: wrap; gap: 2em; }
.rec { border-left: 4px solid; padding: 0.3em 0.8em; margin: 0.6em 0; background: #fafafa; }
.rec ul { margin: 0.3em 0; } code { background: #f0f0f0; padding: 0 0.2em; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
"""


def _bucket_label(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf"
    if bound < 1:
        return f"{bound * 1000:g}ms"
    return f"{bound:g}s"


def hit_ratio_svg(tiers: list[TierReport], width: int = 460, height: int = 260) -> str:
    """Grouped bars: request and byte hit ratio per tier, 0-100%, marks at 90% and 95%."""
    left, right, top, bottom = 44, 10, 24, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg id="hit-ratio-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="hit ratio per tier">',
        f'<text x="{left}" y="14">hit ratio per tier (requests, bytes)</text>',
    ]
    for tick in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - tick / 100)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}%</text>')
    for mark, color in ((90, "#b26a00"), (95, "#2aa876")):
        y = top + plot_h * (1 - mark / 100)
        parts.append(
            f'<line class="target" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{color}" stroke-dasharray="4 3"/>'
        )
    n = max(len(tiers), 1)
    group = plot_w / n
    bar = min(36.0, group / 3)
    for i, tier in enumerate(tiers):
        x0 = left + group * i + group / 2 - bar
        for j, (value, color, what) in enumerate(
            ((tier.hit_ratio, PALETTE[0], "requests"), (tier.byte_hit_ratio, PALETTE[1], "bytes"))
        ):
            v = value or 0.0
            h = plot_h * v
            x = x0 + j * bar
            parts.append(
                f'<rect class="bar" data-tier="{escape(tier.role)}" data-kind="{what}" '
                f'x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{escape(tier.role)} {what}: {pct(value)}</title></rect>'
            )
            parts.append(
                f'<text x="{x + bar / 2 - 1:.1f}" y="{top + plot_h - h - 4:.1f}" '
                f'text-anchor="middle">{pct(value) if value is not None else "-"}</text>'
            )
        parts.append(
            f'<text x="{left + group * i + group / 2:.1f}" y="{height - bottom + 16}" '
            f'text-anchor="middle">{escape(tier.role)}</text>'
        )
    parts.append(
        f'<rect x="{left}" y="{height - 14}" width="10" height="10" fill="{PALETTE[0]}"/>'
        f'<text x="{left + 14}" y="{height - 5}">requests</text>'
        f'<rect x="{left + 80}" y="{height - 14}" width="10" height="10" fill="{PALETTE[1]}"/>'
        f'<text x="{left + 94}" y="{height - 5}">bytes</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def ttfb_svg(
    tiers: list[TierReport], bounds: tuple[float, ...], width: int = 600, height: int = 260
) -> str:
    """The share of answers per TTFB bucket, one series (colour) per tier."""
    left, right, top, bottom = 44, 10, 24, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    series = [t for t in tiers if t.ttfb_hist is not None and t.ttfb_hist.count > 0]
    labels = [_bucket_label(b) for b in bounds]
    parts = [
        f'<svg id="ttfb-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="time to first byte histogram">',
        f'<text x="{left}" y="14">time to first byte: share of answers per bucket (le)</text>',
    ]
    for tick in (0, 25, 50, 75, 100):
        y = top + plot_h * (1 - tick / 100)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}%</text>')
    nb = max(len(labels), 1)
    slot = plot_w / nb
    bar = max(1.0, (slot - 4) / max(len(series), 1))
    for b, label in enumerate(labels):
        parts.append(
            f'<text x="{left + slot * b + slot / 2:.1f}" y="{top + plot_h + 14}" '
            f'text-anchor="middle" font-size="9">{escape(label)}</text>'
        )
    for s, tier in enumerate(series):
        hist = tier.ttfb_hist
        assert hist is not None
        total = hist.count
        color = PALETTE[s % len(PALETTE)]
        for b, c in enumerate(hist.counts[:nb]):
            share = c / total if total else 0.0
            h = plot_h * share
            x = left + slot * b + 2 + s * bar
            parts.append(
                f'<rect class="bucket" data-tier="{escape(tier.role)}" '
                f'data-le="{escape(labels[b])}" x="{x:.1f}" y="{top + plot_h - h:.1f}" '
                f'width="{max(bar - 1, 0.5):.1f}" height="{h:.1f}" fill="{color}">'
                f"<title>{escape(tier.role)} le {escape(labels[b])}: {c:.0f} "
                f"({share * 100:.1f}%)</title></rect>"
            )
        parts.append(
            f'<rect x="{left + 90 * s}" y="{height - 14}" width="10" height="10" '
            f'fill="{color}"/><text x="{left + 90 * s + 14}" y="{height - 5}">'
            f"{escape(tier.role)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _card(title: str, value: str, detail: str = "") -> str:
    return f'<div class="card">{escape(title)}<b>{escape(value)}</b>{escape(detail)}</div>'


def render_html(report: Report, title: str = "edgeproxy report") -> str:
    """The whole page (see the module docstring)."""
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
    ]
    client = report.client_tier or "-"
    out.append('<div class="summary" id="summary">')
    out.append(
        _card(
            f"origin offload (bytes, vs {client})",
            pct(report.origin_offload),
            f"requests: {pct(report.origin_request_offload)}",
        )
    )
    out.append(
        _card(
            "bandwidth saved",
            human_bytes(report.saved_bytes),
            f"{money(report.saved_cost)} at {money(report.price_per_gb)}/GB",
        )
    )
    out.append(
        _card(
            f"{client} requests",
            f"{report.client_requests:.0f}",
            f"{human_bytes(report.client_bytes)} served",
        )
    )
    out.append(
        _card(
            "origin",
            f"{report.origin_requests:.0f} requests",
            f"p50 {ms(report.origin_latency.p50)}, p99 {ms(report.origin_latency.p99)}",
        )
    )
    out.append("</div>")
    out.append('<h2>Charts</h2><div class="charts">')
    out.append(hit_ratio_svg(report.tiers))
    out.append(ttfb_svg(report.tiers, report.bucket_bounds))
    out.append("</div>")
    out.append('<h2>Tiers</h2><table id="tiers"><tr>')
    for head in (
        "tier",
        "nodes",
        "requests",
        "hit ratio",
        "rating",
        "byte hit ratio",
        "upstream offload",
        "bandwidth saved",
        "cost",
        "p50 TTFB",
        "p99 TTFB",
        "4xx",
        "5xx",
    ):
        out.append(f"<th>{escape(head)}</th>")
    out.append("</tr>")
    for t in report.tiers:
        cells = (
            t.role,
            ", ".join(t.nodes),
            f"{t.requests:.0f}",
            pct(t.hit_ratio),
            t.rating or "-",
            pct(t.byte_hit_ratio),
            pct(t.upstream_offload),
            human_bytes(t.saved_bytes),
            money(t.saved_cost),
            ms(t.ttfb.p50),
            ms(t.ttfb.p99),
            pct(t.rate_4xx),
            pct(t.rate_5xx),
        )
        out.append('<tr class="tier">' + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    out.append('<h2>TTFB by tier and region</h2><table id="regions">')
    out.append("<tr><th>tier</th><th>region</th><th>answers</th><th>p50</th><th>p99</th></tr>")
    for r in report.regions:
        out.append(
            f"<tr><td>{escape(r.role)}</td><td>{escape(r.region)}</td>"
            f"<td>{r.ttfb.count:.0f}</td><td>{ms(r.ttfb.p50)}</td><td>{ms(r.ttfb.p99)}</td></tr>"
        )
    out.append("</table>")
    out.append("<h2>Top paths</h2>")
    for t in report.tiers:
        if not t.top_paths and not t.missed_paths:
            continue
        out.append(f'<h3>{escape(t.role)}</h3><table class="paths">')
        out.append("<tr><th>path</th><th>count</th><th>trend</th><th>missed</th></tr>")
        missed = {p.path: p.count for p in t.missed_paths}
        listed = set()
        for p in t.top_paths:
            listed.add(p.path)
            out.append(
                f'<tr><td class="path">{escape(p.path)}</td><td>{p.count:.1f}</td>'
                f"<td>{escape(p.trend)}</td><td>{missed.get(p.path, 0.0):.1f}</td></tr>"
            )
        for p in t.missed_paths:  # missed often, requested less than the top paths
            if p.path not in listed:
                out.append(
                    f'<tr><td class="path">{escape(p.path)}</td><td>-</td><td>-</td>'
                    f"<td>{p.count:.1f}</td></tr>"
                )
        out.append("</table>")
    out.append('<h2>Recommendations</h2><div id="recommendations">')
    for rec in report.recommendations:
        color = SEVERITY_COLORS.get(rec.severity, "#888")
        out.append(
            f'<div class="rec {escape(rec.severity)}" style="border-color:{color}">'
            f"<b>[{escape(rec.severity)}] {escape(rec.title)}</b><br>{escape(rec.advice)}"
        )
        if rec.evidence:
            out.append("<ul>" + "".join(f"<li>{escape(e)}</li>" for e in rec.evidence) + "</ul>")
        out.append("</div>")
    if not report.recommendations:
        out.append("<p>None.</p>")
    out.append("</div>")
    if report.unreachable:
        out.append("<h2>Not scraped</h2><ul>")
        out.extend(f"<li>{escape(name)}: {escape(why)}</li>" for name, why in report.unreachable)
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
