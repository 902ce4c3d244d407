"""Webhook signatures: HMAC-SHA256 over f"{timestamp}.{body}" with the endpoint's secret, sent
as ``Tokenpass-Signature: t=<unix time>,v1=<hex digest>`` (docs/webhooks.md).

An endpoint's secret is not stored anywhere: it is an HMAC of the endpoint's random salt keyed
with WEBHOOKS_SIGNING_KEY (SECRET_KEY unless set), so a copy of the database alone neither
reveals secrets nor lets anyone sign. Changing that key changes every endpoint's secret; keep
WEBHOOKS_SIGNING_KEY fixed when SECRET_KEY rotates.
"""

import hashlib
import hmac
import secrets
import time

from django.conf import settings
from django.utils.crypto import salted_hmac

SIGNATURE_HEADER = "Tokenpass-Signature"
SECRET_PREFIX = "whsec_"
_KEY_SALT = "tokenpass.partners.webhooks.endpoint-secret"
# How old a signed timestamp a receiver should accept (the replay window in docs/webhooks.md).
DEFAULT_TOLERANCE_SECONDS = 300


def secret_salt_new() -> str:
    return secrets.token_hex(32)


def endpoint_secret(*, salt: str) -> str:
    """The signing secret of the endpoint whose salt is `salt`."""
    key = getattr(settings, "WEBHOOKS_SIGNING_KEY", "") or settings.SECRET_KEY
    return SECRET_PREFIX + salted_hmac(_KEY_SALT, salt, secret=key, algorithm="sha256").hexdigest()


def signature_compute(*, secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(*, secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature_compute(secret=secret, timestamp=timestamp, body=body)}"


def signature_verify(
    *,
    secret: str,
    header: str,
    body: bytes,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: int | None = None,
) -> bool:
    """What a receiver does (the reference for docs/webhooks.md): True if one v1 signature in
    `header` matches and its timestamp is within `tolerance` seconds of now."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    now = int(time.time()) if now is None else now
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature_compute(secret=secret, timestamp=timestamp, body=body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
