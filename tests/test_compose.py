"""docker-compose.yml is valid and every service's command starts (as the local runner starts it)."""

from typing import Any

import yaml

from scripts.stack import Stack
from shared.services import COMPOSE_FILE, load_services


def compose() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return spec


def test_redis_persists_and_is_healthchecked() -> None:
    redis = compose()["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert redis["healthcheck"]["test"]


def test_every_app_service_waits_for_healthy_redis_and_has_a_healthcheck() -> None:
    services = compose()["services"]
    for name, body in services.items():
        if name == "redis":
            continue
        assert body["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert body["healthcheck"]["test"], name
        assert body["command"][:2] == ["python", "-m"], name
        if name.startswith("worker-"):
            assert int(body["deploy"]["replicas"]) >= 1, name


def test_local_runner_reads_the_same_definitions() -> None:
    services = compose()["services"]
    loaded = load_services()
    assert set(loaded) == set(services) - {"redis"}
    for name, spec in loaded.items():
        assert list(spec.command) == services[name]["command"]
        assert spec.replicas == int((services[name].get("deploy") or {}).get("replicas", 1))


def test_every_service_command_starts_and_reports_ready(stack: Stack) -> None:
    names = sorted(load_services(), key=lambda name: name != "gateway")  # the gateway first: it reports the rest
    for name in names:
        stack.start(name)  # waits for /health (gateway) or a heartbeat (workers), fails on exit
    health = stack.health()
    assert health is not None and health["redis"] is True
