"""Signing keys for ID tokens and JWT access tokens, and the JWKS that partners verify with.

Where the keys come from, in order:

1. ``OIDC_RSA_PRIVATE_KEY`` (settings, from the environment): one PEM RSA key. It signs and is
   the only key published; rotating it means a redeploy, so prefer the key-set file.
2. ``OIDC_KEYS_FILE`` (env ``OIDC_PRIVATE_KEYS_FILE``): a JSON key set that
   ``manage.py oidc_rotate_keys`` maintains. Each key has a state:

   - ``staged``: published in the JWKS but not signing yet, so that partners that cache the
     JWKS learn it before the first token signed with it reaches them;
   - ``active``: the one key that signs (exactly one);
   - ``previous``: no longer signs, still published until every token it signed has expired
     (``retire_after``), then removed from the file.

   When ``OIDC_KEYS_GENERATE`` is on (the default unless ``OIDC_PRIVATE_KEYS_FILE`` is set) a
   missing file is created with one active key: the development key in ``var/``.

The file is re-read when its modification time changes, so a rotation done by the management
command reaches running workers without a restart.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from jwcrypto import jwk

KEY_STAGED = "staged"
KEY_ACTIVE = "active"
KEY_PREVIOUS = "previous"
KEY_STATES = (KEY_STAGED, KEY_ACTIVE, KEY_PREVIOUS)
RSA_KEY_BITS = 2048
FILE_VERSION = 1


@dataclass
class StoredKey:
    """One RSA key of the key set and its place in the rotation."""

    kid: str
    state: str
    private_jwk: jwk.JWK
    created_at: int
    activated_at: int | None = None
    # For a previous key: the time after which no token it signed can still be valid.
    retire_after: int | None = None

    @functools.cached_property
    def signer(self) -> rsa.RSAPrivateKey:
        """The key as a cryptography object, built once per loaded key set: jwcrypto would
        re-import it and deep-copy its JSON form on every signature."""
        key = self.private_jwk.get_op_key("sign")
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    @functools.cached_property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.signer.public_key()

    def public_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = self.private_jwk.export_public(as_dict=True)
        data.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return data

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "state": self.state,
            "created_at": self.created_at,
            "activated_at": self.activated_at,
            "retire_after": self.retire_after,
            "jwk": self.private_jwk.export_private(as_dict=True),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredKey:
        if data.get("state") not in KEY_STATES:
            raise ImproperlyConfigured(f"OIDC key {data.get('kid')!r} has an unknown state.")
        key = jwk.JWK(**data["jwk"])
        if not key.has_private or key.get("kty") != "RSA":
            raise ImproperlyConfigured(f"OIDC key {data.get('kid')!r} is not an RSA private key.")
        return cls(
            kid=data["kid"],
            state=data["state"],
            private_jwk=key,
            created_at=int(data["created_at"]),
            activated_at=data.get("activated_at"),
            retire_after=data.get("retire_after"),
        )


@dataclass
class KeySet:
    keys: list[StoredKey] = field(default_factory=list)

    @property
    def active(self) -> StoredKey:
        active = [k for k in self.keys if k.state == KEY_ACTIVE]
        if len(active) != 1:
            raise ImproperlyConfigured(
                f"The OIDC key set must hold exactly one active key, it holds {len(active)}."
            )
        return active[0]

    @property
    def published(self) -> list[StoredKey]:
        return [k for k in self.keys if k.state in KEY_STATES]

    def to_json(self) -> dict[str, Any]:
        return {"version": FILE_VERSION, "keys": [k.to_json() for k in self.keys]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeySet:
        key_set = cls(keys=[StoredKey.from_json(k) for k in data.get("keys", [])])
        key_set.active  # noqa: B018 (validates the invariant on load)
        return key_set


def key_generate(*, state: str, now: int | None = None) -> StoredKey:
    """A fresh RSA key whose kid is its RFC 7638 thumbprint."""
    now = int(time.time()) if now is None else now
    private = jwk.JWK.generate(kty="RSA", size=RSA_KEY_BITS)
    kid = private.thumbprint()
    return StoredKey(
        kid=kid,
        state=state,
        private_jwk=_with_kid(private, kid),
        created_at=now,
        activated_at=now if state == KEY_ACTIVE else None,
    )


def _with_kid(key: jwk.JWK, kid: str) -> jwk.JWK:
    data = key.export_private(as_dict=True)
    data["kid"] = kid
    return jwk.JWK(**data)


_lock = threading.Lock()
_cache: dict[str, Any] = {"source": None, "stamp": None, "key_set": None}
# (until when the key set need not be looked at again, the key set): replaced whole, read
# unlocked.
_checked: tuple[float, KeySet] | None = None
# The encoded JWS header of each key id and token type.
_headers: dict[tuple[str, str], str] = {}


def keys_file_path() -> Path | None:
    path = getattr(settings, "OIDC_KEYS_FILE", None)
    return Path(path) if path else None


def _pem_key_set(pem: str) -> KeySet:
    key = jwk.JWK.from_pem(pem.encode())
    if key.get("kty") != "RSA" or not key.has_private:
        raise ImproperlyConfigured("OIDC_RSA_PRIVATE_KEY must be an RSA private key in PEM form.")
    kid = key.thumbprint()
    return KeySet(
        keys=[StoredKey(kid=kid, state=KEY_ACTIVE, private_jwk=_with_kid(key, kid), created_at=0)]
    )


def key_set_write(*, key_set: KeySet, path: Path) -> None:
    """Replace the key-set file atomically (readers see the old or the new file, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".oidc-keys-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(key_set.to_json(), handle, indent=2)
        os.chmod(tmp_name, 0o600)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    key_set_forget()


def _create_file_once(path: Path) -> None:
    """Create the development key set unless another process got there first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key_set = KeySet(keys=[key_generate(state=KEY_ACTIVE)])
    fd, tmp_name = tempfile.mkstemp(prefix=".oidc-keys-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(key_set.to_json(), handle, indent=2)
        os.chmod(tmp_name, 0o600)
        # link() fails if the file exists, so two processes starting at once agree on one key.
        with contextlib.suppress(FileExistsError):
            os.link(tmp_name, path)
    finally:
        os.unlink(tmp_name)


def key_set_load() -> KeySet:
    """The current key set (cached; the file is re-read when it changes, which is looked at
    no more than once every OIDC_KEYS_FILE_CHECK_SECONDS)."""
    global _checked
    # Every token signed asks for the key set: within the interval it costs one clock read.
    # A settings change forgets it (_settings_changed).
    checked_at = time.monotonic()
    recent = _checked
    if recent is not None and checked_at < recent[0]:
        return recent[1]
    pem = getattr(settings, "OIDC_RSA_PRIVATE_KEY", "")
    if pem:
        with _lock:
            if _cache["source"] != ("pem", pem):
                _cache.update(source=("pem", pem), stamp=None, key_set=_pem_key_set(pem))
            _checked = (math.inf, _cache["key_set"])
            return _cache["key_set"]
    path = keys_file_path()
    # A rotation step reaches every process within the interval; that is safe because a key
    # is published before it signs and stays published long after it stops signing.
    if path is None:
        raise ImproperlyConfigured("Set OIDC_PRIVATE_KEYS_FILE or OIDC_RSA_PRIVATE_KEY.")
    if not path.exists():
        if not getattr(settings, "OIDC_KEYS_GENERATE", False):
            raise ImproperlyConfigured(
                f"The OIDC key set {path} does not exist: create it with "
                "`manage.py oidc_rotate_keys --init`."
            )
        _create_file_once(path)
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    with _lock:
        if _cache["source"] != ("file", str(path)) or _cache["stamp"] != stamp:
            with path.open() as handle:
                key_set = KeySet.from_json(json.load(handle))
            _cache.update(source=("file", str(path)), stamp=stamp, key_set=key_set)
        deadline = checked_at + settings.OIDC_KEYS_FILE_CHECK_SECONDS
        _checked = (deadline, _cache["key_set"])
        return _cache["key_set"]


_KEY_SETTINGS = frozenset(
    {"OIDC_RSA_PRIVATE_KEY", "OIDC_KEYS_FILE", "OIDC_KEYS_FILE_CHECK_SECONDS", "OIDC_KEYS_GENERATE"}
)


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in _KEY_SETTINGS:
        key_set_forget()


setting_changed.connect(_settings_changed, dispatch_uid="partners.oauth.keys")


def key_set_forget() -> None:
    """Drop the cached key set (after a rotation, or when tests change the settings)."""
    global _checked
    with _lock:
        _cache.update(source=None, stamp=None, key_set=None)
        _checked = None


def signing_jwk() -> jwk.JWK:
    """The key that signs now: an RSA private JWK whose ``kid`` is published in the JWKS."""
    return key_set_load().active.private_jwk


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# Stateless, so shared by every signature (and every verification, partners.oauth.tokens).
_CLAIMS_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)
PKCS1 = padding.PKCS1v15()
SHA256 = hashes.SHA256()


def jwt_sign(*, claims: dict[str, Any], typ: str) -> str:
    """A compact JWS (RFC 7515) of ``claims`` signed RS256 with the active key, whose kid
    (its RFC 7638 thumbprint) is in the header. Values JSON cannot encode are written as
    strings, as DOT does for ID tokens."""
    key = key_set_load().active
    header = _headers.get((key.kid, typ))
    if header is None:
        header = _b64url(
            json.dumps({"alg": "RS256", "kid": key.kid, "typ": typ}, separators=(",", ":")).encode()
        )
        if len(_headers) < 64:
            _headers[(key.kid, typ)] = header
    signing_input = header + "." + _b64url(_CLAIMS_ENCODER.encode(claims).encode())
    signature = key.signer.sign(signing_input.encode("ascii"), PKCS1, SHA256)
    return signing_input + "." + _b64url(signature)


def public_jwks() -> dict[str, Any]:
    """Every published public key (staged, active, previous) as a JWKS: ``{"keys": [...]}``."""
    return {"keys": [k.public_dict() for k in key_set_load().published]}


def _published(kid: Any) -> StoredKey | None:
    """The published key (staged, active or previous) with this kid, or None."""
    return next((key for key in key_set_load().published if key.kid == kid), None)


def verification_jwk(kid: str) -> jwk.JWK | None:
    """The published key with this kid, for verifying our own tokens; None if unknown."""
    key = _published(kid)
    return jwk.JWK(**key.public_dict()) if key is not None else None


def verifier(kid: Any) -> rsa.RSAPublicKey | None:
    """The public key of the published key with this kid, to verify our own signatures
    with cryptography directly; None if no published key has it."""
    key = _published(kid)
    return key.public_key if key is not None else None


def max_token_lifetime_seconds() -> int:
    """The longest any token we sign stays valid: how long a superseded key stays published."""
    from oauth2_provider.settings import oauth2_settings

    return max(
        int(oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS),
        int(oauth2_settings.ID_TOKEN_EXPIRE_SECONDS),
    )


def _editable_key_set() -> tuple[KeySet, Path]:
    if getattr(settings, "OIDC_RSA_PRIVATE_KEY", ""):
        raise ImproperlyConfigured(
            "OIDC_RSA_PRIVATE_KEY is set: a key from the environment cannot be rotated here. "
            "Use OIDC_PRIVATE_KEYS_FILE instead."
        )
    path = keys_file_path()
    if path is None:
        raise ImproperlyConfigured("Set OIDC_PRIVATE_KEYS_FILE.")
    key_set_forget()
    return key_set_load(), path


def key_set_init(*, path: Path) -> bool:
    """Create the key-set file with one active key; False if it already exists."""
    if path.exists():
        return False
    _create_file_once(path)
    key_set_forget()
    return True


def key_stage(*, now: int | None = None) -> StoredKey:
    """Publish a new key that does not sign yet. Returns the staged key (an existing staged key
    is returned as is: there is at most one)."""
    key_set, path = _editable_key_set()
    for key in key_set.keys:
        if key.state == KEY_STAGED:
            return key
    key = key_generate(state=KEY_STAGED, now=now)
    key_set.keys.append(key)
    key_set_write(key_set=key_set, path=path)
    return key


def key_activate(*, now: int | None = None) -> StoredKey:
    """Make the staged key the signing key; the old signing key stays published as previous
    until every token it signed has expired. Raises LookupError if no key is staged."""
    now = int(time.time()) if now is None else now
    key_set, path = _editable_key_set()
    staged = [k for k in key_set.keys if k.state == KEY_STAGED]
    if not staged:
        raise LookupError("No staged key to activate: stage one first.")
    old = key_set.active
    old.state = KEY_PREVIOUS
    # Tokens signed up to this instant may live this long (plus a minute of clock skew).
    old.retire_after = now + max_token_lifetime_seconds() + 60
    new = staged[0]
    new.state = KEY_ACTIVE
    new.activated_at = now
    key_set_write(key_set=key_set, path=path)
    return new


def key_retire_expired(*, now: int | None = None) -> list[str]:
    """Remove previous keys whose tokens have all expired. Returns the removed kids."""
    now = int(time.time()) if now is None else now
    key_set, path = _editable_key_set()
    expired = [
        k.kid
        for k in key_set.keys
        if k.state == KEY_PREVIOUS and k.retire_after is not None and k.retire_after <= now
    ]
    if expired:
        key_set.keys = [k for k in key_set.keys if k.kid not in expired]
        key_set_write(key_set=key_set, path=path)
    return expired
