from typing import Any

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.forms_account import UserAdminChangeForm, UserAdminCreationForm
from accounts.models import AuditEvent, OneTimeCode, User, UserSession
from accounts.services_account import (
    lockout_release,
    user_password_set_by_staff,
    user_sessions_end_all_by_staff,
)
from accounts.services_mfa import MfaError, mfa_disable


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that are evidence: staff may look, nobody (not even a superuser) may add, edit or
    delete them here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserAdminChangeForm
    add_form = UserAdminCreationForm
    list_display = (
        "public_id",
        "phone",
        "phone_verified",
        "email",
        "email_verified",
        "display_name",
        "two_factor",
        "is_active",
        "is_staff",
        "date_joined",
    )
    list_filter = (
        "phone_verified",
        "email_verified",
        "is_staff",
        "is_superuser",
        "is_active",
        "locale",
    )
    search_fields = ("phone", "email", "public_id", "display_name")
    search_help_text = _("Search by phone number, email address, public id or display name.")
    actions = ["sign_out_everywhere", "reset_two_factor"]
    ordering = ("-date_joined",)
    readonly_fields = ("public_id", "date_joined", "last_login")
    fieldsets = (
        (None, {"fields": ("public_id", "password")}),
        (
            _("Identity"),
            {"fields": ("phone", "phone_verified", "email", "email_verified")},
        ),
        (_("Profile"), {"fields": ("display_name", "locale", "time_zone")}),
        (
            _("Permissions"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Dates"), {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("phone", "email", "password1", "password2"),
            },
        ),
    )

    def user_change_password(
        self, request: HttpRequest, id: str, form_url: str = ""
    ) -> HttpResponse:
        response = super().user_change_password(request, id, form_url)
        # Django's view answers a successful change with a redirect; record it then.
        if request.method == "POST" and response.status_code == 302:
            user = self.get_object(request, id)
            if user is not None:
                user_password_set_by_staff(
                    user=user,
                    actor=request.user,  # type: ignore[arg-type]
                    request=request,
                )
        return response

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        confirmed_app = TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)
        return super().get_queryset(request).annotate(has_two_factor=Exists(confirmed_app))

    @admin.display(description=_("two-factor"), boolean=True, ordering="has_two_factor")
    def two_factor(self, obj: User) -> bool:
        return bool(getattr(obj, "has_two_factor", False))

    @admin.action(description=_("Reset two-factor (the user lost their phone and codes)"))
    def reset_two_factor(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        reset = 0
        for user in queryset.order_by("pk"):
            try:
                mfa_disable(request=request, user=user, actor=request.user)  # type: ignore[arg-type]
            except MfaError:
                continue
            reset += 1
        self.message_user(
            request,
            ngettext(
                "Two-factor reset for %(count)d user.",
                "Two-factor reset for %(count)d users.",
                reset,
            )
            % {"count": reset},
            messages.SUCCESS,
        )

    @admin.action(description=_("Sign out everywhere"))
    def sign_out_everywhere(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        ended = 0
        for user in queryset.order_by("pk"):
            ended += user_sessions_end_all_by_staff(
                user=user,
                actor=request.user,  # type: ignore[arg-type]
                request=request,
            )
        self.message_user(
            request,
            ngettext("Ended %(count)d session.", "Ended %(count)d sessions.", ended)
            % {"count": ended},
            messages.SUCCESS,
        )


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "action", "user", "actor", "ip_address")
    list_filter = ("action", ("created_at", admin.DateFieldListFilter))
    date_hierarchy = "created_at"
    search_fields = ("user__phone", "user__email", "user__public_id", "ip_address")
    search_help_text = _("Search by the user's phone number, email address or public id, or IP.")
    list_select_related = ("user", "actor")
    fields = ("created_at", "action", "user", "actor", "ip_address", "user_agent", "data")
    readonly_fields = fields
    actions = None


@admin.register(OneTimeCode)
class OneTimeCodeAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "purpose",
        "channel",
        "recipient",
        "ip_address",
        "expires_at",
        "attempts",
        "consumed_at",
    )
    list_filter = ("purpose", "channel", ("created_at", admin.DateFieldListFilter))
    search_fields = ("recipient", "ip_address")
    # The code's hash is left out on purpose: it is a secret derivative.
    fields = (
        "purpose",
        "channel",
        "recipient",
        "ip_address",
        "created_at",
        "expires_at",
        "attempts",
        "consumed_at",
    )
    readonly_fields = fields
    actions = None


@admin.register(UserSession)
class UserSessionAdmin(ReadOnlyAdmin):
    list_display = ("user", "ip_address", "user_agent", "created_at", "last_seen_at")
    search_fields = ("user__phone", "user__email", "user__public_id", "ip_address")
    list_select_related = ("user",)
    fields = ("user", "session_key_hint", "ip_address", "user_agent", "created_at", "last_seen_at")
    readonly_fields = fields
    actions = None

    @admin.display(description=_("session"))
    def session_key_hint(self, obj: UserSession) -> str:
        # The key is a bearer credential; staff only need to tell sessions apart.
        return obj.session_key[:6] + "…"


if admin.site.is_registered(AccessAttempt):
    admin.site.unregister(AccessAttempt)


@admin.register(AccessAttempt)
class LockoutAdmin(AccessAttemptAdmin):
    """django-axes' failed sign-in records, with an action that lifts a lock-out."""

    actions = ["unlock", "cleanup_expired_attempts"]

    @admin.action(description=_("Unlock: clear these failed attempts so sign-in works again"))
    def unlock(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        released = 0
        seen: set[tuple[str | None, str | None]] = set()
        for attempt in queryset.order_by("pk"):
            # One release clears every row for the same username and address.
            if (attempt.username, attempt.ip_address) in seen:
                continue
            seen.add((attempt.username, attempt.ip_address))
            lockout_release(attempt=attempt, actor=request.user, request=request)  # type: ignore[arg-type]
            released += 1
        self.message_user(
            request,
            ngettext(
                "Unlocked %(count)d sign-in record.",
                "Unlocked %(count)d sign-in records.",
                released,
            )
            % {"count": released},
            messages.SUCCESS,
        )
