"""Forms of the partner portal. They validate what a partner types; services do the writes."""

import re
from datetime import date, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from PIL import Image

from partners.models import Application, Partner
from partners.portal.selectors import MAX_USAGE_DAYS
from partners.portal.services import PROFILE_FIELDS
from partners.webhooks.models import WebhookEventType

GRANT_CHOICES = [
    (Application.GRANT_AUTHORIZATION_CODE, _("Authorization code (people sign in)")),
    ("refresh_token", _("Refresh tokens")),
    (Application.GRANT_CLIENT_CREDENTIALS, _("Client credentials (server to server)")),
    (Application.GRANT_DEVICE_CODE, _("Device code (TVs and devices without a keyboard)")),
]
CLIENT_TYPE_CHOICES = [
    (Application.CLIENT_CONFIDENTIAL, _("Confidential: a server that can keep a secret")),
    (Application.CLIENT_PUBLIC, _("Public: a mobile or single-page app (PKCE, no secret)")),
]
MAX_REDIRECT_URIS = 10
LOGO_MAX_BYTES = 512 * 1024
LOGO_MAX_PIXELS = 1024
LOGO_FORMATS = {"PNG", "JPEG", "WEBP"}
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def scope_choices() -> list[tuple[str, str]]:
    return [
        (scope, f"{scope}: {label}") for scope, label in settings.OAUTH2_PROVIDER["SCOPES"].items()
    ]


class ApplicationForm(forms.Form):
    name = forms.CharField(label=_("App name"), max_length=255)
    client_type = forms.ChoiceField(
        label=_("Client type"), choices=CLIENT_TYPE_CHOICES, widget=forms.RadioSelect
    )
    redirect_uris = forms.CharField(
        label=_("Redirect URIs"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_(
            "One per line; exact match, no wildcards. Required for the authorization code grant."
        ),
    )
    allowed_grant_types = forms.MultipleChoiceField(
        label=_("Grant types"), choices=GRANT_CHOICES, widget=forms.CheckboxSelectMultiple
    )
    allowed_scopes = forms.MultipleChoiceField(
        label=_("Scopes"), choices=scope_choices, widget=forms.CheckboxSelectMultiple
    )
    homepage_url = forms.URLField(
        label=_("Homepage"), required=False, max_length=200, assume_scheme="https"
    )
    privacy_policy_url = forms.URLField(
        label=_("Privacy policy"), required=False, max_length=200, assume_scheme="https"
    )
    logo = forms.ImageField(
        label=_("Logo"),
        required=False,
        help_text=_("PNG, JPEG or WebP, at most 512 KB and 1024 x 1024 pixels."),
    )

    def clean_redirect_uris(self) -> list[str]:
        uris = [line.strip() for line in self.cleaned_data["redirect_uris"].splitlines()]
        uris = [uri for uri in uris if uri]
        if len(uris) > MAX_REDIRECT_URIS:
            raise ValidationError(
                _("At most %(limit)d redirect URIs."), params={"limit": MAX_REDIRECT_URIS}
            )
        validate = URLValidator(schemes=["http", "https"])
        for uri in uris:
            try:
                validate(uri)
            except ValidationError:
                raise ValidationError(
                    _("Not a valid http or https URL: %(uri)s"), params={"uri": uri[:200]}
                ) from None
            if "#" in uri:
                raise ValidationError(_("Redirect URIs must not contain a fragment (#)."))
        return uris

    def clean_logo(self) -> Any:
        logo = self.cleaned_data.get("logo")
        if not logo or not hasattr(logo, "content_type"):
            # Nothing new uploaded (an edit keeps the stored logo).
            return None
        if logo.size > LOGO_MAX_BYTES:
            raise ValidationError(_("The logo may be at most 512 KB."))
        image = getattr(logo, "image", None)
        if image is None or image.format not in LOGO_FORMATS:
            raise ValidationError(_("Upload a PNG, JPEG or WebP image."))
        if image.width > LOGO_MAX_PIXELS or image.height > LOGO_MAX_PIXELS:
            raise ValidationError(_("The logo may be at most 1024 x 1024 pixels."))
        logo.seek(0)
        try:
            Image.open(logo).verify()
        except Exception:
            raise ValidationError(_("Upload a PNG, JPEG or WebP image.")) from None
        logo.seek(0)
        return logo

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        grants = data.get("allowed_grant_types") or []
        client_type = data.get("client_type")
        if Application.GRANT_AUTHORIZATION_CODE in grants and not data.get("redirect_uris"):
            self.add_error(
                "redirect_uris", _("The authorization code grant needs at least one redirect URI.")
            )
        if (
            Application.GRANT_CLIENT_CREDENTIALS in grants
            and client_type == Application.CLIENT_PUBLIC
        ):
            self.add_error(
                "allowed_grant_types", _("Only confidential clients may use client credentials.")
            )
        if grants == ["refresh_token"]:
            self.add_error("allowed_grant_types", _("Refresh tokens need another grant type."))
        return data

    def apply_model_errors(self, error: ValidationError) -> None:
        """Show the app model's own validation (DOT's URI rules, ours) on this form."""
        fields = set(self.fields)
        for field, messages in error.message_dict.items():
            target = field if field in fields else None
            if field == "post_logout_redirect_uris":
                target = "redirect_uris"
            if field == "authorization_grant_type":
                target = "allowed_grant_types"
            for message in messages:
                self.add_error(target, message)


class WebhookEndpointForm(forms.Form):
    url = forms.URLField(
        label=_("Endpoint URL"),
        max_length=500,
        assume_scheme="https",
        help_text=_("We POST signed JSON events here."),
    )
    description = forms.CharField(label=_("Description"), max_length=200, required=False)
    event_types = forms.MultipleChoiceField(
        label=_("Events"), choices=WebhookEventType.choices, widget=forms.CheckboxSelectMultiple
    )
    is_active = forms.BooleanField(label=_("Active"), required=False, initial=True)


class PartnerProfileForm(forms.ModelForm):
    class Meta:
        model = Partner
        fields = PROFILE_FIELDS
        widgets = {"address": forms.Textarea(attrs={"rows": 3})}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not data.get("is_model_vendor") and not data.get("is_app_developer"):
            raise ValidationError(_("Choose at least one: model vendor or app developer."))
        return data


class PayoutForm(forms.Form):
    """Payout details. The stored values are never put back into the page: a field left
    empty keeps its value."""

    payout_bank_name = forms.CharField(label=_("Bank name"), max_length=200, required=False)
    payout_account_name = forms.CharField(label=_("Account holder"), max_length=200, required=False)
    payout_account_number = forms.CharField(
        label=_("Account number or IBAN"), max_length=64, required=False
    )
    payout_swift_code = forms.CharField(label=_("SWIFT/BIC"), max_length=11, required=False)
    payout_currency = forms.CharField(
        label=_("Payout currency"), max_length=3, help_text=_("ISO 4217 code, e.g. CNY, USD, EUR.")
    )

    def clean_payout_currency(self) -> str:
        value = self.cleaned_data["payout_currency"].strip().upper()
        if not CURRENCY_RE.match(value):
            raise ValidationError(_("Enter a three-letter ISO 4217 currency code."))
        return value

    def clean_payout_account_number(self) -> str:
        value = re.sub(r"\s+", "", self.cleaned_data["payout_account_number"])
        if value and not re.fullmatch(r"[A-Za-z0-9-]{4,64}", value):
            raise ValidationError(_("Use letters, digits and dashes only."))
        return value.upper()

    def clean_payout_swift_code(self) -> str:
        value = self.cleaned_data["payout_swift_code"].strip().upper()
        if value and not re.fullmatch(r"[A-Z0-9]{8}([A-Z0-9]{3})?", value):
            raise ValidationError(_("A SWIFT/BIC code has 8 or 11 letters and digits."))
        return value

    def changes(self) -> dict[str, str]:
        """The fields the person filled in (empty text fields keep the stored value)."""
        data = self.cleaned_data
        changed = {k: v for k, v in data.items() if v and k != "payout_currency"}
        changed["payout_currency"] = data["payout_currency"]
        return changed


class UsageFilterForm(forms.Form):
    date_from = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    group_by = forms.ChoiceField(
        label=_("Group by"),
        required=False,
        choices=[("day", _("Day")), ("app", _("App")), ("model", _("Model"))],
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        today: date = timezone.now().date()
        date_to = data.get("date_to") or today
        date_from = data.get("date_from") or date_to - timedelta(days=29)
        if date_to < date_from:
            raise ValidationError(_("The end date is before the start date."))
        if (date_to - date_from).days + 1 > MAX_USAGE_DAYS:
            raise ValidationError(
                _("Choose at most %(days)d days."), params={"days": MAX_USAGE_DAYS}
            )
        data["date_from"], data["date_to"] = date_from, date_to
        data["group_by"] = data.get("group_by") or "day"
        return data


def mask(value: str, *, keep: int = 4) -> str:
    """'•••• 1234' for a sensitive value; empty stays empty."""
    if not value:
        return ""
    return "•••• " + value[-keep:] if len(value) > keep else "••••"
