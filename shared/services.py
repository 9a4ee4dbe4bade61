"""How each service starts, read from docker-compose.yml: the local runner, the tests and ``bench`` start
processes from the same commands, environment and replica counts that compose uses.
"""

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
INFRASTRUCTURE = frozenset({"redis"})


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: tuple[str, ...]
    environment: dict[str, str] = field(default_factory=dict)
    replicas: int = 1

    def start(self, overrides: dict[str, str] | None = None, log_path: Path | None = None) -> subprocess.Popen[bytes]:
        """Start one replica as a local process: compose's environment, then ``overrides`` on top."""
        env = {**os.environ, **self.environment, **(overrides or {})}
        argv = [sys.executable if self.command[0] == "python" else self.command[0], *self.command[1:]]
        output = log_path.open("ab") if log_path else None
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT if output else None)


def load_services(path: Path = COMPOSE_FILE) -> dict[str, ServiceSpec]:
    """The application services of the compose file (Redis excluded: the runner finds or starts one)."""
    spec = yaml.safe_load(path.read_text())
    services: dict[str, ServiceSpec] = {}
    for name, body in spec["services"].items():
        if name in INFRASTRUCTURE:
            continue
        environment = body.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        replicas = int((body.get("deploy") or {}).get("replicas", 1))
        command = tuple(str(part) for part in body["command"])
        services[name] = ServiceSpec(name, command, {k: str(v) for k, v in environment.items()}, replicas)
    return services
