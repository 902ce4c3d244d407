"""Client secrets are long random strings, not passwords: a slow hash buys nothing against
guessing them and costs a token request dozens of milliseconds. They are stored as an HMAC
keyed with a server secret, so a stolen database alone does not let anyone check guesses."""

import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext_noop as _

ALGORITHM = "tokenpass_hmac_sha256"
_KEY_SALT = "tokenpass.partners.oauth.client-secret"


def _digest(password: str, salt: str, secret: str) -> str:
    return salted_hmac(
        _KEY_SALT, f"{salt}${password}", secret=secret, algorithm="sha256"
    ).hexdigest()


def _secrets() -> list[str]:
    # The HMAC key follows SECRET_KEY; old keys in SECRET_KEY_FALLBACKS still verify, so a
    # secret-key rotation does not lock every partner out.
    key = getattr(settings, "CLIENT_SECRET_HMAC_KEY", "") or settings.SECRET_KEY
    return [key, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]


class ClientSecretHasher(BasePasswordHasher):
    """HMAC-SHA256 of salt and secret, keyed with the server secret (see module docstring)."""

    algorithm = ALGORITHM

    def encode(self, password: str, salt: str) -> str:
        if password is None or not salt or "$" in salt:
            raise ValueError("A secret and a salt without '$' are required.")
        return f"{self.algorithm}${salt}${_digest(password, salt, _secrets()[0])}"

    def decode(self, encoded: str) -> dict[str, Any]:
        algorithm, salt, digest = encoded.split("$", 2)
        assert algorithm == self.algorithm
        return {"algorithm": algorithm, "hash": digest, "salt": salt}

    def verify(self, password: str, encoded: str) -> bool:
        decoded = self.decode(encoded)
        return any(
            hmac.compare_digest(_digest(password, decoded["salt"], key), decoded["hash"])
            for key in _secrets()
        )

    def safe_summary(self, encoded: str) -> dict[Any, Any]:
        decoded = self.decode(encoded)
        return {
            _("algorithm"): decoded["algorithm"],
            _("salt"): mask_hash(decoded["salt"], show=2),
            _("hash"): mask_hash(decoded["hash"]),
        }

    def must_update(self, encoded: str) -> bool:
        return False

    def harden_runtime(self, password: str, encoded: str) -> None:
        return None
