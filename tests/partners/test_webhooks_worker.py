"""A real Celery worker on the Redis broker delivers webhooks queued by a committed change, and
retries with backoff: a listener that fails twice gets the event on the third try."""

import time

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connection, transaction

from config.celery_app import app
from partners import services
from partners.models import ApplicationReview
from partners.webhooks import signing
from partners.webhooks.models import WebhookAttempt, WebhookDelivery
from partners.webhooks.services import webhook_endpoint_create
from tests.factories import PartnerFactory, UserFactory
from tests.partners.test_webhooks import Listener

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def _close_worker_connection(**kwargs):
    # The worker thread has its own database connection; close it after each task so that the
    # test database can be flushed.
    connection.close()


@pytest.fixture
def worker(settings):
    # Short backoff so that three tries take well under a second.
    settings.WEBHOOKS_RETRY_DELAYS = [0.2, 0.4, 0.8]
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


def wait_for(predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def pending_app(partner):
    from partners.models import Application

    application = Application.objects.create(
        name="Alpha chat",
        partner=partner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        allowed_grant_types="client-credentials",
        redirect_uris="",
        algorithm=Application.RS256_ALGORITHM,
    )
    ApplicationReview.objects.create(application=application)
    return application


def test_a_listener_that_fails_twice_gets_the_event_on_the_third_try(worker):
    partner = PartnerFactory()
    application = pending_app(partner)
    with Listener(statuses=[500, 503]) as listener:
        _endpoint, secret = webhook_endpoint_create(
            partner=partner, url=listener.url, event_types=["app.approved"]
        )

        # The staff decision commits, and only then is the task queued.
        services.application_approve(application=application, actor=UserFactory(is_staff=True))
        wait_for(
            lambda: WebhookDelivery.objects.filter(status=WebhookDelivery.Status.DELIVERED).exists()
        )

    delivery = WebhookDelivery.objects.get()
    assert delivery.attempts == 3
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [a.status_code for a in attempts] == [500, 503, 200]
    assert [a.succeeded for a in attempts] == [False, False, True]
    # Backoff: the retries waited at least the configured delays.
    assert (attempts[1].started_at - attempts[0].started_at).total_seconds() >= 0.2
    assert (attempts[2].started_at - attempts[1].started_at).total_seconds() >= 0.4
    assert len(listener.requests) == 3
    for request in listener.requests:
        assert signing.signature_verify(
            secret=secret, header=request["headers"]["Tokenpass-Signature"], body=request["body"]
        )
    # Every try sends the same event (receivers deduplicate on its id).
    assert len({r["headers"]["Tokenpass-Event-Id"] for r in listener.requests}) == 1


def test_nothing_is_sent_when_the_change_rolls_back(worker):
    partner = PartnerFactory()
    application = pending_app(partner)
    with Listener() as listener:
        webhook_endpoint_create(partner=partner, url=listener.url, event_types=["app.approved"])
        with pytest.raises(RuntimeError), transaction.atomic():
            services.application_approve(application=application, actor=None)
            raise RuntimeError("the surrounding change failed")
        time.sleep(1.0)

    assert listener.requests == []
    assert not WebhookDelivery.objects.exists()
    application.review.refresh_from_db()
    assert application.review.status == ApplicationReview.Status.PENDING
