"""A partner's owner signs in, creates an app, keeps its secret (shown once), and reads a
statement, in Chromium."""

import re
from datetime import date

import pytest
from django.contrib.auth.hashers import check_password
from playwright.sync_api import expect

from partners.models import Application, ApplicationReview, PartnerMember
from partners.settlement.models import Statement, StatementLine
from tests.factories import DEFAULT_PASSWORD, PartnerFactory, UserFactory


def sign_in_to_the_portal(page, user) -> None:
    page.goto("/login/?next=/partners/")
    form = page.locator("form:has(input[name=password])")
    form.locator("input[name=username]").fill(user.phone)
    form.locator("input[name=password]").fill(DEFAULT_PASSWORD)
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/partners/$"))


@pytest.mark.django_db(transaction=True)
def test_member_creates_an_app_sees_its_secret_once_and_reads_a_statement(page):
    partner = PartnerFactory(name="Alpha AI", payout_account_number="6222020200112233")
    owner = UserFactory(phone="+8613812345678")
    PartnerMember.objects.create(partner=partner, user=owner, role=PartnerMember.Role.OWNER)
    statement = Statement.objects.create(
        partner=partner,
        period_kind=Statement.Period.MONTH,
        period_start=date(2026, 10, 1),
        period_end=date(2026, 11, 1),
        status=Statement.Status.APPROVED,
        currency="CNY",
        earnings=4321,
        carried_in=0,
        adjustments=0,
        total=4321,
    )
    StatementLine.objects.create(
        statement=statement,
        kind=StatementLine.Kind.EARNING,
        role="app_share",
        model_name="alpha-large",
        gross=8642,
        amount=4321,
    )

    # Sign in with the Tokenpass account, then open the portal.
    sign_in_to_the_portal(page, owner)
    page.get_by_role("link", name="Alpha AI").click()
    expect(page.locator("#payout")).to_contain_text("•••• 2233")
    expect(page.locator("#payout")).not_to_contain_text("6222020200112233")

    # Create an app.
    page.get_by_role("link", name="Apps", exact=True).click()
    page.get_by_role("link", name="New app").click()
    page.get_by_label("App name").fill("Alpha Chat")
    page.get_by_label("Redirect URIs").fill("https://chat.alpha.example/callback")
    page.locator("#fieldset-allowed_grant_types").get_by_text("Client credentials").click()
    page.locator("#fieldset-allowed_scopes").get_by_text("settlement:read").click()
    page.get_by_role("button", name="Create app").click()

    # The secret is on the page once, and it is the app's secret.
    page.wait_for_url(re.compile(r"/partners/\d+/apps/\d+/$"))
    secret = page.locator("#client-secret").inner_text().strip()
    app = Application.objects.get(partner=partner)
    assert check_password(secret, app.client_secret)
    expect(page.locator("#client-id")).to_have_text(app.client_id)
    expect(page.get_by_text("Pending review").first).to_be_visible()
    assert app.review.status == ApplicationReview.Status.PENDING

    # Reloading does not show it again.
    page.reload()
    expect(page.locator("#client-id")).to_have_text(app.client_id)
    expect(page.locator("#client-secret")).to_have_count(0)
    assert secret not in page.content()

    # The statement, its lines and its CSV.
    page.get_by_role("link", name="Statements", exact=True).click()
    expect(page.locator("#statements")).to_contain_text("2026-10")
    expect(page.locator("#statements")).to_contain_text("4,321")
    page.get_by_role("link", name="2026-10").click()
    expect(page.locator("#statement-total")).to_have_text("4,321")
    expect(page.locator("#statement-lines")).to_contain_text("alpha-large")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download CSV").click()
    download = download_info.value
    assert download.suggested_filename == f"statement-{statement.pk}-2026-10.csv"
    with open(download.path(), encoding="utf-8") as csv_file:
        assert "alpha-large" in csv_file.read()


@pytest.mark.django_db(transaction=True)
def test_a_developer_unlocks_a_locked_out_app_and_revokes_its_tokens(page, live_server, settings):
    import secrets

    import requests

    settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT = 2
    partner = PartnerFactory(name="Alpha AI")
    developer = UserFactory(phone="+8613812345679")
    PartnerMember.objects.create(partner=partner, user=developer, role=PartnerMember.Role.DEVELOPER)
    secret = secrets.token_urlsafe(32)
    app = Application.objects.create(
        name="Alpha Server",
        partner=partner,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        allowed_grant_types="client-credentials",
        allowed_scopes="settlement:read",
        client_secret=secret,
    )

    def grant(presented: str) -> int:
        return requests.post(
            f"{live_server.url}/o/token/",
            data={"grant_type": "client_credentials"},
            auth=(app.client_id, presented),
            timeout=10,
        ).status_code

    # A server kept the old secret after a rotation: the app is locked out.
    assert [grant("old"), grant("old"), grant(secret)] == [401, 401, 429]

    sign_in_to_the_portal(page, developer)
    page.goto(f"/partners/{partner.pk}/apps/{app.pk}/")
    expect(page.locator("#client-auth-refused")).to_contain_text("from 1 address")
    page.get_by_role("button", name="Unlock now").click()
    expect(page.get_by_text("Client authentication is unlocked for this app.")).to_be_visible()
    expect(page.locator("#client-auth-refused")).to_have_count(0)
    assert grant(secret) == 200

    # A token may have leaked: the developer ends every one the app holds, after confirming.
    token = requests.post(
        f"{live_server.url}/o/token/",
        data={"grant_type": "client_credentials", "scope": "settlement:read"},
        auth=(app.client_id, secret),
        timeout=10,
    ).json()["access_token"]

    def statements() -> int:
        return requests.get(
            f"{live_server.url}/api/settlement/statements/",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        ).status_code

    assert statements() == 200
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke all client credentials tokens").click()
    expect(
        page.get_by_text("Every client credentials token of this app issued until now")
    ).to_be_visible()
    assert statements() == 401
