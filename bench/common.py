"""What the HTTP benchmarks (login, token, wallet) share: the production-like environment
gunicorn serves Tokenpass with, starting and stopping gunicorn, ports, databases and the
CPU time of a server's processes. Import it as ``bench.common`` with the project root on
sys.path."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def production_env(*, database: str, **overrides: str) -> dict[str, str]:
    """config.settings.production as deployed (DEBUG off, the shared Redis cache production
    requires; under config/gunicorn.py a database connection pool per process, elsewhere
    persistent connections), on ``database``, with only what a plain-HTTP loopback run needs
    changed: no HTTPS redirect or HSTS, Celery eager."""
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": "bench-" + "k" * 60,
            "ALLOWED_HOSTS": "127.0.0.1",
            "SITE_URL": "https://127.0.0.1",
            "DATABASE_URL": f"{PG_URL}/{database}",
            "CONN_MAX_AGE": "600",
            # Shared by every worker, as production requires (rate limits count there).
            "CACHE_URL": os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/8"),
            "SECURE_SSL_REDIRECT": "false",
            "SECURE_HSTS_SECONDS": "0",
            "CELERY_BROKER_URL": "memory://",
            "CELERY_TASK_ALWAYS_EAGER": "true",
            "OIDC_KEYS_GENERATE": "true",
            "LOG_LEVEL": "WARNING",
            **overrides,
        }
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def recreate_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def start_gunicorn(
    app: str,
    *,
    port: int,
    workers: int,
    env: dict[str, str],
    python_path: Path | None = None,
    launcher: Sequence[str] = (),
) -> subprocess.Popen:
    """gunicorn with the deployment's settings file (config/gunicorn.py), from the project
    root, on 127.0.0.1:``port``; ``launcher`` runs it (valgrind, say) with this Python."""
    extra = ["--pythonpath", str(python_path)] if python_path else []
    interpreter = [*launcher, sys.executable] if launcher else []
    return subprocess.Popen(
        [
            *interpreter,
            str(Path(sys.executable).with_name("gunicorn")),
            "--config",
            "config/gunicorn.py",
            *extra,
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )


def wait_for_http(port: int, path: str = "/healthz", timeout: float = 60.0) -> None:
    """Until 127.0.0.1:``port`` answers ``path`` with anything below 500."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path, headers={"Host": "127.0.0.1"})
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path}")


def stop(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU time of a process and all its descendants (Linux /proc): a server's
    own cost, whatever else loads the machine."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = int(fields[11]) + int(fields[12])
    members = {root_pid}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in members and pid not in members:
                members.add(pid)
                grew = True
    return sum(times.get(pid, 0) for pid in members) / CLK_TCK
