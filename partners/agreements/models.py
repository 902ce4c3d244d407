"""Agreements and the attribution of every payable leg of a capture.

An agreement is one version of the terms between the platform and a partner, in force over
``[effective_from, effective_to)`` (``effective_to`` empty: open-ended). Versions are never
edited: a change of terms is a new version that starts where the previous one ends.

Amounts are integers in platform tokens; shares are integer basis points (1/10000); prices are
integer platform tokens per million tokens.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

BPS = 10_000


class Agreement(models.Model):
    class Kind(models.TextChoices):
        REVENUE_SHARE = "revenue_share", _("revenue sharing")
        CAPABILITY_PURCHASE = "capability_purchase", _("capability purchase")
        CO_BUILDING = "co_building", _("resource co-building")

    partner = models.ForeignKey(
        "partners.Partner",
        on_delete=models.PROTECT,
        related_name="agreements",
        verbose_name=_("partner"),
    )
    kind = models.CharField(_("cooperation model"), max_length=32, choices=Kind.choices)
    # Revenue sharing: the app the share applies to; empty means every app of the partner.
    app = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("app"),
    )
    # Capability purchase: one of the vendor's models (empty: all of them). Co-building: the
    # model served on the co-built capacity (required). Matches wallet PriceModel.name.
    model_name = models.CharField(_("model"), max_length=120, blank=True)
    version = models.PositiveIntegerField(_("version"), editable=False)
    effective_from = models.DateTimeField(_("effective from"))
    effective_to = models.DateTimeField(
        _("effective to (exclusive)"),
        null=True,
        blank=True,
        help_text=_("Leave empty for an agreement without an end date."),
    )
    share_bps = models.PositiveIntegerField(
        _("share (basis points)"),
        default=0,
        help_text=_("Revenue sharing: the base rate. Co-building: the revenue share on top."),
    )
    # Revenue sharing only: [{"from": spend threshold in the month, "bps": rate}, ...], with
    # strictly increasing thresholds. Below the first threshold ``share_bps`` applies.
    tiers = models.JSONField(_("volume tiers"), default=list, blank=True)
    input_per_million = models.BigIntegerField(_("input price, per million tokens"), default=0)
    cached_input_per_million = models.BigIntegerField(
        _("cached input price, per million tokens"), default=0
    )
    output_per_million = models.BigIntegerField(_("output price, per million tokens"), default=0)
    # Co-building: the most the cost component pays in one calendar month.
    committed_amount = models.BigIntegerField(
        _("committed amount per month"), null=True, blank=True
    )
    note = models.CharField(_("note"), max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = _("agreement")
        verbose_name_plural = _("agreements")
        ordering = ["partner", "kind", "-effective_from"]
        constraints = [
            models.CheckConstraint(
                condition=Q(share_bps__gte=0) & Q(share_bps__lte=BPS),
                name="agreement_share_in_range",
            ),
            models.CheckConstraint(
                condition=Q(input_per_million__gte=0)
                & Q(cached_input_per_million__gte=0)
                & Q(output_per_million__gte=0),
                name="agreement_prices_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(committed_amount__isnull=True) | Q(committed_amount__gte=0),
                name="agreement_commitment_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(effective_to__isnull=True) | Q(effective_to__gt=F("effective_from")),
                name="agreement_period_not_empty",
            ),
            models.UniqueConstraint(
                fields=["partner", "kind", "app", "model_name", "version"],
                nulls_distinct=False,
                name="agreement_one_version_number",
            ),
        ]
        indexes = [models.Index(fields=["kind", "model_name"], name="agreement_by_model")]

    def __str__(self) -> str:
        subject = self.app or self.model_name or _("all")
        return f"{self.partner} · {self.get_kind_display()} · {subject} · v{self.version}"

    def clean(self) -> None:
        from partners.agreements.services import agreement_validate

        agreement_validate(agreement=self)


class SplitLine(models.Model):
    """One payable leg of a capture or charge, with what it is owed for. Written in the same
    database transaction as the ledger transaction it explains; insert-only.

    ``ledger_transaction_id`` and ``posted_at`` copy the wallet's ledger transaction (id and
    ``created_at``): the partners core does not depend on the wallet, so there is no foreign
    key; the settlement reconciliation proves every line against the ledger. Lines whose amount
    came out as zero are kept too, because tiers and commitments count the period's volume."""

    class Role(models.TextChoices):
        APP_SHARE = "app_share", _("app revenue share")
        VENDOR_COST = "vendor_cost", _("model vendor price")
        COBUILD_COST = "cobuild_cost", _("co-built capacity cost")
        COBUILD_SHARE = "cobuild_share", _("co-building revenue share")

    ledger_transaction_id = models.BigIntegerField(db_index=True)
    posted_at = models.DateTimeField()
    partner = models.ForeignKey("partners.Partner", on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=16, choices=Role.choices)
    agreement = models.ForeignKey(Agreement, on_delete=models.PROTECT, related_name="+")
    agreement_version = models.PositiveIntegerField()
    app = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    model_name = models.CharField(max_length=120)
    # What the user was charged for the whole capture, and this leg's part of it.
    gross = models.BigIntegerField()
    amount = models.BigIntegerField()
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = _("split line")
        verbose_name_plural = _("split lines")
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gte=0) & Q(amount__lte=F("gross")),
                name="splitline_amount_in_range",
            )
        ]
        indexes = [
            models.Index(fields=["partner", "posted_at"], name="splitline_partner_posted"),
            models.Index(
                fields=["agreement", "role", "posted_at"], name="splitline_agreement_tally"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_role_display()} {self.amount} of {self.gross}"
