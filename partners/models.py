from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from jwcrypto import jwk
from oauth2_provider.models import AbstractApplication

# The grants a partner app may hold. Implicit, password and hybrid are refused (RFC 9700).
GRANT_TYPES_ALLOWED = (
    AbstractApplication.GRANT_AUTHORIZATION_CODE,
    "refresh_token",
    AbstractApplication.GRANT_CLIENT_CREDENTIALS,
    AbstractApplication.GRANT_DEVICE_CODE,
)
# What an app with no explicit allowed_scopes may ask for: identity only, never wallet access.
IDENTITY_SCOPES = ("openid", "profile", "email", "phone")


class Partner(models.Model):
    """A model vendor or app developer organization that owns apps on Tokenpass."""

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        ACTIVE = "active", _("active")
        SUSPENDED = "suspended", _("suspended")

    name = models.CharField(_("name"), max_length=200)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.PENDING
    )
    created_at = models.DateTimeField(default=timezone.now)
    # What the organization does on Tokenpass; one may be both.
    is_model_vendor = models.BooleanField(_("model vendor"), default=False)
    is_app_developer = models.BooleanField(_("app developer"), default=True)
    legal_name = models.CharField(_("legal name"), max_length=200, blank=True)
    registration_id = models.CharField(_("registration or tax id"), max_length=64, blank=True)
    address = models.TextField(_("address"), blank=True)
    contact_email = models.EmailField(_("contact email"), blank=True)
    # Payout details are sensitive: the portal shows them masked, and only to owners and
    # finance members.
    payout_bank_name = models.CharField(_("bank name"), max_length=200, blank=True)
    payout_account_name = models.CharField(_("account holder"), max_length=200, blank=True)
    payout_account_number = models.CharField(_("account number or IBAN"), max_length=64, blank=True)
    payout_swift_code = models.CharField(_("SWIFT/BIC"), max_length=11, blank=True)
    payout_currency = models.CharField(
        _("payout currency"), max_length=3, default="CNY", help_text=_("ISO 4217 code.")
    )
    approved_at = models.DateTimeField(_("approved"), null=True, blank=True)

    class Meta:
        verbose_name = _("partner")
        verbose_name_plural = _("partners")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(payout_currency__regex=r"^[A-Z]{3}$"),
                name="partner_payout_currency_iso4217",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Application(AbstractApplication):
    """A partner app: DOT's OAuth client, swapped in from the first migration.

    DOT's single ``authorization_grant_type`` is kept for compatibility; what an app may use
    is ``allowed_grant_types`` (space separated), so one app can hold the authorization code,
    refresh, device and client credentials grants at once.
    """

    partner = models.ForeignKey(
        Partner, on_delete=models.PROTECT, related_name="applications", null=True, blank=True
    )
    logo = models.ImageField(_("logo"), upload_to="app-logos/", blank=True)
    homepage_url = models.URLField(_("homepage"), blank=True)
    privacy_policy_url = models.URLField(_("privacy policy"), blank=True)
    backchannel_logout_uri = models.URLField(_("back-channel logout URI"), blank=True)
    allowed_grant_types = models.TextField(
        _("allowed grant types"), blank=True, help_text=_("Space separated grant types.")
    )
    allowed_scopes = models.TextField(
        _("allowed scopes"), blank=True, help_text=_("Space separated scopes the app may request.")
    )
    # Client credentials tokens issued before this time are refused (they are not stored, so
    # this is how all of an app's live ones are revoked at once).
    client_tokens_not_before = models.DateTimeField(
        _("client credentials tokens revoked before"), null=True, blank=True, editable=False
    )

    class Meta(AbstractApplication.Meta):
        swappable = "OAUTH2_PROVIDER_APPLICATION_MODEL"
        verbose_name = _("application")
        verbose_name_plural = _("applications")

    def grant_types(self) -> set[str]:
        """The grants this app holds: allowed_grant_types, or DOT's single field if empty."""
        declared = set(self.allowed_grant_types.split())
        if not declared and self.authorization_grant_type:
            declared = {self.authorization_grant_type}
        return declared & set(GRANT_TYPES_ALLOWED)

    def allows_grant_type(self, *grant_types: str) -> bool:
        # DOT maps the refresh_token grant onto the grants that issue refresh tokens; we make
        # refresh an explicit grant so that an app can be denied refresh tokens.
        return bool(self.grant_types() & set(grant_types))

    def scope_list(self) -> list[str]:
        """Scopes this app may request (identity scopes if none are configured)."""
        return self.allowed_scopes.split() or list(IDENTITY_SCOPES)

    def is_usable(self, request: Any) -> bool:
        """A suspended partner's apps get no tokens, and their live tokens stop working; nor
        do apps awaiting staff review (partners.selectors.application_is_live)."""
        from partners.selectors import application_is_live, partner_is_active

        review_field = type(self).review
        if not review_field.is_cached(self):
            return application_is_live(application=self)
        # The token endpoint loads the app with its partner and review joined
        # (select_related): the same rule as application_is_live, without two more queries.
        if self.partner_id is not None and not partner_is_active(partner=self.partner):
            return False
        review = self._state.fields_cache.get("review")
        status = review.status if review is not None else ApplicationReview.Status.APPROVED
        return bool(status == ApplicationReview.Status.APPROVED)

    @property
    def jwk_key(self) -> jwk.JWK:
        # RS256 tokens are signed with the rotating key set, not DOT's single PEM setting.
        if self.algorithm == AbstractApplication.RS256_ALGORITHM:
            from partners.oauth.keys import signing_jwk

            return signing_jwk()
        return super().jwk_key

    def clean(self) -> None:
        errors: dict[str, list[ValidationError]] = {}
        try:
            super().clean()
        except ValidationError as exc:
            for field, field_errors in exc.error_dict.items():
                kept = [
                    e
                    for e in field_errors
                    # Our RS256 keys come from partners.oauth.keys, not OIDC_RSA_PRIVATE_KEY.
                    if not (field == "algorithm" and "OIDC_RSA_PRIVATE_KEY" in str(e.message))
                ]
                if kept:
                    errors[field] = kept
        unknown = set(self.allowed_grant_types.split()) - set(GRANT_TYPES_ALLOWED)
        if unknown:
            errors.setdefault("allowed_grant_types", []).append(
                ValidationError(
                    _("Not an allowed grant type: %(grants)s."),
                    params={"grants": ", ".join(sorted(unknown))},
                )
            )
        if self.authorization_grant_type not in GRANT_TYPES_ALLOWED:
            errors.setdefault("authorization_grant_type", []).append(
                ValidationError(_("This grant type is not allowed (RFC 9700)."))
            )
        if (
            AbstractApplication.GRANT_CLIENT_CREDENTIALS in self.grant_types()
            and self.client_type != AbstractApplication.CLIENT_CONFIDENTIAL
        ):
            errors.setdefault("client_type", []).append(
                ValidationError(_("Only confidential clients may use client credentials."))
            )
        known_scopes = set(settings.OAUTH2_PROVIDER["SCOPES"])
        unknown_scopes = set(self.allowed_scopes.split()) - known_scopes
        if unknown_scopes:
            errors.setdefault("allowed_scopes", []).append(
                ValidationError(
                    _("Unknown scopes: %(scopes)s."),
                    params={"scopes": ", ".join(sorted(unknown_scopes))},
                )
            )
        if errors:
            raise ValidationError(errors)


class Consent(models.Model):
    """What a person allowed a partner app to do. One row per user and app; the scope set
    grows when the person approves more. Revoking an app deletes the row (the audit log keeps
    the history) together with every token of that app for that person."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="app_consents"
    )
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="consents")
    scope = models.TextField(_("scopes"), help_text=_("Space separated, sorted."))
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("consent")
        verbose_name_plural = _("consents")
        constraints = [
            models.UniqueConstraint(fields=["user", "application"], name="consent_user_app")
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.application}"

    def scope_set(self) -> set[str]:
        return set(self.scope.split())


class AuthorizationCode(models.Model):
    """Our record of an authorization code, kept after DOT deletes its grant: when and how
    the person signed in (OIDC auth_time), and which tokens the code produced, so that a
    replayed code revokes them (RFC 6749 §4.1.2). Only a SHA-256 of the code is stored."""

    code_checksum = models.CharField(max_length=64, unique=True)
    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    auth_time = models.BigIntegerField(help_text=_("When the person signed in (Unix time)."))
    # The OpenID session id of that sign-in, for the ID tokens' and logout tokens' `sid`.
    sid = models.CharField(max_length=64, blank=True)
    # RFC 9396: the authorization details the person granted, when the client asked for some;
    # the token responses of the code and of its refresh tokens carry them.
    authorization_details = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    redeemed_at = models.DateTimeField(null=True, blank=True)
    access_token_checksum = models.CharField(max_length=64, blank=True)
    token_family = models.UUIDField(null=True, blank=True, db_index=True)

    class Meta:
        verbose_name = _("authorization code")
        verbose_name_plural = _("authorization codes")

    def __str__(self) -> str:
        return f"Authorization code #{self.pk}"


class ClientAuthFailures(models.Model):
    """Failed client authentications at the token, introspection and revocation endpoints
    for one client_id and client address, in the current window (partners/oauth/ratelimit.py).
    Kept in the database, beside the app row that every client authentication reads anyway:
    the token endpoint reads the count in the same query as the app."""

    # SHA-256 of "client_id|address": neither is stored in clear.
    key = models.CharField(max_length=64, unique=True)
    # The app whose client_id was presented, so that staff can see and unlock it; empty for
    # a client_id no app has.
    application = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="client_auth_failures",
    )
    failures = models.PositiveIntegerField(default=0)
    window_ends = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = _("client authentication failures")
        verbose_name_plural = _("client authentication failures")

    def __str__(self) -> str:
        return f"{self.failures} failures until {self.window_ends:%Y-%m-%d %H:%M}"


class AccessTokenRevocation(models.Model):
    """A client credentials access token revoked before it expired (RFC 7009).

    Those tokens are not stored when they are issued: a partner server may ask for one per
    call, and the token is a signed JWT that says everything about itself (RFC 9068). Only a
    revocation is written, keyed by the token's jti, and kept until the token would have
    expired; every check of such a token (our APIs, introspection) looks for it here.
    Insert-only: a revocation is never undone."""

    jti = models.CharField(max_length=64, unique=True)
    application = models.ForeignKey(
        settings.OAUTH2_PROVIDER_APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="access_token_revocations",
    )
    # The token's own expiry: after it the row can go (oauth_cleanup).
    expires = models.DateTimeField(db_index=True)
    revoked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("revoked client credentials token")
        verbose_name_plural = _("revoked client credentials tokens")

    def __str__(self) -> str:
        return f"{self.jti} (revoked {self.revoked_at:%Y-%m-%d %H:%M})"


# Back-channel logout deliveries live in their own module; imported here so Django sees them.
from partners.models_logout import BackchannelLogoutAttempt, BackchannelLogoutDelivery  # noqa: E402, F401

# Partner members, app reviews and the partner audit log; the webhook outbox.
from partners.models_members import ApplicationReview, PartnerEvent, PartnerMember  # noqa: E402, F401
from partners.webhooks.models import (  # noqa: E402, F401
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

# isort: split
# Agreements and settlement statements live in their own packages; imported so Django sees them.
from partners.agreements.models import Agreement, SplitLine  # noqa: E402, F401
from partners.settlement.models import Statement, StatementLine  # noqa: E402, F401
