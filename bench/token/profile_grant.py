"""Where one token grant's time goes: the token endpoint driven through the real WSGI
application (config.wsgi, production settings) in this one process, without a server or a
network in between, under cProfile; with the SQL statements each grant sends.

    .venv/bin/python bench/token/profile_grant.py [--requests 300] [--grant client_credentials|refresh_token]
                                            [--sort cumulative|tottime] [--limit 40]

It builds its own database (``tokenpass_bench_profile``), seeded like bench/token/run.py, and
prints CPU milliseconds per grant, the statements of one grant, and the profile's top lines.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import urllib.parse
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402

DB_NAME = "tokenpass_bench_profile"


def seed(workdir: Path, env: dict[str, str], chains: int) -> dict:
    python = sys.executable
    bench.recreate_database(DB_NAME)
    quiet = {"cwd": bench.ROOT, "env": env, "check": True, "stdout": subprocess.DEVNULL}
    subprocess.run([python, "manage.py", "migrate", "--noinput", "--skip-checks"], **quiet)  # type: ignore[call-overload]
    out = workdir / "seed.json"
    script = bench.SEED_SCRIPT.format(
        chains=chains,
        secret=bench.CLIENT_SECRET,
        out=str(out),
        cc_scope="settlement:read",
        refresh_scope="openid profile",
    )
    subprocess.run([python, "manage.py", "shell", "-c", script], **quiet)  # type: ignore[call-overload]
    seeded: dict = json.loads(out.read_text())
    return seeded


def environ_for(body: bytes, authorization: str) -> dict:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/o/token/",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_X_FORWARDED_PROTO": "https",
        "HTTP_ACCEPT": "application/json",
        "HTTP_AUTHORIZATION": authorization,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def grant_driver(workdir: Path, grant: str) -> Callable[[], None]:
    """Seed the database, configure this process like a production worker and return a
    function that sends one ``grant`` through ``config.wsgi`` (a refresh follows its own
    rotation chain) and fails loudly on anything but 200."""
    env = bench.tokenpass_env(workdir / "oidc-keys.json")
    env["DATABASE_URL"] = f"{bench.PG_URL}/{DB_NAME}"
    seeded = seed(workdir, env, chains=1)
    os.environ.update(env)
    sys.path.insert(0, str(bench.ROOT))
    from config.wsgi import application

    client_id = seeded["cc_client_id" if grant == "client_credentials" else "web_client_id"]
    credentials = f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(bench.CLIENT_SECRET)}"
    authorization = "Basic " + b64encode(credentials.encode()).decode()
    state = {"refresh": seeded["refresh_tokens"][0]}

    def one() -> None:
        if grant == "client_credentials":
            form = {"grant_type": "client_credentials", "scope": "settlement:read"}
        else:
            form = {"grant_type": "refresh_token", "refresh_token": state["refresh"]}
        body = urllib.parse.urlencode(form).encode()
        answer: dict = {}

        def start_response(status: str, headers: list, exc_info: object = None) -> None:
            answer["status"] = status

        chunks = application(environ_for(body, authorization), start_response)
        content = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        if not answer["status"].startswith("200"):
            raise SystemExit(f"{answer['status']}: {content[:300]!r}")
        if grant == "refresh_token":
            state["refresh"] = json.loads(content)["refresh_token"]

    return one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument(
        "--grant", choices=["client_credentials", "refresh_token"], default="client_credentials"
    )
    parser.add_argument("--sort", default="cumulative")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--no-profile", action="store_true", help="only time and count")
    parser.add_argument("--dump", default="", help="also write the raw profile to this file")
    args = parser.parse_args()
    count = max(1, min(args.requests, 20_000))

    with tempfile.TemporaryDirectory(prefix="tokenpass-profile-") as tmp:
        one = grant_driver(Path(tmp), args.grant)
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        for _ in range(20):  # imports, keys, connection
            one()
        with CaptureQueriesContext(connection) as captured:
            one()
        print(f"statements of one {args.grant} grant ({len(captured.captured_queries)}):")
        for query in captured.captured_queries:
            print("  ", query["sql"][: int(os.environ.get("PROFILE_SQL_WIDTH", "150"))])

        # The machine may be shared: the quietest of a few batches is the fairest figure.
        batches = []
        for _ in range(5):
            began_cpu, began = time.process_time(), time.perf_counter()
            for _ in range(count):
                one()
            batches.append((time.process_time() - began_cpu, time.perf_counter() - began))
        cpu, wall = min(batches)
        print(
            f"{count} grants x 5 batches, quietest: {cpu / count * 1000:.2f} ms CPU and "
            f"{wall / count * 1000:.2f} ms wall per grant in this process"
        )
        if args.no_profile:
            return
        # CPU time, not wall time: waiting for PostgreSQL is not this process's work.
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for _ in range(count):
            one()
        profiler.disable()
        if args.dump:
            profiler.dump_stats(args.dump)
        stats = pstats.Stats(profiler)
        stats.sort_stats(args.sort).print_stats(args.limit)


if __name__ == "__main__":
    main()
