"""Settings shared by every environment. Everything that differs between machines comes from
the environment (see docs/configuration.md); local.py, test.py and production.py only choose
defaults."""

from datetime import timedelta
from pathlib import Path

import environ
from django.utils.translation import gettext_lazy as _

from config.db import engine_for
from partners.oauth.device import device_grant_user_to_request

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The public origin of this server, e.g. https://id.example.com. It is the OpenID issuer and
# the base of links in messages, so it must not be derived from a request's Host header.
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    # The admin site requires staff to have passed two-factor (accounts/admin_site.py).
    "accounts.admin_apps.TokenpassAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "oauth2_provider",
    "django_celery_beat",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "accounts",
    "partners",
    "wallet",
]

MIDDLEWARE = [
    # Machine-to-machine paths (API_PATH_PREFIXES) branch off here to API_MIDDLEWARE.
    "config.middleware.ApiRouterMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.UserSessionMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Axes must come last so that it sees the result of every authentication attempt.
    "axes.middleware.AxesMiddleware",
]

# Partner servers call these with client credentials or bearer tokens, never with a browser
# session: they skip the session, CSRF, authentication, OTP, messages and axes middleware
# (config/middleware.py). Kept: HTTPS redirect and security headers, the language of error
# messages (Accept-Language), and CommonMiddleware's host and slash handling.
API_PATH_PREFIXES = [
    "/o/token/",
    "/o/introspect/",
    "/o/revoke_token/",
    "/api/wallet/",
    "/api/settlement/",
]
API_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# The OAuth endpoints among them answer in English only (RFC 6749 §5.2: error descriptions
# are ASCII), so they do without the language middleware too.
OAUTH_ENDPOINT_PREFIXES = ["/o/token/", "/o/introspect/", "/o/revoke_token/"]
OAUTH_ENDPOINT_MIDDLEWARE = [
    "config.middleware.SourceLanguageMiddleware" if path.endswith(".LocaleMiddleware") else path
    for path in API_MIDDLEWARE
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Persistent connections: opening a PostgreSQL connection per request costs more than most
# of our requests do.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
# With persistent connections a reused connection is checked with a SELECT 1 before a
# request's first statement, so that a connection the database (or a proxy) dropped while idle
# costs no request an error; our PostgreSQL backend (config/db/postgresql) skips the check for
# a connection that was in use within the last second. A deployment whose database never drops
# idle connections inside CONN_MAX_AGE may switch it off (docs/configuration.md).
DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=True)
DATABASES["default"]["ENGINE"] = engine_for(DATABASES["default"]["ENGINE"])
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# A pool of PostgreSQL connections in each process (Django's, on psycopg_pool), in place of a
# persistent connection per thread: gunicorn's gevent worker (config/gunicorn.py, which turns
# the pool on) serves each client connection in a greenlet of its own, and each would keep a
# database connection of its own. Requests take a connection at their first statement and
# give it back when they end. Off by default (0): Celery's prefork workers close a pool after
# every task, and runserver and the management commands need none.
DATABASE_POOL_MAX_SIZE = env.int("DATABASE_POOL_MAX_SIZE", default=0)
if DATABASE_POOL_MAX_SIZE and DATABASES["default"]["ENGINE"].endswith(".postgresql"):
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": min(env.int("DATABASE_POOL_MIN_SIZE", default=2), DATABASE_POOL_MAX_SIZE),
        "max_size": DATABASE_POOL_MAX_SIZE,
        # Seconds a request waits for a connection when all are in use, then fails.
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
    }
    # The pool keeps the connections between requests.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
# Our PostgreSQL backend prepares the token endpoint's statements on the server; a proxy that
# pools transactions without tracking prepared statements needs that off (docs/configuration.md).
if not env.bool("DATABASE_PREPARED_STATEMENTS", default=True):
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "accounts.backends.PhoneOrEmailBackend",
]
PASSWORD_HASHERS = [
    # Django's, hashing outside gevent's event loop under gevent's worker (accounts/hashers.py).
    "accounts.hashers.Argon2PasswordHasher",
    "accounts.hashers.PBKDF2PasswordHasher",
    # OAuth client secrets only (OAUTH2_PROVIDER["CLIENT_SECRET_HASHER"]); never a default.
    "partners.oauth.hashers.ClientSecretHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 8},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "accounts:profile"
LOGOUT_REDIRECT_URL = "accounts:login"

SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=14 * 24 * 3600)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_FAILURE_VIEW = "accounts.views.csrf_failure"

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "/media/"
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Mail and SMS. Codes are sent by Celery tasks after the transaction that created them commits.
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Tokenpass <no-reply@tokenpass.local>")
SMS_BACKEND = env.str("SMS_BACKEND", default="accounts.sms.backends.ConsoleSmsBackend")
SMS_OUTBOX_DIR = env.path("SMS_OUTBOX_DIR", default=BASE_DIR / "var" / "sms-outbox")
SMS_GATEWAY_URL = env.str("SMS_GATEWAY_URL", default="")
SMS_GATEWAY_USERNAME = env.str("SMS_GATEWAY_USERNAME", default="")
SMS_GATEWAY_PASSWORD = env.str("SMS_GATEWAY_PASSWORD", default="")
SMS_GATEWAY_SENDER = env.str("SMS_GATEWAY_SENDER", default="Tokenpass")
SMS_GATEWAY_TIMEOUT = env.float("SMS_GATEWAY_TIMEOUT", default=5.0)
# Region used to read phone numbers typed without a country code.
PHONE_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="CN")

# One-time codes: lifetime, attempts and send limits (per recipient and per client IP).
OTP_CODE_TTL = timedelta(seconds=env.int("OTP_CODE_TTL_SECONDS", default=300))
OTP_CODE_MAX_ATTEMPTS = env.int("OTP_CODE_MAX_ATTEMPTS", default=5)
OTP_SEND_LIMITS_PER_RECIPIENT = [(timedelta(minutes=1), 1), (timedelta(days=1), 10)]
OTP_SEND_LIMITS_PER_IP = [
    (timedelta(minutes=1), env.int("OTP_SEND_PER_IP_PER_MINUTE", default=5)),
    (timedelta(days=1), env.int("OTP_SEND_PER_IP_PER_DAY", default=50)),
]

# Brute-force protection on password login.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Our login form and authenticate() call name the identifier "username"; without this axes
# would look for the USERNAME_FIELD ("email"), find nothing and lock by address alone.
AXES_USERNAME_FORM_FIELD = "username"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
# Renders the lock-out page with the time to try again (takes precedence over the template).
AXES_LOCKOUT_CALLABLE = "accounts.views.login_lockout_response"
AXES_IPWARE_PROXY_COUNT = env.int("PROXY_COUNT", default=0)

OTP_TOTP_ISSUER = "Tokenpass"

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "oauth2_provider.contrib.rest_framework.OAuth2Authentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Tokenpass API",
    "DESCRIPTION": "Wallet charging and settlement API for Tokenpass partners.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
}

# OpenID Connect signing keys (partners/oauth/keys.py): a key-set file that
# `manage.py oidc_rotate_keys` maintains, or one PEM key from the environment (no rotation).
# Unless a file is configured, a development key set is generated on first use in var/.
OIDC_KEYS_FILE = env.path("OIDC_PRIVATE_KEYS_FILE", default=BASE_DIR / "var" / "oidc-keys.json")
OIDC_RSA_PRIVATE_KEY = env.str("OIDC_RSA_PRIVATE_KEY", default="")
OIDC_KEYS_GENERATE = env.bool("OIDC_KEYS_GENERATE", default="OIDC_PRIVATE_KEYS_FILE" not in env)
# How often each process looks whether the key-set file changed (a rotation step).
OIDC_KEYS_FILE_CHECK_SECONDS = env.float("OIDC_KEYS_FILE_CHECK_SECONDS", default=1.0)

OAUTH2_PROVIDER_APPLICATION_MODEL = "partners.Application"
OAUTH2_PROVIDER: dict = {
    "PKCE_REQUIRED": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ROTATE_REFRESH_TOKEN": True,
    "SCOPES": {
        "openid": _("Sign you in with your Tokenpass account"),
        "profile": _("See your name, language and time zone"),
        "email": _("See your email address"),
        "phone": _("See your phone number"),
        "wallet:charge": _("Charge your token wallet"),
        "settlement:read": _("Read the partner's settlement statements"),
    },
    "DEFAULT_SCOPES": ["openid"],
    # partners/oauth: validator, backend, scopes per app, RFC 9068 JWT access tokens.
    "OAUTH2_VALIDATOR_CLASS": "partners.oauth.validators.TokenpassOAuth2Validator",
    "OAUTH2_BACKEND_CLASS": "partners.oauth.backends.TokenpassOAuthLibCore",
    "SCOPES_BACKEND_CLASS": "partners.oauth.scopes.ApplicationScopes",
    "ACCESS_TOKEN_GENERATOR": "partners.oauth.tokens.access_token_generate",
    # Refresh tokens stay opaque (otherwise oauthlib would reuse the JWT generator).
    "REFRESH_TOKEN_GENERATOR": "partners.oauth.tokens.refresh_token_generate",
    "CLIENT_SECRET_HASHER": "tokenpass_hmac_sha256",
    "APPLICATION_ADMIN_CLASS": "partners.oauth.admin.ApplicationAdmin",
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ACCESS_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_ACCESS_TOKEN_SECONDS", default=3600),
    "ID_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_ID_TOKEN_SECONDS", default=3600),
    "REFRESH_TOKEN_EXPIRE_SECONDS": env.int("OAUTH_REFRESH_TOKEN_SECONDS", default=30 * 24 * 3600),
    "OIDC_ENABLED": True,
    "OIDC_ISS_ENDPOINT": SITE_URL,
    "OIDC_RESPONSE_TYPES_SUPPORTED": ["code"],
    "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
    # Ask before signing out only where OpenID RP-Initiated Logout requires it.
    "OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT": False,
    "OAUTH_DEVICE_VERIFICATION_URI": f"{SITE_URL}/device",
    "OAUTH_DEVICE_VERIFICATION_URI_COMPLETE": f"{SITE_URL}/device?user_code={{user_code}}",
    "DEVICE_FLOW_INTERVAL": 5,
    # Device grants are looked up by the digest of the presented code (partners/oauth/device.py).
    "OAUTH_PRE_TOKEN_VALIDATION": [device_grant_user_to_request],
}
# Failed client authentications allowed per client_id and IP address before the token,
# introspection and revocation endpoints refuse that pair for the window.
OAUTH_CLIENT_AUTH_FAILURE_LIMIT = env.int("OAUTH_CLIENT_AUTH_FAILURE_LIMIT", default=10)
OAUTH_CLIENT_AUTH_FAILURE_WINDOW = env.int("OAUTH_CLIENT_AUTH_FAILURE_WINDOW", default=300)
# Client credentials and refresh token grants that succeed in the ordinary way are answered
# by partners/oauth/grants.py instead of DOT and oauthlib (same answer, a third of the CPU);
# False sends every grant down DOT's path.
OAUTH_FAST_TOKEN_GRANTS = env.bool("OAUTH_FAST_TOKEN_GRANTS", default=True)
# `manage.py seed_demo` creates accounts with published passwords (a staff superuser among
# them): only the quick start's and the tests' settings allow it.
DEMO_DATA_ALLOWED = False
# How long each process remembers a confidential client that just authenticated at the
# token endpoint for client credentials or a refresh
# (partners/oauth/clientcache.py): the longest another process's change to the app, its
# partner or its lockout takes to reach it. 0 reads the database on every grant.
OAUTH_CLIENT_CACHE_SECONDS = env.float("OAUTH_CLIENT_CACHE_SECONDS", default=1.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"axes": {"level": "WARNING"}},
}

# Wallet. Amounts are integers in platform tokens.
WALLET_HOLD_TTL = timedelta(seconds=env.int("WALLET_HOLD_TTL_SECONDS", default=15 * 60))
# What an app may take from a user's wallet per calendar month unless the user set another limit.
WALLET_DEFAULT_MONTHLY_ALLOWANCE = env.int("WALLET_DEFAULT_MONTHLY_ALLOWANCE", default=1_000_000)
# Upper bounds that keep every computation far inside a 64-bit integer.
WALLET_MAX_TOKEN_COUNT = 10**12
WALLET_MAX_AMOUNT = 10**15
WALLET_REDEMPTION_BATCH_MAX = 10_000
WALLET_REDEEM_FAILURE_LIMIT = env.int("WALLET_REDEEM_FAILURE_LIMIT", default=10)
# An open hold this long past its expiry is reported by the nightly audit.
WALLET_AUDIT_HOLD_GRACE = timedelta(minutes=10)
# A shared account's balance change waiting this long to be folded is reported by the audit
# (the fold runs every WALLET_FOLD_SECONDS).
WALLET_FOLD_SECONDS = env.float("WALLET_FOLD_SECONDS", default=10.0)
WALLET_AUDIT_DELTA_GRACE = timedelta(minutes=10)
WALLET_BATCH_MAX_RECORDS = 1000
# Payment providers that may notify top-ups at /wallet/webhooks/<name>/. A provider without a
# secret is disabled.
WALLET_WEBHOOK_TOLERANCE = timedelta(seconds=300)
WALLET_PAYMENT_PROVIDERS = {
    "test": {
        "CLASS": "wallet.payments.HmacJsonProvider",
        "SECRET": env.str("WALLET_TEST_PROVIDER_SECRET", default=""),
    },
}
from celery.schedules import crontab  # noqa: E402

CELERY_BEAT_SCHEDULE: dict = globals().get("CELERY_BEAT_SCHEDULE", {})
CELERY_BEAT_SCHEDULE.update(
    {
        "wallet-expire-holds": {"task": "wallet.tasks.holds_expire", "schedule": 60.0},
        "wallet-fold-balances": {
            "task": "wallet.tasks.balances_fold",
            "schedule": WALLET_FOLD_SECONDS,
        },
        "wallet-expire-buckets": {"task": "wallet.tasks.buckets_expire", "schedule": 300.0},
        "wallet-plan-grants": {"task": "wallet.tasks.plan_grants", "schedule": 3600.0},
        "wallet-audit": {"task": "wallet.tasks.audit", "schedule": crontab(hour=3, minute=15)},
    }
)

# Earlier SECRET_KEYs, still accepted after a rotation (sessions, signed links, and the client
# secret hashes of partners/oauth/hashers.py when CLIENT_SECRET_HMAC_KEY is empty).
SECRET_KEY_FALLBACKS = env.list("SECRET_KEY_FALLBACKS", default=[])
# The key client secrets are hashed with (SECRET_KEY when empty). Set it once and keep it, and
# rotating SECRET_KEY leaves every partner's secret valid.
CLIENT_SECRET_HMAC_KEY = env.str("CLIENT_SECRET_HMAC_KEY", default="")

# Partner webhooks (partners/webhooks, docs/webhooks.md).
WEBHOOKS_RETRY_DELAYS = [60, 300, 1800, 7200, 21600, 43200, 86400]
WEBHOOKS_TIMEOUT_SECONDS = env.int("WEBHOOKS_TIMEOUT_SECONDS", default=10)
WEBHOOKS_MAX_PAYLOAD_BYTES = 256 * 1024
# Endpoints on loopback, private or link-local addresses are refused unless this is set.
WEBHOOKS_ALLOW_PRIVATE_TARGETS = env.bool("WEBHOOKS_ALLOW_PRIVATE_TARGETS", default=False)
# Endpoint signing secrets are derived with this key (SECRET_KEY when empty): keep it fixed
# when SECRET_KEY rotates, or every endpoint's secret changes.
WEBHOOKS_SIGNING_KEY = env.str("WEBHOOKS_SIGNING_KEY", default="")
CELERY_IMPORTS = [*globals().get("CELERY_IMPORTS", []), "partners.webhooks.tasks"]
CELERY_BEAT_SCHEDULE["partners-webhooks-requeue"] = {
    "task": "partners.webhooks_requeue_overdue",
    "schedule": 300.0,
}

# Partner settlement (partners/settlement, docs/settlement.md). Amounts in platform tokens.
# Minimum payout per payout currency ("*": any other); smaller totals carry forward.
SETTLEMENT_MINIMUM_PAYOUT = {"*": env.int("SETTLEMENT_MINIMUM_PAYOUT", default=10_000)}
# A period is closed only this long after it ends, so that captures in flight at midnight
# (posted just before it, committed just after) are in.
SETTLEMENT_CLOSE_GRACE = timedelta(minutes=env.int("SETTLEMENT_CLOSE_GRACE_MINUTES", default=15))
# How many past days the daily beat closes if a statement is missing (catches up after outages).
SETTLEMENT_CATCH_UP_DAYS = 3
# Test hook only: seconds to pause between the steps of a close (0 in every real deployment).
SETTLEMENT_STEP_DELAY_SECONDS = env.float("SETTLEMENT_STEP_DELAY_SECONDS", default=0)
CELERY_IMPORTS = [*globals().get("CELERY_IMPORTS", []), "partners.settlement.tasks"]
CELERY_BEAT_SCHEDULE["partners-settlement-close"] = {
    "task": "partners.settlement.close_due",
    "schedule": crontab(hour=0, minute=30),
}
# Late acks redeliver a task whose worker died once this many seconds pass unacknowledged.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **globals().get("CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_SECONDS", default=3600),
}

# OpenID Connect back-channel logout (partners/oauth/backchannel.py, docs/partners-oauth.md).
# Logout URIs must be https unless this is set; private addresses follow the webhook rule.
BACKCHANNEL_LOGOUT_ALLOW_HTTP = env.bool("BACKCHANNEL_LOGOUT_ALLOW_HTTP", default=False)
CELERY_BEAT_SCHEDULE["partners-backchannel-logout-requeue"] = {
    "task": "partners.backchannel_logout_requeue_stale",
    "schedule": 600.0,
}
# Expired tokens, spent authorization code records, ended client authentication windows.
CELERY_BEAT_SCHEDULE["partners-oauth-cleanup"] = {
    "task": "partners.oauth_cleanup",
    "schedule": crontab(minute=40),
}
