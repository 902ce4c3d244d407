"""Staff screens for partners: organizations with their members, the review of partner apps,
the partner log, and webhook endpoints and deliveries. Decisions go through services
(partners.services) so that the log and the webhooks are written with them."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from partners import services
from partners.models import ApplicationReview, Partner, PartnerEvent, PartnerMember
from partners.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


def staff_actor(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None


class ReadOnlyAdminMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PartnerMemberInline(admin.TabularInline):
    model = PartnerMember
    extra = 0
    autocomplete_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


def _decide(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    items: QuerySet[Any],
    decide: Any,
    done: str,
) -> None:
    count = 0
    for item in items.order_by("pk"):
        try:
            decide(item)
        except services.ReviewTransitionError as error:
            modeladmin.message_user(request, f"{item}: {error}", level=messages.WARNING)
        else:
            count += 1
    if count:
        modeladmin.message_user(request, done % {"count": count}, level=messages.SUCCESS)


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = ("name", "status", "is_model_vendor", "is_app_developer", "created_at")
    list_filter = ("status", "is_model_vendor", "is_app_developer")
    search_fields = ("name", "legal_name", "registration_id", "contact_email")
    inlines = [PartnerMemberInline]
    # Status changes only through the actions below, which log them and tell the partner.
    readonly_fields = ("status", "approved_at", "created_at")
    fieldsets = (
        (None, {"fields": ("name", "status", "approved_at", "created_at")}),
        (
            _("Organization"),
            {
                "fields": (
                    "is_model_vendor",
                    "is_app_developer",
                    "legal_name",
                    "registration_id",
                    "address",
                    "contact_email",
                )
            },
        ),
        (
            _("Payout"),
            {
                "fields": (
                    "payout_bank_name",
                    "payout_account_name",
                    "payout_account_number",
                    "payout_swift_code",
                    "payout_currency",
                )
            },
        ),
    )
    actions = ["approve", "suspend"]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is not PartnerMember:
            super().save_formset(request, form, formset, change)
            return
        # Membership changes go through the services, which write the partner log.
        actor = staff_actor(request)
        instances = formset.save(commit=False)
        for membership in formset.deleted_objects:
            services.partner_member_remove(membership=membership, actor=actor)
        for membership in instances:
            if membership.pk is None:
                services.partner_member_add(
                    partner=form.instance, user=membership.user, role=membership.role, actor=actor
                )
            else:
                services.partner_member_role_set(
                    membership=membership, role=membership.role, actor=actor
                )

    @admin.action(description=_("Approve or reinstate the selected partners"))
    def approve(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        _decide(
            self,
            request,
            queryset,
            lambda p: services.partner_approve(partner=p, actor=staff_actor(request)),
            str(_("%(count)d partners approved.")),
        )

    @admin.action(description=_("Suspend the selected partners"))
    def suspend(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        _decide(
            self,
            request,
            queryset,
            lambda p: services.partner_suspend(
                partner=p, actor=staff_actor(request), reason="staff"
            ),
            str(_("%(count)d partners suspended.")),
        )


@admin.register(ApplicationReview)
class ApplicationReviewAdmin(admin.ModelAdmin):
    list_display = ("application", "partner", "status", "submitted_by", "created_at", "decided_at")
    list_filter = ("status",)
    search_fields = ("application__name", "application__client_id", "application__partner__name")
    list_select_related = ("application__partner", "submitted_by")
    readonly_fields = (
        "application",
        "status",
        "submitted_by",
        "decided_by",
        "decided_at",
        "created_at",
    )
    actions = ["approve", "suspend"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("partner"))
    def partner(self, obj: ApplicationReview) -> Any:
        return obj.application.partner

    @admin.action(description=_("Approve the selected apps"))
    def approve(self, request: HttpRequest, queryset: QuerySet[ApplicationReview]) -> None:
        _decide(
            self,
            request,
            queryset.select_related("application__partner"),
            lambda r: services.application_approve(
                application=r.application, actor=staff_actor(request)
            ),
            str(_("%(count)d apps approved.")),
        )

    @admin.action(description=_("Suspend the selected apps"))
    def suspend(self, request: HttpRequest, queryset: QuerySet[ApplicationReview]) -> None:
        _decide(
            self,
            request,
            queryset.select_related("application__partner"),
            lambda r: services.application_suspend(
                application=r.application, actor=staff_actor(request), reason="staff"
            ),
            str(_("%(count)d apps suspended.")),
        )


@admin.register(PartnerEvent)
class PartnerEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "partner", "action", "actor", "application_id")
    list_filter = ("action",)
    search_fields = ("partner__name",)
    date_hierarchy = "created_at"
    list_select_related = ("partner", "actor")


class WebhookAttemptInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    fields = ("number", "started_at", "duration_ms", "status_code", "succeeded", "error")
    readonly_fields = fields


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "partner", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("url", "partner__name")
    # Partners manage their endpoints in the portal; staff may pause one that misbehaves.
    fields = ("partner", "url", "description", "event_types", "is_active", "created_at")
    readonly_fields = ("partner", "url", "description", "event_types", "created_at")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "event", "endpoint", "status", "attempts", "last_status_code")
    list_filter = ("status", "event__event_type")
    search_fields = ("event__public_id", "endpoint__url", "endpoint__partner__name")
    list_select_related = ("event", "endpoint")
    inlines = [WebhookAttemptInline]


# Agreements and settlement statements (partners/settlement/admin.py).
from partners.settlement import admin as settlement_admin  # noqa: E402, F401
