"""Staff screens for agreements and statements. Agreements are added (a new version) or
ended; statements and their lines are read-only and change only through actions that call
partners.settlement.services: approve, pay (with the payout reference), adjust (a new line
with a reason). The reconciliation of a period is one click away from the statements."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from partners.agreements import services as agreement_services
from partners.agreements.models import Agreement
from partners.management.commands.settlement_reconcile import reconciliation_lines
from partners.settlement import selectors, services
from partners.settlement.models import Statement, StatementLine
from partners.settlement.periods import InvalidPeriod


def _staff(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


def _error_text(exc: ValidationError) -> str:
    return " ".join(str(m) for m in exc.messages)


class AgreementForm(forms.ModelForm):
    class Meta:
        model = Agreement
        fields = [
            "partner",
            "kind",
            "app",
            "model_name",
            "effective_from",
            "effective_to",
            "share_bps",
            "tiers",
            "input_per_million",
            "cached_input_per_million",
            "output_per_million",
            "committed_amount",
            "note",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.instance.pk:
            previous = Agreement.objects.get(pk=self.instance.pk).effective_to
            new_end = cleaned.get("effective_to")
            extended = (new_end is None and previous is not None) or (
                new_end is not None and previous is not None and new_end > previous
            )
            if extended:
                self.add_error(
                    "effective_to", _("An agreement can be shortened, not extended: add a version.")
                )
        return cleaned


@admin.register(Agreement)
class AgreementAdmin(admin.ModelAdmin):
    form = AgreementForm
    list_display = (
        "partner",
        "kind",
        "app",
        "model_name",
        "version",
        "effective_from",
        "effective_to",
        "share_bps",
    )
    list_filter = ("kind",)
    search_fields = ("partner__name", "model_name", "app__name")
    readonly_fields = ("version", "created_by", "created_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return self.readonly_fields
        # A version's terms never change; only its end can be brought forward.
        editable = {"effective_to"}
        return [f for f in [*AgreementForm.Meta.fields, *self.readonly_fields] if f not in editable]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Agreement, form: Any, change: bool) -> None:
        if change:
            if obj.effective_to is not None:
                agreement_services.agreement_end(agreement_id=obj.pk, effective_to=obj.effective_to)
            return
        data = form.cleaned_data
        created = agreement_services.agreement_create(
            partner_id=data["partner"].pk,
            kind=data["kind"],
            app_id=data["app"].pk if data.get("app") else None,
            model_name=data.get("model_name") or "",
            effective_from=data["effective_from"],
            effective_to=data.get("effective_to"),
            share_bps=data.get("share_bps") or 0,
            tiers=data.get("tiers") or [],
            input_per_million=data.get("input_per_million") or 0,
            cached_input_per_million=data.get("cached_input_per_million") or 0,
            output_per_million=data.get("output_per_million") or 0,
            committed_amount=data.get("committed_amount"),
            note=data.get("note") or "",
            created_by_id=request.user.pk,
        )
        obj.pk = created.pk
        obj.version = created.version


class StatementLineInline(admin.TabularInline):
    model = StatementLine
    fk_name = "statement"
    extra = 0
    can_delete = False
    fields = (
        "kind",
        "role",
        "app",
        "model_name",
        "agreement",
        "agreement_version",
        "captures",
        "gross",
        "amount",
        "reason",
        "created_by",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PayoutForm(forms.Form):
    payout_reference = forms.CharField(label=_("Payout reference"), max_length=200)


class AdjustmentForm(forms.Form):
    amount = forms.IntegerField(
        label=_("Amount (tokens)"), help_text=_("Positive: the partner is owed more.")
    )
    reason = forms.CharField(label=_("Reason"), max_length=500, widget=forms.Textarea)


@admin.register(Statement)
class StatementAdmin(admin.ModelAdmin):
    list_display = (
        "partner",
        "period_kind",
        "period_start",
        "status",
        "currency",
        "earnings",
        "carried_in",
        "adjustments",
        "total",
    )
    list_filter = ("period_kind", "status")
    search_fields = ("partner__name", "payout_reference")
    inlines = [StatementLineInline]
    actions = ["approve", "pay", "adjust", "reconcile"]
    readonly_fields = [f.name for f in Statement._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The change page only shows; every change goes through an action.
        return obj is None and super().has_change_permission(request, obj)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "reconcile/",
                self.admin_site.admin_view(self.reconcile_view),
                name="partners_statement_reconcile",
            ),
            *super().get_urls(),
        ]

    def reconcile_view(self, request: HttpRequest) -> HttpResponse:
        period = request.GET.get("period", "")
        result = None
        error = ""
        if period:
            try:
                result = selectors.settlement_reconcile(period=period)
            except InvalidPeriod:
                error = str(_("A period is YYYY-MM or YYYY-MM-DD."))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Settlement reconciliation"),
            "opts": self.model._meta,
            "period": period,
            "result": result,
            "report": "\n".join(reconciliation_lines(result)) if result else "",
            "error": error,
        }
        return TemplateResponse(request, "admin/partners/statement/reconcile.html", context)

    def _form_page(
        self, request: HttpRequest, queryset: QuerySet[Statement], form: forms.Form, action: str
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": _("Statements"),
            "opts": self.model._meta,
            "form": form,
            "action": action,
            "statements": queryset,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
        }
        return TemplateResponse(request, "admin/partners/statement/action_form.html", context)

    @admin.action(description=_("Approve (or carry forward below the minimum payout)"))
    def approve(self, request: HttpRequest, queryset: QuerySet[Statement]) -> None:
        for statement in queryset.order_by("pk"):
            try:
                done = services.statement_approve(statement_id=statement.pk, actor=_staff(request))
            except ValidationError as exc:
                self.message_user(request, f"{statement}: {_error_text(exc)}", messages.ERROR)
                continue
            self.message_user(request, f"{statement}: {done.get_status_display()}")

    @admin.action(description=_("Mark paid (with the payout reference)"))
    def pay(self, request: HttpRequest, queryset: QuerySet[Statement]) -> HttpResponse | None:
        form = PayoutForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._form_page(request, queryset, form, "pay")
        for statement in queryset.order_by("pk"):
            try:
                services.statement_pay(
                    statement_id=statement.pk,
                    actor=_staff(request),
                    payout_reference=form.cleaned_data["payout_reference"],
                )
            except ValidationError as exc:
                self.message_user(request, f"{statement}: {_error_text(exc)}", messages.ERROR)
                continue
            self.message_user(request, f"{statement}: {_('paid')}")
        return None

    @admin.action(description=_("Add an adjustment (a new line with its reason)"))
    def adjust(self, request: HttpRequest, queryset: QuerySet[Statement]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, _("Adjust one statement at a time."), messages.ERROR)
            return None
        form = AdjustmentForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            statement = queryset.get()
            try:
                services.statement_adjust(
                    statement_id=statement.pk,
                    actor=_staff(request),
                    amount=form.cleaned_data["amount"],
                    reason=form.cleaned_data["reason"],
                )
            except ValidationError as exc:
                form.add_error(None, _error_text(exc))
            else:
                self.message_user(request, f"{statement}: {_('adjustment added')}")
                return None
        return self._form_page(request, queryset, form, "adjust")

    @admin.action(description=_("Reconcile the period with the ledger"))
    def reconcile(self, request: HttpRequest, queryset: QuerySet[Statement]) -> HttpResponse:
        statement = queryset.order_by("pk").first()
        url = reverse("admin:partners_statement_reconcile")
        return HttpResponseRedirect(f"{url}?period={statement.period_label if statement else ''}")
