"""The spending limit the consent page asks for when an app requests the wallet's scope.

The wallet sits above partners in the import order (CONVENTIONS.md): it registers its limits
here when Django starts (``wallet.apps.WalletConfig.ready``), and the OAuth views use them
through this module without importing the wallet. Without a registration the consent page
asks for no limit and refuses every ``authorization_details`` (RFC 9396)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from django import forms

    from accounts.models import User
    from partners.models import Application


class AuthorizationDetailsRefused(ValueError):
    """The request's ``authorization_details`` cannot be honoured (RFC 9396 §5:
    invalid_authorization_details); the message is the error description."""


class SpendingLimits(Protocol):
    scope: str  # the scope whose consent comes with a monthly limit
    details_type: str  # its RFC 9396 authorization_details type

    def requested(self, raw: str | None, *, scopes: Iterable[str]) -> int | None:
        """The limit an ``authorization_details`` parameter asks for (None: none asked).
        Raises AuthorizationDetailsRefused."""

    def current(self, *, user: User, app: Application) -> Any:
        """The limit in force: ``.monthly_limit``, ``.used`` and ``.remaining`` this month."""

    def save(self, *, user: User, app: Application, monthly_limit: int) -> None: ...

    def form(self, data: Any = None, *, initial: int | None = None) -> forms.Form:
        """The consent page's input, with a ``monthly_allowance`` field."""


_registered: list[SpendingLimits] = []


def spending_limits_register(limits: SpendingLimits) -> None:
    _registered[:] = [limits]


def spending_limits() -> SpendingLimits | None:
    return _registered[0] if _registered else None
