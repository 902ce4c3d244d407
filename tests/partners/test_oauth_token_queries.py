"""The token endpoint's database work: client credentials and refresh grants stay within a
fixed number of queries, and the shortcuts that make them cheap keep the rules (suspended
partners and apps awaiting review get no tokens; the app_authorized signal still fires)."""

import base64
import secrets
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_id_token_model,
    get_refresh_token_model,
)
from oauth2_provider.signals import app_authorized

from accounts.models import AuditEvent
from partners.models import ApplicationReview, Partner
from partners.oauth.services import token_checksum
from partners.oauth.tokens import client_credentials_claims
from tests.test_db_backend import prepared_statements

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
IDToken = get_id_token_model()


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def statements(queries) -> list[str]:
    """The reads and writes, without transaction control (inside a test every atomic block
    is a savepoint; Django also logs BEGIN/COMMIT of blocks that sent nothing)."""
    control = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK")
    return [q["sql"] for q in queries if not q["sql"].startswith(control)]


def client_credentials(app, secret, **extra):
    return Client().post(
        "/o/token/",
        {"grant_type": "client_credentials", "scope": "settlement:read"},
        HTTP_AUTHORIZATION=basic(app.client_id, secret),
        **extra,
    )


def refresh(app, secret, refresh_token):
    return Client().post(
        "/o/token/",
        {"grant_type": "refresh_token", "refresh_token": refresh_token},
        HTTP_AUTHORIZATION=basic(app.client_id, secret),
    )


@pytest.fixture
def cc_app(make_app):
    return make_app("Server", allowed_scopes="settlement:read")


def test_client_credentials_grant_reads_the_app_once_and_writes_nothing(cc_app, settings):
    settings.OAUTH_CLIENT_CACHE_SECONDS = 0  # no memory of the client: see test_oauth_client_cache
    app, secret = cc_app
    client_credentials(app, secret)  # warm caches (keys, scopes)
    with CaptureQueriesContext(connection) as captured:
        response = client_credentials(app, secret)
    assert response.status_code == 200, response.content
    sent = statements(captured.captured_queries)
    # the app with its partner and review and the client's failure count; the token is not
    # stored (partners.oauth.tokens)
    assert len(sent) == 1, sent
    assert sent[0].startswith("SELECT") and "partners_applicationreview" in sent[0]
    assert "partners_clientauthfailures" in sent[0]
    assert not any(q["sql"].startswith("SAVEPOINT") for q in captured.captured_queries)
    issued = response.json()["access_token"]
    assert not AccessToken.objects.filter(token_checksum=token_checksum(issued)).exists()


@pytest.mark.parametrize(
    ("partner_status", "review_status"),
    [
        (Partner.Status.SUSPENDED, None),
        (Partner.Status.PENDING, None),
        (Partner.Status.ACTIVE, ApplicationReview.Status.PENDING),
        (Partner.Status.ACTIVE, ApplicationReview.Status.SUSPENDED),
    ],
)
def test_apps_that_are_not_live_get_no_tokens(cc_app, partner_status, review_status):
    app, secret = cc_app
    Partner.objects.filter(pk=app.partner_id).update(status=partner_status)
    if review_status is not None:
        ApplicationReview.objects.create(application=app, status=review_status)
    response = client_credentials(app, secret)
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    assert not AccessToken.objects.filter(application=app).exists()


def test_an_approved_review_lets_the_app_get_tokens(cc_app):
    app, secret = cc_app
    ApplicationReview.objects.create(application=app, status=ApplicationReview.Status.APPROVED)
    assert client_credentials(app, secret).status_code == 200


def test_app_authorized_still_carries_the_issued_token_to_receivers(cc_app):
    """With a receiver DOT's path answers (the fast path steps aside); a client credentials
    token has no row, and the signal carries the unsaved token its claims stand for."""
    app, secret = cc_app
    received = []

    def receiver(sender, request, token, **kwargs):
        received.append(token)

    app_authorized.connect(receiver)
    try:
        response = client_credentials(app, secret)
    finally:
        app_authorized.disconnect(receiver)
    assert response.status_code == 200
    assert len(received) == 1
    assert received[0].token_checksum == token_checksum(response.json()["access_token"])
    assert received[0].pk is None and received[0].user is None
    assert received[0].application == app and received[0].scope == "settlement:read"
    assert client_credentials_claims(response.json()["access_token"]) is not None


@pytest.mark.parametrize("fast_path", [False, True], ids=["DOT's path", "fast path"])
def test_refresh_grant_rotates_in_one_transaction_with_its_id_token(chain, settings, fast_path):
    settings.OAUTH_FAST_TOKEN_GRANTS = fast_path
    settings.OAUTH_CLIENT_CACHE_SECONDS = 0  # no memory of the client: see test_oauth_client_cache
    app, secret, user, raw = chain
    first = refresh(app, secret, raw)
    assert first.status_code == 200, first.content
    with CaptureQueriesContext(connection) as captured:
        second = refresh(app, secret, first.json()["refresh_token"])
    assert second.status_code == 200, second.content
    body = second.json()
    sent = statements(captured.captured_queries)
    if fast_path:
        # the app with the client's failure count and the live refresh token, its access
        # token, person and sign-in; then every write in one statement, its own transaction
        assert len(sent) == 2, sent
        write = sent[1]
        assert write.startswith("WITH revoked AS (UPDATE") and "partners_consent" in write
        assert write.index("oauth2_provider_idtoken") < write.index(
            'INSERT INTO "oauth2_provider_accesstoken"'
        )
        # Both are prepared on the server (config.db.postgresql): after the first grant only
        # their parameters travel.
        prepared = prepared_statements(connection)
        assert any(text.startswith("WITH revoked AS (UPDATE") for text in prepared), prepared
        assert any(
            text.startswith("SELECT") and "partners_clientauthfailures" in text and "$4" in text
            for text in prepared
        ), prepared
    else:
        # the client's failure count; the app; the live refresh token with its access token,
        # person and sign-in; then the ID token, the old refresh token's revocation, the old
        # access token's deletion, the new access and refresh tokens, and consent's last-used
        # time
        assert len(sent) == 9, sent
        # the ID token row is written (in the rotation's transaction) before the access
        # token that points at it
        writes = [i for i, sql in enumerate(sent) if sql.startswith(("INSERT", "UPDATE", "DELETE"))]
        id_insert = next(i for i in writes if "oauth2_provider_idtoken" in sent[i])
        assert all(i > id_insert for i in writes if "oauth2_provider_accesstoken" in sent[i][:60])
    access = AccessToken.objects.get(token_checksum=token_checksum(body["access_token"]))
    assert access.id_token is not None and access.id_token.user_id == user.pk
    assert access.user_id == user.pk and access.application_id == app.pk
    new = RefreshToken.objects.get(token_checksum=token_checksum(body["refresh_token"]))
    old = RefreshToken.objects.get(token_checksum=token_checksum(first.json()["refresh_token"]))
    assert new.revoked is None and old.revoked is not None
    assert new.token_family == old.token_family


def test_a_failed_refresh_leaves_no_id_token_behind(chain, make_app):
    _app, _secret, _user, raw = chain
    other, other_secret = make_app("Other web", allowed_scopes="openid profile")
    before = IDToken.objects.count()
    # a refresh token presented by another app is refused before anything is written
    response = refresh(other, other_secret, raw)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    assert IDToken.objects.count() == before
    assert RefreshToken.objects.get(token_checksum=token_checksum(raw)).revoked is None


def test_a_reused_refresh_token_still_revokes_the_family(chain):
    app, secret, _user, raw = chain
    first = refresh(app, secret, raw)
    second = refresh(app, secret, first.json()["refresh_token"])
    assert second.status_code == 200
    replay = refresh(app, secret, raw)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    family = RefreshToken.objects.get(token_checksum=token_checksum(raw)).token_family
    assert not RefreshToken.objects.filter(token_family=family, revoked__isnull=True).exists()
    latest = refresh(app, secret, second.json()["refresh_token"])
    assert latest.status_code == 400


@pytest.mark.parametrize("fast_path", [False, True], ids=["DOT's path", "fast path"])
def test_a_refresh_token_rotated_by_a_concurrent_request_is_a_reuse(
    chain, monkeypatch, settings, fast_path
):
    from partners.oauth import grants
    from partners.oauth.validators import TokenpassOAuth2Validator

    settings.OAUTH_FAST_TOKEN_GRANTS = fast_path
    app, secret, user, raw = chain
    before = {model: model.objects.count() for model in (AccessToken, RefreshToken, IDToken)}

    def rotate_elsewhere() -> None:
        # another request rotates the same token between validation and the write
        RefreshToken.objects.filter(token_checksum=token_checksum(raw)).update(
            revoked=timezone.now()
        )

    validate = TokenpassOAuth2Validator.validate_refresh_token

    def validate_then_lose_the_race(self, refresh_token, client, request, *args, **kwargs):
        valid = validate(self, refresh_token, client, request, *args, **kwargs)
        rotate_elsewhere()
        return valid

    read = grants.client_authentication_read

    def read_then_lose_the_race(**kwargs):
        found = read(**kwargs)
        rotate_elsewhere()
        return found

    monkeypatch.setattr(
        TokenpassOAuth2Validator, "validate_refresh_token", validate_then_lose_the_race
    )
    monkeypatch.setattr(grants, "client_authentication_read", read_then_lose_the_race)
    response = refresh(app, secret, raw)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "invalid_grant"
    # nothing of the refused rotation stays (no new tokens, no ID token), the family is
    # revoked as for any second use, and the person's security log says so
    assert IDToken.objects.count() == before[IDToken]
    assert RefreshToken.objects.count() == before[RefreshToken]
    assert not RefreshToken.objects.filter(revoked__isnull=True).exists()
    assert not AccessToken.objects.filter(application=app).exists()
    event = AuditEvent.objects.get(user=user, action=AuditEvent.Action.TOKEN_REUSE)
    assert event.data["client_id"] == app.client_id and event.data["family_revoked"] is True


@pytest.mark.django_db(transaction=True)
def test_one_refresh_token_presented_twice_at_once_rotates_once(chain, live_server):
    import threading

    import requests

    app, secret, _user, raw = chain
    barrier = threading.Barrier(2)
    results: list[requests.Response] = []

    def use() -> None:
        barrier.wait()
        results.append(
            requests.post(
                f"{live_server.url}/o/token/",
                data={"grant_type": "refresh_token", "refresh_token": raw},
                auth=(app.client_id, secret),
                timeout=30,
            )
        )

    threads = [threading.Thread(target=use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 400], [r.text for r in results]
    assert next(r for r in results if r.status_code == 400).json()["error"] == "invalid_grant"
    # one rotation happened; the second use revoked the family, whichever way the two
    # requests interleaved, and was audited
    family = RefreshToken.objects.get(token_checksum=token_checksum(raw)).token_family
    assert RefreshToken.objects.filter(token_family=family).count() == 2
    assert not RefreshToken.objects.filter(token_family=family, revoked__isnull=True).exists()
    assert AuditEvent.objects.filter(action=AuditEvent.Action.TOKEN_REUSE).count() == 1


def test_the_client_lookup_leaves_the_app_as_select_related_would(
    cc_app, django_assert_num_queries
):
    from partners.oauth.selectors import application_for_client_id

    app, _secret = cc_app
    ApplicationReview.objects.create(application=app, status=ApplicationReview.Status.APPROVED)
    with django_assert_num_queries(1):
        loaded = application_for_client_id(client_id=app.client_id)
        assert loaded is not None and loaded.pk == app.pk
        assert loaded.client_secret == app.client_secret and loaded.name == app.name
        assert loaded.is_usable(None)
        assert loaded.review.status == ApplicationReview.Status.APPROVED
        assert loaded.partner.status == Partner.Status.ACTIVE
        assert loaded.partner.name == app.partner.name
    assert application_for_client_id(client_id="no-such-client") is None


def test_the_client_lookup_of_an_app_without_partner_or_review(make_app):
    from partners.oauth.selectors import application_for_client_id

    app, secret = make_app("First party", allowed_scopes="settlement:read")
    app.partner = None
    app.save(update_fields=["partner"])
    loaded = application_for_client_id(client_id=app.client_id)
    assert loaded is not None and loaded.partner is None
    assert not hasattr(loaded, "review") and loaded.is_usable(None)
    assert client_credentials(app, secret).status_code == 200


def test_a_token_row_inserted_directly_reads_back_as_save_would_write_it(cc_app):
    from django.db.models import signals
    from oauth2_provider.models import set_token_value

    from partners.oauth.services import token_row_insert

    app, _secret = cc_app
    raw = secrets.token_urlsafe(32)
    expires = timezone.now() + timedelta(hours=1)
    direct = AccessToken(
        application=app, scope="settlement:read", expires=expires, resource=["https://a.example"]
    )
    set_token_value(direct, raw)
    before = timezone.now()
    token_row_insert(instance=direct)
    after = timezone.now()
    assert direct.pk is not None and not direct._state.adding
    stored = AccessToken.objects.get(pk=direct.pk)
    assert stored.token_checksum == token_checksum(raw) and stored.token == ""
    assert stored.resource == ["https://a.example"] and stored.expires == expires
    # auto_now and auto_now_add: the time of the insert, left on the instance as save() does
    assert before <= stored.created <= after and before <= stored.updated <= after
    assert (direct.created, direct.updated) == (stored.created, stored.updated)
    assert stored.user_id is None and stored.application_id == app.pk

    # with a save receiver connected, the row goes through save() and the receiver runs
    seen = []

    def receiver(sender, instance, created, **kwargs):
        seen.append((instance.pk, created))

    signals.post_save.connect(receiver, sender=AccessToken)
    try:
        other = AccessToken(application=app, scope="settlement:read", expires=expires)
        set_token_value(other, secrets.token_urlsafe(32))
        token_row_insert(instance=other)
    finally:
        signals.post_save.disconnect(receiver, sender=AccessToken)
    assert seen == [(other.pk, True)]


def test_the_live_refresh_token_lookup_leaves_it_as_select_related_would(
    chain, django_assert_num_queries
):
    from partners.models import AuthorizationCode
    from partners.oauth.selectors import refresh_token_live

    app, _secret, user, raw = chain
    stored = RefreshToken.objects.get(token_checksum=token_checksum(raw))
    RefreshToken.objects.filter(pk=stored.pk).update(resource=["https://api.example"])
    AuthorizationCode.objects.create(
        code_checksum="c" * 64,
        application=app,
        user=user,
        auth_time=1_700_000_000,
        token_family=stored.token_family,
    )
    with django_assert_num_queries(1):
        live = refresh_token_live(checksum=token_checksum(raw))
        assert live.pk == stored.pk and live.token_family == stored.token_family
        assert live.resource == ["https://api.example"] and live.revoked is None
        assert live.user == user and live.user.public_id == user.public_id
        assert live.access_token.pk == stored.access_token_id
        assert live.access_token.scope == "openid profile"
        assert live.tokenpass_auth_time == 1_700_000_000
    # a token without its access token, one without a code, and revoked or unknown ones
    RefreshToken.objects.filter(pk=stored.pk).update(access_token=None)
    AuthorizationCode.objects.filter(token_family=stored.token_family).delete()
    orphan = refresh_token_live(checksum=token_checksum(raw))
    assert orphan.access_token is None and orphan.tokenpass_auth_time is None
    RefreshToken.objects.filter(pk=stored.pk).update(revoked=timezone.now())
    assert refresh_token_live(checksum=token_checksum(raw)) is None
    assert refresh_token_live(checksum=token_checksum("unknown")) is None
