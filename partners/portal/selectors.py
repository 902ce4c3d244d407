"""Reads for the partner portal and the settlement API: what a partner's apps and models were
used for (from the wallet's charges) and its settlement statements. Read-only; this module sits
above the wallet (the partners core never imports it)."""

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from django.db.models import Case, CharField, Count, F, Q, QuerySet, Sum, When
from django.db.models.functions import TruncDate

from partners.models import Partner
from wallet.models import Charge

if TYPE_CHECKING:
    from partners.settlement.models import Statement

GROUPINGS = ("day", "app", "model")
MAX_USAGE_DAYS = 366


class UsageRangeError(ValueError):
    """The date range is empty, reversed, or longer than MAX_USAGE_DAYS."""


@dataclass(frozen=True)
class UsageRow:
    day: date | None
    app_client_id: str | None
    app_name: str | None
    model: str | None
    charges: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    amount: int
    refunded: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat() if self.day else None,
            "app": self.app_client_id,
            "app_name": self.app_name,
            "model": self.model,
            "charges": self.charges,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "amount": self.amount,
            "refunded": self.refunded,
        }


def usage_range_validate(*, date_from: date, date_to: date) -> tuple[datetime, datetime]:
    """[start, end) in UTC for the inclusive day range; UsageRangeError if it is not usable."""
    if date_to < date_from:
        raise UsageRangeError("The end date is before the start date.")
    if (date_to - date_from).days + 1 > MAX_USAGE_DAYS:
        raise UsageRangeError(f"The range may cover at most {MAX_USAGE_DAYS} days.")
    start = datetime.combine(date_from, time.min, tzinfo=UTC)
    return start, datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=UTC)


def partner_charges(*, partner: Partner) -> QuerySet[Charge]:
    """Charges made by the partner's apps, or for the partner's models (model vendors)."""
    return Charge.objects.filter(Q(app__partner=partner) | Q(price__model__vendor=partner))


def partner_usage(
    *,
    partner: Partner,
    date_from: date,
    date_to: date,
    group_by: list[str],
    app_client_id: str | None = None,
) -> list[UsageRow]:
    """Usage aggregated by any of day, app and model over the inclusive UTC day range.

    A model vendor sees its models used by other partners' apps, but not which apps: those
    are one bucket with no app id (a partner never sees another partner's apps)."""
    start, end = usage_range_validate(date_from=date_from, date_to=date_to)
    unknown = set(group_by) - set(GROUPINGS)
    if unknown:
        raise ValueError(f"unknown grouping {sorted(unknown)}")
    charges = partner_charges(partner=partner).filter(created_at__gte=start, created_at__lt=end)
    if app_client_id:
        charges = charges.filter(app__client_id=app_client_id, app__partner=partner)
    own_app = Q(app__partner=partner)
    charges = charges.annotate(
        usage_day=TruncDate("created_at", tzinfo=UTC),
        usage_app=Case(
            When(own_app, then=F("app__client_id")), default=None, output_field=CharField()
        ),
        usage_app_name=Case(
            When(own_app, then=F("app__name")), default=None, output_field=CharField()
        ),
        usage_model=F("price__model__name"),
    )
    keys: list[str] = []
    if "day" in group_by:
        keys.append("usage_day")
    if "app" in group_by:
        keys += ["usage_app", "usage_app_name"]
    if "model" in group_by:
        keys.append("usage_model")
    rows = (
        charges.values(*keys)
        .annotate(
            n=Count("pk"),
            sum_input=Sum("input_tokens"),
            sum_cached=Sum("cached_input_tokens"),
            sum_output=Sum("output_tokens"),
            sum_amount=Sum("amount"),
            sum_refunded=Sum("refunded_amount"),
        )
        .order_by(*keys)
    )
    if not keys:
        rows = [
            charges.aggregate(
                n=Count("pk"),
                sum_input=Sum("input_tokens"),
                sum_cached=Sum("cached_input_tokens"),
                sum_output=Sum("output_tokens"),
                sum_amount=Sum("amount"),
                sum_refunded=Sum("refunded_amount"),
            )
        ]  # type: ignore[assignment]
    return [
        UsageRow(
            day=row.get("usage_day"),
            app_client_id=row.get("usage_app"),
            app_name=row.get("usage_app_name"),
            model=row.get("usage_model"),
            charges=row["n"] or 0,
            input_tokens=row["sum_input"] or 0,
            cached_input_tokens=row["sum_cached"] or 0,
            output_tokens=row["sum_output"] or 0,
            amount=row["sum_amount"] or 0,
            refunded=row["sum_refunded"] or 0,
        )
        for row in rows
    ]


# Statements ------------------------------------------------------------------------------------

# Drafts are still being checked by staff: partners see a statement once it is final.
HIDDEN_STATEMENT_STATUSES = ("draft",)
CSV_COLUMNS = (
    "statement",
    "period_start",
    "period_end",
    "line",
    "kind",
    "role",
    "app",
    "model",
    "agreement_version",
    "captures",
    "gross",
    "amount",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reason",
)


def partner_statements(
    *, partner: Partner, period_kind: str | None = None, status: str | None = None
) -> "QuerySet[Statement]":
    from partners.settlement.models import Statement

    statements = Statement.objects.filter(partner=partner).exclude(
        status__in=HIDDEN_STATEMENT_STATUSES
    )
    if period_kind:
        statements = statements.filter(period_kind=period_kind)
    if status:
        statements = statements.filter(status=status)
    return statements.order_by("-period_start", "period_kind", "-pk")


def partner_statement_get(*, partner: Partner, statement_id: Any) -> "Statement | None":
    """The partner's statement with that id, or None (also for another partner's id)."""
    try:
        pk = int(statement_id)
    except (TypeError, ValueError):
        return None
    return partner_statements(partner=partner).filter(pk=pk).first()


@dataclass(frozen=True)
class StatementLineView:
    number: int
    kind: str
    kind_label: str
    role: str
    app_client_id: str | None
    app_name: str | None
    model: str
    agreement_version: int | None
    captures: int
    gross: int
    amount: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reason: str


def statement_lines(*, partner: Partner, statement: "Statement") -> list[StatementLineView]:
    """The statement's lines as the partner may see them: another partner's app (a vendor's
    model used in someone else's app) is not named."""
    lines = statement.lines.select_related("app").order_by("pk")
    result = []
    for number, line in enumerate(lines, start=1):
        own = line.app is not None and line.app.partner_id == partner.pk
        result.append(
            StatementLineView(
                number=number,
                kind=line.kind,
                kind_label=str(line.get_kind_display()),
                role=line.role,
                app_client_id=line.app.client_id if own and line.app else None,
                app_name=line.app.name if own and line.app else None,
                model=line.model_name,
                agreement_version=line.agreement_version,
                captures=line.captures,
                gross=line.gross,
                amount=line.amount,
                input_tokens=line.input_tokens,
                cached_input_tokens=line.cached_input_tokens,
                output_tokens=line.output_tokens,
                reason=line.reason,
            )
        )
    return result


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # Spreadsheets run cells that start with these as formulas (CSV injection).
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text):
        return "'" + text
    return text


def _is_number(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def statement_csv(*, partner: Partner, statement: "Statement") -> str:
    """The statement's lines as CSV (UTF-8, header row, one row per line)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for line in statement_lines(partner=partner, statement=statement):
        writer.writerow(
            [
                _csv_cell(v)
                for v in (
                    statement.pk,
                    statement.period_start.isoformat(),
                    statement.period_end.isoformat(),
                    line.number,
                    line.kind,
                    line.role,
                    line.app_client_id,
                    line.model,
                    line.agreement_version,
                    line.captures,
                    line.gross,
                    line.amount,
                    line.input_tokens,
                    line.cached_input_tokens,
                    line.output_tokens,
                    line.reason,
                )
            ]
        )
    return buffer.getvalue()
