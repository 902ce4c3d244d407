"""Test settings: real PostgreSQL and a real Redis broker. Tests that need a worker start one;
the rest run tasks eagerly."""

from config.db import engine_for

from .base import *  # noqa: F403
from .base import DATABASES, env

DEBUG = False
SECRET_KEY = "test-secret-key-only-for-the-test-suite-0123456789abcdef"
ALLOWED_HOSTS = ["*"]
DATABASES["default"] = env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/postgres")
DATABASES["default"]["ENGINE"] = engine_for(DATABASES["default"]["ENGINE"])
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default="test_tokenpass")}
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/0")
CELERY_TASK_ALWAYS_EAGER = True
DEMO_DATA_ALLOWED = True
SMS_BACKEND = "accounts.sms.backends.OutboxSmsBackend"
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Webhook tests post to a listener on 127.0.0.1.
WEBHOOKS_ALLOW_PRIVATE_TARGETS = True
# Tests serve static files from the app directories (no collectstatic run).
STATIC_ROOT = None  # type: ignore[assignment]
WHITENOISE_USE_FINDERS = True
