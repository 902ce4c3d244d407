"""The statement workflow through the admin and the commands: close, approve, pay with a
payout reference (ledger postings), carry forward below the minimum payout, staff
adjustments as new lines, refunds in the period they are posted, and reconciliation."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from freezegun import freeze_time

from partners.agreements import services as agreements
from partners.agreements.models import Agreement
from partners.settlement import services
from partners.settlement.models import Statement, StatementLine
from partners.settlement.services import PAYOUTS_ACCOUNT_KIND, WorkflowError
from partners.webhooks.models import WebhookEvent
from tests.factories import PartnerFactory, PriceFactory, UserFactory, WalletAppFactory
from tests.wallet.conftest import current_balance, fund, new_key
from wallet import services as wallet
from wallet.models import LedgerAccount, LedgerEntry

pytestmark = pytest.mark.django_db

SINCE = datetime(2026, 9, 1, tzinfo=UTC)


@pytest.fixture
def shop(settings):
    """A partner with a 60% revenue share on its app, and a user who spends in it."""
    settings.SETTLEMENT_MINIMUM_PAYOUT = {"*": 1000}
    partner = PartnerFactory(name="Shop")
    app = WalletAppFactory(partner=partner)
    PriceFactory(model__name="m1", input_per_million=1_000_000, effective_from=SINCE)
    agreements.agreement_create(
        partner_id=partner.pk,
        kind=Agreement.Kind.REVENUE_SHARE,
        share_bps=6000,
        effective_from=SINCE,
    )
    user = UserFactory()
    fund(user, 100_000)
    return partner, app, user


def spend(user, app, tokens: int, at: str):
    with freeze_time(at):
        return wallet.wallet_charge(
            user=user,
            app=app,
            model="m1",
            input_tokens=tokens,
            cached_input_tokens=0,
            output_tokens=0,
            idempotency_key=new_key(),
        )


def payable(partner) -> int:
    return current_balance(LedgerAccount.objects.get(partner=partner, kind="partner_payable"))


def run_action(client, action: str, statement: Statement, **extra):
    return client.post(
        reverse("admin:partners_statement_changelist"),
        {"action": action, "_selected_action": [statement.pk], **extra},
    )


def test_close_approve_and_pay_through_the_admin(shop, staff_client):
    partner, app, user = shop
    spend(user, app, 3000, "2026-10-03 12:00")
    spend(user, app, 2000, "2026-10-31 23:59:59")  # the last second of October
    spend(user, app, 1000, "2026-11-01 00:00:00")  # the first of November

    call_command("settlement_run", "2026-10")

    statement = Statement.objects.get(partner=partner, period_kind="month")
    assert (statement.status, statement.total) == (Statement.Status.DRAFT, 3000)
    [line] = statement.lines.all()
    assert (line.kind, line.app_id, line.model_name, line.captures, line.gross, line.amount) == (
        "earning",
        app.pk,
        "m1",
        2,
        5000,
        3000,
    )
    # Statements are read-only in the admin: no change form.
    page = staff_client.get(reverse("admin:partners_statement_change", args=[statement.pk]))
    assert page.status_code == 200
    assert b'name="_save"' not in page.content

    run_action(staff_client, "approve", statement)
    statement.refresh_from_db()
    assert statement.status == Statement.Status.APPROVED
    assert statement.approved_by == staff_client.staff
    issued = WebhookEvent.objects.get(partner=partner, event_type="statement.issued")
    data = json.loads(issued.body)["data"]
    assert (data["id"], data["status"], data["total"]) == (statement.pk, "approved", 3000)

    form_page = run_action(staff_client, "pay", statement)
    assert form_page.status_code == 200 and b"payout_reference" in form_page.content
    statement.refresh_from_db()
    assert statement.status == Statement.Status.APPROVED  # nothing without the reference

    run_action(staff_client, "pay", statement, apply="1", payout_reference="BANK-2026-11-001")

    statement.refresh_from_db()
    assert statement.status == Statement.Status.PAID
    assert statement.payout_reference == "BANK-2026-11-001"
    payout_legs = dict(
        LedgerEntry.objects.filter(transaction=statement.payout_transaction).values_list(
            "account__kind", "amount"
        )
    )
    assert payout_legs == {"partner_payable": -3000, PAYOUTS_ACCOUNT_KIND: 3000}
    assert payable(partner) == 600  # what November earned so far
    assert WebhookEvent.objects.filter(partner=partner, event_type="statement.paid").exists()
    # Paying twice is refused and posts nothing more.
    with pytest.raises(WorkflowError):
        services.statement_pay(
            statement_id=statement.pk, actor=staff_client.staff, payout_reference="again"
        )
    assert payable(partner) == 600


def test_below_the_minimum_payout_carries_forward_into_the_next_statement(shop, staff_client):
    partner, app, user = shop
    spend(user, app, 1000, "2026-09-10 12:00")  # 600 < 1000 minimum
    spend(user, app, 2000, "2026-10-10 12:00")  # 1200
    call_command("settlement_run", "2026-09")
    september = Statement.objects.get(partner=partner, period_start="2026-09-01")

    run_action(staff_client, "approve", september)

    september.refresh_from_db()
    assert september.status == Statement.Status.CARRIED_FORWARD
    call_command("settlement_run", "2026-10")
    october = Statement.objects.get(partner=partner, period_start="2026-10-01")
    assert (october.earnings, october.carried_in, october.total) == (1200, 600, 1800)
    carried = october.lines.get(kind=StatementLine.Kind.CARRIED_FORWARD)
    assert (carried.carried_from, carried.amount) == (september, 600)
    september.refresh_from_db()
    assert september.carried_into == october

    services.statement_approve(statement_id=october.pk, actor=staff_client.staff)
    services.statement_pay(statement_id=october.pk, actor=staff_client.staff, payout_reference="X1")
    assert payable(partner) == 0  # both months paid out, nothing twice


def test_adjustments_are_new_lines_with_a_reason_and_a_ledger_posting(shop, staff_client):
    partner, app, user = shop
    spend(user, app, 5000, "2026-10-10 12:00")
    call_command("settlement_run", "2026-10")
    statement = Statement.objects.get(partner=partner)

    no_reason = run_action(staff_client, "adjust", statement, apply="1", amount="-500", reason="")
    assert no_reason.status_code == 200
    assert not statement.lines.filter(kind="adjustment").exists()

    run_action(
        staff_client, "adjust", statement, apply="1", amount="-500", reason="Duplicate usage"
    )

    statement.refresh_from_db()
    assert (statement.earnings, statement.adjustments, statement.total) == (3000, -500, 2500)
    line = statement.lines.get(kind="adjustment")
    assert (line.amount, line.reason, line.created_by) == (
        -500,
        "Duplicate usage",
        staff_client.staff,
    )
    assert payable(partner) == 2500
    assert call_command("settlement_reconcile", "2026-10") is None

    services.statement_approve(statement_id=statement.pk, actor=staff_client.staff)
    with pytest.raises(WorkflowError):
        services.statement_adjust(
            statement_id=statement.pk, actor=staff_client.staff, amount=10, reason="late"
        )


def test_a_refund_falls_into_the_period_in_which_it_is_posted(shop):
    partner, app, user = shop
    charge = spend(user, app, 5000, "2026-10-20 12:00")
    with freeze_time("2026-11-02 09:00"):
        wallet.wallet_refund(charge_id=charge.pk, app=app, amount=1001, idempotency_key=new_key())
    call_command("settlement_run", "2026-10")
    call_command("settlement_run", "2026-11-02")

    october = Statement.objects.get(partner=partner, period_kind="month")
    assert october.total == 3000  # unchanged by the later refund
    day = Statement.objects.get(partner=partner, period_kind="day")
    refund_line = day.lines.get()
    # The wallet reversed 3000 * 1001 // 5000 = 600 of the partner's leg.
    assert (refund_line.kind, refund_line.amount, refund_line.agreement_version) == (
        "refund",
        -600,
        1,
    )
    assert day.total == -600
    assert day.lines.filter(kind="unattributed").count() == 0
    call_command("settlement_reconcile", "2026-11-02")


def test_reconcile_exits_non_zero_on_a_difference_and_the_admin_shows_it(
    shop, staff_client, capsys
):
    _partner, app, user = shop
    spend(user, app, 5000, "2026-10-10 12:00")

    with pytest.raises(SystemExit) as exited:
        call_command("settlement_reconcile", "2026-10")  # not closed: the statement is missing
    assert exited.value.code == 1
    assert "DIFFERENT" in capsys.readouterr().out
    page = staff_client.get(reverse("admin:partners_statement_reconcile") + "?period=2026-10")
    assert b"Differences found" in page.content

    call_command("settlement_run", "2026-10")
    call_command("settlement_reconcile", "2026-10")
    assert "OK" in capsys.readouterr().out
    statement = Statement.objects.get()
    via_action = run_action(staff_client, "reconcile", statement)
    assert via_action.status_code == 302
    page = staff_client.get(via_action["Location"])
    assert b"The statements match the ledger." in page.content


def test_periods_that_have_not_ended_or_do_not_exist_are_refused(shop):
    with pytest.raises(CommandError):
        call_command("settlement_run", "2026-13")
    with pytest.raises(CommandError):
        call_command("settlement_reconcile", "yesterday")
    with freeze_time("2026-10-31 23:50"), pytest.raises(CommandError):
        call_command("settlement_run", "2026-10")


def test_daily_statements_are_closing_records_only(shop, staff_client):
    partner, app, user = shop
    spend(user, app, 5000, "2026-10-10 12:00")
    call_command("settlement_run", "2026-10-10")
    day = Statement.objects.get(partner=partner)
    assert (day.status, day.total) == (Statement.Status.CLOSED, 3000)
    with pytest.raises(WorkflowError):
        services.statement_approve(statement_id=day.pk, actor=staff_client.staff)


def test_the_beat_task_closes_each_recent_day_and_the_previous_month(shop, settings):
    partner, app, user = shop
    spend(user, app, 5000, "2026-10-10 12:00")
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from partners.settlement.tasks import settlement_close_due

    with freeze_time(datetime(2026, 11, 1, 0, 30, tzinfo=UTC)):
        queued = settlement_close_due()
        again = settlement_close_due()

    kinds = sorted(
        (s.period_kind, str(s.period_start)) for s in Statement.objects.filter(partner=partner)
    )
    assert kinds == [
        ("day", "2026-10-29"),
        ("day", "2026-10-30"),
        ("day", "2026-10-31"),
        ("month", "2026-10-01"),
    ]
    assert (queued, again) == (4, 0)
    assert timedelta(minutes=15) == settings.SETTLEMENT_CLOSE_GRACE


def test_the_beat_task_looks_back_from_a_given_time(shop, settings):
    partner, app, user = shop
    spend(user, app, 5000, "2026-10-10 12:00")
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from partners.settlement.tasks import settlement_close_due

    # Long after the month, as an operator catching up after an outage would run it.
    with freeze_time(datetime(2027, 3, 5, tzinfo=UTC)):
        assert settlement_close_due("2026-11-01T00:30:00+00:00") == 4
    assert Statement.objects.get(partner=partner, period_kind="month").period_start.month == 10
    with pytest.raises(ValueError, match="offset"):
        settlement_close_due("2026-11-01T00:30:00")
