"""The token wallet: a double-entry ledger of platform tokens.

Invariants (enforced by the database where it can, and proven nightly by `wallet_audit`):

* The entries of every ledger transaction sum to zero (a deferred constraint trigger on
  PostgreSQL). Entries are insert-only (triggers refuse UPDATE and DELETE).
* A user's wallet and holds accounts have their cached ``balance`` moved in the transaction
  that inserts their entries, so it always equals the sum of their entries, and can never go
  negative (CHECK constraint). The shared accounts (platform, partners) are not updated on
  every posting, which would make their rows a lock every capture waits for: each posting
  appends a ``BalanceDelta`` instead, and a beat task folds the deltas into the cached row.
  Their balance is the cached row plus the deltas not yet folded, which always equals the sum
  of their entries.
* A user's wallet balance equals the sum of the ``remaining`` of their buckets: every credit
  lands in a bucket and every debit takes from buckets.

All amounts are integers in platform tokens. Nothing on the value path uses floats.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class LedgerAccount(models.Model):
    """One account of the ledger. A user has two (wallet and holds in flight); a partner has a
    payable account; the platform has one of each system kind."""

    class Kind(models.TextChoices):
        WALLET = "wallet", _("user wallet")
        HOLDS = "holds", _("holds in flight")
        PARTNER_PAYABLE = "partner_payable", _("partner payable")
        PLATFORM_REVENUE = "platform_revenue", _("platform revenue")
        PROMOTIONS = "promotions", _("promotions")
        BREAKAGE = "breakage", _("breakage")
        TOPUP_CLEARING = "topup_clearing", _("top-up clearing")
        PLAN_ALLOTMENTS = "plan_allotments", _("plan allotments")
        STAFF_COMPENSATION = "staff_compensation", _("staff compensation")
        # Where settlement payouts go: the money has left the platform (partners.settlement).
        PARTNER_PAYOUTS = "partner_payouts", _("partner payouts")

    USER_KINDS = (Kind.WALLET, Kind.HOLDS)
    SYSTEM_KINDS = (
        Kind.PLATFORM_REVENUE,
        Kind.PROMOTIONS,
        Kind.BREAKAGE,
        Kind.TOPUP_CLEARING,
        Kind.PLAN_ALLOTMENTS,
        Kind.STAFF_COMPENSATION,
    )

    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_accounts",
    )
    partner = models.ForeignKey(
        "partners.Partner",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_accounts",
    )
    # Cached sum of this account's entries, written only by wallet.ledger. For a shared
    # account it lags by the deltas not yet folded (wallet.selectors.ledger_account_balance).
    balance = models.BigIntegerField(_("balance"), default=0, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("ledger account")
        verbose_name_plural = _("ledger accounts")
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind__in=["wallet", "holds"]) | Q(balance__gte=0),
                name="ledgeraccount_user_balance_not_negative",
            ),
            models.CheckConstraint(
                condition=(
                    (Q(kind__in=["wallet", "holds"]) & Q(user__isnull=False, partner__isnull=True))
                    | (Q(kind="partner_payable") & Q(user__isnull=True, partner__isnull=False))
                    | (
                        ~Q(kind__in=["wallet", "holds", "partner_payable"])
                        & Q(user__isnull=True, partner__isnull=True)
                    )
                ),
                name="ledgeraccount_owner_matches_kind",
            ),
            models.UniqueConstraint(
                fields=["kind", "user"],
                condition=Q(user__isnull=False),
                name="ledgeraccount_one_per_user_kind",
            ),
            models.UniqueConstraint(
                fields=["kind", "partner"],
                condition=Q(partner__isnull=False),
                name="ledgeraccount_one_per_partner_kind",
            ),
            models.UniqueConstraint(
                fields=["kind"],
                condition=Q(user__isnull=True, partner__isnull=True),
                name="ledgeraccount_one_per_system_kind",
            ),
        ]

    def __str__(self) -> str:
        owner = self.user or self.partner
        return f"{self.get_kind_display()} {owner}" if owner else str(self.get_kind_display())


class BalanceDelta(models.Model):
    """A change of a shared account's balance posted but not yet folded into its cached row.

    Postings only insert these (no row lock is taken on the shared account); the fold
    (``wallet.ledger.balance_deltas_fold``, a beat task) deletes the ones it sees and adds their
    sum to the cached balances in the same transaction, so each delta counts exactly once:
    before the fold in the deltas, after it in the cached row."""

    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("balance change not yet folded")
        verbose_name_plural = _("balance changes not yet folded")

    def __str__(self) -> str:
        return f"{self.account_id}: {self.amount:+d}"


class Wallet(LedgerAccount):
    """The wallet accounts only (a proxy, for the admin)."""

    class Meta:
        proxy = True
        verbose_name = _("wallet")
        verbose_name_plural = _("wallets")


class LedgerTransaction(models.Model):
    """A group of entries that sum to zero. Insert-only."""

    class Kind(models.TextChoices):
        HOLD = "hold", _("hold")
        CAPTURE = "capture", _("capture")
        RELEASE = "release", _("release")
        CHARGE = "charge", _("charge")
        REFUND = "refund", _("refund")
        TOPUP = "topup", _("top-up")
        REDEMPTION = "redemption", _("code redemption")
        PLAN_GRANT = "plan_grant", _("plan allotment")
        STAFF_CREDIT = "staff_credit", _("staff credit")
        EXPIRY = "expiry", _("expiry")
        # Postings of the settlement workflow (partners.settlement), never earnings.
        SETTLEMENT_PAYOUT = "settlement_payout", _("settlement payout")
        SETTLEMENT_ADJUSTMENT = "settlement_adjustment", _("settlement adjustment")

    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    # A unique, human-readable reference that makes system postings idempotent
    # ("bucket-expiry:42", "payment:test:tx_1", ...).
    reference = models.CharField(_("reference"), max_length=200, unique=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("ledger transaction")
        verbose_name_plural = _("ledger transactions")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.reference}"


class LedgerEntry(models.Model):
    """One leg: a signed amount on one account. Insert-only (database triggers)."""

    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries"
    )
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="entries")
    amount = models.BigIntegerField(_("amount"))

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="ledgerentry_amount_not_zero")
        ]

    def __str__(self) -> str:
        return f"{self.account}: {self.amount:+d}"


class Bucket(models.Model):
    """A portion of a wallet's balance with its source and optional expiry. Spending takes
    the soonest-expiring bucket first and non-expiring buckets last."""

    class Source(models.TextChoices):
        PURCHASE = "purchase", _("purchase")
        PLAN = "plan", _("plan allotment")
        PROMOTION = "promotion", _("promotion")
        COMPENSATION = "compensation", _("staff compensation")
        REFUND = "refund", _("refund")

    wallet = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="buckets")
    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    amount = models.BigIntegerField(_("amount credited"))
    remaining = models.BigIntegerField(_("remaining"))
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    expired_at = models.DateTimeField(_("expired at"), null=True, blank=True)
    credit_transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("balance bucket")
        verbose_name_plural = _("balance buckets")
        constraints = [
            models.CheckConstraint(
                condition=Q(remaining__gte=0) & Q(remaining__lte=models.F("amount")),
                name="bucket_remaining_in_range",
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="bucket_amount_positive"),
        ]
        indexes = [
            models.Index(
                fields=["expires_at"],
                condition=Q(remaining__gt=0, expired_at__isnull=True),
                name="bucket_due_for_expiry",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_source_display()} {self.remaining}/{self.amount}"


class PriceModel(models.Model):
    """An AI model in the price catalog."""

    vendor = models.ForeignKey(
        "partners.Partner", on_delete=models.PROTECT, related_name="price_models"
    )
    name = models.CharField(_("model name"), max_length=120, unique=True)
    context_window = models.PositiveIntegerField(_("context window (tokens)"))
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("model")
        verbose_name_plural = _("models")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Price(models.Model):
    """One version of a model's prices, in platform tokens per million tokens, in force from
    ``effective_from`` until the next version. Versions are never edited: add a new one."""

    model = models.ForeignKey(PriceModel, on_delete=models.PROTECT, related_name="prices")
    effective_from = models.DateTimeField(_("effective from"))
    input_per_million = models.BigIntegerField(_("input, per million tokens"))
    cached_input_per_million = models.BigIntegerField(_("cached input, per million tokens"))
    output_per_million = models.BigIntegerField(_("output, per million tokens"))
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("price version")
        verbose_name_plural = _("price versions")
        ordering = ["model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "effective_from"], name="price_one_version_per_instant"
            ),
            models.CheckConstraint(
                condition=Q(input_per_million__gte=0)
                & Q(cached_input_per_million__gte=0)
                & Q(output_per_million__gte=0),
                name="price_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d %H:%M}"


class IdempotencyKey(models.Model):
    """The first result of a value-moving request, kept under the caller's key. A replay with
    the same body returns it; the same key with another body is a conflict."""

    app = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    key = models.CharField(max_length=255)
    operation = models.CharField(max_length=32)
    request_hash = models.CharField(max_length=64)
    result = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app", "key"],
                condition=Q(app__isnull=False),
                name="idempotencykey_unique_per_app",
            ),
            models.UniqueConstraint(
                fields=["key"], condition=Q(app__isnull=True), name="idempotencykey_unique_system"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.key}"


class Hold(models.Model):
    """Tokens reserved for an app's request until it is captured, released or expires."""

    class Status(models.TextChoices):
        OPEN = "open", _("open")
        CAPTURED = "captured", _("captured")
        RELEASED = "released", _("released")
        EXPIRED = "expired", _("expired")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    app = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    amount = models.BigIntegerField(_("amount held"))
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    expires_at = models.DateTimeField(_("expires at"))
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="+")
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive")
        ]
        indexes = [
            models.Index(
                fields=["expires_at"], condition=Q(status="open"), name="hold_open_by_expiry"
            )
        ]

    def __str__(self) -> str:
        return f"hold {self.pk} {self.amount} ({self.status})"


class HoldAllocation(models.Model):
    """Which buckets a hold took its tokens from, so that a release returns them there."""

    hold = models.ForeignKey(Hold, on_delete=models.PROTECT, related_name="allocations")
    bucket = models.ForeignKey(Bucket, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="holdallocation_positive")
        ]

    def __str__(self) -> str:
        return f"{self.amount} of bucket {self.bucket_id} for hold {self.hold_id}"


class Charge(models.Model):
    """A debit for real usage: a captured hold, or a one-shot charge."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    app = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    hold = models.OneToOneField(
        Hold, on_delete=models.PROTECT, null=True, blank=True, related_name="capture"
    )
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="charges")
    input_tokens = models.BigIntegerField()
    cached_input_tokens = models.BigIntegerField()
    output_tokens = models.BigIntegerField()
    # The priced cost of the usage, and what was taken (a capture takes at most its hold).
    cost = models.BigIntegerField()
    amount = models.BigIntegerField()
    refunded_amount = models.BigIntegerField(default=0)
    # The earnings split posted with the charge: [[ledger account id, amount], ...].
    split = models.JSONField(default=list)
    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gte=0) & Q(amount__lte=models.F("cost")),
                name="charge_amount_in_range",
            ),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0) & Q(refunded_amount__lte=models.F("amount")),
                name="charge_refund_not_beyond_amount",
            ),
        ]
        indexes = [models.Index(fields=["user", "app", "created_at"], name="charge_user_app")]

    def __str__(self) -> str:
        return f"charge {self.pk} {self.amount}"


class Refund(models.Model):
    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="refunds")
    amount = models.BigIntegerField()
    reason = models.CharField(max_length=500, blank=True)
    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="refund_positive")]

    def __str__(self) -> str:
        return f"refund {self.pk} {self.amount}"


class SpendingAllowance(models.Model):
    """How many tokens an app may take from a user's wallet per calendar month (UTC). Without
    a row, settings.WALLET_DEFAULT_MONTHLY_ALLOWANCE applies."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    app = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    monthly_limit = models.BigIntegerField(_("monthly limit"))
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "app"], name="allowance_one_per_user_app"),
            models.CheckConstraint(
                condition=Q(monthly_limit__gte=0), name="allowance_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.app}: {self.monthly_limit}/month"


class RedemptionBatch(models.Model):
    """A batch of redemption codes generated by staff."""

    name = models.CharField(_("name"), max_length=120)
    amount = models.BigIntegerField(_("tokens per code"))
    count = models.PositiveIntegerField(_("number of codes"))
    codes_expire_at = models.DateTimeField(_("codes expire at"))
    credit_valid_days = models.PositiveIntegerField(
        _("credit valid for (days)"),
        null=True,
        blank=True,
        help_text=_("Leave empty for tokens that never expire."),
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("redemption batch")
        verbose_name_plural = _("redemption batches")
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="batch_amount_positive")
        ]

    def __str__(self) -> str:
        return self.name


class RedemptionCode(models.Model):
    """One code. Only a SHA-256 of the code is stored (the codes are long and random, so a
    plain hash is enough); staff download the codes once, when the batch is generated."""

    batch = models.ForeignKey(RedemptionBatch, on_delete=models.PROTECT, related_name="codes")
    code_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(_("last characters"), max_length=8)
    redeemed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    redeemed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("redemption code")
        verbose_name_plural = _("redemption codes")
        constraints = [
            models.CheckConstraint(
                condition=Q(redeemed_by__isnull=True, redeemed_at__isnull=True)
                | Q(redeemed_by__isnull=False, redeemed_at__isnull=False),
                name="code_redeemed_consistently",
            )
        ]

    def __str__(self) -> str:
        return f"…{self.hint}"


class Plan(models.Model):
    """A monthly plan: each calendar month (UTC) a subscriber gets ``allotment`` tokens that
    expire at the end of that month."""

    name = models.CharField(_("name"), max_length=120)
    allotment = models.BigIntegerField(_("tokens per month"))
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        verbose_name = _("plan")
        verbose_name_plural = _("plans")
        constraints = [
            models.CheckConstraint(condition=Q(allotment__gt=0), name="plan_allotment_positive")
        ]

    def __str__(self) -> str:
        return self.name


class Subscription(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="wallet_subscriptions"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    started_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("subscription")
        verbose_name_plural = _("subscriptions")

    def __str__(self) -> str:
        return f"{self.user}: {self.plan}"


class PlanGrant(models.Model):
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="grants")
    period_start = models.DateField()
    bucket = models.ForeignKey(Bucket, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period_start"], name="plangrant_once_per_period"
            )
        ]

    def __str__(self) -> str:
        return f"{self.subscription} {self.period_start:%Y-%m}"


class PaymentTopUp(models.Model):
    """A top-up paid through a payment provider, credited once per provider transaction."""

    provider = models.CharField(max_length=32)
    provider_transaction_id = models.CharField(max_length=200)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="+")
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "provider_transaction_id"], name="topup_once_per_provider_tx"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="topup_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.provider_transaction_id}"


class WalletAuditRun(models.Model):
    """The result of one run of the ledger audit."""

    started_at = models.DateTimeField(default=timezone.now)
    ok = models.BooleanField()
    problems = models.JSONField(default=list)
    checked = models.JSONField(default=dict)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = _("wallet audit run")
        verbose_name_plural = _("wallet audit runs")

    def __str__(self) -> str:
        return f"audit {self.started_at:%Y-%m-%d %H:%M} {'ok' if self.ok else 'FAILED'}"
