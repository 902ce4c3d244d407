"""A real Celery worker, on the Redis broker, delivers the codes that the pages queue."""

import time

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connection
from django.urls import reverse

from accounts.models import User
from accounts.sms.backends import OutboxSmsBackend, SmsDeliveryError, outbox_messages
from config.celery_app import app
from tests import gunicorn_server
from tests.accounts.test_codes import CODE_RE

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]

PASSWORD = "a fine long passphrase 42"


class FlakySmsBackend(OutboxSmsBackend):
    """Fails the first `failures` sends, like a gateway having a bad minute."""

    failures = 0
    calls = 0

    def send(self, *, to: str, body: str) -> None:
        type(self).calls += 1
        if type(self).calls <= type(self).failures:
            raise SmsDeliveryError("gateway answered 503")
        super().send(to=to, body=body)


def _close_worker_connection(**kwargs):
    # The worker thread opens its own database connection; close it after each task so that
    # the test database can be flushed and dropped.
    connection.close()


@pytest.fixture
def worker():
    app.conf.task_always_eager = False
    task_postrun.connect(_close_worker_connection, weak=False)
    try:
        app.control.purge()
        with start_worker(
            app, pool="solo", perform_ping_check=False, loglevel="WARNING", shutdown_timeout=10
        ) as running:
            yield running
    finally:
        task_postrun.disconnect(_close_worker_connection)
        app.conf.task_always_eager = True


def wait_for_sms(to: str, count: int = 1, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = outbox_messages(to=to)
        if len(messages) >= count:
            return messages
        time.sleep(0.1)
    raise AssertionError(f"no SMS reached {to} within {timeout} s")


def test_worker_delivers_the_signup_code_queued_by_the_page(worker, client):
    response = client.post(
        reverse("accounts:signup"),
        {"via": "phone", "phone": "+8613800138000", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    # Nothing was sent inline: the page only queued the task.
    [message] = wait_for_sms("+8613800138000")
    code = CODE_RE.search(message["body"]).group(1)

    response = client.post(reverse("accounts:signup_verify"), {"code": code})

    assert response.status_code == 302
    assert User.objects.filter(phone="+8613800138000", phone_verified=True).exists()


def test_worker_retries_a_failing_gateway_with_backoff(worker, client, settings):
    FlakySmsBackend.calls = 0
    FlakySmsBackend.failures = 2
    settings.SMS_BACKEND = f"{__name__}.FlakySmsBackend"

    started = time.monotonic()
    client.post(
        reverse("accounts:signup"),
        {"via": "phone", "phone": "+8613800138000", "password1": PASSWORD, "password2": PASSWORD},
    )
    [message] = wait_for_sms("+8613800138000")

    assert FlakySmsBackend.calls == 3
    assert CODE_RE.search(message["body"])
    assert time.monotonic() - started < 30


def test_a_code_queued_under_gunicorns_gevent_worker_reaches_the_worker(worker):
    """The signup page served by gunicorn's gevent worker (config/gunicorn.py) queues the
    code on the real broker, through sockets gevent has patched; a worker delivers it."""
    from django.conf import settings

    with gunicorn_server.serve(
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL, CELERY_TASK_ALWAYS_EAGER="false"
    ) as served:
        response = served.post_page_form(
            "/signup/",
            {
                "via": "phone",
                "phone": "+8613800138001",
                "password1": PASSWORD,
                "password2": PASSWORD,
            },
        )
        assert response.status == 302
        [message] = wait_for_sms("+8613800138001")
    assert CODE_RE.search(message["body"])
