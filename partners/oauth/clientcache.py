"""Partner servers that just authenticated, remembered by each process for a moment
(``OAUTH_CLIENT_CACHE_SECONDS``, 1 s by default; 0 turns it off).

A partner's server asks for client credentials tokens over and over, from the same address
with the same secret. Now that those tokens are not stored, reading the app, its partner,
its review and the address's failure count was the grant's only trip to the database, and
about a third of its CPU (bench/README.md). So the fast path (partners.oauth.grants)
remembers an app after a client authentication that succeeded and was not rate limited,
keyed by client_id and the client's failure key (client_id and address), and for the next
second authenticates that pair against the remembered app:

- the presented secret is still checked against the remembered hash on every request, and
  a wrong one is left to DOT's path, which reads the database and counts the failure;
- a client authentication failure counted in this process, and a change to any app,
  partner or review saved through the ORM in this process, forgets everything at once;
- a change made by another process (a secret rotated, a partner suspended, a lockout
  reached) reaches this one within the interval. A new secret works at once everywhere
  (a remembered app that does not match it sends the request to DOT's path); the old one,
  like a suspended partner's, keeps getting tokens from a process that remembered it for
  at most that long. Tokens already issued are checked without this memory, so revoking or
  suspending ends them at once.

Only successful authentications are remembered, so entries cost an attacker a valid secret;
the memory is still bounded (MAX_ENTRIES) and simply starts over when full.
"""

import time

from django.conf import settings

from partners.models import Application

MAX_ENTRIES = 4096

_entries: dict[tuple[str, str], tuple[float, Application]] = {}


def recall(*, client_id: str, failure_key: str) -> Application | None:
    """The app remembered for this client_id and failure key, if it is still fresh."""
    entry = _entries.get((client_id, failure_key))
    if entry is None:
        return None
    if entry[0] <= time.monotonic():
        _entries.pop((client_id, failure_key), None)
        return None
    return entry[1]


def remember(*, client_id: str, failure_key: str, application: Application) -> None:
    """Remember an app that has just authenticated with this client_id and failure key."""
    seconds = settings.OAUTH_CLIENT_CACHE_SECONDS
    if seconds <= 0:
        return
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    _entries[(client_id, failure_key)] = (time.monotonic() + seconds, application)


def forget(**_signal: object) -> None:
    """Forget every remembered app (also a receiver for the model signals)."""
    _entries.clear()
