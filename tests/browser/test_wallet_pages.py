"""The wallet page in a real browser: balance and buckets, history with a filter, the
spending chart with its options, and the CSV download of what is shown."""

import csv
import io

import pytest

from tests.factories import DEFAULT_PASSWORD, PriceFactory, UserFactory, WalletAppFactory
from tests.wallet.conftest import fund, new_key
from wallet import services

pytestmark = pytest.mark.django_db(transaction=True)


def charge(user, app, tokens: int, model: str):
    return services.wallet_charge(
        user=user,
        app=app,
        model=model,
        input_tokens=tokens,
        cached_input_tokens=0,
        output_tokens=0,
        idempotency_key=new_key(),
    )


def sign_in(page, live_server, email: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", DEFAULT_PASSWORD)
    page.locator("main form button[type=submit]").first.click()
    page.wait_for_load_state()


def test_wallet_page_history_filter_chart_and_csv(page, live_server):
    person = UserFactory(email="wallet@example.com")
    PriceFactory(model__name="gpt-a", input_per_million=1_000_000)
    PriceFactory(model__name="gpt-b", input_per_million=1_000_000)
    chat, studio = WalletAppFactory(name="Chat A"), WalletAppFactory(name="Studio B")
    fund(person, 10_000)
    first = charge(person, chat, 1200, "gpt-a")
    charge(person, studio, 300, "gpt-b")
    services.wallet_refund(charge_id=first.pk, app=chat, amount=200, idempotency_key=new_key())

    sign_in(page, live_server, "wallet@example.com")
    page.goto(f"{live_server.url}/wallet/")
    assert page.inner_text("[data-testid=balance]") == "8,700"
    rows = page.locator("[data-testid=history] tbody tr")
    assert rows.count() == 4  # top-up, two charges, refund

    # The chart: one bar per app today, with the tokens each app charged net of refunds.
    chart = page.locator("[data-testid=spending-chart] svg")
    assert chart.get_attribute("role") == "img"
    assert page.locator("svg rect[data-group='Chat A']").get_attribute("data-value") == "1000"
    assert page.locator("svg rect[data-group='Studio B']").get_attribute("data-value") == "300"
    assert "Chat A" in (page.locator(".chart-legend").text_content() or "")

    # Switch the chart to models over 90 days.
    page.select_option("select[name=group]", "model")
    page.select_option("select[name=range]", "90")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**group=model**")
    assert page.locator("svg rect[data-group='gpt-a']").get_attribute("data-value") == "1000"
    assert "per week" in (page.locator("svg title#chart-title").text_content() or "")

    # Filter the history to Chat A's charges.
    page.select_option("select[name=kind]", "charge")
    page.select_option("select[name=app]", label="Chat A")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**kind=charge**")
    assert rows.count() == 1
    assert "Chat A" in rows.first.inner_text() and "-1,200" in rows.first.inner_text()

    # A bad date is a form error on the page.
    page.fill("[data-testid=history-filter] input[name=date_from]", "2026-11-20")
    page.fill("[data-testid=history-filter] input[name=date_to]", "2026-11-01")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_selector("[data-testid=filter-error]")
    assert rows.count() == 0

    # The CSV link downloads the filtered history.
    page.fill("[data-testid=history-filter] input[name=date_from]", "")
    page.fill("[data-testid=history-filter] input[name=date_to]", "")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_selector("[data-testid=history]")
    href = page.get_attribute("[data-testid=csv-link]", "href")
    assert href and "kind=charge" in href
    response = page.request.get(f"{live_server.url}{href}")
    assert response.status == 200
    lines = list(csv.reader(io.StringIO(response.text())))
    assert lines[0][:2] == ["created_at", "kind"]
    assert [(row[1], row[2], row[4]) for row in lines[1:]] == [("charge", "Chat A", "-1200")]
