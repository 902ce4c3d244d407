"""Statements and their lines. A statement is closed once per partner and period (unique
constraint); its lines are insert-only. Staff change a statement only through the services:
approve, pay, adjust (a new line with a reason, never an edit)."""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Statement(models.Model):
    class Period(models.TextChoices):
        DAY = "day", _("day")
        MONTH = "month", _("month")

    class Status(models.TextChoices):
        # Daily statements are a closing record only; monthly statements are paid out.
        CLOSED = "closed", _("closed (daily)")
        DRAFT = "draft", _("draft")
        APPROVED = "approved", _("approved")
        PAID = "paid", _("paid")
        CARRIED_FORWARD = "carried_forward", _("carried forward")

    partner = models.ForeignKey(
        "partners.Partner", on_delete=models.PROTECT, related_name="statements"
    )
    period_kind = models.CharField(_("period"), max_length=8, choices=Period.choices)
    period_start = models.DateField(_("from"))
    period_end = models.DateField(_("until (exclusive)"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices)
    currency = models.CharField(_("currency"), max_length=16)
    # earnings: the payable movements posted in the period (captures, charges, refunds).
    earnings = models.BigIntegerField(_("earnings"))
    carried_in = models.BigIntegerField(_("carried forward in"), default=0)
    adjustments = models.BigIntegerField(_("adjustments"), default=0)
    total = models.BigIntegerField(_("total"))
    carried_into = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="carried_from",
        verbose_name=_("carried into"),
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    paid_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    paid_at = models.DateTimeField(null=True, blank=True)
    payout_reference = models.CharField(_("payout reference"), max_length=200, blank=True)
    payout_transaction = models.ForeignKey(
        "wallet.LedgerTransaction",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("statement")
        verbose_name_plural = _("statements")
        ordering = ["-period_start", "partner_id", "period_kind"]
        constraints = [
            models.UniqueConstraint(
                fields=["partner", "period_kind", "period_start"],
                name="statement_once_per_partner_period",
            ),
            models.CheckConstraint(
                condition=Q(total=F("earnings") + F("carried_in") + F("adjustments")),
                name="statement_total_adds_up",
            ),
            models.CheckConstraint(
                condition=~Q(status="paid")
                | (Q(payout_transaction__isnull=False) & ~Q(payout_reference="")),
                name="statement_paid_has_payout",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.partner} {self.period_label}"

    @property
    def period_label(self) -> str:
        if self.period_kind == self.Period.MONTH:
            return self.period_start.strftime("%Y-%m")
        return self.period_start.isoformat()


class StatementLine(models.Model):
    class Kind(models.TextChoices):
        EARNING = "earning", _("earning")
        REFUND = "refund", _("refund")
        CARRIED_FORWARD = "carried_forward", _("carried forward")
        ADJUSTMENT = "adjustment", _("adjustment")
        UNATTRIBUTED = "unattributed", _("unattributed ledger movement")

    statement = models.ForeignKey(Statement, on_delete=models.PROTECT, related_name="lines")
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    role = models.CharField(_("role"), max_length=16, blank=True)
    app = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("app"),
    )
    model_name = models.CharField(_("model"), max_length=120, blank=True)
    agreement = models.ForeignKey(
        "partners.Agreement",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("agreement"),
    )
    agreement_version = models.PositiveIntegerField(_("agreement version"), null=True, blank=True)
    captures = models.BigIntegerField(_("captures"), default=0)
    gross = models.BigIntegerField(_("charged to users"), default=0)
    amount = models.BigIntegerField(_("amount"))
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    carried_from = models.ForeignKey(
        Statement, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(_("reason"), max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    ledger_transaction = models.ForeignKey(
        "wallet.LedgerTransaction",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("statement line")
        verbose_name_plural = _("statement lines")
        ordering = ["statement", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(kind="adjustment")
                | (~Q(reason="") & Q(ledger_transaction__isnull=False)),
                name="statementline_adjustment_has_reason",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount:+d}"
