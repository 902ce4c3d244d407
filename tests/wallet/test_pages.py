"""The wallet page: buckets, filtered history, the spending chart and the CSV export."""

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from freezegun import freeze_time

from tests.factories import PriceFactory, UserFactory, WalletAppFactory
from tests.wallet.conftest import fund, new_key
from wallet import services

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def charge(user, app, *, tokens: int, model: str = "gpt-test"):
    """A charge of exactly ``tokens`` with the gpt-test price (1 token per input token)."""
    return services.wallet_charge(
        user=user,
        app=app,
        model=model,
        input_tokens=tokens,
        cached_input_tokens=0,
        output_tokens=0,
        idempotency_key=new_key(),
    )


@pytest.fixture
def setup(user, price):
    """Given a funded user, two apps and two models, charges on known days."""
    PriceFactory(
        model__name="gpt-other",
        input_per_million=1_000_000,
        cached_input_per_million=0,
        output_per_million=0,
        effective_from=NOW - timedelta(days=400),
    )
    price.effective_from = NOW - timedelta(days=400)
    price.save()
    alpha = WalletAppFactory(name="Alpha")
    beta = WalletAppFactory(name="Beta")
    with freeze_time(NOW - timedelta(days=3)):
        fund(user, 100_000)
        c1 = charge(user, alpha, tokens=1200)
        charge(user, beta, tokens=300, model="gpt-other")
    with freeze_time(NOW - timedelta(days=1)):
        charge(user, alpha, tokens=500, model="gpt-other")
        services.wallet_refund(charge_id=c1.pk, app=alpha, amount=200, idempotency_key=new_key())
    with freeze_time(NOW - timedelta(days=60)):
        charge(user, beta, tokens=7000)
    return {"user": user, "alpha": alpha, "beta": beta}


def get(client, user, **params):
    client.force_login(user)
    with freeze_time(NOW):
        return client.get(reverse("wallet:overview"), params)


def history_kinds(response) -> list[str]:
    return re.findall(r'<tr data-kind="(\w+)">', response.content.decode())


def test_page_lists_buckets_and_every_movement(client, setup):
    response = get(client, setup["user"])
    assert response.status_code == 200
    body = response.content.decode()
    # 100000 funded; 1200 + 300 + 500 + 7000 charged; 200 refunded.
    # Amounts read with thousands separators.
    assert 'data-testid="balance">91,200<' in body
    assert history_kinds(response) == ["refund", "charge", "charge", "charge", "topup", "charge"]
    # The buckets: what is left of the purchase and the non-expiring refund.
    assert "<td>91,000</td><td>never</td>" in body
    assert "<td>200</td><td>never</td>" in body


def test_history_filters_by_kind_app_model_and_dates(client, setup):
    user, alpha = setup["user"], setup["alpha"]
    assert history_kinds(get(client, user, kind="refund")) == ["refund"]
    assert history_kinds(get(client, user, kind="credit")) == ["topup"]
    # Alpha's two charges and its refund.
    assert history_kinds(get(client, user, app=str(alpha.pk))) == ["refund", "charge", "charge"]
    assert history_kinds(get(client, user, model="gpt-other")) == ["charge", "charge"]
    # The refund belongs to its charge's model.
    assert history_kinds(get(client, user, model="gpt-test")) == ["refund", "charge", "charge"]
    day = (NOW - timedelta(days=3)).date().isoformat()
    assert history_kinds(get(client, user, date_from=day, date_to=day)) == [
        "charge",
        "charge",
        "topup",
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"kind": "bogus"},
        {"app": "999999"},
        {"app": "x"},
        {"model": "no-such-model"},
        {"date_from": "2026-13-45"},
        {"date_from": "2026-11-10", "date_to": "2026-11-01"},
        {"date_to": "9999-12-31"},
        {"date_from": "0001-01-01"},
        {"date_from": "2020-01-01", "date_to": "2026-11-01"},
        {"range": "7"},
        {"group": "vendor"},
        {"page": "abc"},
    ],
)
def test_bad_filters_are_form_errors_not_server_errors(client, setup, params):
    response = get(client, setup["user"], **params)
    assert response.status_code == 200
    if "page" not in params:
        assert 'data-testid="filter-error"' in response.content.decode()
        assert history_kinds(response) == []


def test_bad_chart_options_are_reported(client, setup):
    response = get(client, setup["user"], range="7")
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()


def test_another_users_app_is_not_a_valid_filter(client, setup):
    other = UserFactory()
    stranger_app = WalletAppFactory(name="Stranger")
    fund(other, 10_000)
    charge(other, stranger_app, tokens=10)
    response = get(client, setup["user"], app=str(stranger_app.pk))
    assert 'data-testid="filter-error"' in response.content.decode()


def test_page_shows_only_the_users_own_data(client, setup):
    other = UserFactory()
    fund(other, 50_000)
    gamma = WalletAppFactory(name="Gamma")
    with freeze_time(NOW - timedelta(days=2)):
        charge(other, gamma, tokens=4444)
    response = get(client, setup["user"])
    body = response.content.decode()
    assert "Gamma" not in body
    assert "4444" not in body
    assert len(history_kinds(get(client, other))) == 2


def test_chart_draws_known_charges_by_app(client, setup):
    response = get(client, setup["user"])
    svg = response.content.decode()
    assert "<svg" in svg and "<title" in svg and "<desc" in svg
    day3 = (NOW - timedelta(days=3)).date().isoformat()
    day1 = (NOW - timedelta(days=1)).date().isoformat()
    # Alpha: 1200 charged, 200 refunded, on day -3; 500 on day -1. Beta: 300 on day -3.
    assert f'data-group="Alpha" data-period="{day3}" data-value="1000"' in svg
    assert f'data-group="Beta" data-period="{day3}" data-value="300"' in svg
    assert f'data-group="Alpha" data-period="{day1}" data-value="500"' in svg
    assert f'data-period="{day3}" data-total="1300"' in svg
    # The 60-day-old charge is outside the 30-day default.
    assert 'data-value="7000"' not in svg
    assert "1800 tokens in total." in svg


def test_chart_by_model_over_90_days_is_weekly(client, setup):
    response = get(client, setup["user"], range="90", group="model")
    svg = response.content.decode()
    assert "per week" in svg
    assert re.search(r'data-group="gpt-test" data-period="[\d-]+" data-value="7000"', svg)
    values = [int(v) for v in re.findall(r'data-group="gpt-other" [^>]*data-value="(\d+)"', svg)]
    assert sum(values) == 800
    assert "8800 tokens in total." in svg


def test_chart_bar_heights_are_proportional(client, setup):
    svg = get(client, setup["user"]).content.decode()
    heights = {
        (group, int(value)): int(height)
        for height, group, value in re.findall(
            r'height="(\d+)" fill="[^"]+" data-group="(\w+)" data-period="[\d-]+" '
            r'data-value="(\d+)"',
            svg,
        )
    }
    # The tallest stack (1300) fills the plot's 200 units.
    assert heights[("Alpha", 1000)] == 1000 * 200 // 1300
    assert heights[("Alpha", 500)] == 500 * 200 // 1300


def test_csv_export_is_the_filtered_history(client, setup):
    user, alpha = setup["user"], setup["alpha"]
    client.force_login(user)
    with freeze_time(NOW):
        response = client.get(reverse("wallet:history_csv"), {"app": str(alpha.pk)})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "created_at",
        "kind",
        "app",
        "model",
        "balance_change",
        "held_change",
        "reference",
    ]
    body = rows[1:]
    assert [row[1] for row in body] == ["refund", "charge", "charge"]
    assert [row[3] for row in body] == ["gpt-test", "gpt-other", "gpt-test"]
    assert [row[4] for row in body] == ["200", "-500", "-1200"]
    assert {row[2] for row in body} == {"Alpha"}
    assert body[1][3] == "gpt-other"
    assert body[0][0] == (NOW - timedelta(days=1)).isoformat()


def test_csv_with_bad_filters_is_a_400(client, setup):
    client.force_login(setup["user"])
    response = client.get(reverse("wallet:history_csv"), {"date_from": "yesterday"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "date_from" in response.json()["error"]["details"]


def test_pages_need_sign_in(client):
    assert client.get(reverse("wallet:overview")).status_code == 302
    assert client.get(reverse("wallet:history_csv")).status_code == 302


def test_empty_wallet_page(client, user):
    client.force_login(user)
    response = client.get(reverse("wallet:overview"))
    assert response.status_code == 200
    assert "0 tokens in total." in response.content.decode()


def test_holds_and_releases_show_as_reserved_movements(client, user, app, price):
    fund(user, 1000)
    hold = services.wallet_hold_create(user=user, app=app, amount=300, idempotency_key=new_key())
    services.wallet_hold_release(hold_id=hold.pk, app=app, idempotency_key=new_key())
    client.force_login(user)
    response = client.get(reverse("wallet:overview"), {"kind": "hold"})
    assert history_kinds(response) == ["release", "hold"]
    body = response.content.decode()
    assert "<td>-300</td><td>+300</td>" in body
    assert "<td>+300</td><td>-300</td>" in body


def test_history_is_paginated(client, user, app, price):
    fund(user, 100_000)
    for _ in range(30):
        charge(user, app, tokens=1)
    client.force_login(user)
    first = client.get(reverse("wallet:overview"))
    assert len(history_kinds(first)) == 25
    second = client.get(reverse("wallet:overview"), {"page": "2"})
    assert len(history_kinds(second)) == 6


def test_seed_demo_gives_the_demo_user_a_wallet_with_history(client):
    from django.core.management import call_command

    from accounts.models import User
    from partners.management.commands.seed_demo import DEMO_CHARGES, DEMO_PHONE
    from tests.wallet.conftest import balance
    from wallet.models import Charge

    call_command("seed_demo")
    demo = User.objects.get(phone=DEMO_PHONE)
    after_first = balance(demo)
    charged = sum(Charge.objects.filter(user=demo).values_list("amount", flat=True))
    assert Charge.objects.filter(user=demo).count() == len(DEMO_CHARGES)
    assert after_first == 1_000_000 - charged and charged > 0
    # Running it again changes nothing.
    call_command("seed_demo")
    assert balance(demo) == after_first
    assert Charge.objects.filter(user=demo).count() == len(DEMO_CHARGES)
    client.force_login(demo)
    page = client.get(reverse("wallet:overview")).content.decode()
    assert len(history_kinds_from(page)) == 1 + len(DEMO_CHARGES)
    assert 'data-group="Demo Chat"' in page


def history_kinds_from(body: str) -> list[str]:
    return re.findall(r'<tr data-kind="(\w+)">', body)


def test_csv_cells_from_partners_cannot_run_as_formulas(client, user, price):
    app = WalletAppFactory(name='=HYPERLINK("http://evil.example","x")')
    fund(user, 1000)
    charge(user, app, tokens=10)
    client.force_login(user)
    response = client.get(reverse("wallet:history_csv"), {"kind": "charge"})
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[1][2] == '\'=HYPERLINK("http://evil.example","x")'
    assert rows[1][4] == "-10"  # amounts stay plain integers
