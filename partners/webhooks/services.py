"""Writes for webhooks: partners' endpoints, the outbox, and delivery attempts.

Flow: a service that changes something a partner hears about calls webhook_event_enqueue inside
its own transaction. That writes the event and one delivery per subscribed endpoint, and once
the transaction commits queues partners.webhooks.tasks.webhook_deliver for each delivery. The
task calls webhook_delivery_attempt, which signs and POSTs the body; a 2xx answer delivers it,
anything else (or a network error) is retried after WEBHOOKS_RETRY_DELAYS until they run out.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from partners.delivery import AttemptOutcome, delivery_attempt_record
from partners.models import Partner, PartnerEvent
from partners.webhooks import signing
from partners.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
    WebhookEventType,
)
from partners.webhooks.targets import webhook_url_validate

logger = logging.getLogger(__name__)

# 1 min, 5 min, 30 min, 2 h, 6 h, 12 h, then 24 h: eight tries over about two days.
DEFAULT_RETRY_DELAYS = (60, 300, 1800, 7200, 21600, 43200, 86400)
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
MAX_ENDPOINTS_PER_PARTNER = 20
USER_AGENT = "Tokenpass-Webhooks/1"


class PayloadTooLarge(ValueError):
    """The event body would exceed WEBHOOKS_MAX_PAYLOAD_BYTES."""


def retry_delays() -> list[float]:
    return [float(d) for d in getattr(settings, "WEBHOOKS_RETRY_DELAYS", DEFAULT_RETRY_DELAYS)]


def max_attempts() -> int:
    return len(retry_delays()) + 1


def max_payload_bytes() -> int:
    return int(getattr(settings, "WEBHOOKS_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES))


def retry_delay_seconds(*, attempts_done: int) -> float:
    """The wait after the `attempts_done`-th failed try (the last delay repeats)."""
    delays = retry_delays()
    return delays[min(max(attempts_done, 1), len(delays)) - 1]


def event_types_validate(event_types: list[str]) -> list[str]:
    known = set(WebhookEventType.values)
    chosen = sorted(set(event_types))
    if not chosen:
        raise ValidationError(_("Choose at least one event type."), code="event_types_required")
    unknown = set(chosen) - known
    if unknown:
        raise ValidationError(
            _("Unknown event types: %(types)s."),
            params={"types": ", ".join(sorted(unknown))},
            code="event_types_unknown",
        )
    return chosen


def _partner_event(
    *, partner: Partner, action: str, actor: User | None, data: dict[str, Any]
) -> None:
    PartnerEvent.objects.create(partner=partner, action=action, actor=actor, data=data)


def webhook_endpoint_create(
    *,
    partner: Partner,
    url: str,
    event_types: list[str],
    description: str = "",
    actor: User | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint. Returns it with its signing secret, which is shown once and can
    only be replaced (rotated) afterwards. Raises ValidationError for a refused URL, unknown
    event types, or too many endpoints."""
    url = webhook_url_validate(url)
    types = event_types_validate(event_types)
    with transaction.atomic():
        # Lock the partner so that two concurrent creations cannot pass the limit together.
        Partner.objects.select_for_update().get(pk=partner.pk)
        if WebhookEndpoint.objects.filter(partner=partner).count() >= MAX_ENDPOINTS_PER_PARTNER:
            raise ValidationError(
                _("A partner may have at most %(limit)d webhook endpoints."),
                params={"limit": MAX_ENDPOINTS_PER_PARTNER},
                code="too_many_endpoints",
            )
        endpoint = WebhookEndpoint.objects.create(
            partner=partner,
            url=url,
            description=description,
            event_types=" ".join(types),
            secret_salt=signing.secret_salt_new(),
        )
        _partner_event(
            partner=partner,
            action=PartnerEvent.Action.WEBHOOK_CREATED,
            actor=actor,
            data={"endpoint": endpoint.pk, "url": url, "event_types": types},
        )
    return endpoint, signing.endpoint_secret(salt=endpoint.secret_salt)


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str,
    event_types: list[str],
    description: str,
    is_active: bool,
    actor: User | None = None,
) -> WebhookEndpoint:
    url = webhook_url_validate(url)
    types = event_types_validate(event_types)
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.url = url
        locked.event_types = " ".join(types)
        locked.description = description
        locked.is_active = is_active
        locked.updated_at = timezone.now()
        locked.save(update_fields=["url", "event_types", "description", "is_active", "updated_at"])
        _partner_event(
            partner=locked.partner,
            action=PartnerEvent.Action.WEBHOOK_UPDATED,
            actor=actor,
            data={"endpoint": locked.pk, "url": url, "event_types": types, "active": is_active},
        )
    return locked


def webhook_endpoint_secret_rotate(*, endpoint: WebhookEndpoint, actor: User | None = None) -> str:
    """A new signing secret for the endpoint, returned once; the old one stops at once
    (deliveries still pending are signed with the new one)."""
    with transaction.atomic():
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        locked.secret_salt = signing.secret_salt_new()
        locked.updated_at = timezone.now()
        locked.save(update_fields=["secret_salt", "updated_at"])
        _partner_event(
            partner=locked.partner,
            action=PartnerEvent.Action.WEBHOOK_SECRET_ROTATED,
            actor=actor,
            data={"endpoint": locked.pk},
        )
    endpoint.secret_salt = locked.secret_salt
    return signing.endpoint_secret(salt=locked.secret_salt)


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: User | None = None) -> None:
    """Remove the endpoint with its delivery log."""
    with transaction.atomic():
        _partner_event(
            partner=endpoint.partner,
            action=PartnerEvent.Action.WEBHOOK_DELETED,
            actor=actor,
            data={"endpoint": endpoint.pk, "url": endpoint.url},
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


def event_body_build(
    *, public_id: str, event_type: str, partner: Partner, payload: dict[str, Any], created: int
) -> str:
    return json.dumps(
        {
            "id": public_id,
            "type": event_type,
            "created": created,
            "partner": partner.pk,
            "data": payload,
        },
        cls=DjangoJSONEncoder,
        separators=(",", ":"),
        sort_keys=True,
        ensure_ascii=False,
    )


def webhook_event_enqueue(
    *, partner: Partner, event_type: str, payload: dict[str, Any]
) -> WebhookEvent:
    """Write `event_type` with `payload` (JSON-serializable) to the outbox for every active
    endpoint of `partner` subscribed to it; deliveries start when the caller's transaction
    commits, and vanish with it if it rolls back.

    Must be called inside the caller's transaction (raises RuntimeError otherwise). Raises
    ValueError for an unknown type and PayloadTooLarge above WEBHOOKS_MAX_PAYLOAD_BYTES; either
    aborts the caller's transaction, so nothing is half-written."""
    from partners.webhooks.tasks import webhook_deliver

    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("webhook_event_enqueue must run inside the change's transaction.")
    if event_type not in WebhookEventType.values:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    now = timezone.now()
    public_id = "evt_" + secrets.token_hex(12)
    body = event_body_build(
        public_id=public_id,
        event_type=event_type,
        partner=partner,
        payload=payload,
        created=int(now.timestamp()),
    )
    size = len(body.encode("utf-8"))
    if size > max_payload_bytes():
        raise PayloadTooLarge(
            f"webhook body of {size} bytes exceeds the {max_payload_bytes()} byte limit"
        )
    event = WebhookEvent.objects.create(
        partner=partner, public_id=public_id, event_type=event_type, body=body, created_at=now
    )
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(partner=partner, is_active=True).order_by(
            "pk"
        )
        if event_type in endpoint.event_type_list()
    ]
    for endpoint in endpoints:
        delivery = WebhookDelivery.objects.create(
            event=event, endpoint=endpoint, next_attempt_at=now, created_at=now, updated_at=now
        )
        transaction.on_commit(functools.partial(webhook_deliver.delay, delivery.pk), robust=True)
    return event


def _post(url: str, *, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
    """POST once without following redirects; (HTTP status, error text). Only the start of
    the answer is read: an endpoint cannot make us download a large body."""
    timeout = float(getattr(settings, "WEBHOOKS_TIMEOUT_SECONDS", 10))
    try:
        with requests.post(
            url,
            data=body,
            headers=headers,
            timeout=(timeout, timeout),
            allow_redirects=False,
            stream=True,
        ) as response:
            status_code = response.status_code
            if 200 <= status_code < 300:
                return status_code, ""
            excerpt = response.raw.read(500, decode_content=True) or b""
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500]
    return status_code, excerpt.decode("utf-8", "replace")[:500] or f"HTTP {status_code}"


def webhook_delivery_attempt(*, delivery_id: int) -> AttemptOutcome:
    """Try once to deliver. Records the attempt and the delivery's new state in one transaction
    after the POST (no lock is held across the network call). Returns RETRY when the caller
    should try again after retry_delay_seconds(attempts_done=delivery.attempts).

    Two concurrent attempts (a task delivered twice) may both POST; receivers see the same
    event id twice and are told to deduplicate on it."""
    delivery = (
        WebhookDelivery.objects.select_related("event", "endpoint").filter(pk=delivery_id).first()
    )
    if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
        return AttemptOutcome.DONE
    endpoint, event = delivery.endpoint, delivery.event
    final = delivery.attempts + 1 >= max_attempts()
    started = timezone.now()
    clock = time.monotonic()
    try:
        # The name may point elsewhere now than when the endpoint was registered.
        webhook_url_validate(endpoint.url)
    except ValidationError as exc:
        status_code, error, refused = None, f"refused: {exc.messages[0]}", True
    else:
        refused = False
        body = event.body.encode("utf-8")
        secret = signing.endpoint_secret(salt=endpoint.secret_salt)
        status_code, error = _post(
            endpoint.url,
            body=body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                signing.SIGNATURE_HEADER: signing.signature_header(secret=secret, body=body),
                "Tokenpass-Event-Id": event.public_id,
                "Tokenpass-Event-Type": event.event_type,
                "Tokenpass-Delivery-Attempt": str(delivery.attempts + 1),
            },
        )
    duration_ms = int((time.monotonic() - clock) * 1000)
    succeeded = status_code is not None and 200 <= status_code < 300
    if succeeded:
        outcome = AttemptOutcome.DELIVERED
    elif refused or final:
        outcome = AttemptOutcome.FAILED
    else:
        outcome = AttemptOutcome.RETRY

    number = delivery_attempt_record(
        delivery_model=WebhookDelivery,
        attempt_model=WebhookAttempt,
        delivery_id=delivery_id,
        started_at=started,
        duration_ms=duration_ms,
        status_code=status_code,
        error=error,
        outcome=outcome,
        next_attempt_at=lambda number, now: (
            now + timedelta(seconds=retry_delay_seconds(attempts_done=number))
        ),
    )
    if outcome != AttemptOutcome.DELIVERED:
        logger.warning(
            "webhook %s to %s (delivery %s, attempt %s): %s %s",
            event.public_id,
            urlsplit(endpoint.url).netloc,
            delivery_id,
            number,
            status_code,
            error[:200],
        )
    return outcome


def webhook_charge_refunded_enqueue(*, refund: Any) -> WebhookEvent | None:
    """Tell the partner of the charging app that a charge was refunded ("charge.refunded").
    `refund` is a wallet Refund (read through its charge; the partners core does not import
    the wallet). Call it in the refund's transaction, after the Refund row is written; apps
    without a partner produce nothing."""
    charge = refund.charge
    application = charge.app
    if application.partner_id is None:
        return None
    return webhook_event_enqueue(
        partner=application.partner,
        event_type=WebhookEventType.CHARGE_REFUNDED,
        payload={
            "charge": {
                "id": charge.pk,
                "app": application.client_id,
                "model": charge.price.model.name,
                "amount": charge.amount,
                "refunded_amount": charge.refunded_amount,
                "created": int(charge.created_at.timestamp()),
            },
            "refund": {
                "id": refund.pk,
                "amount": refund.amount,
                "reason": refund.reason,
                "created": int(refund.created_at.timestamp()),
            },
        },
    )
