"""Suite-wide fixtures. The suite runs on real PostgreSQL and a real Redis broker: if either
is unreachable the run stops at once with a message that says what to start."""

import socket
from urllib.parse import urlparse

import pytest
from django.conf import settings


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def pytest_sessionstart(session: pytest.Session) -> None:
    db = settings.DATABASES["default"]
    problems = []
    if db["ENGINE"] != "django.db.backends.postgresql":
        problems.append(f"the suite needs PostgreSQL, DATABASE_URL points at {db['ENGINE']}")
    elif not _reachable(
        f"postgres://{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}", 5432
    ):
        problems.append(
            f"PostgreSQL is not reachable at {db.get('HOST')}:{db.get('PORT') or 5432}: start it "
            "(pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) "
            "or set DATABASE_URL"
        )
    if not _reachable(settings.CELERY_BROKER_URL, 6379):
        problems.append(
            f"the Celery broker is not reachable at {settings.CELERY_BROKER_URL}: start Redis "
            "(redis-server --daemonize yes) or set CELERY_BROKER_URL"
        )
    if problems:
        pytest.exit("cannot run the tests: " + "; ".join(problems), returncode=3)


@pytest.fixture(autouse=True)
def _sms_outbox(settings, tmp_path):
    """Each test gets its own SMS outbox directory."""
    settings.SMS_OUTBOX_DIR = tmp_path / "sms-outbox"
    return settings.SMS_OUTBOX_DIR


@pytest.fixture(autouse=True)
def _clear_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
