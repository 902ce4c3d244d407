"""Pluggable SMS delivery. Choose one with the SMS_BACKEND setting."""

import json
import logging
import uuid
from pathlib import Path

import requests
from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class SmsDeliveryError(Exception):
    """The message could not be handed to the carrier; the caller may retry."""


class BaseSmsBackend:
    def send(self, *, to: str, body: str) -> None:
        raise NotImplementedError


class ConsoleSmsBackend(BaseSmsBackend):
    """Development: print the message to the server's log."""

    def send(self, *, to: str, body: str) -> None:
        logger.warning("SMS to %s: %s", to, body)
        print(f"[sms] to {to}: {body}", flush=True)


class OutboxSmsBackend(BaseSmsBackend):
    """Tests and demos: write each message as a JSON file into SMS_OUTBOX_DIR."""

    def send(self, *, to: str, body: str) -> None:
        outbox = Path(settings.SMS_OUTBOX_DIR)
        outbox.mkdir(parents=True, exist_ok=True)
        now = timezone.now()
        name = f"{now:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.json"
        tmp = outbox / (name + ".tmp")
        tmp.write_text(json.dumps({"to": to, "body": body, "sent_at": now.isoformat()}))
        tmp.rename(outbox / name)  # readers never see half a file


def outbox_messages(*, to: str | None = None) -> list[dict]:
    """Messages in the outbox, oldest first (for tests and the demo)."""
    outbox = Path(settings.SMS_OUTBOX_DIR)
    if not outbox.is_dir():
        return []
    messages = [json.loads(p.read_text()) for p in sorted(outbox.glob("*.json"))]
    return [m for m in messages if to is None or m["to"] == to]


class HttpGatewaySmsBackend(BaseSmsBackend):
    """A carrier or aggregator HTTP gateway: POST JSON {to, from, text} with basic auth to
    SMS_GATEWAY_URL. A non-2xx answer or a network error raises SmsDeliveryError."""

    def send(self, *, to: str, body: str) -> None:
        if not settings.SMS_GATEWAY_URL:
            raise SmsDeliveryError("SMS_GATEWAY_URL is not configured")
        auth = None
        if settings.SMS_GATEWAY_USERNAME:
            auth = (settings.SMS_GATEWAY_USERNAME, settings.SMS_GATEWAY_PASSWORD)
        try:
            response = requests.post(
                settings.SMS_GATEWAY_URL,
                json={"to": to, "from": settings.SMS_GATEWAY_SENDER, "text": body},
                auth=auth,
                timeout=settings.SMS_GATEWAY_TIMEOUT,
            )
        except requests.RequestException as exc:
            raise SmsDeliveryError(str(exc)) from exc
        if not 200 <= response.status_code < 300:
            raise SmsDeliveryError(f"gateway answered {response.status_code}")


def get_sms_backend() -> BaseSmsBackend:
    return import_string(settings.SMS_BACKEND)()
