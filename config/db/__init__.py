"""Database backends: Django's, with what Tokenpass needs on top (see each package)."""

POSTGRESQL = "django.db.backends.postgresql"


def engine_for(engine: str) -> str:
    """Our backend for an ENGINE from DATABASE_URL: PostgreSQL gets config.db.postgresql."""
    return "config.db.postgresql" if engine == POSTGRESQL else engine
