"""Our oauthlib request validator: DOT's, plus what Tokenpass needs.

- client authentication is rate limited per client_id and IP address;
- prompt=none works (DOT 3.4 leaves the silent-login hooks unimplemented);
- authorization codes are single use, and a replayed one revokes what it produced;
- refresh token reuse is written to the security audit log;
- device codes are bound to their client and redeemed once;
- claims come from accounts.oidc, `sub` is the public id, auth_time is the real sign-in time;
- ID tokens are verified against every published key, so rotation does not break them;
- client credentials access tokens are not stored (partners.oauth.tokens): they are checked
  by their signature and the revocation list, and revoking one records its jti.
"""

import json
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from jwcrypto import jwk, jws
from oauth2_provider.models import get_device_grant_model
from oauth2_provider.oauth2_validators import AccessToken, IDToken, OAuth2Validator, RefreshToken
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors

from accounts.audit import audit_event_record
from accounts.models import AuditEvent, User
from accounts.oidc import CLAIMS_SUPPORTED, user_claims
from partners.models import Application, AuthorizationCode
from partners.oauth import keys, ratelimit
from partners.oauth.backends import SESSION_AUTH_TIME_KEY, SESSION_SID_KEY, SESSION_USER_KEY
from partners.oauth.device import device_code_digest
from partners.oauth.selectors import (
    application_for_client_id,
    client_credentials_access_token,
    consent_covers,
    refresh_token_live,
    refresh_token_unexpired,
)
from partners.oauth.services import (
    access_token_row_delete,
    authorization_code_replay_revoke,
    client_credentials_token_revoke,
    consent_touch,
    refresh_token_rotation_revoke,
    token_checksum,
    token_row_insert,
)
from partners.oauth.tokens import client_credentials_claims, issuer

log = logging.getLogger(__name__)

# Grants answered at the token endpoint, where save_bearer_token always follows the ID token.
DEFERRED_ID_TOKEN_GRANTS = frozenset({"authorization_code", "refresh_token"})


class ClientAuthRateLimited(errors.OAuth2Error):
    """Too many failed client authentications from this address for this client_id."""

    error = "invalid_client"
    status_code = 429
    description = "Too many failed client authentications. Try again later."


class _AuditRequest:
    """Just enough of an HttpRequest for audit_event_record, built from oauthlib's headers
    (which are a copy of the Django request's META)."""

    def __init__(self, headers: Any) -> None:
        self.META = {
            "REMOTE_ADDR": headers.get("REMOTE_ADDR", ""),
            "HTTP_USER_AGENT": headers.get("HTTP_USER_AGENT", ""),
        }


class _RefreshTokenUsedConcurrently(Exception):
    """The refresh token being rotated was rotated by another request after validation."""


def _token_reuse_record(*, presented: Any, request: Any) -> None:
    """Write the TOKEN_REUSE security event for a refresh token used a second time (its
    family is already revoked)."""
    with transaction.atomic():
        audit_event_record(
            action=AuditEvent.Action.TOKEN_REUSE,
            user=presented.user,
            request=_AuditRequest(request.headers),  # type: ignore[arg-type]
            data={
                "client_id": presented.application.client_id,
                "token_family": str(presented.token_family or ""),
                "family_revoked": True,
            },
        )


def _max_age(request: Any) -> int | None:
    raw = getattr(request, "max_age", None)
    if raw in (None, ""):
        return None
    try:
        value = int(str(raw))
    except (TypeError, ValueError):
        raise errors.InvalidRequestError(
            description="max_age must be a non-negative integer.", request=request
        ) from None
    if value < 0:
        raise errors.InvalidRequestError(
            description="max_age must be a non-negative integer.", request=request
        )
    return value


class TokenpassOAuth2Validator(OAuth2Validator):
    # Claims are released by scope in accounts.oidc, not by DOT's table.
    oidc_claim_scope = None

    # ---- client authentication -------------------------------------------------------

    def authenticate_client(self, request: Any, *args: Any, **kwargs: Any) -> bool:
        client_id = ratelimit.oauthlib_client_id(request)
        ip = request.headers.get("REMOTE_ADDR")
        if ratelimit.client_auth_blocked(client_id=client_id, ip=ip):
            raise ClientAuthRateLimited(request=request)
        authenticated = bool(super().authenticate_client(request, *args, **kwargs))
        if not authenticated:
            ratelimit.client_auth_failure_record(client_id=client_id, ip=ip)
        return authenticated

    def _load_application(self, client_id: str, request: Any) -> Any:
        # psycopg refuses NUL bytes with a DataError, which DOT does not expect.
        if not isinstance(client_id, str) or "\x00" in client_id:
            return None
        if not request.client:
            # One query instead of three: DOT loads the app, then is_usable() reads its
            # partner and its review row one by one. Loaded here with both joined, DOT
            # finds request.client set and re-checks is_usable() on the joined rows.
            request.client = application_for_client_id(client_id=client_id)
        return super()._load_application(client_id, request)

    def authenticate_client_id(
        self, client_id: str, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        ip = request.headers.get("REMOTE_ADDR")
        if ratelimit.client_auth_blocked(client_id=client_id or "", ip=ip):
            raise ClientAuthRateLimited(request=request)
        return bool(super().authenticate_client_id(client_id, request, *args, **kwargs))

    # ---- the signed-in person, for prompt=none ------------------------------------

    def _session_user(self, request: Any) -> User | None:
        user_id = request.headers.get(SESSION_USER_KEY)
        if not user_id:
            return None
        return User.objects.filter(pk=user_id, is_active=True).first()

    def _session_auth_time(self, request: Any) -> int:
        try:
            return int(request.headers.get(SESSION_AUTH_TIME_KEY))
        except (TypeError, ValueError):
            return int(time.time())

    def validate_silent_login(self, request: Any) -> bool:
        """prompt=none: a session exists and, with max_age, is fresh enough."""
        user = self._session_user(request)
        if user is None:
            return False
        max_age = _max_age(request)
        return max_age is None or time.time() - self._session_auth_time(request) <= max_age

    def validate_silent_authorization(self, request: Any) -> bool:
        """prompt=none: the person already allowed this app everything it asks for."""
        user = self._session_user(request)
        if user is None or request.client is None:
            return False
        if request.client.skip_authorization:
            return True
        scopes = request.scopes or self.get_default_scopes(request.client_id, request)
        return consent_covers(user=user, application=request.client, scopes=scopes)

    # ---- authorization codes --------------------------------------------------------

    # DOT would keep each code in clear in its Grant row until it is redeemed. Grant.code holds
    # the code's SHA-256 instead (codes are long and random, so a plain hash is enough), and
    # every DOT method that finds a grant by code is handed that checksum. The code itself
    # exists only in the redirect to the client.

    def save_authorization_code(
        self, client_id: str, code: dict, request: Any, *args: Any, **kwargs: Any
    ) -> None:
        hashed = {**code, "code": token_checksum(code["code"])}
        with transaction.atomic():
            super().save_authorization_code(client_id, hashed, request, *args, **kwargs)
            AuthorizationCode.objects.create(
                code_checksum=token_checksum(code["code"]),
                application=request.client,
                user=request.user,
                auth_time=self._session_auth_time(request),
                sid=request.headers.get(SESSION_SID_KEY) or "",
            )

    def validate_code(
        self, client_id: str, code: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        record = AuthorizationCode.objects.filter(
            code_checksum=token_checksum(code), application=client
        ).first()
        if record is not None and record.redeemed_at is not None:
            log.warning("Authorization code replayed for client %s", client.client_id)
            authorization_code_replay_revoke(record=record)
            return False
        return bool(
            super().validate_code(client_id, token_checksum(code), client, request, *args, **kwargs)
        )

    def confirm_redirect_uri(
        self,
        client_id: str,
        code: str,
        redirect_uri: str,
        client: Any,
        *args: Any,
        **kwargs: Any,
    ) -> bool:
        return bool(
            super().confirm_redirect_uri(
                client_id, token_checksum(code), redirect_uri, client, *args, **kwargs
            )
        )

    def invalidate_authorization_code(
        self, client_id: str, code: str, request: Any, *args: Any, **kwargs: Any
    ) -> None:
        super().invalidate_authorization_code(
            client_id, token_checksum(code), request, *args, **kwargs
        )

    def get_code_challenge(self, code: str, request: Any) -> str | None:
        challenge: str | None = super().get_code_challenge(token_checksum(code), request)
        return challenge

    def get_code_challenge_method(self, code: str, request: Any) -> str | None:
        method: str | None = super().get_code_challenge_method(token_checksum(code), request)
        return method

    def get_authorization_code_scopes(
        self, client_id: str, code: str, redirect_uri: str, request: Any
    ) -> list[str]:
        scopes: list[str] = super().get_authorization_code_scopes(
            client_id, token_checksum(code), redirect_uri, request
        )
        return scopes

    def get_authorization_code_nonce(
        self, client_id: str, code: str, redirect_uri: str, request: Any
    ) -> str | None:
        nonce: str | None = super().get_authorization_code_nonce(
            client_id, token_checksum(code), redirect_uri, request
        )
        return nonce

    def _check_and_set_request_resource(self, request: Any) -> None:
        # DOT reads the grant's RFC 8707 resources through request.code: let it see the checksum
        # for that lookup only.
        if request.grant_type != "authorization_code" or not request.code:
            super()._check_and_set_request_resource(request)
            return
        code = request.code
        request.code = token_checksum(code)
        try:
            super()._check_and_set_request_resource(request)
        finally:
            request.code = code

    # ---- tokens -----------------------------------------------------------------------

    def save_bearer_token(self, token: dict, request: Any, *args: Any, **kwargs: Any) -> None:
        presented: Any = getattr(request, "refresh_token_instance", None)
        try:
            self._bearer_token_save(token, request, *args, **kwargs)
        except _RefreshTokenUsedConcurrently:
            # Two requests presented one refresh token at once: a second use, as if it came
            # after the first, so the family dies and the security log says so (what was
            # written for this request has been rolled back).
            RefreshToken.revoke_family(presented.token_family)
            _token_reuse_record(presented=presented, request=request)
            raise errors.InvalidGrantError(request=request) from None

    def _bearer_token_save(self, token: dict, request: Any, *args: Any, **kwargs: Any) -> None:
        if request.grant_type == "client_credentials" and not token.get("refresh_token"):
            # Not stored: the JWT is checked by its signature and the revocation list. The
            # RFC 8707 resources it names are still validated (invalid_target), as DOT
            # validates them for the row it would have stored.
            self._check_and_set_request_resource(request)
            return
        with transaction.atomic():
            record = None
            if request.grant_type == "authorization_code":
                # The conditional update is the single-use guard: of two concurrent
                # redemptions exactly one sees the row unredeemed.
                checksum = token_checksum(request.code)
                claimed = AuthorizationCode.objects.filter(
                    code_checksum=checksum, redeemed_at__isnull=True
                ).update(redeemed_at=timezone.now())
                if not claimed:
                    raise errors.InvalidGrantError(request=request)
                record = AuthorizationCode.objects.get(code_checksum=checksum)
            elif request.grant_type == "urn:ietf:params:oauth:grant-type:device_code":
                device_model = get_device_grant_model()
                claimed = device_model.objects.filter(
                    device_code=device_code_digest(request._params.get("device_code", "")),
                    client_id=request.client.client_id,
                    status=device_model.AUTHORIZED,
                ).update(status=device_model.EXPIRED)
                if not claimed:
                    raise errors.InvalidGrantError(request=request)
            if token.get("refresh_token") and not request.client.allows_grant_type("refresh_token"):
                # oauthlib always mints one; an app without the refresh grant gets none.
                token.pop("refresh_token")
            pending_id_token = getattr(request, "_tokenpass_pending_id_token", None)
            if pending_id_token is not None and token.get("id_token"):
                token_row_insert(instance=pending_id_token)
            presented = getattr(request, "refresh_token_instance", None)
            if not self._refresh_token_rotate(token, request):
                self._save_bearer_token(token, request, *args, **kwargs)
            # RFC 9396 §7: the token response carries the authorization details granted.
            details = (
                record.authorization_details
                if record is not None
                else getattr(presented, "tokenpass_authorization_details", None)
            )
            if details:
                token["authorization_details"] = details
            if record is not None:
                record.access_token_checksum = token_checksum(token["access_token"])
                if token.get("refresh_token"):
                    family = (
                        RefreshToken.objects.filter(
                            token_checksum=token_checksum(token["refresh_token"]),
                            revoked__isnull=True,
                        )
                        .values_list("token_family", flat=True)
                        .first()
                    )
                    record.token_family = family
                record.save(update_fields=["access_token_checksum", "token_family"])
            if request.user is not None and request.client is not None:
                consent_touch(user=request.user, application=request.client)

    def _refresh_token_rotate(self, token: dict, request: Any) -> bool:
        """The refresh grant's writes in four statements instead of DOT's nine: revoke the
        presented refresh token, delete its access token, insert the new access and refresh
        tokens (the ID token row was written just before). False when DOT's path applies
        (another grant, or rotation switched off), which is then taken unchanged.

        Runs inside save_bearer_token's transaction. Raises _RefreshTokenUsedConcurrently
        when the token was rotated by a concurrent request after it was validated: of two
        concurrent uses exactly one gets new tokens (DOT would wait for the lock and answer
        the second one with the first one's access token, which is not stored in clear
        here)."""
        previous = getattr(request, "refresh_token_instance", None)
        if (
            request.grant_type != "refresh_token"
            or not token.get("refresh_token")
            or not isinstance(previous, RefreshToken)
            or not self.rotate_refresh_token(request)
        ):
            return False
        if "scope" not in token:
            raise errors.FatalClientError("Failed to renew access token: missing scope")
        self._check_and_set_request_resource(request)
        now = timezone.now()
        expires = now + timedelta(
            seconds=token.get("expires_in", oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS)
        )
        # The conditional update is the row lock and the revocation at once (DOT's revoke()
        # selects the row FOR UPDATE, re-reads it and saves every column).
        if not refresh_token_rotation_revoke(refresh_token_id=previous.pk, now=now):
            raise _RefreshTokenUsedConcurrently
        if previous.access_token_id is not None:
            # Revoking an access token is deleting it. The only row that pointed at it (the
            # one-to-one from its refresh token) was cleared just above, under the row lock,
            # so the collector's read and SET NULL update would find nothing to do.
            access_token_row_delete(access_token_id=previous.access_token_id)
        request.refresh_token_instance = None
        access_token = self._create_access_token(
            expires, request, token, source_refresh_token=previous
        )
        self._create_refresh_token(request, token["refresh_token"], access_token, previous)
        return True

    def finalize_id_token(
        self, id_token: dict, token: dict, token_handler: Any, request: Any
    ) -> str:
        """DOT's, signing RS256 with keys.jwt_sign: jwcrypto re-imported the key, recomputed
        its thumbprint and deep-copied the claims on every ID token. The claims, the header
        (typ JWT, alg RS256, kid) and the stored row are the same."""
        if request.client.algorithm != Application.RS256_ALGORITHM:
            signed: str = super().finalize_id_token(id_token, token, token_handler, request)
            return signed
        claims, expiration_time = self.get_id_token_dictionary(token, token_handler, request)
        id_token.update(**claims)
        # oauthlib leaves the nonce out in some flows (oauthlib#746), as DOT notes.
        if "nonce" not in id_token and request.nonce:
            id_token["nonce"] = request.nonce
        signed = keys.jwt_sign(claims=id_token, typ="JWT")
        if request.grant_type in DEFERRED_ID_TOKEN_GRANTS:
            row = self._save_id_token(id_token["jti"], request, expiration_time)
        else:
            with transaction.atomic():
                row = self._save_id_token(id_token["jti"], request, expiration_time)
        # DOT's views and DRF read the ID token row from the request.
        request.access_token = row
        request.id_token = row
        return signed

    def _save_id_token(
        self, jti: Any, request: Any, expires: Any, *args: Any, **kwargs: Any
    ) -> Any:
        if request.grant_type not in DEFERRED_ID_TOKEN_GRANTS:
            return super()._save_id_token(jti, request, expires, *args, **kwargs)
        # At the token endpoint the ID token row is written by save_bearer_token, in the
        # transaction that stores the access token pointing at it (one commit, not two).
        # oauthlib always calls save_token after signing the ID token, and an answer with
        # an ID token is only sent once save_token succeeded.
        id_token = IDToken(
            user=request.user,
            scope=request.scope or " ".join(request.scopes),
            expires=expires,
            jti=jti,
            application=request.client,
        )
        request._tokenpass_pending_id_token = id_token
        return id_token

    def _create_access_token(
        self, expires: Any, request: Any, token: dict, source_refresh_token: Any = None
    ) -> Any:
        # DOT re-reads (and re-verifies) the ID token it signed a moment ago in this request,
        # which is one query: finalize_id_token left the row on request.id_token.
        id_token = getattr(request, "id_token", None) if token.get("id_token") else None
        if token.get("id_token") and (not isinstance(id_token, IDToken) or id_token.pk is None):
            return super()._create_access_token(
                expires, request, token, source_refresh_token=source_refresh_token
            )
        access_token = AccessToken(
            user=request.user,
            scope=token["scope"],
            expires=expires,
            id_token=id_token,
            application=request.client,
            source_refresh_token=source_refresh_token,
            resource=getattr(request, "resource", []),  # RFC 8707
        )
        self._set_token_value(access_token, token["access_token"])
        token_row_insert(instance=access_token)
        return access_token

    def _create_refresh_token(
        self, request: Any, refresh_token_code: str, access_token: Any, previous_refresh_token: Any
    ) -> Any:
        """DOT's, inserted through token_row_insert."""
        refresh_token = RefreshToken(
            user=request.user,
            application=request.client,
            access_token=access_token,
            token_family=(
                previous_refresh_token.token_family if previous_refresh_token else uuid.uuid4()
            ),
            resource=getattr(request, "resource", []),  # RFC 8707
        )
        self._set_token_value(refresh_token, refresh_token_code)
        token_row_insert(instance=refresh_token)
        return refresh_token

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        # DOT lets any code or device app refresh; with us refresh is a grant of its own.
        if grant_type == "refresh_token":
            return bool(request.client.allows_grant_type("refresh_token"))
        return bool(
            super().validate_grant_type(client_id, grant_type, client, request, *args, **kwargs)
        )

    def _load_access_token(self, token: str) -> Any:
        claims = client_credentials_claims(token)
        if claims is not None:
            # Never stored, so never looked up: None if revoked or the app is gone.
            return client_credentials_access_token(token=token, claims=claims)
        # DOT's lookup by the token's SHA-256, with the app's partner and review joined: the
        # is_usable() check that follows reads both, which would be two more queries.
        return (
            AccessToken.objects.select_related(
                "application__partner", "application__review", "user"
            )
            .filter(token_checksum=token_checksum(token))
            .first()
        )

    def revoke_token(
        self, token: str, token_type_hint: Any, request: Any, *args: Any, **kwargs: Any
    ) -> None:
        claims = client_credentials_claims(token)
        if claims is None:
            super().revoke_token(token, token_type_hint, request, *args, **kwargs)
            return
        # RFC 7009 §2.1: only the client the token was issued to may revoke it; any other
        # client's request is answered 200 like an unknown token, and changes nothing.
        if isinstance(request.client, Application):
            client_credentials_token_revoke(application=request.client, claims=claims)

    def validate_jwt_bearer_token(self, token: str, scopes: Any, request: Any) -> bool:
        # oauthlib's OpenID server routes any bearer value that looks like a JWT here, meant
        # for ID tokens used as bearer tokens. Our access tokens are JWTs; ID tokens are not
        # accepted as bearer tokens at all.
        return bool(self.validate_bearer_token(token, scopes, request))

    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        # One query: the live token with its access token and person, and the sign-in time
        # of the code its family came from (the ID token's auth_time). The app is the client
        # authenticated a moment ago, so it is compared by key, not joined again.
        live = refresh_token_live(checksum=token_checksum(refresh_token))
        if live is not None:
            # The live token, read with its access token and person in one query (DOT reads
            # the person and the app one by one); the checks are DOT's for a live token.
            # Revoked and unknown tokens take DOT's path below: the grace period, reuse
            # detection and family revocation stay exactly DOT's.
            if not refresh_token_unexpired(token=live):
                return False
            request.user = live.user
            request.refresh_token = refresh_token
            request.refresh_token_instance = live
            if client is None or live.application_id != client.pk:
                return False
            RefreshToken._meta.get_field("application").set_cached_value(live, client)
            return True
        valid = bool(
            super().validate_refresh_token(refresh_token, client, request, *args, **kwargs)
        )
        if valid:
            return True
        presented = (
            RefreshToken.objects.filter(token_checksum=token_checksum(refresh_token))
            .exclude(revoked__isnull=True)
            .select_related("user", "application")
            .order_by("-revoked")
            .first()
        )
        if presented is not None:
            # A revoked refresh token came back: a stolen copy or a confused client. DOT has
            # already revoked the whole family; the person's security log records it.
            _token_reuse_record(presented=presented, request=request)
        return False

    # ---- OpenID Connect ------------------------------------------------------------------

    def get_oidc_issuer_endpoint(self, request: Any) -> str:
        return issuer()

    def get_oidc_claims(self, token: Any, token_handler: Any, request: Any) -> dict[str, Any]:
        return user_claims(user=request.user, scopes=request.scopes or [])

    def get_discovery_claims(self, request: Any) -> list[str]:
        return list(CLAIMS_SUPPORTED)

    def get_userinfo_claims(self, request: Any) -> dict[str, Any]:
        if request.user is None:
            # A client credentials token stands for the partner's server, not a person.
            raise errors.InsufficientScopeError(
                description="This access token does not represent a person.", request=request
            )
        return user_claims(user=request.user, scopes=request.scopes or [])

    def _sign_in_for(self, request: Any) -> tuple[int, str] | None:
        """When and in which session (auth_time, sid) the person signed in, from the
        authorization code behind this grant (directly, or the refresh token's family)."""
        if request.grant_type == "authorization_code" and request.code:
            record = AuthorizationCode.objects.filter(
                code_checksum=token_checksum(request.code)
            ).first()
            return (record.auth_time, record.sid) if record is not None else None
        if request.grant_type == "refresh_token":
            instance = getattr(request, "refresh_token_instance", None)
            if instance is not None and hasattr(instance, "tokenpass_auth_time"):
                # read with the token by validate_refresh_token
                if instance.tokenpass_auth_time is None:
                    return None
                return instance.tokenpass_auth_time, instance.tokenpass_sid or ""
            if instance is not None and instance.token_family:
                record = AuthorizationCode.objects.filter(
                    token_family=instance.token_family
                ).first()
                return (record.auth_time, record.sid) if record is not None else None
        return None

    def get_id_token_dictionary(
        self, token: Any, token_handler: Any, request: Any
    ) -> tuple[dict, Any]:
        claims, expiration_time = super().get_id_token_dictionary(token, token_handler, request)
        sign_in = self._sign_in_for(request)
        if sign_in is not None:
            claims["auth_time"], sid = sign_in
            if sid:
                claims["sid"] = sid
        return claims, expiration_time

    def _get_key_for_token(self, token: str) -> jwk.JWK | None:
        """The published key named by the token's kid (any published key, so that tokens
        signed before a rotation still verify); None for anything malformed."""
        try:
            parsed = jws.JWS()
            parsed.deserialize(token)
            header = parsed.jose_header
            payload = json.loads(parsed.objects["payload"].decode("utf-8"))
        except Exception:  # any parse failure means "not our token"
            return None
        if not isinstance(header, dict) or not isinstance(payload, dict):
            return None
        if header.get("alg") == "RS256" and isinstance(header.get("kid"), str):
            return keys.verification_jwk(header["kid"])
        if "aud" not in payload:
            return None
        try:
            return super()._get_key_for_token(token)
        except Exception:
            return None
