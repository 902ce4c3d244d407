"""Client credentials access tokens are not stored (partners.oauth.tokens): a partner's
server may ask for one per call. They are checked by their signature and the revocation
list, through the real endpoints: our APIs, introspection (RFC 7662), revocation (RFC 7009)."""

import base64
import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from freezegun import freeze_time
from oauth2_provider.models import AccessToken

from partners.models import AccessTokenRevocation, Application, Partner, PartnerEvent
from partners.oauth import keys
from partners.oauth.services import oauth_expired_prune
from partners.oauth.tokens import access_token_issue, client_credentials_claims
from tests.factories import PartnerFactory, UserFactory
from tests.partners.test_settlement_api import SECRET, server_app, token_for

STATEMENTS = "/api/settlement/statements/"


def basic(app: Application) -> str:
    return "Basic " + base64.b64encode(f"{app.client_id}:{SECRET}".encode()).decode()


def bearer(client: Client, token: str, path: str = STATEMENTS):
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


def introspect(app: Application, token: str) -> dict:
    response = Client().post("/o/introspect/", {"token": token}, HTTP_AUTHORIZATION=basic(app))
    assert response.status_code == 200, response.content
    return response.json()


def revoke(app: Application, token: str, **extra: str):
    return Client().post(
        "/o/revoke_token/", {"token": token, **extra}, HTTP_AUTHORIZATION=basic(app)
    )


@pytest.fixture
def partner(db):
    return PartnerFactory(name="Alpha AI")


@pytest.fixture
def app(partner):
    return server_app(partner)


def test_a_client_credentials_token_is_not_stored_and_opens_the_api(client, app):
    token = token_for(client, app)

    assert not AccessToken.objects.filter(application=app).exists()
    claims = client_credentials_claims(token)
    assert claims is not None
    assert claims["gty"] == "client_credentials" and claims["sub"] == app.client_id
    assert bearer(client, token).status_code == 200


def test_introspection_describes_a_live_one_to_its_partner_only(client, app, partner):
    token = token_for(client, app)
    claims = client_credentials_claims(token)

    answer = introspect(app, token)
    assert answer["active"] is True
    assert answer["client_id"] == app.client_id
    assert answer["scope"] == "settlement:read"
    assert answer["token_type"] == "Bearer"
    assert (answer["jti"], answer["exp"], answer["iat"]) == (
        claims["jti"],
        claims["exp"],
        claims["iat"],
    )
    assert "sub" not in answer

    sibling = server_app(partner, name="Second server")
    assert introspect(sibling, token)["active"] is True
    stranger = server_app(PartnerFactory(name="Beta Labs"), name="Beta server")
    assert introspect(stranger, token) == {"active": False}


def test_revocation_is_at_once_everywhere_and_idempotent(client, app):
    token = token_for(client, app)
    kept = token_for(client, app)

    for _ in range(2):
        response = revoke(app, token, token_type_hint="access_token")
        assert response.status_code == 200, response.content
    assert list(AccessTokenRevocation.objects.values_list("jti", "application")) == [
        (client_credentials_claims(token)["jti"], app.pk)
    ]
    assert bearer(client, token).status_code == 401
    assert introspect(app, token) == {"active": False}
    # The hint is only a hint (RFC 7009 §2.1), and another token of the app lives on.
    assert bearer(client, kept).status_code == 200
    assert revoke(app, kept, token_type_hint="refresh_token").status_code == 200
    assert bearer(client, kept).status_code == 401


def test_another_client_cannot_revoke_it(client, app, partner):
    token = token_for(client, app)
    sibling = server_app(partner, name="Second server")

    assert revoke(sibling, token).status_code == 200
    assert not AccessTokenRevocation.objects.exists()
    assert bearer(client, token).status_code == 200


def test_a_persons_token_is_never_taken_for_one(client, app):
    """A person's access token is revoked by deleting its row; a valid signature must not
    bring it back. Only our signature over the gty claim makes a token stateless."""
    person = UserFactory()
    orphan = access_token_issue(
        client_id=app.client_id,
        subject=person.public_id,
        audience=[app.client_id],
        scopes=["settlement:read"],
        expires_in=600,
    )
    assert client_credentials_claims(orphan) is None
    assert bearer(client, orphan).status_code == 401
    assert introspect(app, orphan) == {"active": False}

    # The gty claim under our signature, but naming a person: refused as well.
    claims = json.loads(base64.urlsafe_b64decode(orphan.split(".")[1] + "=="))
    claims["gty"] = "client_credentials"
    signed = keys.jwt_sign(claims=claims, typ="at+jwt")
    assert client_credentials_claims(signed) is None
    assert bearer(client, signed).status_code == 401


def test_a_forged_or_altered_token_is_refused(client, app):
    token = token_for(client, app)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "settlement:read wallet:charge"
    altered = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    for forged in (
        f"{header}.{altered}.{signature}",
        f"{header}.{payload}.{signature[:-4]}AAAA",
        f"{header}.{payload}.",
        token + ".x",
        "e30.e30.e30",
    ):
        assert client_credentials_claims(forged) is None
        assert bearer(client, forged).status_code == 401
        assert introspect(app, forged) == {"active": False}


def test_it_dies_with_its_app_or_partner(client, app, partner):
    token = token_for(client, app)
    Partner.objects.filter(pk=partner.pk).update(status=Partner.Status.SUSPENDED)
    assert bearer(client, token).status_code == 401

    Partner.objects.filter(pk=partner.pk).update(status=Partner.Status.ACTIVE)
    assert bearer(client, token).status_code == 200
    app.delete()
    assert bearer(client, token).status_code == 401


def test_expired_ones_are_refused_and_their_revocations_pruned(client, app):
    token = token_for(client, app)
    revoked = token_for(client, app)
    assert revoke(app, revoked).status_code == 200

    with freeze_time(timezone.now() + timedelta(hours=1, seconds=5)):
        assert bearer(client, token).status_code == 401
        assert introspect(app, token) == {"active": False}
        # Revoking an expired token has nothing left to do.
        assert revoke(app, token).status_code == 200
        assert AccessTokenRevocation.objects.count() == 1
        assert oauth_expired_prune(code_older_than_seconds=0)["access_token_revocations"] == 1
    assert not AccessTokenRevocation.objects.exists()


def test_a_key_rotation_leaves_it_valid(client, app):
    token = token_for(client, app)
    keys.key_stage()
    keys.key_activate()

    assert bearer(client, token).status_code == 200
    assert introspect(app, token)["active"] is True
    assert client_credentials_claims(token_for(client, app))["iss"]


def test_staff_see_revocations_in_the_admin(app, staff_client):
    token = token_for(Client(), app)
    assert revoke(app, token).status_code == 200
    admin = staff_client

    listing = admin.get("/admin/partners/accesstokenrevocation/")
    assert listing.status_code == 200
    page = listing.content.decode()
    assert client_credentials_claims(token)["jti"] in page and app.name in page
    assert admin.get("/admin/partners/accesstokenrevocation/add/").status_code == 403


def test_garbage_bearer_tokens_never_cause_a_server_error(client, app):
    token = token_for(client, app)
    nested = base64.urlsafe_b64encode(b"[" * 2500).decode().rstrip("=")
    for garbage in (
        f"e30.{nested}.AA",
        f"{nested}.e30.AA",
        token + "=",
        token.replace(".", "=.", 1),
        token[:-2] + "@@",
        "..",
        "a" * 4000,
    ):
        assert client_credentials_claims(garbage) is None
        assert bearer(client, garbage).status_code == 401
        assert introspect(app, garbage) == {"active": False}
        assert revoke(app, garbage).status_code == 200
    assert bearer(client, token).status_code == 200


def test_resources_are_validated_and_all_kept(client, app):
    """RFC 8707 on a client credentials grant (DOT's path): each resource is checked, and a
    repeated one is kept whole in aud, which is what restricts a token that has no row."""
    form = "grant_type=client_credentials&scope=settlement%3Aread"
    for resources, status in (
        ("&resource=https%3A%2F%2Fa.example&resource=https%3A%2F%2Fb.example", 200),
        ("&resource=not-a-uri", 400),
    ):
        response = client.post(
            "/o/token/",
            form + resources,
            content_type="application/x-www-form-urlencoded",
            HTTP_AUTHORIZATION=basic(app),
        )
        assert response.status_code == status, response.content
    assert response.json()["error"] == "invalid_target"
    restricted = client.post(
        "/o/token/",
        form + "&resource=https%3A%2F%2Fa.example&resource=https%3A%2F%2Fb.example",
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=basic(app),
    ).json()["access_token"]
    claims = client_credentials_claims(restricted)
    assert claims["aud"] == [app.client_id, "https://a.example", "https://b.example"]
    # Restricted to those two: not a token for the settlement API.
    assert bearer(client, restricted).status_code == 401
    assert introspect(app, restricted)["aud"] == claims["aud"]


def test_a_token_of_a_deleted_app_does_not_open_a_new_app_with_its_client_id(client, app, partner):
    token = token_for(client, app)
    client_id = app.client_id
    app.delete()
    with freeze_time(timezone.now() + timedelta(seconds=2)):
        server_app(partner, client_id=client_id)
        assert bearer(client, token).status_code == 401
        assert introspect(Application.objects.get(client_id=client_id), token) == {"active": False}


def test_staff_revoke_all_of_an_apps_tokens_from_the_admin(app, partner, staff_client):
    server = Client()
    token = token_for(server, app)
    other_app = server_app(partner, name="Second server")
    other = token_for(server, other_app)

    response = staff_client.post(
        "/admin/partners/application/",
        {"action": "revoke_client_tokens", "_selected_action": [app.pk]},
    )
    assert response.status_code == 302
    assert bearer(server, token).status_code == 401
    assert introspect(other_app, token) == {"active": False}
    assert bearer(server, other).status_code == 200
    event = PartnerEvent.objects.get(action=PartnerEvent.Action.APP_CLIENT_TOKENS_REVOKED)
    assert event.application_id == app.pk and event.actor_id is not None
    with freeze_time(timezone.now() + timedelta(seconds=2)):
        assert bearer(server, token_for(server, app)).status_code == 200


def test_userinfo_has_nobody_to_describe_for_it(client, app):
    token = token_for(client, app)
    response = client.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code in (401, 403), response.content
