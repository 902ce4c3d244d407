"""Production settings: `check --deploy` is clean and no secret has a default."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args: str, env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {
        k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "ALLOWED_HOSTS", "CACHE_URL"}
    }
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings.production", **env_overrides})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy_with_no_warnings():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env_overrides={
            "SECRET_KEY": "x" * 20 + "a-long-random-production-secret-value-0123456789",
            "ALLOWED_HOSTS": "id.example.com",
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
            "CACHE_URL": "redis://127.0.0.1:6379/1",
        },
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key():
    result = _manage("check", env_overrides={"ALLOWED_HOSTS": "id.example.com"})
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


PRODUCTION_BASICS = {
    "SECRET_KEY": "x" * 20 + "a-long-random-production-secret-value-0123456789",
    "ALLOWED_HOSTS": "id.example.com",
}


def test_production_settings_refuse_to_start_without_a_cache_url():
    result = _manage("check", env_overrides=PRODUCTION_BASICS)
    assert result.returncode != 0
    assert "CACHE_URL" in result.stderr


def test_production_settings_refuse_a_cache_each_worker_keeps_to_itself():
    # Rate limits counted in a per-process cache would multiply by the number of workers.
    for url in ("locmemcache://", "dummycache://"):
        result = _manage("check", env_overrides={**PRODUCTION_BASICS, "CACHE_URL": url})
        assert result.returncode != 0, url
        assert "every worker shares" in result.stderr, result.stderr
