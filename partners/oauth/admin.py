"""Staff screens for partner apps as OAuth clients (DOT registers the Application model with
this class through OAUTH2_PROVIDER["APPLICATION_ADMIN_CLASS"]) and for consents.

A client secret is shown once: when the app is created and when staff rotate it. Only a keyed
hash is stored, so nobody can read it afterwards."""

from typing import Any

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from oauth2_provider.generators import generate_client_secret

from partners.models import Application, Consent
from partners.oauth.services import application_client_secret_rotate, consent_revoke


def _show_secret_once(request: HttpRequest, application: Application, secret: str) -> None:
    messages.warning(
        request,
        format_html(
            '{} <code class="secret" data-client-id="{}">{}</code>',
            _("Client secret for %(app)s. Copy it now: it will not be shown again.")
            % {"app": application.name or application.client_id},
            application.client_id,
            secret,
        ),
    )


class ApplicationAdmin(admin.ModelAdmin):
    list_display = ("name", "client_id", "partner", "client_type", "allowed_grant_types", "created")
    list_filter = ("client_type", "partner__status")
    list_select_related = ("partner",)
    search_fields = ("name", "client_id", "partner__name")
    raw_id_fields = ("user",)
    autocomplete_fields = ()
    readonly_fields = ("client_id", "secret_state", "created", "updated")
    fieldsets = (
        (None, {"fields": ("name", "partner", "logo", "homepage_url", "privacy_policy_url")}),
        (
            _("OAuth client"),
            {
                "fields": (
                    "client_id",
                    "secret_state",
                    "client_type",
                    "authorization_grant_type",
                    "allowed_grant_types",
                    "allowed_scopes",
                    "redirect_uris",
                    "post_logout_redirect_uris",
                    "backchannel_logout_uri",
                    "allowed_origins",
                    "algorithm",
                    "skip_authorization",
                )
            },
        ),
        (_("Dates"), {"fields": ("created", "updated")}),
    )
    actions = ["rotate_client_secret"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(description=_("client secret"))
    def secret_state(self, obj: Application) -> str:
        if obj.pk is None:
            return str(_("Generated when you save; shown once."))
        return str(_("Stored hashed. Use the “Rotate client secret” action for a new one."))

    def save_model(
        self, request: HttpRequest, obj: Application, form: ModelForm, change: bool
    ) -> None:
        secret = None
        if not change:
            secret = generate_client_secret()
            obj.client_secret = secret
            obj.hash_client_secret = True
        super().save_model(request, obj, form, change)
        if secret is not None and obj.client_type == Application.CLIENT_CONFIDENTIAL:
            _show_secret_once(request, obj, secret)

    @admin.action(description=_("Rotate client secret (the old one stops working)"))
    def rotate_client_secret(self, request: HttpRequest, queryset: QuerySet[Application]) -> None:
        for application in queryset.order_by("pk"):
            secret = application_client_secret_rotate(application=application)
            _show_secret_once(request, application, secret)


@admin.register(Consent)
class ConsentAdmin(admin.ModelAdmin):
    list_display = ("user", "application", "scope", "created_at", "last_used_at")
    list_select_related = ("user", "application")
    search_fields = ("user__email", "user__phone", "application__name", "application__client_id")
    readonly_fields = ("user", "application", "scope", "created_at", "updated_at", "last_used_at")
    actions = ["revoke_selected"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description=_("Revoke: delete the consent and every token of that app"))
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Consent]) -> None:
        count = 0
        for consent in queryset.select_related("user", "application").order_by("pk"):
            if consent_revoke(user=consent.user, application=consent.application, request=request):
                count += 1
        self.message_user(
            request, _("%(count)d apps revoked.") % {"count": count}, messages.SUCCESS
        )
