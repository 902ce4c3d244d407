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
import subprocess
import sys
import threading
import time
import urllib.parse
from http.client import HTTPConnection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    ROOT,
    free_port,
    production_env,
    recreate_database,
    start_gunicorn,
    stop,
    wait_for_http,
)

DB_NAME = "tokenpass_bench_login"
PASSWORD = "bench-password-9f3k2m"
USERS = 50


def bench_env() -> dict[str, str]:
    # Logins come from one address; the lock-out must not trip on successful logins.
    return production_env(database=DB_NAME, AXES_FAILURE_LIMIT="1000000")


def run(cmd: list[str], env: dict[str, str]) -> None:
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def prepare_database(env: dict[str, str]) -> None:
    recreate_database(DB_NAME)
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
    env = bench_env()
    print(f"preparing database {DB_NAME} ...", flush=True)
    prepare_database(env)
    gunicorn = start_gunicorn("config.wsgi:application", port=port, workers=args.workers, env=env)
    try:
        wait_for_http(port)
        print(
            f"logins through gunicorn ({args.workers} workers, {args.clients} clients) ...",
            flush=True,
        )
        logins, errors = measure_logins(port, args.seconds, args.clients)
    finally:
        stop(gunicorn)
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
