"""The OAuth 2.0 / OpenID Connect provider: partner apps are the clients (DOT underneath).

Map of the package:

- ``keys``: the rotating RS256 key set, ``signing_jwk()`` and ``public_jwks()``;
- ``tokens``: RFC 9068 JWT access tokens (DOT's ACCESS_TOKEN_GENERATOR) and their local
  verification;
- ``validators``: the oauthlib request validator (prompt=none, single-use codes, refresh
  reuse auditing, device codes bound to their client, claims, rate-limited client auth);
- ``backends``: hands the signed-in session to the validator;
- ``hashers``: the keyed HMAC hasher for client secrets;
- ``device``: device grant codes kept as digests (SHA-256 device code, keyed user code);
- ``spending``: the monthly limit the consent page asks for, registered by the wallet (which
  sits above partners in the import order);
- ``views`` / ``urls``: the endpoints under /o/, discovery and JWKS at the root, /device and
  /account/apps/;
- ``services`` / ``selectors``: consents, revocation, client secret rotation;
- ``admin``: staff screens (client secret shown once).

Management commands: ``oidc_rotate_keys`` (stage, activate, retire keys) and ``oauth_cleanup``.
"""
