"""The production-like compose file: it cannot run here (no Docker engine), so it
is validated by Compose itself where its binary exists, and by reading it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["migrate", "web", "worker", "worker-knowledge", "beat", "flower"]
LONG_RUNNING = ["postgres", "redis", "web", "worker", "worker-knowledge", "beat", "flower"]
SEED_SETTINGS = ["AGENTOS_ENABLED", "AGENTOS_DEFAULT_HOST", "AGENTOS_DEFAULT_PORT", "AGENTOS_CACHE_TTL",
                 "AGENTOS_INCLUDE_VAULT_AGENTS", "AGENTOS_AUTO_RELOAD", "AGENTOS_DEBUG"]


def command(service: str) -> str:
    value = SERVICES[service]["command"]
    return " ".join(value) if isinstance(value, list) else value


def compose_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "docker-compose"
    return shutil.which("docker-compose") or (str(beside_python) if beside_python.exists() else None)


def test_compose_itself_accepts_the_file():
    binary = compose_binary()
    if binary is None:
        pytest.skip("no Compose v2 binary on this machine")
    env = {**os.environ, "SECRET_KEY": "x", "FLOWER_BASIC_AUTH": "a:b"}
    result = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], env=env,
                            capture_output=True, text=True)
    # this Compose build reports errors on stderr and may still exit 0: check both
    assert result.returncode == 0 and "error" not in result.stderr.lower(), result.stderr


def test_compose_refuses_to_start_without_a_secret_key():
    binary = compose_binary()
    if binary is None:
        pytest.skip("no Compose v2 binary on this machine")
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "FLOWER_BASIC_AUTH")}
    result = subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], env=env,
                            capture_output=True, text=True)
    assert "required variable SECRET_KEY is missing" in result.stderr


def test_every_part_of_the_system_is_a_service():
    assert set(LONG_RUNNING + ["migrate"]) <= set(SERVICES)
    assert "pgvector" in SERVICES["postgres"]["image"]
    assert SERVICES["redis"]["image"].startswith("redis")


def test_app_services_build_from_this_repository_and_get_their_configuration():
    for name in APP_SERVICES:
        service = SERVICES[name]
        assert service["build"] == ".", name
        env = service["environment"]
        for key in ["DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY", *SEED_SETTINGS]:
            assert key in env, (name, key)
        assert str(env["OPIE_EMBEDDED"]) == "0"
        assert env["DATABASE_URL"].startswith("postgresql://") and "@postgres:" in env["DATABASE_URL"]


def test_each_process_runs_the_right_program():
    assert command("web").startswith("gunicorn config.asgi:application")
    assert "--worker-class uvicorn_worker.UvicornWorker" in command("web")  # as the Procfile serves it
    assert "worker" in command("worker") and "--pool threads" in command("worker")
    assert "--pool prefork" in command("worker-knowledge")
    assert "beat" in command("beat") and "DatabaseScheduler" in command("beat")
    assert "flower" in command("flower")
    assert "migrate" in command("migrate")


def test_workers_get_less_cpu_than_the_web_when_they_compete():
    web = SERVICES["web"].get("cpu_shares", 1024)
    for name in ("worker", "worker-knowledge", "flower"):
        assert SERVICES[name]["cpu_shares"] < web, name


def test_the_image_serves_the_same_asgi_application():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert '"config.asgi:application"' in dockerfile and '"uvicorn_worker.UvicornWorker"' in dockerfile


def test_every_queue_has_a_worker():
    consumed = set()
    for name in ("worker", "worker-knowledge"):
        parts = command(name).split()
        consumed |= set(parts[parts.index("-Q") + 1].split(","))
    assert consumed == {"agents", "sync", "knowledge", "webhooks"}


def test_long_running_services_have_health_checks_and_wait_for_their_dependencies():
    for name in LONG_RUNNING:
        assert "healthcheck" in SERVICES[name], name
    for name in ("web", "worker", "beat", "flower"):
        depends = SERVICES[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_flower_is_authenticated_and_ports_stay_on_loopback():
    assert "FLOWER_BASIC_AUTH" in SERVICES["flower"]["environment"]
    for name in ("web", "flower"):
        assert all(port.startswith("127.0.0.1:") for port in SERVICES[name]["ports"])


def test_the_image_installs_the_pinned_requirements():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile and "pip install -r requirements.lock" in dockerfile
    assert "USER opie" in dockerfile
