"""The OAuth housekeeping beat task on a real Celery worker (a subprocess on the test broker)
against PostgreSQL; and every beat entry names a task a worker has."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from config.celery_app import app as celery_app
from partners.models import ClientAuthFailures
from tests.partners.settlement_worker import Worker, send, wait_for


def test_every_beat_entry_names_a_registered_task():
    celery_app.loader.import_default_modules()
    names = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "partners.oauth_cleanup" in names
    assert names <= set(celery_app.tasks), names - set(celery_app.tasks)


@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_oauth_cleanup_on_a_worker(tmp_path, make_app, user):
    app, _ = make_app("Cleaned")
    now = timezone.now()
    tokens = get_access_token_model().objects
    expired = tokens.create(
        user=user, application=app, token_checksum="e" * 64, expires=now - timedelta(days=1)
    )
    live = tokens.create(
        user=user, application=app, token_checksum="l" * 64, expires=now + timedelta(hours=1)
    )
    ClientAuthFailures.objects.create(key="a" * 64, failures=9, window_ends=now)
    current = ClientAuthFailures.objects.create(
        key="b" * 64, failures=1, window_ends=now + timedelta(minutes=5)
    )
    celery_app.control.purge()
    worker = Worker(tmp_path / "oauth-worker.log", {})
    try:
        send("partners.oauth_cleanup")
        wait_for(
            lambda: not tokens.filter(pk=expired.pk).exists(),
            timeout=90,
            what=f"the expired token to go; worker log:\n{worker.output()}",
        )
        wait_for(lambda: ClientAuthFailures.objects.count() == 1, what="the ended window to go")
    finally:
        worker.stop()
        celery_app.control.purge()
    assert tokens.filter(pk=live.pk).exists()
    assert list(ClientAuthFailures.objects.all()) == [current]
