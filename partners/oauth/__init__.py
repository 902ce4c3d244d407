"""The OAuth 2.0 / OpenID Connect provider: partner apps are the clients (DOT underneath)."""
