"""config.wsgi served by ``gunicorn -c config/gunicorn.py`` with the production settings, on the
test database, for the tests of what only a real server shows."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPResponse
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
HOST = "tokenpass.example"


@dataclass
class Served:
    port: int
    process: subprocess.Popen[bytes]

    def connection(self, timeout: float = 10) -> HTTPConnection:
        return HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def post_page_form(self, path: str, fields: dict[str, str]) -> HTTPResponse:
        """A browser's post of a page's form over HTTPS (behind the TLS proxy), with its CSRF
        cookie and token; the answer is read."""
        csrf = secrets.token_hex(16)
        conn = self.connection(timeout=30)
        conn.request(
            "POST",
            path,
            body=urlencode({"csrfmiddlewaretoken": csrf, **fields}),
            headers={
                "Host": HOST,
                "X-Forwarded-Proto": "https",
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"csrftoken={csrf}",
                "Referer": f"https://{HOST}{path}",
            },
        )
        response = conn.getresponse()
        response.read()
        return response


def database_url() -> str:
    """The test database, as a URL."""
    from django.db import connection

    database = connection.settings_dict
    return f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(*, workers: int = 1, args: tuple[str, ...] = (), **env: str) -> Iterator[Served]:
    """gunicorn serving the test database with the production settings, as deployed but for
    what the environment given changes. On leaving, gunicorn is stopped and its error output
    must hold no traceback."""
    from django.conf import settings

    port = free_port()
    environ = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": settings.SECRET_KEY,
        "ALLOWED_HOSTS": HOST,
        # The issuer the test process checks tokens against.
        "SITE_URL": settings.SITE_URL,
        "DATABASE_URL": database_url(),
        "CACHE_URL": "redis://127.0.0.1:6379/11",
        "CELERY_BROKER_URL": "memory://",
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "OIDC_PRIVATE_KEYS_FILE": str(settings.OIDC_KEYS_FILE),
        "OIDC_KEYS_GENERATE": "false",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "--config",
            "config/gunicorn.py",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            *args,
        ],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(port, process)
        yield Served(port=port, process=process)
    except BaseException:
        # The server's side of a failed test, in the test's captured output.
        process.terminate()
        print(process.communicate(timeout=30)[1].decode()[-3000:])
        raise
    process.terminate()
    _out, errors = process.communicate(timeout=30)
    assert b"Traceback" not in errors, errors.decode()[-3000:]


def _wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode()[-3000:])  # type: ignore[union-attr]
        try:
            conn = HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz", headers={"Host": HOST})
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("gunicorn did not answer")
