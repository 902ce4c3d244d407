"""A confidential client asking for tokens again within OAUTH_CLIENT_CACHE_SECONDS is
authenticated against the app its process remembered (partners/oauth/clientcache.py): a
partner server's client credentials grant reads nothing at all, a web app's refresh grant
reads only the refresh token, and every rule still holds: the secret, the lockout, changes
to the app."""

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from partners.models import Application, Partner
from partners.oauth import clientcache
from partners.oauth.services import application_client_secret_rotate
from tests.partners.test_oauth_token_queries import client_credentials, refresh, statements

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def long_memory(settings):
    settings.OAUTH_CLIENT_CACHE_SECONDS = 30


@pytest.fixture
def cc_app(make_app):
    return make_app("Server", allowed_scopes="settlement:read")


@pytest.fixture(params=["client_credentials", "refresh_token"])
def grant(request, make_app):
    """(app, secret, ask): ask(secret) sends the grant, a refresh following its chain."""
    if request.param == "client_credentials":
        app, secret = make_app("Server", allowed_scopes="settlement:read")
        return app, secret, lambda presented: client_credentials(app, presented)
    app, secret, _user, raw = request.getfixturevalue("chain")
    state = {"refresh_token": raw}

    def ask(presented):
        response = refresh(app, presented, state["refresh_token"])
        if response.status_code == 200:
            state["refresh_token"] = response.json()["refresh_token"]
        return response

    return app, secret, ask


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


def test_refreshing_again_within_the_interval_reads_only_the_refresh_token(chain):
    app, secret, _user, raw = chain
    with CaptureQueriesContext(connection) as captured:
        first = refresh(app, secret, raw)
    assert first.status_code == 200, first.content
    read, write = statements(captured.captured_queries)
    assert "partners_clientauthfailures" in read and "partners_application" in read
    with CaptureQueriesContext(connection) as captured:
        again = refresh(app, secret, first.json()["refresh_token"])
    assert again.status_code == 200, again.content
    # The remembered app: neither it, its partner and review nor the failure count is read;
    # the refresh token with its access token, person and sign-in, then the rotation.
    read, write = statements(captured.captured_queries)
    assert read.startswith("SELECT") and "oauth2_provider_refreshtoken" in read
    assert "partners_application" not in read and "partners_clientauthfailures" not in read
    assert write.startswith("WITH revoked AS (UPDATE")
    body = again.json()
    assert {"access_token", "refresh_token", "id_token"} <= body.keys()
    assert body["scope"] == "openid profile"


def test_a_remembered_app_cannot_refresh_another_apps_token(chain, make_app):
    _app, _secret, _user, raw = chain
    other, other_secret = make_app("Other web", allowed_scopes="openid profile settlement:read")
    assert client_credentials(other, other_secret).status_code == 200
    response = refresh(other, other_secret, raw)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_a_reused_refresh_token_still_revokes_the_family_where_the_app_is_remembered(chain):
    app, secret, _user, raw = chain
    first = refresh(app, secret, raw)
    assert first.status_code == 200
    replay = refresh(app, secret, raw)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert refresh(app, secret, first.json()["refresh_token"]).status_code == 400


def test_a_wrong_secret_is_still_refused_and_counted(grant, settings):
    settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT = 2
    _app, secret, ask = grant
    assert ask(secret).status_code == 200
    # Remembered, yet: a wrong secret goes to DOT's path, is refused and counted; the
    # lockout that follows refuses the right secret too.
    assert [ask("wrong").status_code for _ in range(3)] == [401, 401, 429]
    assert ask(secret).status_code == 429


def test_changes_in_this_process_take_effect_at_once(grant):
    app, secret, ask = grant
    assert ask(secret).status_code == 200
    new_secret = application_client_secret_rotate(application=app)
    assert ask(secret).status_code == 401
    assert ask(new_secret).status_code == 200

    partner = app.partner
    partner.status = Partner.Status.SUSPENDED
    partner.save()
    assert ask(new_secret).status_code == 401


def test_another_processs_change_arrives_within_the_interval(grant, settings):
    """A write that no signal of this process sees (another process's, here an UPDATE):
    the remembered app answers until the interval ends, then the database does."""
    settings.OAUTH_CLIENT_CACHE_SECONDS = 0.5
    app, secret, ask = grant
    assert ask(secret).status_code == 200
    Partner.objects.filter(pk=app.partner_id).update(status=Partner.Status.SUSPENDED)
    assert ask(secret).status_code == 200
    time.sleep(0.6)
    assert ask(secret).status_code == 401


def test_a_new_secret_works_at_once_even_where_the_old_app_is_remembered(grant):
    app, secret, ask = grant
    assert ask(secret).status_code == 200
    # Rotated by another process: this one still remembers the old hash.
    new_secret = "n" * 64
    rotated = Application.objects.get(pk=app.pk)
    rotated.client_secret = new_secret
    hashed = Application._meta.get_field("client_secret").pre_save(rotated, False)
    Application.objects.filter(pk=app.pk).update(client_secret=hashed)

    assert ask(new_secret).status_code == 200
    # The old one for the rest of the interval, as the module says.
    assert ask(secret).status_code == 200


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
