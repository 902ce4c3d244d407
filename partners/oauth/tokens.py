"""Access tokens are JWTs in the RFC 9068 profile, signed with the current OIDC key, so a
partner server can verify one locally against our JWKS. They are still revocable: DOT keeps a
SHA-256 of each token, and introspection and our own APIs look the token up there."""

import json
import secrets
import time
import uuid
from typing import Any

from django.conf import settings
from jwcrypto import jwk, jws, jwt
from jwcrypto.common import JWException

from partners.oauth import keys

ACCESS_TOKEN_TYPE = "at+jwt"


def issuer() -> str:
    """Our OpenID issuer identifier: the public origin, never the request's Host header."""
    return settings.OAUTH2_PROVIDER.get("OIDC_ISS_ENDPOINT") or settings.SITE_URL


def access_token_claims(
    *, client_id: str, subject: str, audience: list[str], scopes: list[str], expires_in: int
) -> dict[str, Any]:
    """The claims of an RFC 9068 access token issued now to ``client_id``."""
    now = int(time.time())
    return {
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


def access_token_issue(
    *, client_id: str, subject: str, audience: list[str], scopes: list[str], expires_in: int
) -> str:
    """A signed RFC 9068 access token with access_token_claims, issued now."""
    claims = access_token_claims(
        client_id=client_id,
        subject=subject,
        audience=audience,
        scopes=scopes,
        expires_in=expires_in,
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
        resource = [resource]
    for item in resource or []:
        if isinstance(item, str) and item not in audience:
            audience.append(item)
    return access_token_issue(
        client_id=client_id,
        subject=subject,
        audience=audience,
        scopes=request.scopes or [],
        expires_in=int(request.expires_in),
    )


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
