"""``edgeproxy demo``: SeaweedFS with a demo bucket and one node in front of it, on loopback.

Contract: starts ``weed mini`` (credentials generated for this run, SigV4 enforced), creates the
bucket ``music`` with generated audio, image and JSON objects, starts one edge-role node on
``port`` whose store lives under ``workdir``, prints URLs to try, and on Ctrl-C (or SIGTERM)
stops the node and the origin it started.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
from pathlib import Path

from edgeproxy.config import parse_config
from edgeproxy.democontent import catalog
from edgeproxy.seaweed import SeaweedServer

BUCKET = "music"


def demo_config(workdir: Path, port: int, endpoint: str) -> dict:
    return {
        "node": {
            "name": "edge-demo",
            "role": "edge",
            "listen": f"127.0.0.1:{port}",
            "admin_listen": f"127.0.0.1:{port + 1000}",
        },
        "store": {"path": str(workdir / "cache"), "max_size": "1GiB", "ram_size": "128MiB"},
        "upstream": {
            "s3": {
                "endpoint": endpoint,
                "bucket": BUCKET,
                "access_key_env": "EDGEPROXY_DEMO_ACCESS_KEY",
                "secret_key_env": "EDGEPROXY_DEMO_SECRET_KEY",
            }
        },
        "policy": [
            {
                "name": "audio",
                "path": "/audio/*",
                "default_ttl": "1d",
                "max_ttl": "365d",
                "query_keys": ["quality", "format", "bitrate"],
            },
            {
                "name": "images",
                "path": "/images/*",
                "default_ttl": "7d",
                "max_ttl": "365d",
                "compress": True,
                "query_keys": ["w", "h", "q", "format"],
            },
            {
                "name": "api",
                "path": "/api/*",
                "default_ttl": "5m",
                "max_ttl": "1h",
                "compress": True,
            },
            {"name": "default", "path": "*", "default_ttl": "1d", "max_ttl": "365d"},
        ],
    }


def run_demo(port: int = 8080, workdir: str = "var/demo") -> int:
    import uvloop

    from edgeproxy.app import RunningNode

    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    access, secret = "edgeproxy-demo", secrets.token_hex(16)
    origin = SeaweedServer(root / "seaweed", access, secret)
    print(f"starting SeaweedFS (S3 origin) in {root / 'seaweed'} ...", flush=True)
    origin.start()
    try:
        origin.create_bucket(BUCKET)
        keys = []
        for key, ctype, body, cc in catalog():
            origin.put_object(
                BUCKET, key, body, ctype, headers={"Cache-Control": cc} if cc else None
            )
            keys.append(key)
        print(f"origin {origin.endpoint}: bucket '{BUCKET}' with {len(keys)} objects", flush=True)
        data = demo_config(root, port, origin.endpoint)
        config = parse_config(data, "<demo>")
        env = dict(os.environ)
        env["EDGEPROXY_DEMO_ACCESS_KEY"] = access
        env["EDGEPROXY_DEMO_SECRET_KEY"] = secret

        async def main() -> None:
            node = RunningNode(config, environ=env)
            await node.start()
            base = f"http://127.0.0.1:{node.port}"
            print(
                f"edgeproxy node 'edge-demo' on {base}/  "
                f"(admin http://127.0.0.1:{node.admin_port}/healthz)"
            )
            print("try:")
            print(f"  curl -sv -o /dev/null {base}/{keys[0]} 2>&1 | grep -i cache-status")
            print(f"  curl -s {base}/api/tracks/0.json | head -5")
            print(
                f"  curl -s -o /dev/null -w '%{{http_code}}\\n' -H 'Range: bytes=0-99' "
                f"{base}/{keys[0]}"
            )
            print("Ctrl-C stops everything.", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            await node.stop(drain_timeout=2.0)

        uvloop.run(main())
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        print(f"edgeproxy demo: {exc}", file=sys.stderr)
        return 1
    finally:
        origin.stop()
        print("stopped.", flush=True)
    return 0
