"""The partner portal through its pages: roles, isolation between partners, apps and their
secrets, usage, statements with CSV, webhooks, and staff review in the admin."""

import csv
import io
import json
import re
import time
from datetime import date, timedelta

import pytest
from django.contrib.auth.hashers import check_password
from django.contrib.sessions.models import Session
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from partners.models import (
    Application,
    ApplicationReview,
    Partner,
    PartnerEvent,
    PartnerMember,
)
from partners.portal import views as portal_views
from partners.settlement.models import Statement, StatementLine
from partners.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from tests.factories import PartnerFactory, UserFactory

pytestmark = pytest.mark.django_db
BACKEND = "accounts.backends.PhoneOrEmailBackend"


def member(partner, role):
    user = UserFactory()
    PartnerMember.objects.create(partner=partner, user=user, role=role)
    return user


@pytest.fixture
def partner_a(db):
    return PartnerFactory(
        name="Alpha AI",
        payout_bank_name="Bank of Alpha",
        payout_account_name="Alpha AI Ltd",
        payout_account_number="6222020200112233",
        payout_currency="CNY",
    )


@pytest.fixture
def partner_b(db):
    return PartnerFactory(name="Beta Labs")


@pytest.fixture
def as_role(client, partner_a):
    def sign_in(role, partner=None):
        user = member(partner or partner_a, role)
        client.force_login(user, backend=BACKEND)
        client.user = user
        return client

    return sign_in


def make_app(partner, name="Beta app", **fields):
    return Application.objects.create(
        name=name,
        partner=partner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        allowed_grant_types="client-credentials",
        allowed_scopes="settlement:read",
        redirect_uris="",
        algorithm=Application.RS256_ALGORITHM,
        **fields,
    )


def make_statement(partner, *, status=Statement.Status.APPROVED, start=date(2026, 10, 1)):
    statement = Statement.objects.create(
        partner=partner,
        period_kind=Statement.Period.MONTH,
        period_start=start,
        period_end=date(start.year + (start.month == 12), start.month % 12 + 1, 1),
        status=status,
        currency="CNY",
        earnings=1500,
        carried_in=0,
        adjustments=0,
        total=1500,
    )
    StatementLine.objects.create(
        statement=statement,
        kind=StatementLine.Kind.EARNING,
        role="app_share",
        model_name="=cmd|'/c calc'!A1",
        gross=3000,
        amount=1500,
        captures=3,
        input_tokens=1000,
        output_tokens=2000,
    )
    return statement


def app_form(**overrides):
    data = {
        "name": "Alpha Chat",
        "client_type": "confidential",
        "redirect_uris": "https://chat.alpha.example/callback\nhttps://chat.alpha.example/cb2",
        "allowed_grant_types": ["authorization-code", "refresh_token", "client-credentials"],
        "allowed_scopes": ["openid", "profile", "settlement:read"],
        "homepage_url": "https://alpha.example",
        "privacy_policy_url": "",
    }
    data.update(overrides)
    return data


def png_bytes(size=(64, 64), fmt="PNG"):
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def portal(name, partner, *args):
    return reverse(f"partners_portal:{name}", args=[partner.pk, *args])


# Who gets in ---------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_sign_in(client, partner_a):
    response = client.get(portal("overview", partner_a))
    assert response.status_code == 302
    assert reverse("accounts:login") in response["Location"]


def test_the_list_shows_only_the_persons_partners(as_role, partner_a, partner_b):
    client = as_role("developer")
    response = client.get(reverse("partners_portal:list"))
    assert response.status_code == 200
    assert "Alpha AI" in response.content.decode()
    assert "Beta Labs" not in response.content.decode()


def test_a_person_without_partners_sees_an_explanation(client):
    client.force_login(UserFactory(), backend=BACKEND)
    response = client.get(reverse("partners_portal:list"))
    assert "not a member of any partner organization" in response.content.decode()


@pytest.mark.parametrize(
    "name", ["overview", "apps", "app_create", "usage", "statements", "webhooks", "settings"]
)
def test_non_members_get_404_everywhere(client, partner_a, name):
    client.force_login(member(PartnerFactory(), "owner"), backend=BACKEND)
    assert client.get(portal(name, partner_a)).status_code == 404


def test_ids_of_another_partner_are_404_whatever_the_url(as_role, partner_a, partner_b):
    b_app = make_app(partner_b)
    b_statement = make_statement(partner_b)
    b_endpoint = WebhookEndpoint.objects.create(
        partner=partner_b, url="https://b.example/h", event_types="app.approved", secret_salt="x"
    )
    client = as_role("owner")

    urls = [
        portal("app_detail", partner_a, b_app.pk),
        portal("app_edit", partner_a, b_app.pk),
        portal("statement_detail", partner_a, b_statement.pk),
        portal("statement_csv", partner_a, b_statement.pk),
        portal("webhook_detail", partner_a, b_endpoint.pk),
        portal("overview", partner_b),
        portal("app_detail", partner_b, b_app.pk),
    ]
    for url in urls:
        assert client.get(url).status_code == 404, url
    for url in [
        portal("app_secret_rotate", partner_a, b_app.pk),
        portal("app_client_unlock", partner_a, b_app.pk),
        portal("webhook_secret_rotate", partner_a, b_endpoint.pk),
        portal("webhook_delete", partner_a, b_endpoint.pk),
    ]:
        assert client.post(url).status_code == 404, url
    assert WebhookEndpoint.objects.filter(pk=b_endpoint.pk).exists()
    assert not PartnerEvent.objects.exists()


def test_finance_sees_statements_and_usage_but_cannot_touch_apps(as_role, partner_a):
    app = make_app(partner_a, name="Alpha server")
    client = as_role("finance")

    assert client.get(portal("statements", partner_a)).status_code == 200
    assert client.get(portal("usage", partner_a)).status_code == 200
    assert client.get(portal("apps", partner_a)).status_code == 200
    assert client.get(portal("app_detail", partner_a, app.pk)).status_code == 200
    assert client.get(portal("app_create", partner_a)).status_code == 403
    assert client.post(portal("app_create", partner_a), app_form()).status_code == 403
    assert client.get(portal("app_edit", partner_a, app.pk)).status_code == 403
    assert client.post(portal("app_secret_rotate", partner_a, app.pk)).status_code == 403
    assert client.get(portal("webhooks", partner_a)).status_code == 403
    assert Application.objects.filter(partner=partner_a).count() == 1
    overview = client.get(portal("overview", partner_a)).content.decode()
    # Finance sees payout details, masked.
    assert "•••• 2233" in overview
    assert "6222020200112233" not in overview


def test_developers_never_see_payout_details_or_statements(as_role, partner_a):
    client = as_role("developer")
    overview = client.get(portal("overview", partner_a)).content.decode()

    assert "Bank of Alpha" not in overview
    assert "2233" not in overview
    assert client.get(portal("settings", partner_a)).status_code == 403
    assert client.get(portal("statements", partner_a)).status_code == 403
    assert client.get(portal("webhooks", partner_a)).status_code == 200


# Apps --------------------------------------------------------------------------------------------


def test_developer_creates_an_app_that_waits_for_review_and_sees_its_secret_once(
    as_role, partner_a
):
    client = as_role("developer")
    response = client.post(portal("app_create", partner_a), app_form())

    assert response.status_code == 302
    app = Application.objects.get(partner=partner_a)
    assert response["Location"] == portal("app_detail", partner_a, app.pk)
    assert app.review.status == ApplicationReview.Status.PENDING
    assert app.review.submitted_by == client.user
    assert app.redirect_uris.split() == [
        "https://chat.alpha.example/callback",
        "https://chat.alpha.example/cb2",
    ]
    assert set(app.allowed_grant_types.split()) == {
        "authorization-code",
        "refresh_token",
        "client-credentials",
    }
    assert app.allowed_scopes.split() == ["openid", "profile", "settlement:read"]
    first = client.get(response["Location"])
    assert first["Cache-Control"] == "no-store"
    secret = re.search(r'id="client-secret">([^<]+)<', first.content.decode()).group(1)
    assert check_password(secret, app.client_secret)
    assert secret not in app.client_secret
    again = client.get(response["Location"]).content.decode()
    assert secret not in again
    assert 'id="client-secret"' not in again
    assert "Pending review" in again
    assert PartnerEvent.objects.filter(
        partner=partner_a, action=PartnerEvent.Action.APP_CREATED, application_id=app.pk
    ).exists()


def test_a_new_secret_waits_for_its_page_encrypted_and_not_for_ever(as_role, partner_a):
    # The session store is a database table: it must never hold a client secret readable.
    client = as_role("developer")
    response = client.post(portal("app_create", partner_a), app_form())
    stored = Session.objects.get(session_key=client.session.session_key)
    raw, decoded = stored.session_data, stored.get_decoded()
    page = client.get(response["Location"]).content.decode()
    secret = re.search(r'id="client-secret">([^<]+)<', page).group(1)
    assert secret not in raw
    assert secret not in repr(decoded)

    # A stash older than SECRET_STASH_SECONDS is dropped unshown.
    app = Application.objects.get(partner=partner_a)
    rotated = client.post(portal("app_secret_rotate", partner_a, app.pk))
    session = client.session
    plain = json.dumps({"kind": "app", "pk": app.pk, "secret": "stale-secret"}).encode()
    aged = time.time() - portal_views.SECRET_STASH_SECONDS - 5
    session[portal_views.SECRET_SESSION_KEY] = (
        portal_views._stash_cipher().encrypt_at_time(plain, int(aged)).decode()
    )
    session.save()
    late = client.get(rotated["Location"]).content.decode()
    assert "stale-secret" not in late
    assert 'id="client-secret"' not in late
    assert portal_views.SECRET_SESSION_KEY not in client.session


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"redirect_uris": "ftp://x.example/cb"}, "redirect_uris"),
        ({"redirect_uris": "https://x.example/cb#frag"}, "redirect_uris"),
        ({"redirect_uris": ""}, "redirect_uris"),
        (
            {"redirect_uris": "\n".join(f"https://x.example/{i}" for i in range(11))},
            "redirect_uris",
        ),
        ({"allowed_scopes": ["openid", "admin:everything"]}, "allowed_scopes"),
        ({"allowed_grant_types": ["password"]}, "allowed_grant_types"),
        ({"allowed_grant_types": ["refresh_token"]}, "allowed_grant_types"),
        (
            {"client_type": "public", "allowed_grant_types": ["client-credentials"]},
            "allowed_grant_types",
        ),
        ({"name": ""}, "name"),
    ],
)
def test_bad_app_input_is_a_form_error_and_nothing_is_written(as_role, partner_a, overrides, field):
    client = as_role("owner")
    response = client.post(portal("app_create", partner_a), app_form(**overrides))

    assert response.status_code == 200
    assert response.context["form"].errors.get(field), response.context["form"].errors
    assert not Application.objects.exists()
    assert not ApplicationReview.objects.exists()


def test_logo_upload_is_checked_for_type_and_size(as_role, partner_a):
    client = as_role("developer")
    svg = SimpleUploadedFile("logo.svg", b"<svg onload='alert(1)'/>", content_type="image/svg+xml")
    response = client.post(portal("app_create", partner_a), {**app_form(), "logo": svg})
    assert response.context["form"].errors.get("logo")

    gif = SimpleUploadedFile("logo.gif", png_bytes(fmt="GIF"), content_type="image/gif")
    response = client.post(portal("app_create", partner_a), {**app_form(), "logo": gif})
    assert response.context["form"].errors.get("logo")

    huge = SimpleUploadedFile("logo.png", png_bytes(size=(2048, 64)), content_type="image/png")
    response = client.post(portal("app_create", partner_a), {**app_form(), "logo": huge})
    assert response.context["form"].errors.get("logo")
    assert not Application.objects.exists()


def test_logo_upload_is_stored(as_role, partner_a, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    client = as_role("developer")
    logo = SimpleUploadedFile("logo.png", png_bytes(), content_type="image/png")
    response = client.post(portal("app_create", partner_a), {**app_form(), "logo": logo})

    assert response.status_code == 302
    app = Application.objects.get()
    assert app.logo.name.startswith("app-logos/")
    assert (tmp_path / app.logo.name).is_file()


def test_edit_keeps_the_client_type_and_logs_the_change(as_role, partner_a):
    client = as_role("developer")
    client.post(portal("app_create", partner_a), app_form())
    app = Application.objects.get()
    stored_secret = app.client_secret

    response = client.post(
        portal("app_edit", partner_a, app.pk),
        app_form(
            name="Alpha Chat 2",
            client_type="public",
            redirect_uris="https://chat.alpha.example/new",
            allowed_grant_types=["authorization-code"],
        ),
    )

    assert response.status_code == 302
    app.refresh_from_db()
    assert app.name == "Alpha Chat 2"
    assert app.client_type == Application.CLIENT_CONFIDENTIAL
    assert app.redirect_uris == "https://chat.alpha.example/new"
    assert app.client_secret == stored_secret
    assert PartnerEvent.objects.filter(action=PartnerEvent.Action.APP_UPDATED).count() == 1


def test_rotating_the_secret_shows_the_new_one_once_and_the_old_one_dies(as_role, partner_a):
    client = as_role("owner")
    created = client.post(portal("app_create", partner_a), app_form())
    first = client.get(created["Location"]).content.decode()
    old = re.search(r'id="client-secret">([^<]+)<', first).group(1)
    app = Application.objects.get()

    response = client.post(portal("app_secret_rotate", partner_a, app.pk))
    page = client.get(response["Location"]).content.decode()
    new = re.search(r'id="client-secret">([^<]+)<', page).group(1)

    app.refresh_from_db()
    assert new != old
    assert check_password(new, app.client_secret)
    assert not check_password(old, app.client_secret)
    assert 'id="client-secret"' not in client.get(response["Location"]).content.decode()
    assert client.get(portal("app_secret_rotate", partner_a, app.pk)).status_code == 405


# Staff review --------------------------------------------------------------------------------------


def token_response(client, app, secret):
    return client.post(
        "/o/token/",
        {"grant_type": "client_credentials", "scope": "settlement:read"},
        HTTP_AUTHORIZATION="Basic "
        + __import__("base64").b64encode(f"{app.client_id}:{secret}".encode()).decode(),
    )


def test_a_pending_app_gets_no_token_until_staff_approve_it_in_the_admin(
    as_role, partner_a, staff_client, django_capture_on_commit_callbacks
):
    owner = as_role("owner")
    WebhookEndpoint.objects.create(
        partner=partner_a,
        url="https://alpha.example/hooks",
        event_types="app.approved app.suspended",
        secret_salt="s",
    )
    created = owner.post(portal("app_create", partner_a), app_form())
    secret = re.search(
        r'id="client-secret">([^<]+)<', owner.get(created["Location"]).content.decode()
    ).group(1)
    app = Application.objects.get()

    assert token_response(owner, app, secret).status_code == 401

    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(
            reverse("admin:partners_applicationreview_changelist"),
            {"action": "approve", "_selected_action": [app.review.pk]},
        )
    assert response.status_code == 302
    app.review.refresh_from_db()
    assert app.review.status == ApplicationReview.Status.APPROVED
    assert app.review.decided_by == staff_client.staff
    assert token_response(owner, app, secret).status_code == 200
    event = WebhookEvent.objects.get(event_type="app.approved")
    assert WebhookDelivery.objects.filter(event=event).count() == 1
    assert PartnerEvent.objects.filter(
        action=PartnerEvent.Action.APP_APPROVED, actor=staff_client.staff
    ).exists()

    with django_capture_on_commit_callbacks(execute=False):
        staff_client.post(
            reverse("admin:partners_applicationreview_changelist"),
            {"action": "suspend", "_selected_action": [app.review.pk]},
        )
    assert token_response(owner, app, secret).status_code == 401
    assert WebhookEvent.objects.filter(event_type="app.suspended").count() == 1


def test_suspending_a_partner_stops_its_apps_and_tells_it(
    staff_client, partner_a, django_capture_on_commit_callbacks
):
    app = make_app(partner_a, client_secret="s3cret-s3cret-s3cret")
    WebhookEndpoint.objects.create(
        partner=partner_a,
        url="https://alpha.example/hooks",
        event_types="app.suspended",
        secret_salt="s",
    )
    assert token_response(staff_client, app, "s3cret-s3cret-s3cret").status_code == 200

    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(
            reverse("admin:partners_partner_changelist"),
            {"action": "suspend", "_selected_action": [partner_a.pk]},
        )

    assert response.status_code == 302
    partner_a.refresh_from_db()
    assert partner_a.status == Partner.Status.SUSPENDED
    assert token_response(staff_client, app, "s3cret-s3cret-s3cret").status_code == 401
    event = WebhookEvent.objects.get(event_type="app.suspended")
    assert app.client_id in event.body
    assert PartnerEvent.objects.filter(action=PartnerEvent.Action.PARTNER_SUSPENDED).exists()

    staff_client.post(
        reverse("admin:partners_partner_changelist"),
        {"action": "approve", "_selected_action": [partner_a.pk]},
    )
    partner_a.refresh_from_db()
    assert partner_a.status == Partner.Status.ACTIVE
    assert PartnerEvent.objects.filter(action=PartnerEvent.Action.PARTNER_REINSTATED).exists()
    assert token_response(staff_client, app, "s3cret-s3cret-s3cret").status_code == 200


def test_a_pending_partner_gets_approved_once(staff_client):
    pending = PartnerFactory(status=Partner.Status.PENDING)
    url = reverse("admin:partners_partner_changelist")
    staff_client.post(url, {"action": "approve", "_selected_action": [pending.pk]})
    staff_client.post(url, {"action": "approve", "_selected_action": [pending.pk]})

    pending.refresh_from_db()
    assert pending.status == Partner.Status.ACTIVE
    assert pending.approved_at is not None
    assert PartnerEvent.objects.filter(action=PartnerEvent.Action.PARTNER_APPROVED).count() == 1


def test_the_partner_log_is_insert_only(staff_client, partner_a):
    from django.db import DatabaseError, transaction

    staff_client.post(
        reverse("admin:partners_partner_changelist"),
        {"action": "suspend", "_selected_action": [partner_a.pk]},
    )
    with pytest.raises(DatabaseError), transaction.atomic():
        PartnerEvent.objects.update(action="partner_approved")
    with pytest.raises(DatabaseError), transaction.atomic():
        PartnerEvent.objects.all().delete()


def test_admin_pages_render(staff_client, partner_a):
    member(partner_a, "owner")
    for name in [
        "admin:partners_partner_changelist",
        "admin:partners_applicationreview_changelist",
        "admin:partners_partnerevent_changelist",
        "admin:partners_webhookendpoint_changelist",
        "admin:partners_webhookdelivery_changelist",
    ]:
        assert staff_client.get(reverse(name)).status_code == 200, name
    page = staff_client.get(reverse("admin:partners_partner_change", args=[partner_a.pk]))
    assert page.status_code == 200


# Settings ------------------------------------------------------------------------------------------


def test_owner_changes_payout_details_which_stay_masked(as_role, partner_a):
    client = as_role("owner")
    page = client.get(portal("settings", partner_a)).content.decode()
    assert "6222020200112233" not in page
    assert "•••• 2233" in page

    response = client.post(
        portal("settings", partner_a),
        {
            "form": "payout",
            "payout_account_number": "DE89 3704 0044 0532 0130 00",
            "payout_currency": "eur",
            "payout_bank_name": "",
        },
    )

    assert response.status_code == 302
    partner_a.refresh_from_db()
    assert partner_a.payout_account_number == "DE89370400440532013000"
    assert partner_a.payout_currency == "EUR"
    # Empty fields keep what was stored.
    assert partner_a.payout_bank_name == "Bank of Alpha"
    event = PartnerEvent.objects.get(action=PartnerEvent.Action.PARTNER_UPDATED)
    assert "DE89" not in str(event.data)


@pytest.mark.parametrize("currency", ["EURO", "12", ""])
def test_payout_currency_must_be_iso_4217(as_role, partner_a, currency):
    client = as_role("owner")
    response = client.post(
        portal("settings", partner_a), {"form": "payout", "payout_currency": currency}
    )
    assert response.status_code == 200
    assert response.context["payout_form"].errors.get("payout_currency")
    partner_a.refresh_from_db()
    assert partner_a.payout_currency == "CNY"


def test_owner_edits_the_organization(as_role, partner_a):
    client = as_role("owner")
    response = client.post(
        portal("settings", partner_a),
        {
            "form": "profile",
            "name": "Alpha AI",
            "legal_name": "Alpha Artificial Intelligence Co., Ltd.",
            "registration_id": "91310000MA1FL0000X",
            "address": "1 Example Road, Shanghai",
            "contact_email": "partners@alpha.example",
            "is_model_vendor": "on",
        },
    )
    assert response.status_code == 302
    partner_a.refresh_from_db()
    assert partner_a.legal_name.startswith("Alpha Artificial")
    assert partner_a.is_model_vendor and not partner_a.is_app_developer

    response = client.post(portal("settings", partner_a), {"form": "profile", "name": "Alpha AI"})
    assert response.status_code == 200
    assert response.context["profile_form"].non_field_errors()


# Statements and usage ------------------------------------------------------------------------------


def test_statements_list_detail_and_csv(as_role, partner_a, partner_b):
    statement = make_statement(partner_a)
    make_statement(partner_a, status=Statement.Status.DRAFT, start=date(2026, 11, 1))
    make_statement(partner_b)
    client = as_role("finance")

    listing = client.get(portal("statements", partner_a))
    assert list(listing.context["page"].object_list) == [statement]

    detail = client.get(portal("statement_detail", partner_a, statement.pk)).content.decode()
    assert "2026-10" in detail and "1500" in detail

    response = client.get(portal("statement_csv", partner_a, statement.pk))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:4] == ["statement", "period_start", "period_end", "line"]
    assert rows[1][0] == str(statement.pk)
    assert rows[1][rows[0].index("amount")] == "1500"
    # A formula in a cell is neutralised for spreadsheets.
    assert rows[1][rows[0].index("model")].startswith("'=")


def test_drafts_are_not_shown(as_role, partner_a):
    draft = make_statement(partner_a, status=Statement.Status.DRAFT)
    client = as_role("owner")
    assert client.get(portal("statement_detail", partner_a, draft.pk)).status_code == 404


def test_usage_page_sums_the_partners_charges(as_role, partner_a, partner_b):
    from tests.partners.test_settlement_api import make_charge

    app = make_app(partner_a, name="Alpha chat")
    other = make_app(partner_b, name="Beta chat")
    now = timezone.now()
    make_charge(app=app, amount=300, at=now)
    make_charge(app=app, amount=200, at=now - timedelta(days=1))
    make_charge(app=other, amount=999, at=now)
    client = as_role("finance")

    response = client.get(portal("usage", partner_a), {"group_by": "app"})

    assert response.status_code == 200
    assert response.context["totals"].amount == 500
    [row] = response.context["rows"]
    assert row.app_client_id == app.client_id and row.charges == 2
    assert "Beta chat" not in response.content.decode()

    bad = client.get(
        portal("usage", partner_a), {"date_from": "2026-01-10", "date_to": "2026-01-01"}
    )
    assert bad.status_code == 200
    assert bad.context["form"].errors
    assert bad.context["rows"] == []
    too_long = client.get(
        portal("usage", partner_a), {"date_from": "2024-01-01", "date_to": "2026-01-01"}
    )
    assert too_long.context["form"].errors


# Webhooks -----------------------------------------------------------------------------------------


def test_webhook_endpoint_through_the_portal(as_role, partner_a, settings):
    client = as_role("developer")
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False

    refused = client.post(
        portal("webhooks", partner_a),
        {"url": "http://169.254.169.254/latest", "event_types": ["statement.issued"]},
    )
    assert refused.status_code == 200
    assert refused.context["form"].errors.get("url")
    no_events = client.post(
        portal("webhooks", partner_a), {"url": "https://93.184.216.34/hooks", "event_types": []}
    )
    assert no_events.context["form"].errors.get("event_types")
    assert not WebhookEndpoint.objects.exists()

    created = client.post(
        portal("webhooks", partner_a),
        {"url": "https://93.184.216.34/hooks", "event_types": ["statement.issued", "app.approved"]},
    )
    assert created.status_code == 302
    endpoint = WebhookEndpoint.objects.get(partner=partner_a)
    page = client.get(created["Location"]).content.decode()
    secret = re.search(r'id="webhook-secret">([^<]+)<', page).group(1)
    assert secret.startswith("whsec_")
    assert secret not in client.get(created["Location"]).content.decode()

    updated = client.post(
        created["Location"],
        {"url": "https://93.184.216.34/v2", "event_types": ["app.suspended"], "description": ""},
    )
    assert updated.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.url == "https://93.184.216.34/v2"
    assert endpoint.event_type_list() == ["app.suspended"]
    assert endpoint.is_active is False

    client.post(portal("webhook_delete", partner_a, endpoint.pk))
    assert not WebhookEndpoint.objects.exists()


def test_delivery_log_shows_each_attempt(as_role, partner_a):
    from django.db import transaction

    from partners.webhooks.services import webhook_delivery_attempt, webhook_event_enqueue
    from tests.partners.test_webhooks import Listener

    client = as_role("developer")
    with Listener(statuses=[503]) as listener:
        endpoint = WebhookEndpoint.objects.create(
            partner=partner_a, url=listener.url, event_types="app.approved", secret_salt="s"
        )
        with transaction.atomic():
            event = webhook_event_enqueue(partner=partner_a, event_type="app.approved", payload={})
        delivery = WebhookDelivery.objects.get(event=event)
        webhook_delivery_attempt(delivery_id=delivery.pk)
        webhook_delivery_attempt(delivery_id=delivery.pk)

    page = client.get(portal("webhook_detail", partner_a, endpoint.pk)).content.decode()

    assert event.public_id in page
    assert "HTTP 503" in page
    assert "HTTP 200" in page
    assert "Delivered" in page or "delivered" in page


def test_pages_render_in_chinese(as_role, partner_a):
    client = as_role("owner")
    make_statement(partner_a)
    app = make_app(partner_a, name="Alpha server")
    for url in [
        reverse("partners_portal:list"),
        portal("overview", partner_a),
        portal("apps", partner_a),
        portal("app_create", partner_a),
        portal("app_detail", partner_a, app.pk),
        portal("usage", partner_a),
        portal("statements", partner_a),
        portal("webhooks", partner_a),
        portal("settings", partner_a),
    ]:
        response = client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans")
        assert response.status_code == 200, url
        assert '<html lang="zh-hans">' in response.content.decode()


def test_members_find_the_portal_in_the_top_bar(client, partner_a):
    outsider = UserFactory()
    client.force_login(outsider, backend=BACKEND)
    assert "Partner portal" not in client.get(reverse("accounts:profile")).content.decode()
    PartnerMember.objects.create(partner=partner_a, user=outsider, role="finance")
    page = client.get(reverse("accounts:profile")).content.decode()
    assert f'href="{reverse("partners_portal:list")}"' in page


def partner_change_data(partner, members):
    data = {
        "name": partner.name,
        "is_app_developer": "on",
        "legal_name": "",
        "registration_id": "",
        "address": "",
        "contact_email": "",
        "payout_bank_name": "",
        "payout_account_name": "",
        "payout_account_number": "",
        "payout_swift_code": "",
        "payout_currency": partner.payout_currency,
        "members-TOTAL_FORMS": str(len(members)),
        "members-INITIAL_FORMS": str(sum(1 for m in members if m.get("id"))),
        "members-MIN_NUM_FORMS": "0",
        "members-MAX_NUM_FORMS": "1000",
    }
    for i, m in enumerate(members):
        for key, value in m.items():
            data[f"members-{i}-{key}"] = value
        data[f"members-{i}-partner"] = str(partner.pk)
    return data


def test_staff_manage_members_in_the_admin_and_it_is_logged(staff_client, partner_a):
    person = UserFactory()
    url = reverse("admin:partners_partner_change", args=[partner_a.pk])

    response = staff_client.post(
        url, partner_change_data(partner_a, [{"user": str(person.pk), "role": "developer"}])
    )
    assert response.status_code == 302, response.context and response.context["errors"]
    membership = PartnerMember.objects.get(partner=partner_a, user=person)
    assert membership.role == "developer"

    staff_client.post(
        url,
        partner_change_data(
            partner_a, [{"id": str(membership.pk), "user": str(person.pk), "role": "finance"}]
        ),
    )
    membership.refresh_from_db()
    assert membership.role == "finance"

    staff_client.post(
        url,
        partner_change_data(
            partner_a,
            [{"id": str(membership.pk), "user": str(person.pk), "role": "finance", "DELETE": "on"}],
        ),
    )
    assert not PartnerMember.objects.filter(pk=membership.pk).exists()
    actions = list(
        PartnerEvent.objects.filter(partner=partner_a).order_by("pk").values_list("action", "actor")
    )
    assert actions == [
        ("member_added", staff_client.staff.pk),
        ("member_changed", staff_client.staff.pk),
        ("member_removed", staff_client.staff.pk),
    ]


def test_an_organization_has_at_most_50_apps(as_role, partner_a):
    for i in range(50):
        make_app(partner_a, name=f"App {i}")
    client = as_role("owner")

    response = client.post(portal("app_create", partner_a), app_form())

    assert response.status_code == 200
    assert "at most 50 apps" in str(response.context["form"].non_field_errors())
    assert Application.objects.filter(partner=partner_a).count() == 50
    assert not ApplicationReview.objects.exists()


def test_the_app_models_own_rules_show_on_the_form(as_role, partner_a, settings):
    # Production allows only https redirect URIs; DOT's validator says so on the form.
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    }
    client = as_role("developer")
    response = client.post(
        portal("app_create", partner_a), app_form(redirect_uris="http://chat.alpha.example/cb")
    )

    assert response.status_code == 200
    assert response.context["form"].errors.get("redirect_uris")
    assert not Application.objects.exists()


def created_and_approved(client, partner):
    """An app the member creates in the portal, approved by staff: (app, its secret)."""
    created = client.post(portal("app_create", partner), app_form())
    page = client.get(created["Location"]).content.decode()
    secret = re.search(r'id="client-secret">([^<]+)<', page).group(1)
    app = Application.objects.get()
    ApplicationReview.objects.filter(application=app).update(
        status=ApplicationReview.Status.APPROVED
    )
    return app, secret


def test_a_locked_out_app_is_shown_and_its_developers_unlock_it(as_role, partner_a, settings):
    """Too many failed client authentications refuse the app, right secret included; the
    app's page says so, and a developer (not finance) unlocks it, which the log records."""
    from django.test import Client

    settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT = 2
    client = as_role("developer")
    app, secret = created_and_approved(client, partner_a)
    server = Client()
    assert token_response(server, app, secret).status_code == 200
    assert (
        'id="client-auth-refused"'
        not in client.get(portal("app_detail", partner_a, app.pk)).content.decode()
    )
    for _ in range(2):
        assert token_response(server, app, "old-secret").status_code == 401
    assert token_response(server, app, secret).status_code == 429

    page = client.get(portal("app_detail", partner_a, app.pk)).content.decode()
    assert 'id="client-auth-refused"' in page and "from 1 address" in page
    assert "Unlock now" in page

    finance = Client()
    finance.force_login(member(partner_a, "finance"), backend=BACKEND)
    assert "Unlock now" not in finance.get(portal("app_detail", partner_a, app.pk)).content.decode()
    assert finance.post(portal("app_client_unlock", partner_a, app.pk)).status_code == 403
    assert token_response(server, app, secret).status_code == 429

    response = client.post(portal("app_client_unlock", partner_a, app.pk))
    assert response.status_code == 302
    assert token_response(server, app, secret).status_code == 200
    assert 'id="client-auth-refused"' not in client.get(response["Location"]).content.decode()
    event = PartnerEvent.objects.get(action=PartnerEvent.Action.APP_CLIENT_UNLOCKED)
    assert event.application_id == app.pk
    assert event.actor_id == int(client.session["_auth_user_id"])
    assert client.get(portal("app_client_unlock", partner_a, app.pk)).status_code == 405


def test_developers_revoke_all_client_credentials_tokens_of_an_app(as_role, partner_a, partner_b):
    """Client credentials tokens are not stored: the app's page ends every one issued so far
    at once (finance cannot; another partner's app is not found), and the log says who."""
    from django.test import Client
    from freezegun import freeze_time

    client = as_role("developer")
    app, secret = created_and_approved(client, partner_a)
    server = Client()
    token = token_response(server, app, secret).json()["access_token"]
    statements = "/api/settlement/statements/"
    assert server.get(statements, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert (
        'id="revoke-client-tokens"'
        in client.get(portal("app_detail", partner_a, app.pk)).content.decode()
    )

    finance = Client()
    finance.force_login(member(partner_a, "finance"), backend=BACKEND)
    assert (
        'id="revoke-client-tokens"'
        not in finance.get(portal("app_detail", partner_a, app.pk)).content.decode()
    )
    assert finance.post(portal("app_client_tokens_revoke", partner_a, app.pk)).status_code == 403
    stranger = Client()
    stranger.force_login(member(partner_b, "owner"), backend=BACKEND)
    assert stranger.post(portal("app_client_tokens_revoke", partner_b, app.pk)).status_code == 404
    assert server.get(statements, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200

    assert client.post(portal("app_client_tokens_revoke", partner_a, app.pk)).status_code == 302
    assert server.get(statements, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    with freeze_time(timezone.now() + timedelta(seconds=2)):
        fresh = token_response(server, app, secret).json()["access_token"]
        assert server.get(statements, HTTP_AUTHORIZATION=f"Bearer {fresh}").status_code == 200
    event = PartnerEvent.objects.get(action=PartnerEvent.Action.APP_CLIENT_TOKENS_REVOKED)
    assert event.application_id == app.pk
    assert event.actor_id == int(client.session["_auth_user_id"])
