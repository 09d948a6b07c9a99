"""docker-compose.yml, deploy/Dockerfile and the Alertmanager example.

No Docker engine runs here: `docker-compose config` validates the file against the Compose
schema without one (Debian's `docker-compose` package, v1, which .ci/run installs). The structure
(health checks, start order, a scalable worker) is read with PyYAML. `amtool` (Debian's
`prometheus-alertmanager`) checks the Alertmanager example. Locally a missing tool skips, under
CI=true it fails.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
ADPULSE_SERVICES = {"tracker", "worker", "exporter"}
SERVICES = {"kafka", "redis", "prometheus", "alertmanager", "grafana", *ADPULSE_SERVICES}


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        _unavailable(f"{name} not found: apt-get install {package}")
    return found


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        _unavailable("PyYAML is not installed: pip install pyyaml")
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


# The secrets compose refuses to start without.
REQUIRED = {"ADPULSE_API_TOKEN": "a-token", "GRAFANA_ADMIN_PASSWORD": "a-password"}


def run(
    command: list[str], settings: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # The settings the file interpolates are unset, as on a fresh machine, except `settings`.
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("ADPULSE_", "GRAFANA_"))
    }
    environment.update(settings or {})
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, env=environment
    )


def test_compose_file_is_valid() -> None:
    docker_compose = _tool("docker-compose", "docker-compose")
    result = run([docker_compose, "-f", str(COMPOSE), "config", "-q"], REQUIRED)
    assert result.returncode == 0, result.stderr
    services = run([docker_compose, "-f", str(COMPOSE), "config", "--services"], REQUIRED)
    assert set(services.stdout.split()) == SERVICES


@pytest.mark.parametrize("given", [(), ("ADPULSE_API_TOKEN",), ("GRAFANA_ADMIN_PASSWORD",)])
def test_compose_refuses_to_start_without_its_secrets(given: tuple[str, ...]) -> None:
    docker_compose = _tool("docker-compose", "docker-compose")
    settings = {name: REQUIRED[name] for name in given}
    result = run([docker_compose, "-f", str(COMPOSE), "config", "-q"], settings)
    assert result.returncode != 0
    for name in set(REQUIRED) - set(given):
        assert f"{name} is required" in result.stderr or f"and so is {name}" in result.stderr


def test_no_internal_port_is_published_on_every_interface() -> None:
    """The resolved config, as compose will run it: only the tracker and Grafana are public."""
    docker_compose = _tool("docker-compose", "docker-compose")
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        _unavailable("PyYAML is not installed: pip install pyyaml")
    result = run([docker_compose, "-f", str(COMPOSE), "config"], REQUIRED)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    public = {"tracker", "grafana"}
    published: dict[str, list[str]] = {}
    for name, service in resolved["services"].items():
        for mapping in service.get("ports", []):
            if isinstance(mapping, dict):  # long form: no host_ip means every interface
                host_ip = mapping.get("host_ip", "0.0.0.0")
            else:
                parts = str(mapping).split(":")
                host_ip = parts[0] if len(parts) == 3 else "0.0.0.0"
            published.setdefault(name, []).append(host_ip)
    for name, addresses in published.items():
        if name not in public:
            assert set(addresses) == {"127.0.0.1"}, (name, addresses)
    assert "redis" not in published
    assert set(published) >= public
    grafana = resolved["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == REQUIRED["GRAFANA_ADMIN_PASSWORD"]
    tracker = resolved["services"]["tracker"]["environment"]
    assert tracker["ADPULSE_API_TOKEN"] == REQUIRED["ADPULSE_API_TOKEN"]


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_services_start_after_what_they_need(compose: dict[str, Any]) -> None:
    needs = {
        "tracker": {"kafka"},
        "worker": {"kafka", "redis"},
        "exporter": {"redis"},
        "prometheus": {"alertmanager"},
        "grafana": {"prometheus"},
    }
    services = compose["services"]
    for name, required in needs.items():
        depends_on = services[name]["depends_on"]
        assert set(depends_on) >= required, name
        for dependency in depends_on:
            assert depends_on[dependency] == {"condition": "service_healthy"}, (name, dependency)
            assert dependency in services


def test_worker_can_be_scaled(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    prometheus = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert re.search(r"dns_sd_configs:\n\s+- names: \[\"worker\"\]", prometheus)


def test_adpulse_processes_share_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ADPULSE_SERVICES:
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["command"][0] == name
        assert service["command"][1:3] == ["--host", "0.0.0.0"]
        assert service["environment"]["ADPULSE_KAFKA"] == "kafka:9092"
        assert service["environment"]["ADPULSE_REDIS_URL"] == "redis://redis:6379/0"
    assert services["tracker"]["command"][3:] == ["--port", "8080"]
    assert services["worker"]["command"][3:] == ["--port", "9109"]
    assert services["exporter"]["command"][3:] == ["--port", "9108"]
    assert any(v.endswith(":/var/lib/adpulse/spool") for v in services["tracker"]["volumes"])


def test_kafka_is_one_kraft_node(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    environment = kafka["environment"]
    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert environment["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert "INTERNAL://kafka:9092" in environment["KAFKA_ADVERTISED_LISTENERS"]
    assert environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 1


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["command"][:3] == ["redis-server", "--appendonly", "yes"]
    # Evicting keys would drop counters and click ids in silence; a full Redis must refuse.
    policy = redis["command"].index("--maxmemory-policy")
    assert redis["command"][policy + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_published_ports_are_documented(compose: dict[str, Any]) -> None:
    header = COMPOSE.read_text().split("\nx-adpulse", 1)[0]
    for service in compose["services"].values():
        for mapping in service.get("ports", []):
            host_port = str(mapping).split(":")[-2]
            assert re.search(rf"^#\s+{host_port}\s+\w", header, flags=re.MULTILINE), host_port


def test_prometheus_and_grafana_get_the_deploy_files(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = services["prometheus"]["volumes"] + services["grafana"]["volumes"]
    volumes += services["alertmanager"]["volumes"]
    for source in (
        "./deploy/prometheus/prometheus.yml",
        "./deploy/prometheus/rules",
        "./deploy/grafana/provisioning",
        "./deploy/grafana/dashboards",
        "./deploy/alertmanager/alertmanager.yml",
    ):
        assert any(volume.startswith(f"{source}:") for volume in volumes), source
        assert (ROOT / source).exists(), source


def test_the_exporter_has_the_currency_the_dashboard_names(compose: dict[str, Any]) -> None:
    # The money panels' titles read the exporter's reporting currency (its info metric).
    environment = compose["services"]["exporter"]["environment"]
    assert environment["ADPULSE_CURRENCY"] == "${ADPULSE_CURRENCY:-USD}"


def test_dockerfile_runs_adpulse_as_a_user() -> None:
    lines = [
        line.strip() for line in DOCKERFILE.read_text().splitlines() if line.strip()[:1] not in "#"
    ]
    assert [line for line in lines if line.startswith("FROM")][-1] == "FROM python:3.11-slim"
    users = [line for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("USER root", "USER 0")
    assert 'ENTRYPOINT ["adpulse"]' in lines


def test_alertmanager_example_is_valid() -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    result = run([amtool, "check-config", str(ALERTMANAGER)])
    assert result.returncode == 0, result.stdout + result.stderr
