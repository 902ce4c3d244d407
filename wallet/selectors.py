"""Reads of the wallet. Nothing here writes."""

from dataclasses import dataclass

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from accounts.models import User
from partners.models import Application
from wallet import services
from wallet.models import Bucket, Charge, Hold, LedgerAccount


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
