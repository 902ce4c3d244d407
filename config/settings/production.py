"""Production: every secret comes from the environment, with no default."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import OAUTH2_PROVIDER, STORAGES, env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# The rate limits on client authentication failures, device-code guesses and polling, and
# voucher redemption failures count in the cache. A cache inside each process would give every
# worker and every host its own count, multiplying each limit by their number: production
# needs a cache that all of them share, such as Redis.
CACHES = {"default": env.cache("CACHE_URL")}
PROCESS_LOCAL_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
}
if CACHES["default"]["BACKEND"] in PROCESS_LOCAL_CACHES:
    raise ImproperlyConfigured(
        "CACHE_URL must name a cache that every worker shares (e.g. redis://host:6379/1), "
        f"not {CACHES['default']['BACKEND']}: rate limits are counted there."
    )
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# RFC 9700 §2.1: partner redirect URIs must use TLS in production. Native apps that need a
# loopback or private-use scheme can be allowed through the environment.
OAUTH2_PROVIDER = {
    **OAUTH2_PROVIDER,
    "ALLOWED_REDIRECT_URI_SCHEMES": env.list("OAUTH_REDIRECT_URI_SCHEMES", default=["https"]),
}
