"""Wallet admin. Ledger rows, buckets, holds and charges are read-only; value moves only
through actions and views that call services (a staff credit, a batch of codes)."""

import csv
import uuid
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from wallet import selectors, services
from wallet.exceptions import WalletError
from wallet.forms import RedemptionBatchForm, StaffCreditForm
from wallet.models import (
    Bucket,
    Charge,
    Hold,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    PaymentTopUp,
    Plan,
    Price,
    PriceModel,
    RedemptionBatch,
    RedemptionCode,
    Refund,
    SpendingAllowance,
    Subscription,
    Wallet,
    WalletAuditRun,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Staff may look, never change: corrections are new ledger transactions."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class EntryInline(admin.TabularInline):
    model = LedgerEntry
    fields = ("account", "amount")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "user", "partner", "current_balance")
    list_filter = ("kind",)
    search_fields = ("user__phone", "user__email", "partner__name")
    readonly_fields = ("kind", "user", "partner", "current_balance")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Shared accounts' cached rows lag by the deltas not yet folded: show the sum.
        return selectors.ledger_accounts_with_balance(super().get_queryset(request))

    @admin.display(description=_("balance"), ordering="current_balance")
    def current_balance(self, account: LedgerAccount) -> int:
        return int(account.current_balance)  # type: ignore[attr-defined]


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "balance", "created_at")
    search_fields = ("user__phone", "user__email", "user__public_id")
    actions = ["credit_tokens"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(kind=LedgerAccount.Kind.WALLET)

    @admin.action(description=_("Credit tokens to the selected wallet"))
    def credit_tokens(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        wallets = list(queryset.select_related("user")[:2])
        if len(wallets) != 1:
            self.message_user(request, _("Select exactly one wallet."), messages.ERROR)
            return None
        wallet = wallets[0]
        assert isinstance(request.user, User)
        if "apply" in request.POST:
            form = StaffCreditForm(request.POST)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    services.wallet_staff_credit(
                        user=wallet.user,
                        amount=data["amount"],
                        reason=data["reason"],
                        actor=request.user,
                        idempotency_key=data["idempotency_key"],
                        source=data["source"],
                        expires_at=data["expires_at"],
                    )
                except WalletError as error:
                    form.add_error(None, error.message)
                else:
                    self.message_user(
                        request,
                        _("Credited %(amount)s tokens to %(user)s.")
                        % {"amount": data["amount"], "user": wallet.user},
                        messages.SUCCESS,
                    )
                    return None
        else:
            form = StaffCreditForm(initial={"idempotency_key": uuid.uuid4().hex})
        context = {
            **self.admin_site.each_context(request),
            "title": _("Credit tokens"),
            "wallet": wallet,
            "form": form,
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/wallet/credit_tokens.html", context)


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "reference", "created_at")
    list_filter = ("kind",)
    search_fields = ("reference",)
    inlines = [EntryInline]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "transaction", "account", "amount")
    list_select_related = ("transaction", "account")


@admin.register(Bucket)
class BucketAdmin(ReadOnlyAdmin):
    list_display = ("id", "wallet", "source", "amount", "remaining", "expires_at", "expired_at")
    list_filter = ("source",)


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "app", "amount", "status", "expires_at", "created_at")
    list_filter = ("status",)


@admin.register(Charge)
class ChargeAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "app", "price", "cost", "amount", "refunded_amount", "created_at")


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("id", "charge", "amount", "reason", "created_at")


@admin.register(SpendingAllowance)
class SpendingAllowanceAdmin(ReadOnlyAdmin):
    list_display = ("user", "app", "monthly_limit", "updated_at")


@admin.register(PaymentTopUp)
class PaymentTopUpAdmin(ReadOnlyAdmin):
    list_display = ("provider", "provider_transaction_id", "user", "amount", "created_at")


@admin.register(WalletAuditRun)
class WalletAuditRunAdmin(ReadOnlyAdmin):
    list_display = ("started_at", "ok")


class PriceVersionForm(forms.ModelForm):
    class Meta:
        model = Price
        fields = [
            "effective_from",
            "input_per_million",
            "cached_input_per_million",
            "output_per_million",
        ]

    def clean_effective_from(self) -> datetime:
        # A new version must not rewrite the past: charges already made keep their version,
        # but reports by date would disagree with them.
        value = self.cleaned_data["effective_from"]
        if value < timezone.now() - timedelta(minutes=5):
            raise forms.ValidationError(_("A new price version cannot start in the past."))
        return value


class PriceInline(admin.TabularInline):
    """Price versions can be added, never changed: a charge refers to the version it used."""

    model = Price
    form = PriceVersionForm
    extra = 0
    fields = (
        "effective_from",
        "input_per_million",
        "cached_input_per_million",
        "output_per_million",
    )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(PriceModel)
class PriceModelAdmin(admin.ModelAdmin):
    list_display = ("name", "vendor", "context_window", "is_active")
    fields = ("vendor", "name", "context_window", "is_active", "created_at")
    readonly_fields = ("created_at",)
    list_filter = ("is_active",)
    search_fields = ("name",)
    inlines = [PriceInline]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ("name", "allotment", "is_active")


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("user", "plan", "started_at", "ends_at")
    raw_id_fields = ("user",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("user", "plan", "started_at") if obj else ("started_at",)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        # A new subscription goes through the service, which grants this month's allotment.
        created = services.subscription_create(user=obj.user, plan=obj.plan)
        obj.pk, obj.started_at = created.pk, created.started_at

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RedemptionCodeInline(admin.TabularInline):
    model = RedemptionCode
    fields = ("hint", "redeemed_by", "redeemed_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    max_num = 0


@admin.register(RedemptionBatch)
class RedemptionBatchAdmin(ReadOnlyAdmin):
    list_display = ("name", "amount", "count", "codes_expire_at", "created_by", "created_at")
    inlines = [RedemptionCodeInline]
    actions = ["export_status_csv"]
    change_list_template = "admin/wallet/redemptionbatch/change_list.html"

    def get_urls(self) -> list:
        return [
            path(
                "generate/",
                self.admin_site.admin_view(self.generate_view),
                name="wallet_redemptionbatch_generate",
            ),
            *super().get_urls(),
        ]

    def generate_view(self, request: HttpRequest) -> HttpResponse:
        """Generate a batch and download its codes as CSV. The plain codes exist only in this
        response: the database keeps their hashes."""
        if not request.user.has_perm("wallet.add_redemptionbatch"):
            return HttpResponseRedirect(reverse("admin:index"))
        form = RedemptionBatchForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            assert isinstance(request.user, User)
            batch, codes = services.redemption_batch_create(
                name=form.cleaned_data["name"],
                amount=form.cleaned_data["amount"],
                count=form.cleaned_data["count"],
                codes_expire_at=form.cleaned_data["codes_expire_at"],
                credit_valid_days=form.cleaned_data["credit_valid_days"],
                created_by=request.user,
            )
            response = HttpResponse(content_type="text/csv")
            response["Content-Disposition"] = f'attachment; filename="codes-batch-{batch.pk}.csv"'
            writer = csv.writer(response)
            writer.writerow(["code", "tokens", "expires_at"])
            for code in codes:
                writer.writerow([code, batch.amount, batch.codes_expire_at.isoformat()])
            return response
        context = {
            **self.admin_site.each_context(request),
            "title": _("Generate redemption codes"),
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/wallet/redemptionbatch/generate.html", context)

    @admin.action(description=_("Export code status as CSV"))
    def export_status_csv(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        response = HttpResponse(content_type="text/csv")
        stamp = timezone.now().strftime("%Y%m%d%H%M")
        response["Content-Disposition"] = f'attachment; filename="code-status-{stamp}.csv"'
        writer = csv.writer(response)
        writer.writerow(["batch", "code_ends_with", "tokens", "redeemed_by", "redeemed_at"])
        codes = RedemptionCode.objects.filter(batch__in=queryset).select_related(
            "batch", "redeemed_by"
        )
        for code in codes.order_by("batch_id", "pk"):
            writer.writerow(
                [
                    code.batch.name,
                    code.hint,
                    code.batch.amount,
                    code.redeemed_by.public_id if code.redeemed_by else "",
                    code.redeemed_at.isoformat() if code.redeemed_at else "",
                ]
            )
        return response
