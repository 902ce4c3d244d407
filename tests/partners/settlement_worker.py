"""A real Celery worker in a subprocess, on the test database and the test broker, that a
test can SIGKILL. Used by the settlement tests."""

import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

from django.conf import settings

from config.celery_app import app

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, log: Path, env: dict[str, str]):
        self.log = log
        self.name = f"settle-{uuid.uuid4().hex[:8]}@%h"
        db = settings.DATABASES["default"]
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": (
                f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
                f"{db['PORT'] or 5432}/{db['NAME']}"
            ),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            # A task whose worker died is redelivered after 2 s (default 1 hour).
            "CELERY_VISIBILITY_TIMEOUT_SECONDS": "2",
            **env,
        }
        self.handle = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                "-A",
                "config",
                "worker",
                "--pool=solo",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                self.name,
            ],
            cwd=ROOT,
            env=environment,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no ack, the open transaction dies with the connection."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.handle.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def send(name: str, *args: object) -> None:
    """Queue a task on the broker (send_task ignores the test settings' eager mode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app.send_task(name, args=list(args))


def wait_for(predicate, *, timeout: float = 60, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
