"""The README's `make run` path: migrate, seed the demo and use the wallet API on the embedded
defaults (config.settings.local: SQLite, eager Celery), in a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_runs_on_sqlite(tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "CELERY_BROKER_URL": "memory://",
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    env.pop("TEST_DATABASE_NAME", None)

    def manage(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        return done

    manage("migrate", "--noinput")
    assert "demo" in manage("seed_demo").stdout.lower()
    script = (ROOT / "tests" / "quickstart_demo.py").read_text()
    assert "quickstart demo ok" in manage("shell", "-c", script).stdout
