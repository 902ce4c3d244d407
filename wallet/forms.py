import json
from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from partners.oauth.spending import AuthorizationDetailsRefused


class RedeemForm(forms.Form):
    code = forms.CharField(
        label=pgettext_lazy("redemption", "Code"),
        max_length=40,
        widget=forms.TextInput(attrs={"autocomplete": "off", "autofocus": True}),
        help_text=_("Letters and digits; dashes and spaces are ignored."),
    )


class StaffCreditForm(forms.Form):
    amount = forms.IntegerField(label=_("Tokens"), min_value=1, max_value=10**12)
    reason = forms.CharField(label=_("Reason"), max_length=500, widget=forms.Textarea)
    source = forms.ChoiceField(
        label=_("Kind of credit"),
        choices=[("compensation", _("staff compensation")), ("promotion", _("promotion"))],
    )
    expires_at = forms.DateTimeField(
        label=_("Expires at"), required=False, help_text=_("Leave empty: never expires.")
    )
    idempotency_key = forms.CharField(widget=forms.HiddenInput)


class RedemptionBatchForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=120)
    amount = forms.IntegerField(label=_("Tokens per code"), min_value=1, max_value=10**12)
    count = forms.IntegerField(label=_("Number of codes"), min_value=1, max_value=10_000)
    codes_expire_at = forms.DateTimeField(label=_("Codes expire at"))
    credit_valid_days = forms.IntegerField(
        label=_("Credit valid for (days)"),
        min_value=1,
        required=False,
        help_text=_("Leave empty for tokens that never expire."),
    )


# What the history filter offers, in words a person uses, and the ledger kinds behind each.
HISTORY_KINDS: dict[str, tuple[str, ...]] = {
    "credit": ("topup", "redemption", "plan_grant", "staff_credit"),
    "charge": ("charge", "capture"),
    "refund": ("refund",),
    "expiry": ("expiry",),
    "hold": ("hold", "release"),
}
HISTORY_MAX_DAYS = 366 * 5
HISTORY_FIRST_YEAR, HISTORY_LAST_YEAR = 2000, 2999


class HistoryFilterForm(forms.Form):
    """The wallet page's GET parameters. Every field is optional; an unknown value is a form
    error shown on the page, never a server error."""

    date_from = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    kind = forms.ChoiceField(
        label=_("Kind"),
        required=False,
        choices=[
            ("", _("All")),
            ("credit", _("Credits")),
            ("charge", _("Charges")),
            ("refund", _("Refunds")),
            ("expiry", _("Expiries")),
            ("hold", _("Holds and releases")),
        ],
    )
    app = forms.TypedChoiceField(label=_("App"), required=False, coerce=int, empty_value=None)
    model = forms.ChoiceField(label=_("Model"), required=False)
    range = forms.TypedChoiceField(
        label=_("Chart range"),
        required=False,
        coerce=int,
        empty_value=None,
        choices=[("30", _("30 days")), ("90", _("90 days"))],
    )
    group = forms.ChoiceField(
        label=_("Chart by"),
        required=False,
        choices=[("app", _("App")), ("model", _("Model"))],
    )

    def __init__(self, *args: Any, apps: Iterable[Any], models: Iterable[str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.apps = {app.pk: app for app in apps}
        app_field = self.fields["app"]
        model_field = self.fields["model"]
        assert isinstance(app_field, forms.ChoiceField)
        assert isinstance(model_field, forms.ChoiceField)
        app_field.choices = [("", _("All"))] + [
            (str(pk), app.name or app.client_id) for pk, app in self.apps.items()
        ]
        model_field.choices = [("", _("All"))] + [(name, name) for name in models]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        for name, value in (("date_from", start), ("date_to", end)):
            # Far-off dates match nothing and would overflow the day arithmetic.
            if value is not None and not HISTORY_FIRST_YEAR <= value.year <= HISTORY_LAST_YEAR:
                self.add_error(name, _("Enter a date between the years 2000 and 2999."))
                return data
        if start and end:
            if start > end:
                self.add_error("date_to", _("The end date must not be before the start date."))
            elif (end - start).days > HISTORY_MAX_DAYS:
                self.add_error("date_to", _("Choose a range of at most five years."))
        return data

    def history_filters(self) -> dict[str, Any]:
        """Keyword arguments for selectors.history_list (call after is_valid())."""
        data = self.cleaned_data
        return {
            "date_from": data.get("date_from"),
            "date_to": data.get("date_to"),
            "kinds": HISTORY_KINDS.get(data.get("kind") or "", ()),
            "app": self.apps.get(data["app"]) if data.get("app") else None,
            "model": data.get("model") or "",
        }


# ---------------------------------------------------------------------------------------------
# Spending allowances (the consent page and the Connected apps page)

WALLET_SCOPE = "wallet:charge"
AUTHORIZATION_DETAILS_TYPE = "tokenpass_wallet"
AUTHORIZATION_DETAILS_MAX_LENGTH = 2000


class AllowanceForm(forms.Form):
    monthly_allowance = forms.IntegerField(
        label=_("Monthly spending limit (tokens)"),
        min_value=0,
        max_value=settings.WALLET_MAX_AMOUNT,
        help_text=_("The most this app may take from your wallet per calendar month (UTC)."),
        widget=forms.NumberInput(attrs={"inputmode": "numeric", "step": 1}),
    )


class AuthorizationDetailsError(AuthorizationDetailsRefused):
    """The request's ``authorization_details`` cannot be honoured (RFC 9396 §5:
    invalid_authorization_details)."""


def authorization_details_allowance(raw: str | None, *, scopes: Iterable[str]) -> int | None:
    """The monthly limit asked for by an RFC 9396 ``authorization_details`` parameter, or
    None when it carries no ``tokenpass_wallet`` entry. Entries of other types are refused,
    since this server knows no other type. Raises AuthorizationDetailsError with a
    description fit for the client."""
    if raw is None or raw == "":
        return None
    if len(raw) > AUTHORIZATION_DETAILS_MAX_LENGTH:
        raise AuthorizationDetailsError("authorization_details is too long.")
    try:
        details = json.loads(raw)
    except ValueError:
        raise AuthorizationDetailsError("authorization_details is not valid JSON.") from None
    if not isinstance(details, list) or not all(isinstance(item, dict) for item in details):
        raise AuthorizationDetailsError("authorization_details must be a JSON array of objects.")
    limit: int | None = None
    for item in details:
        kind = item.get("type")
        if kind != AUTHORIZATION_DETAILS_TYPE:
            raise AuthorizationDetailsError(f"Unknown authorization_details type: {kind!r}.")
        if WALLET_SCOPE not in set(scopes):
            raise AuthorizationDetailsError(
                f"A {AUTHORIZATION_DETAILS_TYPE} entry needs the {WALLET_SCOPE} scope."
            )
        if limit is not None:
            raise AuthorizationDetailsError(
                f"Only one {AUTHORIZATION_DETAILS_TYPE} entry is allowed."
            )
        unknown = set(item) - {"type", "monthly_limit"}
        if unknown:
            raise AuthorizationDetailsError(
                f"Unknown {AUTHORIZATION_DETAILS_TYPE} fields: {', '.join(sorted(unknown))}."
            )
        value = item.get("monthly_limit")
        # bool is an int in Python; JSON true is not an amount.
        if not isinstance(value, int) or isinstance(value, bool):
            raise AuthorizationDetailsError("monthly_limit must be an integer.")
        if not 0 <= value <= settings.WALLET_MAX_AMOUNT:
            raise AuthorizationDetailsError(
                f"monthly_limit must be between 0 and {settings.WALLET_MAX_AMOUNT}."
            )
        limit = value
    return limit
