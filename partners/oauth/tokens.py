"""Access tokens are JWTs in the RFC 9068 profile, signed with the current OIDC key, so a
partner server can verify one locally against our JWKS. They are still revocable.

- A token issued to a person (authorization code, refresh, device grants) is stored as DOT
  stores it, as a SHA-256 of the token; revoking it deletes the row, and introspection and
  our own APIs look the token up there.
- A client credentials token is not stored: a partner's server may ask for one per call, and
  the token says everything about itself. It carries the claim ``gty: client_credentials``
  (the name Auth0 gives it) under our signature, so that it can never be mistaken for a
  person's token whose row was deleted. Revoking it records its jti
  (partners.AccessTokenRevocation) until it would have expired, and every check of such a
  token verifies the signature and looks for a revocation instead of a row."""

import base64
import binascii
import json
import re
import secrets
import time
import uuid
from typing import Any

from cryptography.exceptions import InvalidSignature
from django.conf import settings
from jwcrypto import jwk, jws, jwt
from jwcrypto.common import JWException

from partners.oauth import keys

ACCESS_TOKEN_TYPE = "at+jwt"
# The claim that marks a client credentials token, and its value.
GRANT_TYPE_CLAIM = "gty"
CLIENT_CREDENTIALS = "client_credentials"


def issuer() -> str:
    """Our OpenID issuer identifier: the public origin, never the request's Host header."""
    return settings.OAUTH2_PROVIDER.get("OIDC_ISS_ENDPOINT") or settings.SITE_URL


def access_token_claims(
    *,
    client_id: str,
    subject: str,
    audience: list[str],
    scopes: list[str],
    expires_in: int,
    grant_type: str | None = None,
) -> dict[str, Any]:
    """The claims of an RFC 9068 access token issued now to ``client_id``; with the client
    credentials ``grant_type``, marked as such (GRANT_TYPE_CLAIM)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer(),
        "sub": subject,
        "aud": audience[0] if len(audience) == 1 else audience,
        "client_id": client_id,
        "scope": " ".join(scopes),
        "iat": now,
        "nbf": now,
        "exp": now + expires_in,
        "jti": uuid.uuid4().hex,
    }
    if grant_type == CLIENT_CREDENTIALS:
        claims[GRANT_TYPE_CLAIM] = CLIENT_CREDENTIALS
    return claims


def access_token_issue(
    *,
    client_id: str,
    subject: str,
    audience: list[str],
    scopes: list[str],
    expires_in: int,
    grant_type: str | None = None,
) -> str:
    """A signed RFC 9068 access token with access_token_claims, issued now."""
    claims = access_token_claims(
        client_id=client_id,
        subject=subject,
        audience=audience,
        scopes=scopes,
        expires_in=expires_in,
        grant_type=grant_type,
    )
    return keys.jwt_sign(claims=claims, typ=ACCESS_TOKEN_TYPE)


def access_token_generate(request: Any) -> str:
    """oauthlib token generator (ACCESS_TOKEN_GENERATOR): a signed RFC 9068 JWT.

    `sub` is the person's public id, or the client_id for the client credentials grant.
    `aud` is the client the token was issued to, plus any RFC 8707 resources requested."""
    client_id = request.client.client_id
    user = getattr(request, "user", None)
    subject = getattr(user, "public_id", None) or client_id
    audience: list[str] = [client_id]
    resource = getattr(request, "resource", None)
    if isinstance(resource, str):
        # RFC 8707 lets resource repeat; oauthlib keeps the last value. Recovered from the
        # body as DOT's _check_and_set_request_resource recovers it for the row it stores
        # (for a client credentials token there is no row: its aud is what is enforced).
        repeated = [
            value
            for key, value in (getattr(request, "decoded_body", None) or [])
            if key == "resource"
        ]
        resource = repeated if len(repeated) > 1 else [resource]
    for item in resource or []:
        if isinstance(item, str) and item not in audience:
            audience.append(item)
    return access_token_issue(
        client_id=client_id,
        subject=subject,
        audience=audience,
        scopes=request.scopes or [],
        expires_in=int(request.expires_in),
        grant_type=getattr(request, "grant_type", None),
    )


# A compact JWS as we write it: three base64url parts without padding, a short header.
_COMPACT_JWS = re.compile(r"([A-Za-z0-9_-]{1,512})\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)")


def _b64url_decode(part: str) -> bytes:
    """The bytes of an unpadded base64url part (already matched by _COMPACT_JWS)."""
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b64url_json(part: str) -> Any:
    """The JSON value in a base64url part (already matched by _COMPACT_JWS); ValueError if
    it is not one. Nesting too deep for the parser is refused like any other bad JSON."""
    try:
        return json.loads(_b64url_decode(part))
    except (binascii.Error, RecursionError) as exc:
        raise ValueError("not base64url JSON") from exc


def client_credentials_claims(token: str) -> dict[str, Any] | None:
    """The claims of a client credentials access token signed by one of our published keys
    (expired or not: the caller decides), or None for anything else: a person's token, an ID
    token, a token another issuer or key signed, anything malformed.

    Verified with cryptography directly: jwcrypto rebuilt the key set from JSON on every
    call, and this runs on every API request a partner's server makes. The parts must be
    strict base64url, so that each token has exactly one spelling."""
    if not isinstance(token, str) or len(token) > 8192:
        return None
    parts = _COMPACT_JWS.fullmatch(token)
    if parts is None:
        return None
    header_part, claims_part, signature_part = parts.groups()
    try:
        header = _b64url_json(header_part)
        claims = _b64url_json(claims_part)
        signature = _b64url_decode(signature_part)
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    if header.get("typ") != ACCESS_TOKEN_TYPE or header.get("alg") != "RS256":
        return None
    if claims.get(GRANT_TYPE_CLAIM) != CLIENT_CREDENTIALS:
        return None
    verifier = keys.verifier(header.get("kid"))
    if verifier is None:
        return None
    try:
        verifier.verify(
            signature,
            f"{header_part}.{claims_part}".encode("ascii"),
            keys.PKCS1,
            keys.SHA256,
        )
    except (InvalidSignature, ValueError):
        return None
    client_id = claims.get("client_id")
    if (
        not isinstance(client_id, str)
        or not client_id
        or claims.get("sub") != client_id
        or token_audience(claims) is None
        or claims.get("iss") != issuer()
        or not isinstance(claims.get("jti"), str)
        or not isinstance(claims.get("exp"), int)
        or not isinstance(claims.get("iat"), int)
        or not isinstance(claims.get("scope"), str)
    ):
        return None
    return claims


def refresh_token_generate(request: Any, refresh_token: bool = False) -> str:
    """oauthlib token generator (REFRESH_TOKEN_GENERATOR): 256 random bits, URL-safe. Opaque
    on purpose: only we ever read a refresh token. (oauthlib's default draws 30 characters one
    by one from SystemRandom: about 178 bits, at several times the CPU.)"""
    return secrets.token_urlsafe(32)


class InvalidAccessToken(Exception):
    """The string is not an unexpired access token signed by one of our published keys."""


def access_token_verify(*, token: str, audience: str | None = None) -> dict[str, Any]:
    """Verify a JWT access token the way a partner server would (signature against the JWKS,
    typ, iss, exp, optional aud) and return its claims. This does not consult revocation:
    use introspection for that. Raises InvalidAccessToken."""
    try:
        parsed = jws.JWS()
        parsed.deserialize(token)
        header = parsed.jose_header
    except (JWException, ValueError, TypeError) as exc:
        raise InvalidAccessToken("malformed token") from exc
    if not isinstance(header, dict) or header.get("typ") != ACCESS_TOKEN_TYPE:
        raise InvalidAccessToken("not an access token")
    if header.get("alg") != "RS256":
        raise InvalidAccessToken("unexpected algorithm")
    key_set = jwk.JWKSet.from_json(json.dumps(keys.public_jwks()))
    check: dict[str, Any] = {"iss": issuer(), "exp": None}
    if audience is not None:
        check["aud"] = audience
    try:
        verified = jwt.JWT(jwt=token, key=key_set, check_claims=check, expected_type="JWS")
    except (JWException, ValueError, TypeError) as exc:
        raise InvalidAccessToken(str(exc)) from exc
    claims: dict[str, Any] = json.loads(verified.claims)
    return claims


def token_audience(claims: dict[str, Any]) -> list[str] | None:
    """The RFC 8707 resources a client credentials token is restricted to (the audience
    after the client itself, as access_token_generate writes it; empty for none), or None if
    the audience is not one we write."""
    audience = claims.get("aud")
    if audience == claims.get("client_id"):
        return []
    if (
        not isinstance(audience, list)
        or len(audience) < 2
        or audience[0] != claims.get("client_id")
        or not all(isinstance(item, str) for item in audience)
    ):
        return None
    return audience[1:]
