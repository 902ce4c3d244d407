"""Partner webhooks: the outbox written in the caller's transaction, signatures checked by a
real HTTP listener on 127.0.0.1, URL validation and payload limits."""

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from partners.models import PartnerEvent
from partners.webhooks import signing, targets
from partners.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from partners.webhooks.services import (
    AttemptOutcome,
    PayloadTooLarge,
    retry_delay_seconds,
    webhook_delivery_attempt,
    webhook_endpoint_create,
    webhook_endpoint_secret_rotate,
    webhook_event_enqueue,
)
from tests.factories import PartnerFactory


class Listener:
    """A real HTTP server in a thread that records requests and answers with the statuses it
    is given, in order (then 200)."""

    def __init__(self, statuses: list[int] | None = None):
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                with listener.lock:
                    listener.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    status = listener.statuses.pop(0) if listener.statuses else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"try later")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/tokenpass"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    with Listener() as running:
        yield running


@pytest.fixture
def partner(db):
    return PartnerFactory()


def test_signature_round_trip_and_replay_window():
    secret = signing.endpoint_secret(salt="abc")
    body = b'{"id":"evt_1"}'
    header = signing.signature_header(secret=secret, body=body, timestamp=1_700_000_000)

    assert signing.signature_verify(secret=secret, header=header, body=body, now=1_700_000_100)
    # Older than five minutes: a replay.
    assert not signing.signature_verify(
        secret=secret, header=header, body=body, now=1_700_000_000 + 301
    )
    assert not signing.signature_verify(
        secret=secret, header=header, body=body + b" ", now=1_700_000_000
    )
    assert not signing.signature_verify(
        secret=signing.endpoint_secret(salt="other"), header=header, body=body, now=1_700_000_000
    )
    assert not signing.signature_verify(secret=secret, header="t=1,v0=abc", body=body, now=1)


def test_secret_is_not_stored(partner):
    endpoint, secret = webhook_endpoint_create(
        partner=partner, url="https://hooks.example.com/a", event_types=["app.approved"]
    )
    row = WebhookEndpoint.objects.filter(pk=endpoint.pk).values().get()

    assert secret.startswith("whsec_")
    assert secret not in json.dumps(row, default=str)
    assert PartnerEvent.objects.filter(
        partner=partner, action=PartnerEvent.Action.WEBHOOK_CREATED
    ).exists()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.com/x",
        "javascript:alert(1)",
        "https:///nohost",
        "https://user:pw@hooks.example.com/x",
        # The server itself (SITE_URL is http://127.0.0.1:8000 in the tests).
        "http://127.0.0.1:8000/anything",
    ],
)
def test_refused_urls_even_when_private_targets_are_allowed(db, url, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
    settings.SITE_URL = "http://127.0.0.1:8000"
    with pytest.raises(ValidationError):
        targets.webhook_url_validate(url)


def test_site_url_host_is_refused_on_any_port(settings):
    settings.SITE_URL = "https://id.example.com"
    with pytest.raises(ValidationError):
        targets.webhook_url_validate("https://id.example.com:8443/hook")
    with pytest.raises(ValidationError):
        targets.webhook_url_validate("http://ID.example.com./hook")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://172.16.5.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://metadata.internal/hook",
    ],
)
def test_private_and_local_targets_refused_in_production(url, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    with pytest.raises(ValidationError) as caught:
        targets.webhook_url_validate(url)
    assert caught.value.code == "url_refused"


def test_names_resolving_inside_are_refused(settings, monkeypatch):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    monkeypatch.setattr(targets, "host_resolve", lambda host: ["10.0.0.7"])
    with pytest.raises(ValidationError):
        targets.webhook_url_validate("https://sneaky.example.com/hook")

    monkeypatch.setattr(targets, "host_resolve", lambda host: ["93.184.216.34"])
    assert targets.webhook_url_validate("https://fine.example.com/hook")
    assert targets.webhook_url_validate("https://93.184.216.34/hook")


def test_refused_endpoint_is_not_written(partner, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False
    with pytest.raises(ValidationError):
        webhook_endpoint_create(
            partner=partner, url="http://10.0.0.1/x", event_types=["app.approved"]
        )
    with pytest.raises(ValidationError):
        webhook_endpoint_create(
            partner=partner, url="https://hooks.example.com/x", event_types=["nope"]
        )
    assert not WebhookEndpoint.objects.exists()
    assert not PartnerEvent.objects.exists()


def test_enqueue_must_run_inside_a_transaction(partner):
    # The test itself runs in a transaction; leave it to see the guard.
    from django.db import connection

    atomic = connection.in_atomic_block
    connection.in_atomic_block = False
    try:
        with pytest.raises(RuntimeError):
            webhook_event_enqueue(partner=partner, event_type="app.approved", payload={})
    finally:
        connection.in_atomic_block = atomic


def test_enqueue_writes_deliveries_for_subscribed_active_endpoints(
    partner, django_capture_on_commit_callbacks
):
    wanted, _ = webhook_endpoint_create(
        partner=partner, url="https://a.example.com/h", event_types=["statement.issued"]
    )
    webhook_endpoint_create(
        partner=partner, url="https://b.example.com/h", event_types=["app.approved"]
    )
    paused, _ = webhook_endpoint_create(
        partner=partner, url="https://c.example.com/h", event_types=["statement.issued"]
    )
    WebhookEndpoint.objects.filter(pk=paused.pk).update(is_active=False)
    other_partner = PartnerFactory()
    webhook_endpoint_create(
        partner=other_partner, url="https://d.example.com/h", event_types=["statement.issued"]
    )

    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        event = webhook_event_enqueue(
            partner=partner, event_type="statement.issued", payload={"statement": {"id": 7}}
        )

    assert list(WebhookDelivery.objects.values_list("endpoint", flat=True)) == [wanted.pk]
    assert len(callbacks) == 1
    body = json.loads(event.body)
    assert body["type"] == "statement.issued"
    assert body["partner"] == partner.pk
    assert body["data"] == {"statement": {"id": 7}}
    assert body["id"] == event.public_id


def test_rolled_back_change_leaves_no_event(partner, django_capture_on_commit_callbacks):
    webhook_endpoint_create(
        partner=partner, url="https://a.example.com/h", event_types=["app.suspended"]
    )
    with (
        django_capture_on_commit_callbacks() as callbacks,
        pytest.raises(ZeroDivisionError),
        transaction.atomic(),
    ):
        webhook_event_enqueue(partner=partner, event_type="app.suspended", payload={})
        # The change that fails after the event was written.
        1 / 0
    assert not WebhookEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()
    assert callbacks == []


def test_oversized_payload_is_refused_and_nothing_is_written(partner, settings):
    settings.WEBHOOKS_MAX_PAYLOAD_BYTES = 1024
    webhook_endpoint_create(
        partner=partner, url="https://a.example.com/h", event_types=["charge.refunded"]
    )
    with pytest.raises(PayloadTooLarge), transaction.atomic():
        webhook_event_enqueue(
            partner=partner, event_type="charge.refunded", payload={"reason": "x" * 2000}
        )
    with pytest.raises(ValueError), transaction.atomic():
        webhook_event_enqueue(partner=partner, event_type="user.deleted", payload={})
    assert not WebhookEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_default_payload_cap_is_256_kib(partner):
    with pytest.raises(PayloadTooLarge), transaction.atomic():
        webhook_event_enqueue(
            partner=partner, event_type="charge.refunded", payload={"x": "y" * (256 * 1024)}
        )


def test_delivery_is_signed_and_the_listener_verifies_it(partner, listener):
    _endpoint, secret = webhook_endpoint_create(
        partner=partner, url=listener.url, event_types=["app.approved"]
    )
    with transaction.atomic():
        event = webhook_event_enqueue(
            partner=partner, event_type="app.approved", payload={"application": {"name": "A"}}
        )
    delivery = WebhookDelivery.objects.get(event=event)

    outcome = webhook_delivery_attempt(delivery_id=delivery.pk)

    assert outcome == AttemptOutcome.DELIVERED
    [request] = listener.requests
    assert request["path"] == "/hooks/tokenpass"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["headers"]["Tokenpass-Event-Id"] == event.public_id
    assert signing.signature_verify(
        secret=secret, header=request["headers"]["Tokenpass-Signature"], body=request["body"]
    )
    assert json.loads(request["body"])["data"] == {"application": {"name": "A"}}
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    [attempt] = WebhookAttempt.objects.filter(delivery=delivery)
    assert attempt.succeeded and attempt.status_code == 200
    # A repeated task sends nothing more.
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == AttemptOutcome.DONE
    assert len(listener.requests) == 1


def test_rotated_secret_signs_from_then_on(partner, listener):
    endpoint, old_secret = webhook_endpoint_create(
        partner=partner, url=listener.url, event_types=["app.approved"]
    )
    new_secret = webhook_endpoint_secret_rotate(endpoint=endpoint)
    with transaction.atomic():
        event = webhook_event_enqueue(partner=partner, event_type="app.approved", payload={})
    webhook_delivery_attempt(delivery_id=WebhookDelivery.objects.get(event=event).pk)

    header = listener.requests[0]["headers"]["Tokenpass-Signature"]
    body = listener.requests[0]["body"]
    assert new_secret != old_secret
    assert signing.signature_verify(secret=new_secret, header=header, body=body)
    assert not signing.signature_verify(secret=old_secret, header=header, body=body)


def test_failures_are_recorded_and_retried_until_the_attempts_run_out(partner, settings):
    settings.WEBHOOKS_RETRY_DELAYS = [60, 300]
    with Listener(statuses=[500, 503, 502]) as failing:
        webhook_endpoint_create(partner=partner, url=failing.url, event_types=["app.approved"])
        with transaction.atomic():
            event = webhook_event_enqueue(partner=partner, event_type="app.approved", payload={})
        delivery = WebhookDelivery.objects.get(event=event)

        outcomes = [webhook_delivery_attempt(delivery_id=delivery.pk) for _ in range(3)]

    assert outcomes == [AttemptOutcome.RETRY, AttemptOutcome.RETRY, AttemptOutcome.FAILED]
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert delivery.attempts == 3
    codes = list(
        WebhookAttempt.objects.filter(delivery=delivery)
        .order_by("number")
        .values_list("status_code", flat=True)
    )
    assert codes == [500, 503, 502]
    assert all(a.duration_ms >= 0 and a.error for a in WebhookAttempt.objects.all())


def test_unreachable_endpoint_records_the_network_error(partner):
    with Listener() as gone:
        url = gone.url
    webhook_endpoint_create(partner=partner, url=url, event_types=["app.approved"])
    with transaction.atomic():
        event = webhook_event_enqueue(partner=partner, event_type="app.approved", payload={})
    delivery = WebhookDelivery.objects.get(event=event)

    assert webhook_delivery_attempt(delivery_id=delivery.pk) == AttemptOutcome.RETRY
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert attempt.status_code is None
    assert "ConnectionError" in attempt.error


def test_delivery_to_a_url_that_became_private_is_refused(partner, settings, listener):
    webhook_endpoint_create(partner=partner, url=listener.url, event_types=["app.approved"])
    with transaction.atomic():
        event = webhook_event_enqueue(partner=partner, event_type="app.approved", payload={})
    settings.WEBHOOKS_ALLOW_PRIVATE_TARGETS = False

    outcome = webhook_delivery_attempt(delivery_id=WebhookDelivery.objects.get(event=event).pk)

    assert outcome == AttemptOutcome.FAILED
    assert listener.requests == []
    assert WebhookAttempt.objects.get().error.startswith("refused")


def test_backoff_schedule_is_capped():
    assert retry_delay_seconds(attempts_done=1) == 60
    assert retry_delay_seconds(attempts_done=2) == 300
    assert retry_delay_seconds(attempts_done=3) == 1800
    assert retry_delay_seconds(attempts_done=4) == 7200
    assert retry_delay_seconds(attempts_done=50) == 86400


def test_attempt_rows_are_insert_only(partner, listener):
    webhook_endpoint_create(partner=partner, url=listener.url, event_types=["app.approved"])
    with transaction.atomic():
        event = webhook_event_enqueue(partner=partner, event_type="app.approved", payload={})
    webhook_delivery_attempt(delivery_id=WebhookDelivery.objects.get(event=event).pk)
    from django.db import DatabaseError

    with pytest.raises(DatabaseError), transaction.atomic():
        WebhookAttempt.objects.update(status_code=204)
    with pytest.raises(DatabaseError), transaction.atomic():
        WebhookEvent.objects.update(body="{}")


def load_docs_sample() -> dict:
    """Execute the verification sample of docs/webhooks.md as written."""
    import re
    from pathlib import Path

    guide = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
    match = re.search(
        r"<!-- sample: verify_webhook -->\s*```python\n(.*?)```", guide.read_text(), re.S
    )
    assert match, "the verification sample is missing from docs/webhooks.md"
    namespace: dict = {"__name__": "partner_sample"}
    exec(compile(match.group(1), str(guide), "exec"), namespace)
    return namespace


def test_the_documented_sample_verifies_a_real_delivery(partner, listener):
    verify_webhook = load_docs_sample()["verify_webhook"]
    _endpoint, secret = webhook_endpoint_create(
        partner=partner, url=listener.url, event_types=["app.approved"]
    )
    with transaction.atomic():
        event = webhook_event_enqueue(partner=partner, event_type="app.approved", payload={})
    webhook_delivery_attempt(delivery_id=WebhookDelivery.objects.get(event=event).pk)
    [request] = listener.requests
    header, body = request["headers"]["Tokenpass-Signature"], request["body"]
    timestamp = int(header.split(",")[0].removeprefix("t="))

    assert verify_webhook(secret, header, body)
    assert not verify_webhook(secret, header, body + b"\n")
    assert not verify_webhook("whsec_wrong", header, body)
    assert not verify_webhook(secret, header, body, now=timestamp + 301)
    assert verify_webhook(secret, header, body, now=timestamp + 299)


def test_overdue_deliveries_are_queued_again(partner, listener, settings):
    from datetime import timedelta

    from django.utils import timezone

    from partners.webhooks.tasks import webhooks_requeue_overdue

    webhook_endpoint_create(partner=partner, url=listener.url, event_types=["app.approved"])
    with transaction.atomic():
        event = webhook_event_enqueue(partner=partner, event_type="app.approved", payload={})
    delivery = WebhookDelivery.objects.get(event=event)
    # The task was lost (a broker restart); its next attempt is long overdue.
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(hours=1)
    )

    # Eager in the tests: requeued means delivered here.
    assert webhooks_requeue_overdue() == 1
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.DELIVERED
    assert len(listener.requests) == 1
    assert webhooks_requeue_overdue() == 0


def test_only_the_start_of_a_large_error_answer_is_kept(partner):
    from partners.webhooks.services import _post

    class Big(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(500)
            self.send_header("Content-Length", str(5_000_000))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(b"x" * 5_000_000)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Big)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, error = _post(
            f"http://127.0.0.1:{server.server_address[1]}/", body=b"{}", headers={}
        )
    finally:
        server.shutdown()
        server.server_close()
    assert status == 500
    assert error == "x" * 500


def test_charge_refunded_payload(partner, django_capture_on_commit_callbacks):
    from partners.models import Application
    from partners.webhooks.services import webhook_charge_refunded_enqueue
    from tests.partners.test_settlement_api import make_charge
    from wallet import services as wallet_services

    app = Application.objects.create(
        name="Alpha chat",
        partner=partner,
        client_type="confidential",
        authorization_grant_type="client-credentials",
        redirect_uris="",
    )
    webhook_endpoint_create(
        partner=partner, url="https://a.example.com/h", event_types=["charge.refunded"]
    )
    charge = make_charge(app=app, amount=120, at=timezone_now())
    refund = wallet_services.wallet_refund(
        charge_id=charge.pk, app=app, amount=20, idempotency_key="r-1", reason="model error"
    )
    with django_capture_on_commit_callbacks(), transaction.atomic():
        event = webhook_charge_refunded_enqueue(refund=refund)

    data = json.loads(event.body)["data"]
    assert data["charge"]["id"] == charge.pk
    assert data["charge"]["app"] == app.client_id
    assert data["charge"]["amount"] == 120
    assert data["charge"]["refunded_amount"] == 20
    assert data["refund"] == {
        "id": refund.pk,
        "amount": 20,
        "reason": "model error",
        "created": int(refund.created_at.timestamp()),
    }
    assert WebhookDelivery.objects.filter(event=event).count() == 1


def timezone_now():
    from django.utils import timezone

    return timezone.now()
