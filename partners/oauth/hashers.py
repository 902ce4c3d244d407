"""Client secrets are long random strings, not passwords: a slow hash buys nothing against
guessing them and costs a token request dozens of milliseconds. They are stored as an HMAC
keyed with a server secret, so a stolen database alone does not let anyone check guesses."""

import hashlib
import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import BasePasswordHasher, mask_hash
from django.core.signals import setting_changed
from django.utils.translation import gettext_noop as _

ALGORITHM = "tokenpass_hmac_sha256"
_KEY_SALT = "tokenpass.partners.oauth.client-secret"


def _digest(password: str, salt: str, key: bytes) -> str:
    """salted_hmac(_KEY_SALT, f"{salt}${password}", secret=..., algorithm="sha256"), given the
    key it derives from the secret (_keys)."""
    return hmac.new(key, f"{salt}${password}".encode(), hashlib.sha256).hexdigest()


def _derived(secret: str) -> bytes:
    # What salted_hmac derives from its key_salt and secret before each HMAC.
    return hashlib.sha256(f"{_KEY_SALT}{secret}".encode()).digest()


_keys_cache: list[bytes] | None = None


def _keys() -> list[bytes]:
    """The HMAC keys, current first. The key follows SECRET_KEY; old keys in
    SECRET_KEY_FALLBACKS still verify, so a secret-key rotation does not lock every partner
    out. Derived once (every client credentials grant checks a secret), again when a test
    changes the settings."""
    global _keys_cache
    if _keys_cache is None:
        key = getattr(settings, "CLIENT_SECRET_HMAC_KEY", "") or settings.SECRET_KEY
        _keys_cache = [_derived(k) for k in (key, *getattr(settings, "SECRET_KEY_FALLBACKS", []))]
    return _keys_cache


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    global _keys_cache
    if setting in {"CLIENT_SECRET_HMAC_KEY", "SECRET_KEY", "SECRET_KEY_FALLBACKS"}:
        _keys_cache = None


setting_changed.connect(_settings_changed, dispatch_uid="partners.oauth.hashers")


def secret_matches(secret: str, encoded: str) -> bool:
    """Whether ``secret`` is the one ``encoded`` (ClientSecretHasher's form) was made from."""
    algorithm, _, rest = encoded.partition("$")
    salt, dollar, digest = rest.partition("$")
    if algorithm != ALGORITHM or not dollar:
        return False
    return any(hmac.compare_digest(_digest(secret, salt, key), digest) for key in _keys())


class ClientSecretHasher(BasePasswordHasher):
    """HMAC-SHA256 of salt and secret, keyed with the server secret (see module docstring)."""

    algorithm = ALGORITHM

    def encode(self, password: str, salt: str) -> str:
        if password is None or not salt or "$" in salt:
            raise ValueError("A secret and a salt without '$' are required.")
        return f"{self.algorithm}${salt}${_digest(password, salt, _keys()[0])}"

    def decode(self, encoded: str) -> dict[str, Any]:
        algorithm, salt, digest = encoded.split("$", 2)
        assert algorithm == self.algorithm
        return {"algorithm": algorithm, "hash": digest, "salt": salt}

    def verify(self, password: str, encoded: str) -> bool:
        return secret_matches(password, encoded)

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
