"""Staff view of back-channel logout deliveries: read-only, with every attempt."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from partners.models_logout import BackchannelLogoutAttempt, BackchannelLogoutDelivery
from partners.oauth.backchannel import backchannel_logout_resend


class BackchannelLogoutAttemptInline(admin.TabularInline):
    model = BackchannelLogoutAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "duration_ms", "status_code", "succeeded", "error")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(BackchannelLogoutDelivery)
class BackchannelLogoutDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "application",
        "subject",
        "status",
        "attempts",
        "last_status_code",
        "delivered_at",
    )
    list_filter = ("status", "application")
    search_fields = ("subject", "jti", "application__name", "application__client_id")
    date_hierarchy = "created_at"
    list_select_related = ("application",)
    readonly_fields = (
        "application",
        "user",
        "subject",
        "sid",
        "jti",
        "logout_uri",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "created_at",
        "updated_at",
        "delivered_at",
    )
    fields = readonly_fields
    inlines = (BackchannelLogoutAttemptInline,)
    actions = ("resend_failed",)

    @admin.action(description=_("Send the failed notices again"), permissions=["view"])
    def resend_failed(self, request: HttpRequest, queryset: QuerySet) -> None:
        created = backchannel_logout_resend(
            delivery_ids=list(queryset.values_list("pk", flat=True))
        )
        self.message_user(
            request,
            ngettext(
                "%(count)d notice queued again.", "%(count)d notices queued again.", len(created)
            )
            % {"count": len(created)},
            messages.SUCCESS if created else messages.WARNING,
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
