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


def _hash_script(action: str) -> str:
    return "from partners.oauth.hashers import ClientSecretHasher as H\n" + (
        "print(H().encode('partner-secret', 'salt1'))"
        if action == "encode"
        else "import sys; print(H().verify('partner-secret', sys.stdin.read().strip()))"
    )


def _client_secret_hash(env: dict[str, str], *, action: str, encoded: str = "") -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _hash_script(action)],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SECRET_KEY")},
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "ALLOWED_HOSTS": "id.example.com",
            "CACHE_URL": "redis://127.0.0.1:6379/1",
            **env,
        },
        input=encoded,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_client_secrets_survive_a_secret_key_rotation_from_the_environment():
    """SECRET_KEY_FALLBACKS and CLIENT_SECRET_HMAC_KEY come from the environment: a partner's
    secret hashed under the old SECRET_KEY still verifies after a rotation that keeps the old
    key as a fallback, or under a fixed CLIENT_SECRET_HMAC_KEY; without either it does not."""
    old, new = "old-" + "k" * 60, "new-" + "k" * 60
    encoded = _client_secret_hash({"SECRET_KEY": old}, action="encode")
    assert encoded.startswith("tokenpass_hmac_sha256$salt1$")

    def verifies(env: dict[str, str]) -> str:
        return _client_secret_hash(env, action="verify", encoded=encoded)

    assert verifies({"SECRET_KEY": new}) == "False"
    assert verifies({"SECRET_KEY": new, "SECRET_KEY_FALLBACKS": old}) == "True"
    fixed = "hmac-" + "h" * 60
    with_fixed = _client_secret_hash(
        {"SECRET_KEY": old, "CLIENT_SECRET_HMAC_KEY": fixed}, action="encode"
    )
    assert (
        _client_secret_hash(
            {"SECRET_KEY": new, "CLIENT_SECRET_HMAC_KEY": fixed},
            action="verify",
            encoded=with_fixed,
        )
        == "True"
    )


_PREPARED_SCRIPT = """
from django.db import connection
for _ in range(2):
    with connection.server_binding_cursor() as cursor:
        cursor.execute("SELECT %s::int * 2", [21])
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM pg_prepared_statements")
    print("prepared", cursor.fetchone()[0])
"""


def test_prepared_statements_follow_the_environment():
    """DATABASE_PREPARED_STATEMENTS=false, for a proxy that pools transactions, leaves every
    statement unprepared; by default the token endpoint's statements are prepared."""
    env = {
        **PRODUCTION_BASICS,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "CACHE_URL": "redis://127.0.0.1:6379/1",
    }
    for setting, expected in ((None, "prepared 1"), ("false", "prepared 0")):
        overrides = env if setting is None else {**env, "DATABASE_PREPARED_STATEMENTS": setting}
        result = _manage("shell", "-c", _PREPARED_SCRIPT, env_overrides=overrides)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == expected, result.stdout


_POOL_SCRIPT = """
from django.db import connection
print(connection.settings_dict["OPTIONS"].get("pool"), connection.settings_dict["CONN_MAX_AGE"])
"""


def test_the_connection_pool_follows_the_environment():
    """DATABASE_POOL_MAX_SIZE (which config/gunicorn.py sets for its workers) puts PostgreSQL
    connections in a pool of that size per process, which then keeps them between requests in
    place of CONN_MAX_AGE; unset, connections persist per thread; SQLite never pools."""
    env = {
        **PRODUCTION_BASICS,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
        "CACHE_URL": "redis://127.0.0.1:6379/1",
        "CONN_MAX_AGE": "60",
    }
    cases = (
        ({}, "None 60"),
        (
            {"DATABASE_POOL_MAX_SIZE": "6"},
            "{'min_size': 2, 'max_size': 6, 'timeout': 10.0} 0",
        ),
        (
            {
                "DATABASE_POOL_MAX_SIZE": "1",
                "DATABASE_POOL_MIN_SIZE": "4",
                "DATABASE_POOL_TIMEOUT": "2.5",
            },
            "{'min_size': 1, 'max_size': 1, 'timeout': 2.5} 0",
        ),
        (
            {"DATABASE_POOL_MAX_SIZE": "6", "DATABASE_URL": "sqlite:////tmp/pool-probe.sqlite3"},
            "None 60",
        ),
    )
    for overrides, expected in cases:
        result = _manage("shell", "-c", _POOL_SCRIPT, env_overrides={**env, **overrides})
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == expected, result.stdout
