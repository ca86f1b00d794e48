"""Shared fixtures: the real S3 origin (SeaweedFS, session-wide) and node factories."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.democontent import catalog
from edgeproxy.seaweed import SeaweedServer

ACCESS_KEY = "edgeproxy-test"
SECRET_KEY = "edgeproxy-test-secret-0123456789"
BUCKET = "music"

# The demo catalog, uploaded once per session: key -> (content_type, body)
CATALOG: dict[str, tuple[str, bytes]] = {}


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), ACCESS_KEY, SECRET_KEY)
    server.start()
    try:
        server.create_bucket(BUCKET)
        for key, ctype, body, cc in catalog(seed=11, tracks=2, images=2, api_docs=3):
            headers = {"Cache-Control": cc} if cc else None
            server.put_object(BUCKET, key, body, ctype, headers=headers)
            CATALOG[key] = (ctype, body)
        small = b"x" * 1024
        server.put_object(BUCKET, "small/one-kib.bin", small, "application/octet-stream")
        CATALOG["small/one-kib.bin"] = ("application/octet-stream", small)
        yield server
    finally:
        server.stop()


def node_config_dict(
    store: Path,
    upstream: dict[str, Any],
    *,
    name: str = "edge-t",
    role: str = "edge",
    policies: list[dict[str, Any]] | None = None,
    store_extra: dict[str, Any] | None = None,
    node_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A node config as the TOML file would hold it, on free loopback ports."""
    return {
        "node": {
            "name": name,
            "role": role,
            "listen": "127.0.0.1:0",
            "admin_listen": "127.0.0.1:0",
            **(node_extra or {}),
        },
        "store": {
            "path": str(store),
            "max_size": "256MiB",
            "ram_size": "32MiB",
            **(store_extra or {}),
        },
        "upstream": upstream,
        "policy": policies
        if policies is not None
        else [
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
            {"name": "api", "path": "/api/*", "default_ttl": "5m", "max_ttl": "1h"},
            {"name": "default", "path": "*", "default_ttl": "1h", "max_ttl": "1d"},
        ],
    }


def s3_upstream(endpoint: str) -> dict[str, Any]:
    return {
        "s3": {
            "endpoint": endpoint,
            "bucket": BUCKET,
            "region": "us-east-1",
            "access_key_env": "EP_TEST_ACCESS",
            "secret_key_env": "EP_TEST_SECRET",
        }
    }


S3_ENV = {"EP_TEST_ACCESS": ACCESS_KEY, "EP_TEST_SECRET": SECRET_KEY}

NodeFactory = Callable[..., Awaitable[Any]]


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Start nodes inside the test's event loop; all are stopped at teardown."""
    from edgeproxy.app import RunningNode
    from edgeproxy.config import parse_config

    started: list[RunningNode] = []

    async def factory(
        upstream: dict[str, Any],
        *,
        environ: dict[str, str] | None = None,
        store: Path | None = None,
        **kwargs: Any,
    ) -> RunningNode:
        store_path = store or tmp_path / f"store-{len(started)}"
        data = node_config_dict(store_path, upstream, **kwargs)
        config = parse_config(data, str(tmp_path / "test.toml"))
        if environ is None:
            # the test credentials, plus any EP_TEST_* a test set with monkeypatch.setenv
            environ = {k: v for k, v in os.environ.items() if k.startswith("EP_TEST_")}
            environ.update(S3_ENV)
        node = RunningNode(config, environ=environ)
        await node.start()
        started.append(node)
        return node

    yield factory
    for node in started:
        await node.stop(drain_timeout=1.0)


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Tests run on uvloop, the loop production nodes run on."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
async def relay(seaweed: SeaweedServer) -> AsyncIterator[Any]:
    """A counting relay in front of SeaweedFS: proves what reached the origin."""
    from tests.support.relay import CountingRelay

    r = CountingRelay(seaweed.endpoint)
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def origin() -> AsyncIterator[Any]:
    """A scripted in-process origin."""
    from tests.support.origin import ScriptedOrigin

    o = ScriptedOrigin()
    await o.start()
    yield o
    await o.stop()


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    import aiohttp

    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session
