"""Payment providers, behind one provider-neutral interface.

A provider turns a webhook request into a verified PaymentNotification, or raises
PaymentRejected. The webhook view then credits the wallet once per provider transaction id
(wallet.services.wallet_topup_credit). Providers are configured in
settings.WALLET_PAYMENT_PROVIDERS; one without a secret is disabled.
"""

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string
from django.utils.translation import gettext as _

from wallet.exceptions import PaymentRejected


@dataclass(frozen=True)
class PaymentNotification:
    transaction_id: str
    user_public_id: str
    amount: int
    succeeded: bool
    payload: dict[str, Any] = field(default_factory=dict)


class PaymentProvider:
    """The interface every provider implements."""

    def __init__(self, *, name: str, secret: str, **options: Any) -> None:
        self.name = name
        self.secret = secret
        self.options = options

    def parse_webhook(self, *, headers: Any, body: bytes) -> PaymentNotification:
        raise NotImplementedError


class HmacJsonProvider(PaymentProvider):
    """A provider that signs a JSON body with HMAC-SHA256 over "<timestamp>.<body>".

    Headers: ``X-Tokenpass-Timestamp`` (Unix seconds) and ``X-Tokenpass-Signature``
    (``v1=<hex digest>``). Notifications older or newer than WALLET_WEBHOOK_TOLERANCE are
    refused, so a captured request cannot be replayed later. Body:
    ``{"id": "...", "user": "<public id>", "amount": <int>, "status": "succeeded"}``.
    """

    TIMESTAMP_HEADER = "X-Tokenpass-Timestamp"
    SIGNATURE_HEADER = "X-Tokenpass-Signature"

    def sign(self, *, timestamp: int, body: bytes) -> str:
        message = str(timestamp).encode() + b"." + body
        return "v1=" + hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()

    def parse_webhook(self, *, headers: Any, body: bytes) -> PaymentNotification:
        timestamp_raw = headers.get(self.TIMESTAMP_HEADER, "")
        signature = headers.get(self.SIGNATURE_HEADER, "")
        try:
            timestamp = int(timestamp_raw)
        except ValueError:
            raise PaymentRejected(_("Missing or malformed timestamp.")) from None
        tolerance = settings.WALLET_WEBHOOK_TOLERANCE.total_seconds()
        if abs(time.time() - timestamp) > tolerance:
            raise PaymentRejected(_("The notification is outside the replay window."))
        if not hmac.compare_digest(self.sign(timestamp=timestamp, body=body), signature):
            raise PaymentRejected(_("Bad signature."))
        try:
            data = json.loads(body)
            notification = PaymentNotification(
                transaction_id=str(data["id"]),
                user_public_id=str(data["user"]),
                amount=data["amount"],
                succeeded=data.get("status") == "succeeded",
                payload=data,
            )
        except (ValueError, KeyError, TypeError):
            raise PaymentRejected(_("Malformed notification body.")) from None
        if not 1 <= len(notification.transaction_id) <= 150:
            raise PaymentRejected(_("Malformed transaction id."))
        return notification


def payment_provider_get(name: str) -> PaymentProvider | None:
    """The configured, enabled provider called ``name``, or None."""
    config = settings.WALLET_PAYMENT_PROVIDERS.get(name)
    if not config or not config.get("SECRET"):
        return None
    cls = import_string(config["CLASS"])
    options = {k.lower(): v for k, v in config.items() if k not in ("CLASS", "SECRET")}
    return cls(name=name, secret=config["SECRET"], **options)
