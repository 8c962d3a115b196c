"""The deployment as an admin gets it: the compose file, its env, and one worker per GPU.

No Docker engine runs on the test machines, so the compose file is parsed and checked here
(services, healthchecks, volumes, secrets from the environment); `docker compose config`
runs too where the compose plugin exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
import yaml

from imagine.settings import Settings
from worker.gpus import GpuClaim, claim_gpu, gpu_key

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def env_of(service: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in (SERVICES[service].get("environment") or {}).items():
        if key == "<<":
            env.update(value)
        else:
            env[key] = value
    return env


def test_the_services_an_admin_expects() -> None:
    assert set(SERVICES) == {"redis", "bot", "worker", "dashboard", "prometheus"}


def test_redis_keeps_jobs_across_restarts_and_is_private() -> None:
    redis_svc = SERVICES["redis"]
    command = " ".join(redis_svc["command"])
    assert "--appendonly yes" in command
    assert "--requirepass ${REDIS_PASSWORD:?" in command  # refuses to start without a password
    assert any(v.endswith(":/data") for v in redis_svc["volumes"])
    assert "ports" not in redis_svc  # not published to the host
    assert redis_svc["healthcheck"]["test"][-1] == "ping"
    for service in ("bot", "worker", "dashboard"):
        assert SERVICES[service]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_secrets_come_from_the_environment_only() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert env_of("bot")["DISCORD_TOKEN"].startswith("${DISCORD_TOKEN:?")
    assert "redis://:${REDIS_PASSWORD" in env_of("worker")["REDIS_URL"]
    assert env_of("dashboard")["DASHBOARD_PASSWORD"].startswith("${DASHBOARD_PASSWORD:?")
    # no literal token or password anywhere
    assert not re.search(r"(TOKEN|PASSWORD):\s*[A-Za-z0-9]{8,}\s*$", text, re.M)
    example = (ROOT / ".env.example").read_text()
    for name in ("DISCORD_TOKEN", "REDIS_PASSWORD", "DASHBOARD_PASSWORD"):
        assert re.search(rf"^{name}=$", example, re.M), f"{name} must be empty in .env.example"


def test_every_setting_is_documented_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    for name, field in Settings.model_fields.items():
        env_name = f"IMAGINE_{name.upper()}"
        aliases = getattr(field.validation_alias, "choices", [])
        assert env_name in example or any(a in example for a in aliases), f"{env_name} missing"


def test_workers_get_gpus_and_a_model_cache_and_the_bot_no_torch() -> None:
    worker = SERVICES["worker"]
    device = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert env_of("worker")["IMAGINE_GPU"] == "auto"
    assert any(v.startswith("hf-cache:") for v in worker["volumes"])
    assert env_of("worker")["HF_HOME"] == "/cache/huggingface"
    bot_dockerfile = (ROOT / SERVICES["bot"]["build"]["dockerfile"]).read_text()
    assert '".[bot]"' in bot_dockerfile and "worker]" not in bot_dockerfile


def test_dashboard_reads_rq_with_json_and_basic_auth() -> None:
    command = SERVICES["dashboard"]["command"]
    assert "rq-dashboard -j" in command and "--password" in command
    assert all(p.startswith("127.0.0.1:") for p in SERVICES["dashboard"]["ports"])


def test_prometheus_scrapes_bot_and_workers() -> None:
    config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["imagine-bot"]["static_configs"][0]["targets"] == ["bot:9100"]
    assert jobs["imagine-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
    assert env_of("worker")["IMAGINE_METRICS_PORT"] == 9100


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    env = tmp_path / ".env"
    env.write_text("DISCORD_TOKEN=x\nREDIS_PASSWORD=x\nDASHBOARD_PASSWORD=x\n")
    done = subprocess.run(["docker", "compose", "--env-file", str(env), "-f", str(ROOT / "docker-compose.yml"),
                           "config", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_each_worker_claims_its_own_gpu_and_a_dead_ones_gpu_comes_back(redis_conn: redis.Redis) -> None:
    claims = [claim_gpu(redis_conn, "host1", 2, f"worker-{i}", ttl_s=60) for i in range(2)]
    assert [c.index for c in claims] == [0, 1]
    with pytest.raises(SystemExit, match="all 2 GPU"):
        claim_gpu(redis_conn, "host1", 2, "worker-2", ttl_s=60)
    assert claim_gpu(redis_conn, "host2", 2, "worker-3", ttl_s=60).index == 0  # another host
    redis_conn.delete(gpu_key("host1", 1))  # worker-1 died: its claim expired
    assert claim_gpu(redis_conn, "host1", 2, "worker-4", ttl_s=60).index == 1
    assert not GpuClaim(redis_conn, "host1", 1, "worker-1", 60).renew()  # the dead one lost it
    claims[0].release()
    assert claim_gpu(redis_conn, "host1", 2, "worker-5", ttl_s=60).index == 0
