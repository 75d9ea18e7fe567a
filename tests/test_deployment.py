"""docker-compose.yml against the Compose specification's schema, and the structure distributed mode relies on.

No Docker engine runs here, so ``docker compose config`` cannot; the schema (shipped by check-jsonschema, no
download) checks what it would, and the structural checks below what the schema cannot know.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from app.config import Settings
from worker.celery_app import QUEUES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(document), key=lambda e: list(e.path))
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    assert compose_errors(compose) == []


def test_the_schema_check_catches_mistakes(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capability"] = ["gpu"]
    broken["services"]["redis"]["healthcheck"]["interval"] = 5
    errors = compose_errors(broken)
    for path in ("services.api.depends_on", "services.worker-gpu.deploy", "services.redis.healthcheck.interval"):
        assert any(e.startswith(path) for e in errors), (path, errors)


def command(service: dict[str, Any]) -> list[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else list(value)


def test_services_and_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker-gpu", "worker-cpu"}
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    migrate = services["migrate"]
    assert command(migrate) == ["exprssl", "migrate"] and migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "worker-gpu", "worker-cpu"):
        assert services[name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }, name


def test_workers_consume_the_celery_queues_gpu_one_job_at_a_time_on_a_reserved_gpu(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gpu, cpu = command(services["worker-gpu"]), command(services["worker-cpu"])
    for argv in (gpu, cpu):
        assert argv[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    assert {"--pool=solo", "--concurrency=1"} <= set(gpu)
    assert gpu[gpu.index("-Q") + 1] == "gpu" and cpu[cpu.index("-Q") + 1] == "cpu"
    assert {gpu[gpu.index("-Q") + 1], cpu[cpu.index("-Q") + 1]} == set(QUEUES)
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_api_and_workers_share_registry_broker_and_artifact_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    fields = set(Settings.model_fields)
    for name in ("migrate", "api", "worker-gpu", "worker-cpu"):
        env = services[name]["environment"]
        # Every variable names a setting (a typo would be silently ignored by pydantic-settings).
        assert {k.removeprefix("EXPRSSL_").lower() for k in env} <= fields, name
        assert env["EXPRSSL_DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env[
            "EXPRSSL_DATABASE_URL"
        ]
        assert env["EXPRSSL_BROKER_URL"] == "redis://redis:6379/0"
    for name in ("api", "worker-gpu", "worker-cpu"):
        env = services[name]["environment"]
        assert f"artifacts:{env['EXPRSSL_ARTIFACT_DIR']}" in services[name]["volumes"], name
    assert "artifacts" in compose["volumes"] and "postgres-data" in compose["volumes"]


def test_dockerfile_pins_the_same_cpu_torch_as_the_makefile() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    pin = re.search(r"^TORCH_SPEC \?= (\S+)$", makefile, re.M)
    assert pin is not None
    assert f'ARG TORCH_SPEC="{pin.group(1)}"' in dockerfile
    assert 'ARG TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu"' in dockerfile
