"""Staff screens for partner apps as OAuth clients (DOT registers the Application model with
this class through OAUTH2_PROVIDER["APPLICATION_ADMIN_CLASS"]) and for consents.

A client secret is shown once: when the app is created and when staff rotate it. Only a keyed
hash is stored, so nobody can read it afterwards."""

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from oauth2_provider.generators import generate_client_secret

from partners.admin import ReadOnlyAdminMixin, staff_actor
from partners.models import AccessTokenRevocation, Application, ClientAuthFailures, Consent
from partners.oauth.ratelimit import client_auth_unlock, window_refuses
from partners.oauth.services import (
    application_client_secret_rotate,
    application_client_tokens_revoke,
    consent_revoke,
)


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


def _unlocked(request: HttpRequest, ended: int) -> None:
    messages.success(
        request,
        ngettext("%(count)d failure window cleared.", "%(count)d failure windows cleared.", ended)
        % {"count": ended},
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
    actions = ["rotate_client_secret", "unlock_client_authentication", "revoke_client_tokens"]
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

    @admin.action(description=_("Unlock client authentication (clear its failure counts)"))
    def unlock_client_authentication(
        self, request: HttpRequest, queryset: QuerySet[Application]
    ) -> None:
        ended = client_auth_unlock(
            windows=ClientAuthFailures.objects.filter(application__in=queryset),
            actor=staff_actor(request),
        )
        _unlocked(request, ended)

    @admin.action(description=_("Revoke its client credentials tokens (all issued until now)"))
    def revoke_client_tokens(self, request: HttpRequest, queryset: QuerySet[Application]) -> None:
        apps = list(queryset.select_related("partner").order_by("pk"))
        for application in apps:
            application_client_tokens_revoke(application=application, actor=staff_actor(request))
        messages.success(
            request,
            ngettext(
                "Client credentials tokens of %(count)d app revoked.",
                "Client credentials tokens of %(count)d apps revoked.",
                len(apps),
            )
            % {"count": len(apps)},
        )


@admin.register(ClientAuthFailures)
class ClientAuthFailuresAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Who is failing client authentication right now, and the way to let a partner back in
    before the window ends (after it fixed a wrong secret, say). The client address and an
    unknown client_id are stored only as a hash, so a row of no app shows no name."""

    list_display = ("application", "failures", "is_blocking", "window_ends")
    list_select_related = ("application",)
    search_fields = ("application__name", "application__client_id")
    ordering = ("-window_ends",)
    readonly_fields = ("application", "failures", "window_ends")
    fields = readonly_fields
    actions = ["unlock_selected"]

    @admin.display(boolean=True, description=_("refusing now"))
    def is_blocking(self, obj: ClientAuthFailures) -> bool:
        return window_refuses(obj)

    @admin.action(description=_("Unlock: clear these failure counts"))
    def unlock_selected(self, request: HttpRequest, queryset: QuerySet[ClientAuthFailures]) -> None:
        ended = client_auth_unlock(windows=queryset, actor=staff_actor(request))
        _unlocked(request, ended)


@admin.register(AccessTokenRevocation)
class AccessTokenRevocationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Client credentials tokens revoked before they expired (they are not stored otherwise;
    partners.oauth.tokens). Rows go once the token would have expired (oauth_cleanup)."""

    list_display = ("jti", "application", "revoked_at", "expires")
    list_select_related = ("application",)
    search_fields = ("jti", "application__name", "application__client_id")
    ordering = ("-revoked_at",)
    readonly_fields = ("jti", "application", "revoked_at", "expires")
    fields = readonly_fields


@admin.register(Consent)
class ConsentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("user", "application", "scope", "created_at", "last_used_at")
    list_select_related = ("user", "application")
    search_fields = ("user__email", "user__phone", "application__name", "application__client_id")
    readonly_fields = ("user", "application", "scope", "created_at", "updated_at", "last_used_at")
    actions = ["revoke_selected"]

    @admin.action(description=_("Revoke: delete the consent and every token of that app"))
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[Consent]) -> None:
        count = 0
        for consent in queryset.select_related("user", "application").order_by("pk"):
            if consent_revoke(user=consent.user, application=consent.application, request=request):
                count += 1
        self.message_user(
            request, _("%(count)d apps revoked.") % {"count": count}, messages.SUCCESS
        )
