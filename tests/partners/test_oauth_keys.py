"""Signing keys: generated once, published before they sign, retired after their tokens die."""

import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from jwcrypto import jwk, jwt

from partners.oauth import keys


@pytest.fixture
def key_file(settings, tmp_path):
    settings.OIDC_KEYS_FILE = tmp_path / "fresh" / "oidc-keys.json"
    settings.OIDC_RSA_PRIVATE_KEY = ""
    settings.OIDC_KEYS_GENERATE = True
    keys.key_set_forget()
    yield settings.OIDC_KEYS_FILE
    keys.key_set_forget()


def _sign(claims: dict) -> str:
    key = keys.signing_jwk()
    token = jwt.JWT(header={"alg": "RS256", "kid": key["kid"]}, claims=claims)
    token.make_signed_token(key)
    return token.serialize()


def _verify_with_published(token: str) -> dict:
    key_set = jwk.JWKSet.from_json(json.dumps(keys.public_jwks()))
    return json.loads(jwt.JWT(jwt=token, key=key_set, expected_type="JWS").claims)


def test_development_key_is_generated_once_and_published(key_file):
    # given no key file, when a key is asked for, then one is created with private permissions
    first = keys.signing_jwk()
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o077 == 0
    keys.key_set_forget()
    assert keys.signing_jwk()["kid"] == first["kid"]
    published = keys.public_jwks()["keys"]
    assert [k["kid"] for k in published] == [first["kid"]]
    assert "d" not in published[0] and published[0]["alg"] == "RS256"


def test_missing_file_is_an_error_when_generation_is_off(key_file, settings):
    settings.OIDC_KEYS_GENERATE = False
    with pytest.raises(ImproperlyConfigured, match="oidc_rotate_keys --init"):
        keys.signing_jwk()


def test_staged_key_is_published_before_it_signs(key_file):
    old = keys.signing_jwk()
    staged = keys.key_stage()
    kids = [k["kid"] for k in keys.public_jwks()["keys"]]
    assert kids == [old["kid"], staged.kid]
    assert keys.signing_jwk()["kid"] == old["kid"]


def test_tokens_signed_by_old_key_verify_after_rotation_until_retired(key_file):
    # given a token signed by the current key
    token = _sign({"sub": "u_1"})
    old_kid = keys.signing_jwk()["kid"]
    # when the key is rotated
    keys.key_stage(now=1000)
    new = keys.key_activate(now=2000)
    # then new tokens use the new key and the old token still verifies against the JWKS
    assert keys.signing_jwk()["kid"] == new.kid != old_kid
    assert _verify_with_published(token)["sub"] == "u_1"
    assert _verify_with_published(_sign({"sub": "u_2"}))["sub"] == "u_2"
    # the old key is not retired while its tokens may live
    assert keys.key_retire_expired(now=2000 + keys.max_token_lifetime_seconds()) == []
    # and goes once they cannot
    assert keys.key_retire_expired(now=2000 + keys.max_token_lifetime_seconds() + 61) == [old_kid]
    with pytest.raises(jwt.JWException):
        _verify_with_published(token)


def test_activate_without_staged_key_fails(key_file):
    keys.signing_jwk()
    with pytest.raises(LookupError):
        keys.key_activate()


def test_pem_key_from_environment(settings, tmp_path):
    private = jwk.JWK.generate(kty="RSA", size=2048)
    settings.OIDC_RSA_PRIVATE_KEY = private.export_to_pem(private_key=True, password=None).decode()
    settings.OIDC_KEYS_FILE = tmp_path / "unused.json"
    keys.key_set_forget()
    try:
        assert keys.signing_jwk().thumbprint() == private.thumbprint()
        assert keys.public_jwks()["keys"][0]["kid"] == private.thumbprint()
        assert not (tmp_path / "unused.json").exists()
        with pytest.raises(ImproperlyConfigured):
            keys.key_stage()
    finally:
        settings.OIDC_RSA_PRIVATE_KEY = ""
        keys.key_set_forget()


def test_a_rotation_by_another_process_is_seen_within_the_check_interval(
    key_file, settings, monkeypatch
):
    """Each process looks at the key-set file at most once per OIDC_KEYS_FILE_CHECK_SECONDS
    (not on every signature), and sees a rotation written by another process after that."""
    settings.OIDC_KEYS_FILE_CHECK_SECONDS = 30
    old = keys.signing_jwk()["kid"]
    clock = [1000.0]
    monkeypatch.setattr(keys.time, "monotonic", lambda: clock[0])
    keys.key_set_forget()
    assert keys.signing_jwk()["kid"] == old
    # Another process stages and activates a key: the file changes, this process's cache
    # is not told.
    rotated = keys.KeySet.from_json(json.loads(key_file.read_text()))
    new = keys.key_generate(state=keys.KEY_ACTIVE)
    for stored in rotated.keys:
        stored.state = keys.KEY_PREVIOUS
    rotated.keys.append(new)
    key_file.write_text(json.dumps(rotated.to_json()))
    clock[0] += 29
    assert keys.signing_jwk()["kid"] == old  # not looked at yet: the old key still signs
    assert old in [k["kid"] for k in keys.public_jwks()["keys"]]
    clock[0] += 2
    assert keys.signing_jwk()["kid"] == new.kid
    assert [k["kid"] for k in keys.public_jwks()["keys"]] == [old, new.kid]
