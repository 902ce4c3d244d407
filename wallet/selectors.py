"""Reads of the wallet. Nothing here writes."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from accounts.models import User
from partners.models import Application
from partners.oauth.selectors import consent_covers
from wallet import services
from wallet.forms import WALLET_SCOPE
from wallet.models import (
    BalanceDelta,
    Bucket,
    Charge,
    Hold,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    Refund,
)


def _current_balance() -> CombinedExpression:
    """The cached balance plus the deltas not yet folded into it: the sum of the account's
    entries (the cached ``balance`` alone lags for shared accounts; see wallet.ledger)."""
    pending = (
        BalanceDelta.objects.filter(account_id=OuterRef("pk"))
        .values("account_id")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    return F("balance") + Coalesce(Subquery(pending), Value(0))


def ledger_accounts_with_balance(
    accounts: QuerySet[LedgerAccount] | None = None,
) -> QuerySet[LedgerAccount]:
    """``accounts`` (default: all) annotated with ``current_balance`` (see _current_balance)."""
    accounts = LedgerAccount.objects.all() if accounts is None else accounts
    return accounts.annotate(current_balance=_current_balance())


def ledger_account_balance(*, account: LedgerAccount) -> int:
    """The account's balance now (cached balance plus deltas not yet folded), read in one
    statement so that a concurrent fold is seen entirely or not at all."""
    found = LedgerAccount.objects.filter(pk=account.pk).annotate(current=_current_balance())
    return int(found.values_list("current", flat=True).get())


@dataclass(frozen=True)
class WalletSummary:
    balance: int
    held: int


def wallet_summary(*, user: User) -> WalletSummary:
    """The user's spendable balance and the tokens held by open holds (zero if the user has
    no wallet yet)."""
    accounts = dict(
        LedgerAccount.objects.filter(user=user, kind__in=LedgerAccount.USER_KINDS).values_list(
            "kind", "balance"
        )
    )
    now = timezone.now()
    # Buckets past their expiry still count in the cached balance until the beat task moves
    # them to breakage; they are not spendable, so they are not shown.
    unspendable = sum(
        Bucket.objects.filter(
            wallet__user=user, expired_at__isnull=True, remaining__gt=0, expires_at__lte=now
        ).values_list("remaining", flat=True)
    )
    return WalletSummary(
        balance=accounts.get(LedgerAccount.Kind.WALLET, 0) - unspendable,
        held=accounts.get(LedgerAccount.Kind.HOLDS, 0),
    )


def bucket_list(*, user: User) -> QuerySet[Bucket]:
    """The user's live buckets, in the order they will be spent."""
    now = timezone.now()
    return (
        Bucket.objects.filter(wallet__user=user, remaining__gt=0, expired_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(F("expires_at").asc(nulls_last=True), "pk")
    )


@dataclass(frozen=True)
class AllowanceSummary:
    monthly_limit: int
    used: int

    @property
    def remaining(self) -> int:
        return max(0, self.monthly_limit - self.used)


def standing_allowance_user(*, public_id: str, app: Application) -> User | None:
    """The active person with this public id (OIDC sub) if they gave `app` a standing
    allowance: consent to wallet:charge, not revoked, with a monthly limit above zero. A
    partner server's client-credentials token may charge only such a person's wallet."""
    user = User.objects.filter(public_id=public_id, is_active=True).first()
    if user is None or not consent_covers(user=user, application=app, scopes=[WALLET_SCOPE]):
        return None
    if services.allowance_limit(user=user, app=app) <= 0:
        return None
    return user


def allowance_get(*, user: User, app: Application) -> AllowanceSummary:
    """What ``app`` may still take from ``user``'s wallet this calendar month."""
    return AllowanceSummary(
        monthly_limit=services.allowance_limit(user=user, app=app),
        used=services.allowance_used(user=user, app=app, now=timezone.now()),
    )


def charge_list(*, user: User, app: Application | None = None) -> QuerySet[Charge]:
    charges = Charge.objects.filter(user=user).select_related("price__model", "app")
    if app is not None:
        charges = charges.filter(app=app)
    return charges.order_by("-created_at", "-pk")


def hold_get(*, hold_id: int, app: Application) -> Hold | None:
    return Hold.objects.filter(pk=hold_id, app=app).first()


def charge_get(*, charge_id: int, app: Application) -> Charge | None:
    return Charge.objects.filter(pk=charge_id, app=app).select_related("price__model").first()


# ---------------------------------------------------------------------------------------------
# The wallet page: history and spending over time


def history_list(
    *,
    user: User,
    date_from: date | None = None,
    date_to: date | None = None,
    kinds: Iterable[str] = (),
    app: Application | None = None,
    model: str = "",
) -> QuerySet[LedgerTransaction]:
    """The ledger transactions that moved the user's wallet or holds, newest first, each
    annotated with ``balance_change`` (spendable wallet), ``held_change`` (holds in
    flight) and, for refunds, ``refund_model``. Dates are UTC calendar days, both ends included."""
    account_ids = dict(
        LedgerAccount.objects.filter(user=user, kind__in=LedgerAccount.USER_KINDS).values_list(
            "kind", "pk"
        )
    )
    if not account_ids:
        return LedgerTransaction.objects.none()
    wallet_id = account_ids.get(LedgerAccount.Kind.WALLET)
    holds_id = account_ids.get(LedgerAccount.Kind.HOLDS)
    mine = LedgerEntry.objects.filter(account_id__in=account_ids.values()).values("transaction_id")
    transactions = LedgerTransaction.objects.filter(pk__in=mine)
    if date_from is not None:
        transactions = transactions.filter(
            created_at__gte=datetime.combine(date_from, time.min, tzinfo=UTC)
        )
    if date_to is not None:
        transactions = transactions.filter(
            created_at__lt=datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=UTC)
        )
    kinds = list(kinds)
    if kinds:
        transactions = transactions.filter(kind__in=kinds)
    if app is not None:
        transactions = transactions.filter(metadata__app=app.pk)
    if model:
        # A refund's model is that of the charge it gives back.
        refunded = Refund.objects.filter(charge__price__model__name=model).values("transaction_id")
        transactions = transactions.filter(Q(metadata__model=model) | Q(pk__in=refunded))
    return transactions.annotate(
        refund_model=Subquery(
            Refund.objects.filter(transaction_id=OuterRef("pk")).values(
                "charge__price__model__name"
            )[:1]
        ),
        balance_change=Coalesce(
            Sum("entries__amount", filter=Q(entries__account_id=wallet_id)), Value(0)
        ),
        held_change=Coalesce(
            Sum("entries__amount", filter=Q(entries__account_id=holds_id)), Value(0)
        ),
    ).order_by("-created_at", "-pk")


def history_apps(*, user: User) -> QuerySet[Application]:
    """The apps that ever held or charged the user's tokens (the history filter's choices)."""
    used = set(Charge.objects.filter(user=user).values_list("app_id", flat=True))
    used |= set(Hold.objects.filter(user=user).values_list("app_id", flat=True))
    return Application.objects.filter(pk__in=used).order_by("name", "pk")


def history_models(*, user: User) -> list[str]:
    """Names of the models the user was charged for (the history filter's choices)."""
    return sorted(
        set(Charge.objects.filter(user=user).values_list("price__model__name", flat=True))
    )


@dataclass(frozen=True)
class SpendingSeries:
    """Charged tokens (net of refunds) per period and per group (an app or a model)."""

    periods: list[date]  # the first day of each period, oldest first
    period_days: int  # 1 (daily) or 7 (weekly)
    groups: list[str]  # group labels, largest total first
    values: dict[str, list[int]]  # group label -> one integer per period
    totals: list[int]  # per period, all groups

    @property
    def total(self) -> int:
        return sum(self.totals)


def spending_series(
    *, user: User, days: int, group_by: str, now: datetime | None = None
) -> SpendingSeries:
    """What the user's apps charged over the last ``days`` UTC days (today included), per
    day, or per 7-day period for ranges longer than 31 days, grouped by app (``group_by=
    "app"``) or model (``"model"``). Integers only."""
    now = (now or timezone.now()).astimezone(UTC)
    period_days = 1 if days <= 31 else 7
    count = -(-days // period_days)
    last = now.date()
    first = last - timedelta(days=count * period_days - 1)
    periods = [first + timedelta(days=i * period_days) for i in range(count)]
    label_field = "app__name" if group_by == "app" else "price__model__name"
    rows = (
        Charge.objects.filter(
            user=user, created_at__gte=datetime.combine(first, time.min, tzinfo=UTC)
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC), label=F(label_field))
        .values("day", "label")
        .annotate(net=Sum(F("amount") - F("refunded_amount")))
    )
    values: dict[str, list[int]] = {}
    for row in rows:
        net = int(row["net"] or 0)
        if net <= 0:
            continue
        index = (row["day"] - first).days // period_days
        if not 0 <= index < count:
            continue
        label = row["label"] or "—"
        values.setdefault(label, [0] * count)[index] += net
    groups = sorted(values, key=lambda label: (-sum(values[label]), label))
    totals = [sum(values[label][i] for label in groups) for i in range(count)]
    return SpendingSeries(
        periods=periods, period_days=period_days, groups=groups, values=values, totals=totals
    )
