"""Django's password hashers, hashing in a thread of their own when gevent's worker serves.

A gevent worker (config/gunicorn.py) runs every request of its process in one thread, and a
greenlet runs until it waits on I/O. An Argon2 verification with Django's parameters keeps a
core busy for a quarter of a second or more (bench/login): run in the request's greenlet, it
would hold up every other request of the process, token grants included, for that long.
argon2-cffi and hashlib's PBKDF2 release the GIL while they hash, so in one of gevent's native
threads the hash runs beside the other requests, as it does under a threaded worker. Without
gevent's patching (threaded workers, Celery, management commands, tests) the hash runs where
it is called. The algorithms and the encoded values are Django's own.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth import hashers

T = TypeVar("T")


def outside_event_loop(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``: in the gevent hub's thread pool when gevent has patched threading
    (the calling greenlet waits for it, the others run), else here."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return function(*args)
    import gevent

    result: T = gevent.get_hub().threadpool.apply(function, args)
    return result


class Argon2PasswordHasher(hashers.Argon2PasswordHasher):
    def encode(self, password: str, salt: str) -> str:
        return outside_event_loop(super().encode, password, salt)

    def verify(self, password: str, encoded: str) -> bool:
        return outside_event_loop(super().verify, password, encoded)


class PBKDF2PasswordHasher(hashers.PBKDF2PasswordHasher):
    # Its verify and harden_runtime hash through encode.
    def encode(self, password: str, salt: str, iterations: int | None = None) -> str:
        return outside_event_loop(super().encode, password, salt, iterations)
