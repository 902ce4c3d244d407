"""Staff: client secrets shown once at creation and on rotation; consents revoked from the
admin; clients locked out by failed authentications seen and unlocked; the key rotation
command's automatic steps; the demo seed."""

import base64
import re
import time

import pytest
from django.contrib.auth.hashers import check_password, identify_hasher
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.test import Client
from oauth2_provider.models import get_access_token_model

from partners.models import Application, ClientAuthFailures, Consent, PartnerEvent
from partners.oauth import keys

pytestmark = pytest.mark.django_db


def shown_secret(response) -> str:
    text = " ".join(str(m) for m in get_messages(response.wsgi_request))
    match = re.search(r'<code class="secret" data-client-id="[^"]+">([^<]+)</code>', text)
    assert match, text
    return match.group(1)


def test_secret_is_shown_once_at_creation_and_stored_hashed(staff_client, partner):
    response = staff_client.post(
        "/admin/partners/application/add/",
        {
            "name": "Partner server",
            "partner": partner.pk,
            "client_type": "confidential",
            "authorization_grant_type": "client-credentials",
            "allowed_grant_types": "client-credentials",
            "allowed_scopes": "settlement:read",
            "redirect_uris": "",
            "post_logout_redirect_uris": "",
            "algorithm": "RS256",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    app = Application.objects.get(name="Partner server")
    secret = shown_secret(response)
    assert identify_hasher(app.client_secret).algorithm == "tokenpass_hmac_sha256"
    assert check_password(secret, app.client_secret)
    # the page after the redirect shows it; no page after that does
    assert secret in staff_client.get(response["Location"]).content.decode()
    page = staff_client.get(f"/admin/partners/application/{app.pk}/change/").content.decode()
    assert secret not in page and app.client_secret not in page


def test_rotate_secret_action(staff_client, make_app):
    app, old_secret = make_app("Partner server", allowed_scopes="settlement:read")
    response = staff_client.post(
        "/admin/partners/application/",
        {"action": "rotate_client_secret", "_selected_action": [app.pk]},
    )
    assert response.status_code == 302
    new_secret = shown_secret(response)
    app.refresh_from_db()
    assert check_password(new_secret, app.client_secret)
    assert not check_password(old_secret, app.client_secret)


def test_app_validation_refuses_implicit_and_unknown_scopes(make_app):
    from django.core.exceptions import ValidationError

    app, _ = make_app("Bad")
    app.allowed_grant_types = "implicit password"
    app.allowed_scopes = "openid admin:everything"
    with pytest.raises(ValidationError) as excinfo:
        app.full_clean()
    assert {"allowed_grant_types", "allowed_scopes"} <= set(excinfo.value.message_dict)


def test_staff_can_revoke_a_consent(staff_client, make_app, user):
    app, _ = make_app("App A")
    Consent.objects.create(user=user, application=app, scope="openid")
    get_access_token_model().objects.create(
        user=user, application=app, token_checksum="c" * 64, expires="2999-01-01T00:00:00Z"
    )
    consent = Consent.objects.get()
    response = staff_client.post(
        "/admin/partners/consent/",
        {"action": "revoke_selected", "_selected_action": [consent.pk]},
    )
    assert response.status_code == 302
    assert not Consent.objects.exists()
    assert not get_access_token_model().objects.filter(application=app).exists()


def test_rotation_command_automatic_steps(oidc_key_file):
    first = keys.signing_jwk()["kid"]
    # a young active key: nothing happens
    call_command("oidc_rotate_keys")
    assert len(keys.public_jwks()["keys"]) == 1
    # an old active key: a new key is staged (published, not signing)
    call_command("oidc_rotate_keys", "--max-age-days", "0")
    assert len(keys.public_jwks()["keys"]) == 2 and keys.signing_jwk()["kid"] == first
    # staged long enough: it is activated
    call_command("oidc_rotate_keys", "--publish-hours", "0")
    assert keys.signing_jwk()["kid"] != first
    # once the old key's tokens have all expired, it is retired
    key_set = keys.key_set_load()
    previous = next(k for k in key_set.keys if k.state == keys.KEY_PREVIOUS)
    assert previous.retire_after > time.time()
    previous.retire_after = int(time.time()) - 1
    keys.key_set_write(key_set=key_set, path=oidc_key_file)
    call_command("oidc_rotate_keys")
    assert [k["kid"] for k in keys.public_jwks()["keys"]] == [keys.signing_jwk()["kid"]]


def test_seed_demo_refuses_where_demo_data_is_not_allowed(settings):
    from django.core.management.base import CommandError

    from accounts.models import User

    settings.DEMO_DATA_ALLOWED = False
    with pytest.raises(CommandError, match="published passwords"):
        call_command("seed_demo")
    assert not User.objects.exists()


def test_seed_demo_app_is_a_working_client():
    call_command("seed_demo")
    app = Application.objects.get(client_id="demo-partner-app")
    assert app.allows_grant_type("authorization-code") and app.allows_grant_type("refresh_token")
    assert not app.allows_grant_type("implicit")
    assert "openid" in app.scope_list()
    app.full_clean()


def test_cleanup_keeps_code_records_that_live_tokens_need(make_app, user):
    import uuid
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import get_refresh_token_model

    from partners.models import AuthorizationCode

    app, _ = make_app("App A")
    old = timezone.now() - timedelta(days=10)
    live_family, dead_family = uuid.uuid4(), uuid.uuid4()
    for n, family in enumerate((live_family, dead_family, None)):
        AuthorizationCode.objects.create(
            code_checksum=f"{n}" * 64,
            application=app,
            user=user,
            auth_time=0,
            created_at=old,
            token_family=family,
        )
    access = get_access_token_model().objects.create(
        user=user, application=app, token_checksum="a" * 64, expires="2999-01-01T00:00:00Z"
    )
    get_refresh_token_model().objects.create(
        user=user,
        application=app,
        token_checksum="r" * 64,
        token_family=live_family,
        access_token=access,
    )
    AuthorizationCode.objects.create(
        code_checksum="9" * 64, application=app, user=user, auth_time=0
    )
    call_command("oauth_cleanup")
    kept = set(AuthorizationCode.objects.values_list("code_checksum", flat=True))
    assert kept == {"0" * 64, "9" * 64}


def _client_credentials(client, app, secret):
    return client.post(
        "/o/token/",
        {"grant_type": "client_credentials"},
        HTTP_AUTHORIZATION="Basic "
        + base64.b64encode(f"{app.client_id}:{secret}".encode()).decode(),
        HTTP_X_FORWARDED_PROTO="https",
        secure=True,
    )


@pytest.mark.parametrize("where", ["failures", "application"])
def test_staff_see_and_unlock_a_locked_out_client(staff_client, make_app, settings, where):
    settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT = 3
    app, secret = make_app("Locked server", allowed_scopes="settlement:read")
    other, other_secret = make_app("Other server", allowed_scopes="settlement:read")
    machine = Client()
    for _ in range(3):
        assert _client_credentials(machine, app, "wrong").status_code == 401
        assert _client_credentials(machine, other, "wrong").status_code == 401
    assert _client_credentials(machine, app, secret).status_code == 429
    assert _client_credentials(machine, other, other_secret).status_code == 429

    listing = staff_client.get("/admin/partners/clientauthfailures/")
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "Locked server" in page and "Other server" in page
    assert page.count('alt="True"') == 2  # both refused now
    assert staff_client.get("/admin/partners/clientauthfailures/add/").status_code == 403

    if where == "failures":
        response = staff_client.post(
            "/admin/partners/clientauthfailures/",
            {
                "action": "unlock_selected",
                "_selected_action": [ClientAuthFailures.objects.get(application=app).pk],
            },
        )
    else:
        response = staff_client.post(
            "/admin/partners/application/",
            {"action": "unlock_client_authentication", "_selected_action": [app.pk]},
        )
    assert response.status_code == 302
    assert "1 failure window cleared." in [str(m) for m in get_messages(response.wsgi_request)]
    assert _client_credentials(machine, app, secret).status_code == 200
    # The other client stays refused, with the right secret too.
    assert _client_credentials(machine, other, other_secret).status_code == 429
    (event,) = PartnerEvent.objects.filter(action=PartnerEvent.Action.APP_CLIENT_UNLOCKED)
    assert (event.partner_id, event.application_id) == (app.partner_id, app.pk)
    assert event.actor.is_staff and event.data == {"windows": 1}
