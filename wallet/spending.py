"""The wallet's monthly limits as the consent page asks for them (partners.oauth.spending)."""

from collections.abc import Iterable
from typing import Any

from django import forms

from accounts.models import User
from partners.models import Application
from wallet.forms import (
    AUTHORIZATION_DETAILS_TYPE,
    WALLET_SCOPE,
    AllowanceForm,
    authorization_details_allowance,
)
from wallet.selectors import AllowanceSummary, allowance_get
from wallet.services import allowance_set


class WalletSpendingLimits:
    scope = WALLET_SCOPE
    details_type = AUTHORIZATION_DETAILS_TYPE

    def requested(self, raw: str | None, *, scopes: Iterable[str]) -> int | None:
        return authorization_details_allowance(raw, scopes=scopes)

    def current(self, *, user: User, app: Application) -> AllowanceSummary:
        return allowance_get(user=user, app=app)

    def save(self, *, user: User, app: Application, monthly_limit: int) -> None:
        allowance_set(user=user, app=app, monthly_limit=monthly_limit)

    def form(self, data: Any = None, *, initial: int | None = None) -> forms.Form:
        if data is not None:
            return AllowanceForm(data)
        return AllowanceForm(initial={"monthly_allowance": initial})
