"""Errors raised by the wallet services. Each has a stable machine-readable ``code``; the API
maps them to HTTP statuses (insufficient balance → 402, idempotency conflict → 409, ...)."""

from typing import Any

from django.utils.translation import gettext_lazy as _


class WalletError(Exception):
    code = "wallet_error"
    message: Any = _("The wallet operation failed.")

    def __init__(self, message: Any = None, *, details: Any = None) -> None:
        self.message = message or self.message
        self.details = details
        super().__init__(str(self.message))


class InvalidRequest(WalletError):
    code = "invalid_request"
    message: Any = _("The request is not valid.")


class InsufficientBalance(WalletError):
    code = "insufficient_balance"
    message: Any = _("The wallet balance is too low.")


class AllowanceExceeded(WalletError):
    code = "allowance_exceeded"
    message: Any = _("This app has reached its monthly spending allowance for this user.")


class IdempotencyConflict(WalletError):
    code = "idempotency_conflict"
    message: Any = _("This idempotency key was already used with a different request.")


class NotFound(WalletError):
    code = "not_found"
    message: Any = _("Not found.")


class HoldNotOpen(WalletError):
    code = "hold_not_open"
    message: Any = _("The hold is no longer open.")


class UnknownModel(WalletError):
    code = "unknown_model"
    message: Any = _("The model is not in the price catalog or has no price in force.")


class RefundTooLarge(WalletError):
    code = "refund_too_large"
    message: Any = _("The refund exceeds what is left of the charge.")


class CodeNotRedeemable(WalletError):
    code = "code_not_redeemable"
    message: Any = _("This code is not valid or was already used.")


class TooManyAttempts(WalletError):
    code = "too_many_attempts"
    message: Any = _("Too many attempts. Try again later.")


class PaymentRejected(WalletError):
    code = "payment_rejected"
    message: Any = _("The payment notification was rejected.")
