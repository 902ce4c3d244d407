"""Password logins per second through the real login view, under gunicorn on PostgreSQL,
beside the same machine's raw Argon2 verifications per second.

The login view's job is mostly the password hash, so the figure that matters is the ratio:
everything other than the hash should cost under 15 % (ratio >= 0.85).

    .venv/bin/python bench/login/run.py [--seconds 20] [--workers 2] [--clients 4]

Only 127.0.0.1 is contacted; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.client import HTTPConnection
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "tokenpass_bench_login"
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PASSWORD = "bench-password-9f3k2m"
USERS = 50


def bench_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": "bench-" + "k" * 60,
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": f"{PG_URL}/{DB_NAME}",
            "CONN_MAX_AGE": "600",
            # Shared by every worker, as production requires (rate limits count there).
            "CACHE_URL": os.environ.get("BENCH_CACHE_URL", "redis://127.0.0.1:6379/8"),
            "SECURE_SSL_REDIRECT": "false",
            "SECURE_HSTS_SECONDS": "0",
            "CELERY_BROKER_URL": "memory://",
            "CELERY_TASK_ALWAYS_EAGER": "true",
            "LOG_LEVEL": "WARNING",
            # Logins come from one address; the lock-out must not trip on successful logins.
            "AXES_FAILURE_LIMIT": "1000000",
        }
    )
    return env


def run(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def prepare_database(env: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    python = sys.executable
    run([python, "manage.py", "migrate", "--noinput"], env)
    run([python, "manage.py", "collectstatic", "--noinput"], env)
    script = (
        "from django.contrib.auth.hashers import make_password\n"
        "from accounts.models import User\n"
        f"h = make_password({PASSWORD!r})\n"
        "User.objects.bulk_create([User(phone=f'+86139{i:08d}', phone_verified=True, "
        f"password=h) for i in range({USERS})])\n"
    )
    run([python, "manage.py", "shell", "-c", script], env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("gunicorn did not become ready")


def login_once(conn: HTTPConnection, phone: str) -> bool:
    # A CSRF secret chosen by the client is as valid as one Django issued: the check is that
    # the form token matches the cookie.
    csrf = secrets.token_hex(16)
    body = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": csrf, "username": phone, "password": PASSWORD}
    )
    conn.request(
        "POST",
        "/login/",
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={csrf}",
            "Referer": "http://127.0.0.1/login/",
            "Host": "127.0.0.1",
        },
    )
    response = conn.getresponse()
    response.read()
    cookies = response.headers.get_all("Set-Cookie") or []
    return response.status == 302 and any(c.startswith("sessionid=") for c in cookies)


def client_loop(
    port: int, index: int, stop_at: float, results: list[int], errors: list[int]
) -> None:
    ok = bad = 0
    i = index
    while time.monotonic() < stop_at:
        conn = HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            if login_once(conn, f"+86139{i % USERS:08d}"):
                ok += 1
            else:
                bad += 1
        except OSError:
            bad += 1
        finally:
            conn.close()
        i += 7
    results.append(ok)
    errors.append(bad)


def measure_logins(port: int, seconds: float, clients: int) -> tuple[float, int]:
    # Warm up every worker (imports, first DB connection) before the clock starts.
    warm: list[int] = []
    client_loop(port, 0, time.monotonic() + 2, warm, [])
    results: list[int] = []
    errors: list[int] = []
    start = time.monotonic()
    stop_at = start + seconds
    threads = [
        threading.Thread(target=client_loop, args=(port, n, stop_at, results, errors))
        for n in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return sum(results) / elapsed, sum(errors)


def _raw_worker(seconds: float, encoded: str, queue: mp.Queue) -> None:
    import argon2

    # The same parameters Django's Argon2PasswordHasher uses, read from the stored hash.
    hasher = argon2.PasswordHasher()
    count = 0
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        hasher.verify(encoded, PASSWORD)
        count += 1
    queue.put(count)


def measure_raw_argon2(seconds: float, processes: int) -> float:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(PASSWORD_HASHERS=["django.contrib.auth.hashers.Argon2PasswordHasher"])
        django.setup()
    from django.contrib.auth.hashers import make_password

    encoded = make_password(PASSWORD).split("argon2", 1)[1]
    queue: mp.Queue = mp.Queue()
    procs = [
        mp.Process(target=_raw_worker, args=(seconds, encoded, queue)) for _ in range(processes)
    ]
    start = time.monotonic()
    for p in procs:
        p.start()
    total = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return total / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    port = free_port()
    env = bench_env(port)
    print(f"preparing database {DB_NAME} ...", flush=True)
    prepare_database(env)
    gunicorn = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "--config",
            "config/gunicorn.py",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(args.workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        wait_for(port)
        print(
            f"logins through gunicorn ({args.workers} workers, {args.clients} clients) ...",
            flush=True,
        )
        logins, errors = measure_logins(port, args.seconds, args.clients)
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        gunicorn.wait(timeout=30)
    print(f"raw Argon2 verifications ({args.workers} processes) ...", flush=True)
    raw = measure_raw_argon2(args.seconds, args.workers)
    ratio = logins / raw if raw else 0.0
    print()
    print(f"cores                         {os.cpu_count()}")
    print(f"password logins/s (HTTP)      {logins:8.1f}   (failed requests: {errors})")
    print(f"raw Argon2 verifications/s    {raw:8.1f}")
    print(f"ratio logins / raw            {ratio:8.3f}")
    print(f"cost besides the hash         {max(0.0, 1 - ratio) * 100:7.1f} %   (goal: under 15 %)")
    if errors:
        sys.exit("some logins failed: the figures are not valid")


if __name__ == "__main__":
    main()
