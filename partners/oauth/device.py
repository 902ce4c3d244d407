"""Device authorization grant (RFC 8628) codes are kept as digests, never in clear.

DOT's DeviceGrant stores the device code and the user code as given. Tokenpass replaces both
with digests in the transaction that creates the row, and every lookup digests what the
device or the person presents:

- the device code is a long random value, so SHA-256 is enough (as for tokens);
- the user code has 40 bits of entropy, so its digest is keyed with the secret key: a copy of
  the table is not enough to guess the codes of pending devices offline.

This module is imported by the settings (DOT's pre-token hook), so it imports models lazily.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from django.utils.crypto import salted_hmac


def user_code_normalize(raw: str) -> str:
    """What a person types, as the code was issued: no spaces or dashes, upper case."""
    return re.sub(r"[\s-]", "", raw or "").upper()[:32]


def device_code_digest(device_code: str) -> str:
    return hashlib.sha256(device_code.encode("utf-8")).hexdigest()


def user_code_digest(user_code: str) -> str:
    normalized = user_code_normalize(user_code)
    return salted_hmac("tokenpass.oauth.user-code", normalized, algorithm="sha256").hexdigest()


def device_grant_codes_seal(*, device_code: str, user_code: str) -> None:
    """Replace the clear codes of the grant just created by their digests (call inside the
    transaction that created it, so that the clear codes are never committed)."""
    from oauth2_provider.models import get_device_grant_model

    get_device_grant_model().objects.filter(device_code=device_code).update(
        device_code=device_code_digest(device_code), user_code=user_code_digest(user_code)
    )


def device_grant_user_to_request(request: Any) -> None:
    """DOT's pre-token hook for the device grant (``set_oauthlib_user_to_device_request_user``),
    looking the grant up by the digest of the presented device code."""
    from oauth2_provider.models import get_device_grant_model

    device = get_device_grant_model().objects.get(
        device_code=device_code_digest(request._params["device_code"])
    )
    request.user = device.user
    request.scopes = device.scope.split() if device.scope else []
