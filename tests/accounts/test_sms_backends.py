"""The SMS backends, the HTTP gateway one against a real local HTTP listener."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from accounts.sms.backends import (
    HttpGatewaySmsBackend,
    OutboxSmsBackend,
    SmsDeliveryError,
    get_sms_backend,
    outbox_messages,
)


class Gateway:
    """A carrier gateway on 127.0.0.1 that records requests and answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[dict] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                gateway.requests.append(
                    {
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "content_type": self.headers.get("Content-Type"),
                        "body": json.loads(self.rfile.read(length)),
                    }
                )
                self.send_response(gateway.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/sms/send"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway(settings):
    server = Gateway()
    settings.SMS_GATEWAY_URL = server.url
    settings.SMS_GATEWAY_USERNAME = "tokenpass"
    settings.SMS_GATEWAY_PASSWORD = "s3cret"
    settings.SMS_GATEWAY_SENDER = "Tokenpass"
    settings.SMS_GATEWAY_TIMEOUT = 2
    yield server
    server.close()


def test_the_gateway_backend_posts_json_with_basic_auth(gateway):
    HttpGatewaySmsBackend().send(to="+8613800138000", body="Your code is 123456")

    [request] = gateway.requests
    assert request["path"] == "/sms/send"
    assert request["content_type"] == "application/json"
    assert request["body"] == {
        "to": "+8613800138000",
        "from": "Tokenpass",
        "text": "Your code is 123456",
    }
    expected = base64.b64encode(b"tokenpass:s3cret").decode()
    assert request["authorization"] == f"Basic {expected}"


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_a_gateway_refusal_is_a_delivery_error(gateway, status):
    gateway.status = status
    with pytest.raises(SmsDeliveryError, match=str(status)):
        HttpGatewaySmsBackend().send(to="+8613800138000", body="x")


def test_an_unreachable_gateway_is_a_delivery_error(settings):
    closed = Gateway()
    url = closed.url
    closed.close()
    settings.SMS_GATEWAY_URL = url
    with pytest.raises(SmsDeliveryError):
        HttpGatewaySmsBackend().send(to="+8613800138000", body="x")


def test_an_unconfigured_gateway_is_a_delivery_error(settings):
    settings.SMS_GATEWAY_URL = ""
    with pytest.raises(SmsDeliveryError, match="not configured"):
        HttpGatewaySmsBackend().send(to="+8613800138000", body="x")


def test_the_backend_is_chosen_by_setting(settings):
    settings.SMS_BACKEND = "accounts.sms.backends.HttpGatewaySmsBackend"
    assert isinstance(get_sms_backend(), HttpGatewaySmsBackend)
    settings.SMS_BACKEND = "accounts.sms.backends.OutboxSmsBackend"
    assert isinstance(get_sms_backend(), OutboxSmsBackend)


def test_the_outbox_backend_keeps_messages_in_order():
    backend = OutboxSmsBackend()
    backend.send(to="+8613800138000", body="first")
    backend.send(to="+8613900139000", body="other")
    backend.send(to="+8613800138000", body="second")

    assert [m["body"] for m in outbox_messages(to="+8613800138000")] == ["first", "second"]
    assert len(outbox_messages()) == 3
