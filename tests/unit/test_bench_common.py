"""The benchmarks' shared pieces (benchmarks/common.py): the wrk output parser, the config
writers for nginx, Varnish and edgeproxy, the catalog, the soak's growth rule and the PNG
writer. Pure functions only: no process is started."""

from __future__ import annotations

import struct
import sys
import tomllib
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import common
from reference_scenario import growth_flags

from edgeproxy.config import load_config

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:8080/obj.bin
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.00us  402.11us  12.50ms   91.20%
    Req/Sec    61.20k     2.10k   65.00k    80.00%
  Latency Distribution
     50%  734.00us
     75%    0.90ms
     90%    1.20ms
     99%    2.31ms
  304512 requests in 5.00s, 1.50GB read
  Socket errors: connect 0, read 3, write 1, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  60902.40
Transfer/sec:    307.20MB
"""


def test_parse_wrk_reads_rates_latencies_transfer_and_errors() -> None:
    r = common.parse_wrk(WRK_OUTPUT)
    assert r.rps == pytest.approx(60902.40)
    assert r.requests == 304512
    assert r.duration == pytest.approx(5.0)
    assert r.mean_ms == pytest.approx(0.812)
    assert r.p50_ms == pytest.approx(0.734)
    assert r.p75_ms == pytest.approx(0.90)
    assert r.p90_ms == pytest.approx(1.20)
    assert r.p99_ms == pytest.approx(2.31)
    assert r.max_ms == pytest.approx(12.5)
    assert r.transfer_bps == pytest.approx(307.20 * 1024 * 1024)
    assert (r.socket_errors, r.non_2xx, r.errors) == (6, 7, 13)


def test_parse_wrk_without_errors_counts_none() -> None:
    text = WRK_OUTPUT.replace("  Socket errors: connect 0, read 3, write 1, timeout 2\n", "")
    text = text.replace("  Non-2xx or 3xx responses: 7\n", "")
    assert common.parse_wrk(text).errors == 0


def test_parse_wrk_takes_the_lua_summary_and_its_unrounded_latencies() -> None:
    line = (
        'BENCH_JSON {"latency_ms":{"mean":3.5,"p50":2.25,"p90":7.0,"p99":41.5,"max":90.0},'
        '"answered":{"edge":90,"regional":9,"miss":1},"summary":{"requests":100}}'
    )
    r = common.parse_wrk(WRK_OUTPUT + line + "\n")
    assert (r.mean_ms, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (3.5, 2.25, 7.0, 41.5, 90.0)
    assert r.script["answered"] == {"edge": 90, "regional": 9, "miss": 1}
    assert r.p75_ms == pytest.approx(0.90)  # not in the summary: the text's


def test_parse_wrk_refuses_output_without_a_summary() -> None:
    with pytest.raises(ValueError, match="cannot parse"):
        common.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(
    ("text", "ms"),
    [("812.00us", 0.812), ("1.23ms", 1.23), ("2.00s", 2000.0), ("1.50m", 90_000.0)],
)
def test_wrk_latency_units(text: str, ms: float) -> None:
    assert common.wrk_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512.00B", 512), ("1.50KB", 1536), ("3.00MB", 3 * 1024**2), ("1.00GB", 1024**3)],
)
def test_wrk_size_units(text: str, size: float) -> None:
    assert common.wrk_bytes(text) == pytest.approx(size)


def test_wrk_command_pins_rounds_and_passes_script_arguments(tmp_path: Path) -> None:
    args = common.wrk_command(
        "http://127.0.0.1:1",
        2.6,
        32,
        cpu="1",
        script=tmp_path / "x.lua",
        script_args=["catalog=/c"],
        headers={"Accept-Encoding": "gzip"},
    )
    assert args[:3] == ["taskset", "-c", "1"]
    assert "-d3s" in args and "--latency" in args
    assert args[args.index("-H") + 1] == "Accept-Encoding: gzip"
    assert args[-3:] == ["http://127.0.0.1:1", "--", "catalog=/c"]
    assert common.wrk_command("http://x", 5, 1, cpu=None)[0] == "wrk"


def _locations(conf: str) -> dict[str, str]:
    out = {}
    for block in conf.split("location ")[1:]:
        prefix, _, body = block.partition("{")
        out[prefix.strip()] = body.split("}")[0]
    return out


def test_nginx_conf_is_the_operator_config_with_the_reference_ttls(tmp_path: Path) -> None:
    conf = common.nginx_conf(common.NginxCache(tmp_path, 8080, 8333, origin_prefix="/bench"))
    for directive in (
        "sendfile on;",
        "tcp_nopush off;",
        "gzip on;",
        "keepalive_requests 100000;",
        "listen 127.0.0.1:8080",
        "server 127.0.0.1:8333;",
    ):
        assert directive in conf
    assert "worker_cpu_affinity" not in conf and "user root;" not in conf
    locations = _locations(conf)
    assert list(locations) == [prefix for prefix, _ in common.REFERENCE_TTLS]
    for prefix, ttl in common.REFERENCE_TTLS:
        body = locations[prefix]
        assert f"proxy_cache_valid 200 {ttl};" in body
        assert "proxy_cache_lock on;" in body
        assert "proxy_pass http://origin/bench$request_uri;" in body


def test_nginx_conf_options(tmp_path: Path) -> None:
    conf = common.nginx_conf(
        common.NginxCache(
            tmp_path,
            1,
            2,
            workers=2,
            cpu_affinity="01",
            gzip=False,
            valid_codes="200 206",
            ttls=(("/", "1h"),),
            cache_lock_timeout="5s",
            extra_location="slice 1m;\nproxy_set_header Range $slice_range;",
            run_as_root=True,
        )
    )
    assert "worker_processes 2;" in conf and "worker_cpu_affinity 01;" in conf
    assert "user root;" in conf and "gzip on;" not in conf
    body = _locations(conf)["/"]
    assert "proxy_cache_valid 200 206 1h;" in body
    assert "proxy_cache_lock_timeout 5s;" in body
    assert "slice 1m;" in body and "proxy_set_header Range $slice_range;" in body
    assert "proxy_pass http://origin$request_uri;" in body


def test_varnish_vcl_sets_a_ttl_per_prefix_only_without_origin_freshness() -> None:
    vcl = common.varnish_vcl(8333, "/bench")
    assert vcl.startswith("vcl 4.1;")
    assert 'set bereq.url = "/bench" + bereq.url;' in vcl
    assert "if (!beresp.http.Cache-Control && !beresp.http.Expires) {" in vcl
    ttl_lines = [line.strip() for line in vcl.splitlines() if "beresp.ttl" in line]
    assert ttl_lines == [f"set beresp.ttl = {ttl};" for _, ttl in common.REFERENCE_TTLS]
    assert 'if (bereq.url ~ "^/bench/audio/") {' in vcl
    assert '} elsif (bereq.url ~ "^/bench/api/") {' in vcl
    assert "} else {" in vcl
    assert "set beresp.do_gzip = true;" in vcl
    assert vcl.count("{") == vcl.count("}")
    assert "do_gzip" not in common.varnish_vcl(1, gzip=False)


def test_varnish_vcl_refuses_a_ttl_vcl_cannot_read() -> None:
    with pytest.raises(ValueError):
        common.varnish_vcl(1, ttls=(("/", "1 hour"),))


def test_edge_toml_loads_with_edgeproxys_own_loader(tmp_path: Path) -> None:
    text = common.edge_toml(
        "bench-1",
        8080,
        9080,
        tmp_path / "store",
        workers=2,
        ram_object_max="64KiB",
        s3_endpoint="http://127.0.0.1:8333",
        bucket="bench",
    )
    path = tmp_path / "node.toml"
    path.write_text(text)
    config = load_config(str(path))
    assert config.node.workers == 2 and config.store.ram_object_max == 64 * 1024
    ttl = {"1d": 86400, "7d": 7 * 86400, "5m": 300, "1h": 3600}
    assert [(p.path, p.default_ttl) for p in config.policies] == [
        ("*" if prefix == "/" else prefix + "*", ttl[t]) for prefix, t in common.REFERENCE_TTLS
    ]
    images = config.policy_for("/images/a.webp")
    assert images.header_keys == ("accept",) and images.compress
    assert not config.policy_for("/audio/a.mp3").compress


def test_edge_toml_with_parents(tmp_path: Path) -> None:
    text = common.edge_toml(
        "edge-1", 1, 2, tmp_path, role="edge", parents=["http://127.0.0.1:8081"]
    )
    assert tomllib.loads(text)["upstream"]["parents"] == ["http://127.0.0.1:8081"]
    with pytest.raises(ValueError):
        common.edge_toml("x", 1, 2, tmp_path)  # neither an origin nor parents


def test_catalog_is_deterministic_and_sizes_are_the_bodies() -> None:
    one = common.catalog(tracks=0, albums=2, api_docs=12, listings=2, seed=3)
    assert one == common.catalog(tracks=0, albums=2, api_docs=12, listings=2, seed=3)
    assert one != common.catalog(tracks=0, albums=2, api_docs=12, listings=2, seed=4)
    for o in one:
        if o.kind in ("json", "image") and o.size < 20_000:
            assert len(o.body()) == o.size, o.key
    kinds = {o.kind for o in one}
    assert kinds == {"image", "json", "bench"}
    listings = [o for o in one if o.key.startswith("api/listings/")]
    assert len(listings) == 2 and all(o.size >= 50 * 1024 for o in listings)
    for kind in ("image", "json"):
        ranks = [o.rank for o in one if o.kind == kind]
        assert sorted(ranks) == list(range(len(ranks)))


def test_catalog_file_lists_objects_by_rank_without_the_hit_objects(tmp_path: Path) -> None:
    objects = common.catalog(tracks=0, albums=1, api_docs=3, listings=0)
    path = tmp_path / "c.tsv"
    common.write_catalog_file(path, reversed(objects), prefix="/b")
    lines = [line.split("\t") for line in path.read_text().splitlines()]
    assert all(kind != "bench" for kind, _, _ in lines)
    assert [p for kind, p, _ in lines if kind == "json"] == [
        f"/b/api/tracks/{i}.json" for i in range(3)
    ]
    sizes = {f"/b/{o.key}": o.size for o in objects}
    assert all(int(size) == sizes[p] for _, p, size in lines)


def test_growth_flags() -> None:
    mib = 1024 * 1024
    assert growth_flags([100 * mib, 200 * mib, 200 * mib, 201 * mib], [10, 40, 40, 41]) == []
    flags = growth_flags([100 * mib, 150 * mib, 200 * mib, 260 * mib], [10, 20, 30, 60])
    assert len(flags) == 2 and flags[0].startswith("RSS +") and flags[1].startswith("fds +")
    assert growth_flags([mib], [1]) == []  # too few samples to tell


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks.append((kind, body))
        pos += 12 + length
    return chunks


def test_png_bar_chart_is_a_valid_rgb_png() -> None:
    png = common.png_bar_chart(
        "ratios", ["1 KiB hits", "JSON"], [("vs nginx", [1.5, 3.2]), ("vs Varnish", [None, 1.1])]
    )
    chunks = _png_chunks(png)
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (depth, color) == (8, 2)
    raw = zlib.decompress(chunks[1][1])
    assert len(raw) == height * (1 + 3 * width)
    # something was drawn in both series' colours
    for color_rgb in common.PALETTE[:2]:
        assert bytes(color_rgb) in raw


def test_canvas_text_draws_known_and_unknown_glyphs() -> None:
    canvas = common.Canvas(40, 20)
    end = canvas.text(1, 1, "a~", scale=1)
    assert end == 1 + 2 * 6
    ink = sum(row.count(b"\x00\x00\x00") for row in canvas.rows)
    assert ink > 0


def _wrk(rps: float) -> common.WrkResult:
    return common.WrkResult(
        rps=rps,
        requests=int(rps * 2),
        mean_ms=1.0,
        p50_ms=0.5,
        p75_ms=0.7,
        p90_ms=0.9,
        p99_ms=2.0,
        max_ms=5.0,
        transfer_bps=rps * 1024,
        duration=2.0,
        server_cpu=1.5,
    )


def test_run_report_renders_every_section_and_the_targets(tmp_path: Path) -> None:
    import argparse

    import reference_scenario as ref
    import run

    rows = []
    for system, rps in ((run.EP_RAM, 60_000), (run.EP_DISK, 50_000), (run.NGINX, 40_000)):
        rows.append(run.Row("hits 1 KiB (1 core)", system, [_wrk(rps), _wrk(rps * 1.1)]))
    rows.append(run.Row("hits 1 KiB (1 core)", run.VARNISH, [_wrk(45_000)]))
    for system, rps in ((run.EP, 30_000), (run.NGINX, 2_000), (run.VARNISH, 20_000)):
        rows.append(run.Row("JSON 50 KiB gzip (1 core)", system, [_wrk(rps)]))
    measured = {
        "requests": 1000,
        "mean_ms": 6.5,
        "p99_ms": 160.0,
        "answered": {"edge": 900, "regional": 95, "miss": 5},
        "edge_hit_ratio": 0.9,
        "origin_load": 0.005,
        "origin_bytes_share": 0.001,
        "errors": 0,
    }
    reference = {
        "options": ref.Options().__dict__,
        "runs": {ref.EDGEPROXY: [measured]},
        "summary": ref.summarize({ref.EDGEPROXY: [measured]}),
    }
    process = {
        "rss": {"start": 1, "mid": 2, "max": 3, "end": 3},
        "fds": {"start": 1, "mid": 2, "max": 3, "end": 3},
        "flags": [],
    }
    soak = {"seconds": 60, "wrk": {"requests": 5, "rps": 1.0}, "processes": {"edge-1": process}}
    herd = {
        "header": ["size", "system"],
        "rows": [["1 MiB", "edgeproxy-1w"]],
        "summary": {
            "edgeproxy-1w": {"ttfb_p50_ms": 20.0, "origin_requests": [1]},
            "varnish": {"ttfb_p50_ms": 30.0, "origin_requests": [1]},
        },
    }
    extra = {
        "settings": run.QUICK,
        "herd": herd,
        "late_range": {"error": "exit status 1", "log": "boom"},
        "reference": reference,
        "soak": soak,
    }
    out = tmp_path / "report.md"
    run.write_report(out, argparse.Namespace(), rows, extra, [("nproc", "2")], ["a note"], 61.0)
    text = out.read_text()
    for heading in (
        "## Targets (issue 9)",
        "## Hits",
        "## Compressed JSON hits",
        "## The herd",
        "## A late range",
        "## The reference deployment's scenario",
        "## Memory and soak (60 s)",
        "## Notes",
    ):
        assert heading in text, heading
    assert "| 1 KiB hits >= 1.5x nginx and >= 1.5x Varnish (1 core) | 1.50x nginx" in text
    assert "| compressed JSON hits >= 3x nginx | 15.00x | met |" in text
    assert "herd: waiters' TTFB p50 <= Varnish's" in text and "20 ms vs 30 ms | met" in text
    assert "6.50 ms mean, 99.50% offload | met" in text
    assert "late_range_bench.py failed: exit status 1" in text
    run.chart(rows, tmp_path / "chart.png", "t")
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
