"""Forms of the account pages, the two-factor pages and the staff admin's user pages."""

from typing import Any
from zoneinfo import available_timezones

from django import forms
from django.conf import settings
from django.contrib.auth.forms import (
    PasswordChangeForm,
    ReadOnlyPasswordHashField,
    SetPasswordMixin,
)
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from accounts.phone import InvalidPhoneNumber, phone_normalize


def _time_zone_choices() -> list[tuple[str, str]]:
    # Legacy aliases ("US/Eastern", "Etc/GMT+8") are valid but confusing in a picker; every
    # canonical Area/City zone and UTC are offered.
    zones = sorted(
        zone
        for zone in available_timezones()
        if "/" in zone and not zone.startswith(("Etc/", "SystemV/", "US/"))
    )
    return [("UTC", "UTC"), *[(zone, zone.replace("_", " ")) for zone in zones]]


class ProfileForm(forms.Form):
    display_name = forms.CharField(
        label=_("Display name"),
        max_length=100,
        required=False,
        help_text=_("Shown to you and, when you allow it, to the apps you sign in to."),
    )
    locale = forms.ChoiceField(label=_("Language"), choices=settings.LANGUAGES)
    time_zone = forms.ChoiceField(label=_("Time zone"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["time_zone"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = _time_zone_choices()

    def clean_time_zone(self) -> str:
        value: str = self.cleaned_data["time_zone"]
        if value not in available_timezones() and value != "UTC":
            raise forms.ValidationError(_("Choose a time zone from the list."))
        return value


REAUTH_BLOCKED_MESSAGE = _("Too many wrong passwords. Wait 15 minutes, then try again.")


class PasswordConfirmForm(forms.Form):
    """Asks for the current password before a sensitive change. `blocked` (too many recent
    wrong passwords) refuses without checking; `wrong_password` tells the view to count one."""

    password = forms.CharField(
        label=_("Current password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )

    def __init__(self, *args: Any, user: User, blocked: bool = False, **kwargs: Any) -> None:
        self.user = user
        self.blocked = blocked
        self.wrong_password = False
        super().__init__(*args, **kwargs)

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        if self.blocked:
            raise forms.ValidationError(REAUTH_BLOCKED_MESSAGE)
        if not self.user.check_password(password):
            self.wrong_password = True
            raise forms.ValidationError(_("That is not your current password."))
        return password


class AccountPasswordChangeForm(PasswordChangeForm):
    """Django's password change form with the same guard against guessing as
    PasswordConfirmForm."""

    def __init__(self, user: User, *args: Any, blocked: bool = False, **kwargs: Any) -> None:
        self.blocked = blocked
        self.wrong_password = False
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self) -> str:
        if self.blocked:
            raise forms.ValidationError(REAUTH_BLOCKED_MESSAGE)
        try:
            return str(super().clean_old_password())
        except forms.ValidationError:
            self.wrong_password = True
            raise


class TotpCodeForm(forms.Form):
    code = forms.CharField(
        label=_("Six-digit code from the app"),
        max_length=12,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "pattern": "[0-9 ]*",
                "class": "code-input",
                "autofocus": True,
            }
        ),
    )

    def clean_code(self) -> str:
        code = "".join(self.cleaned_data["code"].split())
        if not (code.isdigit() and len(code) == 6):
            raise forms.ValidationError(_("Enter the six digits shown in your app."))
        return code


class SecondFactorForm(forms.Form):
    code = forms.CharField(
        label=_("Code from your authenticator app, or a recovery code"),
        max_length=32,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "class": "code-input", "autofocus": True}
        ),
    )


class UserAdminChangeForm(forms.ModelForm):
    """The admin's user form. Phone and email are optional but unique, so a blank entry is
    stored as NULL (two blank strings would collide); phone numbers are normalised to E.164
    and emails lower-cased, as everywhere else."""

    password = ReadOnlyPasswordHashField(
        label=_("Password"),
        help_text=_(
            "Passwords are stored hashed, so nobody can see them. "
            'Set a new one with <a href="{}">this form</a>.'
        ),
    )

    class Meta:
        model = User
        fields = (
            "password",
            "phone",
            "phone_verified",
            "email",
            "email_verified",
            "display_name",
            "locale",
            "time_zone",
            "is_active",
            "is_staff",
            "is_superuser",
            "groups",
            "user_permissions",
            "last_login",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        password = self.fields.get("password")
        if password and self.instance.pk:
            password.help_text = str(password.help_text).format(
                f"../../{self.instance.pk}/password/"
            )

    def clean_phone(self) -> str | None:
        raw = (self.cleaned_data.get("phone") or "").strip()
        if not raw:
            return None
        try:
            return phone_normalize(raw=raw)
        except InvalidPhoneNumber as exc:
            raise forms.ValidationError(_("Enter a valid phone number.")) from exc

    def clean_time_zone(self) -> str:
        value: str = self.cleaned_data.get("time_zone") or ""
        if value not in available_timezones():
            raise forms.ValidationError(_("Enter a time zone name such as Asia/Shanghai or UTC."))
        return value

    def clean_email(self) -> str | None:
        value = (self.cleaned_data.get("email") or "").strip().lower()
        return value or None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("phone") and not cleaned.get("email") and not self.errors:
            raise forms.ValidationError(_("A user needs a phone number or an email address."))
        return cleaned


class UserAdminCreationForm(SetPasswordMixin, UserAdminChangeForm):
    """Creates an account from the admin with a phone number and/or email and a password."""

    password = None  # type: ignore[assignment]
    password1, password2 = SetPasswordMixin.create_password_fields()

    class Meta:
        model = User
        fields = ("phone", "email")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self.validate_passwords()
        return cleaned

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]
        self.validate_password_for_user(self.instance)

    def save(self, commit: bool = True) -> User:
        user: User = super().save(commit=False)
        user = self.set_password_and_save(user, commit=commit)
        return user
