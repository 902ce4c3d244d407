"""Suite-wide fixtures. The suite runs on real PostgreSQL and a real Redis broker: if either
is unreachable the run stops at once with a message that says what to start."""

import os
import shutil
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
    if db["ENGINE"] != "config.db.postgresql":
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

    from partners.oauth import clientcache

    # Each process's memory of authenticated clients too: a test's rolled-back apps must
    # not answer the next test's requests.
    cache.clear()
    clientcache.clear()
    yield
    cache.clear()
    clientcache.clear()


@pytest.fixture
def staff_client(db):
    """A test client of its own, signed in as a superuser (``staff_client.staff``) whose
    session passed two-factor, as the admin requires."""
    from django.test import Client
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from tests.factories import UserFactory

    staff = UserFactory(is_staff=True, is_superuser=True)
    device = TOTPDevice.objects.create(user=staff, name="app", confirmed=True)
    client = Client()
    client.force_login(staff, backend="accounts.backends.PhoneOrEmailBackend")
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    client.staff = staff  # type: ignore[attr-defined]
    return client


# Browser tests: Playwright drives Debian's Chromium against pytest-django's live server.
# One browser per test module: Playwright's sync API keeps an event loop running in the main
# thread while it is open, which must not leak into the other tests. Playwright never
# downloads a browser of its own.
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(items):
    for item in items:
        if "page" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium")
    # Playwright's sync API runs an event loop in the test thread; the ORM calls that tests
    # make between page actions are still synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()
