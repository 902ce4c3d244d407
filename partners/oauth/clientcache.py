"""Confidential clients that just authenticated at the token endpoint, remembered by each
process for a moment (``OAUTH_CLIENT_CACHE_SECONDS``, 1 s by default; 0 turns it off).

A partner's server asks for client credentials tokens over and over, and a web app's server
refreshes its users' tokens over and over, each from the same address with the same secret.
Now that client credentials tokens are not stored, reading the app, its partner, its review
and the address's failure count was that grant's only trip to the database, and about a
third of its CPU; in a refresh grant it was 13 % of the instructions outside the RSA
signatures (bench/README.md). So the fast path (partners.oauth.grants) remembers an app after
a client authentication that succeeded and was not rate limited, keyed by client_id and the
client's failure key (client_id and address), and for the next second authenticates that
pair against the remembered app (a refresh grant still reads its refresh token):

- the presented secret is still checked against the remembered hash on every request, and
  a wrong one is left to DOT's path, which reads the database and counts the failure;
- a client authentication failure counted in this process forgets that client and address,
  and a change to any app, partner or review saved through the ORM in this process forgets
  everything, at once and again when it commits; an app read before either is not
  remembered after it (generation());
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
from django.db import transaction

from partners.models import Application

MAX_ENTRIES = 4096

_entries: dict[tuple[str, str], tuple[float, Application]] = {}
# Moves on at every forgetting, so that an app read before it is not remembered after it.
_generation = 0


def recall(*, client_id: str, failure_key: str) -> Application | None:
    """The app remembered for this client_id and failure key, if it is still fresh."""
    entry = _entries.get((client_id, failure_key))
    if entry is None:
        return None
    if entry[0] <= time.monotonic():
        _entries.pop((client_id, failure_key), None)
        return None
    return entry[1]


def generation() -> int:
    """Read before the app is read from the database, and given back to remember()."""
    return _generation


def remember(*, client_id: str, failure_key: str, application: Application, read_in: int) -> None:
    """Remember an app that has just authenticated with this client_id and failure key,
    unless something was forgotten since it was read (``read_in``, from generation())."""
    seconds = settings.OAUTH_CLIENT_CACHE_SECONDS
    if seconds <= 0 or read_in != _generation:
        return
    if len(_entries) >= MAX_ENTRIES:
        _entries.clear()
    _entries[(client_id, failure_key)] = (time.monotonic() + seconds, application)


def forget(**_signal: object) -> None:
    """Forget every remembered app: a receiver for the model signals. Again when the change
    commits, so that nothing read before the commit (the old row) stays remembered."""
    clear()
    transaction.on_commit(clear)


def clear() -> None:
    """Forget every remembered app now (as a process starting afresh)."""
    global _generation
    _generation += 1
    _entries.clear()


def forget_client(*, client_id: str, failure_key: str) -> None:
    """Forget what is remembered for one client_id and failure key (a failure was counted):
    call it before and after the count is written."""
    global _generation
    _generation += 1
    _entries.pop((client_id, failure_key), None)
