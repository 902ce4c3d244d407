"""Client authentication failures, counted per client_id and IP address in the cache.

A partner whose secret leaked to a guessing script, or a script guessing one, is refused for
the window once the limit is reached, with the correct secret too (so a guess that happens to
be right is not told apart)."""

import base64
import binascii
import hashlib
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings
from django.core.cache import cache


def _key(client_id: str, ip: str | None) -> str:
    digest = hashlib.sha256(f"{client_id}|{ip or '-'}".encode()).hexdigest()[:32]
    return f"oauth:client-auth-failures:{digest}"


def presented_client_id(*, authorization: str | None, body_client_id: str | None) -> str:
    """The client_id a request claims, from HTTP Basic credentials or the body."""
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            return unquote_plus(decoded.split(":", 1)[0])
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return ""
    return body_client_id or ""


def client_auth_blocked(*, client_id: str, ip: str | None) -> bool:
    return int(cache.get(_key(client_id, ip), 0)) >= settings.OAUTH_CLIENT_AUTH_FAILURE_LIMIT


def client_auth_failure_record(*, client_id: str, ip: str | None) -> int:
    """Count one failure; returns the count in the current window."""
    key = _key(client_id, ip)
    window = settings.OAUTH_CLIENT_AUTH_FAILURE_WINDOW
    if cache.add(key, 1, timeout=window):
        return 1
    try:
        return int(cache.incr(key))
    except ValueError:
        cache.set(key, 1, timeout=window)
        return 1


def oauthlib_client_id(request: Any) -> str:
    return presented_client_id(
        authorization=request.headers.get("HTTP_AUTHORIZATION"),
        body_client_id=getattr(request, "client_id", None),
    )
