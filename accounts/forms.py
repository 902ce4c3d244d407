"""Forms of the identity flows. They parse and validate what a person typed; they never write."""

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext_lazy as _

from accounts.models import OneTimeCode, User
from accounts.phone import InvalidPhoneNumber, phone_normalize

PASSWORD_MAX_LENGTH = 256

PHONE_INVALID = _(
    "Enter a valid mobile phone number. Numbers outside mainland China need the country code, "
    "e.g. +44 7700 900123."
)
EMAIL_INVALID = _("Enter a valid email address.")
IDENTIFIER_INVALID = _("Enter a valid phone number or email address.")


def phone_clean(raw: str) -> str:
    try:
        return phone_normalize(raw=raw.strip())
    except InvalidPhoneNumber:
        raise ValidationError(PHONE_INVALID, code="invalid_phone") from None


def email_clean(raw: str) -> str:
    value = raw.strip().lower()
    try:
        validate_email(value)
    except ValidationError:
        raise ValidationError(EMAIL_INVALID, code="invalid_email") from None
    return value


def identifier_parse(raw: str) -> tuple[str, str]:
    """(channel, canonical recipient) for a phone number or an email address typed in one
    field. Raises ValidationError."""
    raw = raw.strip()
    if "@" in raw:
        return OneTimeCode.Channel.EMAIL, email_clean(raw)
    try:
        return OneTimeCode.Channel.SMS, phone_normalize(raw=raw)
    except InvalidPhoneNumber:
        raise ValidationError(IDENTIFIER_INVALID, code="invalid_identifier") from None


class IdentifierForm(forms.Form):
    """One field that takes a phone number or an email address (login by code, reset)."""

    channel: str = ""

    username = forms.CharField(
        label=_("Phone number or email"),
        max_length=254,
        widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True}),
    )

    def clean_username(self) -> str:
        """The canonical phone (E.164) or lower-cased email; `channel` says which."""
        self.channel, recipient = identifier_parse(self.cleaned_data["username"])
        return recipient


class PasswordLoginForm(IdentifierForm):
    password = forms.CharField(
        label=_("Password"),
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )


class SignupForm(forms.Form):
    """Sign-up by phone (`via` "phone") or by email (`via` "email")."""

    VIA_CHOICES = (("phone", _("Phone")), ("email", _("Email")))

    via = forms.ChoiceField(choices=VIA_CHOICES, widget=forms.HiddenInput)
    phone = forms.CharField(
        label=_("Mobile phone number"),
        max_length=32,
        required=False,
        widget=forms.TextInput(
            attrs={"autocomplete": "tel", "inputmode": "tel", "placeholder": "+86 138 0013 8000"}
        ),
    )
    email = forms.CharField(
        label=_("Email address"),
        max_length=254,
        required=False,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    display_name = forms.CharField(
        label=_("Display name (optional)"),
        max_length=100,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "nickname"}),
    )
    password1 = forms.CharField(
        label=_("Password"),
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password2 = forms.CharField(
        label=_("Password again"),
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_phone(self) -> str:
        value = self.cleaned_data.get("phone", "")
        if self.data.get("via") == "phone":
            if not value.strip():
                raise ValidationError(_("Enter your mobile phone number."), code="required")
            return phone_clean(value)
        return ""

    def clean_email(self) -> str:
        value = self.cleaned_data.get("email", "")
        if self.data.get("via") == "email":
            if not value.strip():
                raise ValidationError(_("Enter your email address."), code="required")
            return email_clean(value)
        return ""

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("via") == "phone" and cleaned.get("phone"):
            cleaned["channel"], cleaned["recipient"] = OneTimeCode.Channel.SMS, cleaned["phone"]
        elif cleaned.get("via") == "email" and cleaned.get("email"):
            cleaned["channel"], cleaned["recipient"] = OneTimeCode.Channel.EMAIL, cleaned["email"]
        password1, password2 = cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", _("The two passwords do not match."))
        elif password1:
            candidate = User(
                phone=cleaned.get("phone") or None,
                email=cleaned.get("email") or None,
                display_name=cleaned.get("display_name", ""),
            )
            try:
                password_validation.validate_password(password1, user=candidate)
            except ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class CodeForm(forms.Form):
    code = forms.CharField(
        label=_("6-digit code"),
        max_length=16,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "pattern": r"[0-9 ]*",
                "class": "code-input",
                "autofocus": True,
            }
        ),
    )

    def clean_code(self) -> str:
        code = self.cleaned_data["code"].replace(" ", "").replace("-", "")
        if len(code) != 6 or not code.isascii() or not code.isdigit():
            raise ValidationError(_("Enter the 6 digits of the code."), code="invalid_code")
        return code


class SetPasswordForm(forms.Form):
    password1 = forms.CharField(
        label=_("New password"),
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password", "autofocus": True}),
    )
    password2 = forms.CharField(
        label=_("New password again"),
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        self.user = user
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        password1, password2 = cleaned.get("password1"), cleaned.get("password2")
        if password1 and password2 and password1 != password2:
            self.add_error("password2", _("The two passwords do not match."))
        elif password1:
            try:
                password_validation.validate_password(password1, user=self.user)
            except ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned
