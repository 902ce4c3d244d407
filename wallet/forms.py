from django import forms
from django.utils.translation import gettext_lazy as _


class RedeemForm(forms.Form):
    code = forms.CharField(
        label=_("Code"),
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
