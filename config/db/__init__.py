"""Database backends: Django's, with what Tokenpass needs on top (see each package)."""

from typing import Any

POSTGRESQL = "django.db.backends.postgresql"


def engine_for(engine: str) -> str:
    """Our backend for an ENGINE from DATABASE_URL: PostgreSQL gets config.db.postgresql."""
    return "config.db.postgresql" if engine == POSTGRESQL else engine


def binding_cursor(connection: Any) -> Any:
    """A cursor that sends its parameters apart from the statement, which PostgreSQL then
    prepares, where the backend offers one (config.db.postgresql does); Django's own cursor
    elsewhere. For the token endpoint's statements, run on every grant with up to forty
    parameters: quoting those into the text in Python, and parsing and planning the text
    anew on the server, cost more than the statements' work."""
    return getattr(connection, "server_binding_cursor", connection.cursor)()
