"""OpenID Connect claims about a person, released by scope (OpenID Connect Core §5.4).

`sub` is the user's public id: stable, never reused, and unrelated to database keys."""

from collections.abc import Iterable
from typing import Any

from accounts.models import User

# Claim -> the scope that releases it.
CLAIM_SCOPES: dict[str, str] = {
    "sub": "openid",
    "name": "profile",
    "locale": "profile",
    "zoneinfo": "profile",
    "email": "email",
    "email_verified": "email",
    "phone_number": "phone",
    "phone_number_verified": "phone",
}
CLAIMS_SUPPORTED = list(CLAIM_SCOPES)


def _locale_tag(locale: str) -> str:
    # BCP 47 tag as OIDC expects it: "zh-hans" is stored, "zh-Hans" is the tag.
    if locale.lower() == "zh-hans":
        return "zh-Hans"
    return locale


def user_claims(*, user: User, scopes: Iterable[str]) -> dict[str, Any]:
    """The claims that `scopes` release about `user`. Claims with no value are left out,
    except the *_verified flags that accompany a released value."""
    granted = set(scopes)
    claims: dict[str, Any] = {"sub": user.public_id}
    if "profile" in granted:
        name = user.display_name
        if name:
            claims["name"] = name
        claims["locale"] = _locale_tag(user.locale)
        claims["zoneinfo"] = user.time_zone
    if "email" in granted and user.email:
        claims["email"] = user.email
        claims["email_verified"] = bool(user.email_verified)
    if "phone" in granted and user.phone:
        claims["phone_number"] = user.phone
        claims["phone_number_verified"] = bool(user.phone_verified)
    return claims
