"""A partner server asking for client credentials again within OAUTH_CLIENT_CACHE_SECONDS is
authenticated against the app its process remembered (partners/oauth/clientcache.py): no
query at all, and still every rule: the secret, the lockout, changes to the app."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from partners.models import Application, Partner
from partners.oauth import clientcache
from partners.oauth.services import application_client_secret_rotate
from tests.partners.test_oauth_token_queries import client_credentials, statements

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def long_memory(settings):
    settings.OAUTH_CLIENT_CACHE_SECONDS = 30


@pytest.fixture
def cc_app(make_app):
    return make_app("Server", allowed_scopes="settlement:read")


def queries_of(app, secret) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client_credentials(app, secret)
    return response.status_code, statements(captured.captured_queries)


def test_asking_again_within_the_interval_reads_nothing(cc_app):
    app, secret = cc_app
    status, first = queries_of(app, secret)
    assert status == 200 and len(first) == 1
    status, again = queries_of(app, secret)
    assert status == 200 and again == []


def test_a_wrong_secret_is_still_refused_and_counted(cc_app, settings):
    settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT = 2
    app, secret = cc_app
    assert client_credentials(app, secret).status_code == 200
    # Remembered, yet: a wrong secret goes to DOT's path, is refused and counted; the
    # lockout that follows refuses the right secret too.
    assert [client_credentials(app, "wrong").status_code for _ in range(3)] == [401, 401, 429]
    assert client_credentials(app, secret).status_code == 429


def test_changes_in_this_process_take_effect_at_once(cc_app):
    app, secret = cc_app
    assert client_credentials(app, secret).status_code == 200
    new_secret = application_client_secret_rotate(application=app)
    assert client_credentials(app, secret).status_code == 401
    assert client_credentials(app, new_secret).status_code == 200

    partner = app.partner
    partner.status = Partner.Status.SUSPENDED
    partner.save()
    assert client_credentials(app, new_secret).status_code == 401


def test_another_processs_change_arrives_within_the_interval(cc_app, settings):
    """A write that no signal of this process sees (another process's, here an UPDATE):
    the remembered app answers until the interval ends, then the database does."""
    settings.OAUTH_CLIENT_CACHE_SECONDS = 0.5
    app, secret = cc_app
    assert client_credentials(app, secret).status_code == 200
    Partner.objects.filter(pk=app.partner_id).update(status=Partner.Status.SUSPENDED)
    assert client_credentials(app, secret).status_code == 200
    time.sleep(0.6)
    assert client_credentials(app, secret).status_code == 401


def test_a_new_secret_works_at_once_even_where_the_old_app_is_remembered(cc_app):
    app, secret = cc_app
    assert client_credentials(app, secret).status_code == 200
    # Rotated by another process: this one still remembers the old hash.
    new_secret = "n" * 64
    rotated = Application.objects.get(pk=app.pk)
    rotated.client_secret = new_secret
    hashed = Application._meta.get_field("client_secret").pre_save(rotated, False)
    Application.objects.filter(pk=app.pk).update(client_secret=hashed)

    assert client_credentials(app, new_secret).status_code == 200
    # The old one for the rest of the interval, as the module says.
    assert client_credentials(app, secret).status_code == 200


def test_off_with_zero_and_bounded(cc_app, settings, monkeypatch):
    app, secret = cc_app
    settings.OAUTH_CLIENT_CACHE_SECONDS = 0
    client_credentials(app, secret)
    assert len(queries_of(app, secret)[1]) == 1

    settings.OAUTH_CLIENT_CACHE_SECONDS = 30
    monkeypatch.setattr(clientcache, "MAX_ENTRIES", 2)
    for n in range(5):
        clientcache.remember(
            client_id=f"c{n}", failure_key="k", application=app, read_in=clientcache.generation()
        )
        assert len(clientcache._entries) <= 2


def test_an_app_read_before_a_forgetting_is_not_remembered(cc_app):
    app, _secret = cc_app
    read_in = clientcache.generation()
    clientcache.forget_client(client_id="another", failure_key="k")
    clientcache.remember(client_id=app.client_id, failure_key="k", application=app, read_in=read_in)
    assert clientcache.recall(client_id=app.client_id, failure_key="k") is None

    read_in = clientcache.generation()
    clientcache.remember(client_id=app.client_id, failure_key="k", application=app, read_in=read_in)
    assert clientcache.recall(client_id=app.client_id, failure_key="k") is app
