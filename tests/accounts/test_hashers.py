"""accounts/hashers.py: Django's password hashes, computed in a native thread under gevent so
that a login does not hold up the other requests of its process."""

import json
import subprocess
import sys
from pathlib import Path

from django.contrib.auth import hashers as django_hashers
from django.contrib.auth.hashers import check_password, make_password

from accounts import hashers

ROOT = Path(__file__).resolve().parents[2]


def test_the_hashes_are_djangos_own_both_ways():
    ours = hashers.Argon2PasswordHasher().encode("s3cret pass", "saltsaltsaltsalt")
    django = django_hashers.Argon2PasswordHasher().encode("s3cret pass", "saltsaltsaltsalt")
    assert ours == django
    assert django_hashers.Argon2PasswordHasher().verify("s3cret pass", ours)
    assert hashers.Argon2PasswordHasher().verify("s3cret pass", django)
    assert not hashers.Argon2PasswordHasher().verify("wrong", django)
    pbkdf2 = django_hashers.PBKDF2PasswordHasher().encode("s3cret pass", "salt", 1000)
    assert hashers.PBKDF2PasswordHasher().encode("s3cret pass", "salt", 1000) == pbkdf2
    assert hashers.PBKDF2PasswordHasher().verify("s3cret pass", pbkdf2)


def test_the_settings_hash_with_ours_and_accept_earlier_hashes():
    assert make_password("s3cret pass").startswith("argon2$")
    earlier = django_hashers.PBKDF2PasswordHasher().encode("s3cret pass", "salt", 1000)
    upgraded: list[str] = []
    assert check_password("s3cret pass", earlier, setter=upgraded.append)
    assert upgraded == ["s3cret pass"]  # rehashed with Argon2 on the next login


# Greenlets counted while each hasher verifies a password, in a process gevent has patched as
# gunicorn's gevent worker does: a hash that runs in the greenlet lets none of them run.
_UNDER_GEVENT = """
from gevent import monkey

monkey.patch_all()

import json
import sys

import gevent

sys.path.insert(0, {root!r})
from django.conf import settings

settings.configure()
from django.contrib.auth import hashers as django_hashers

from accounts import hashers

ticks = 0


def ticker():
    global ticks
    while True:
        gevent.sleep(0.001)
        ticks += 1


gevent.spawn(ticker)
gevent.sleep(0.01)
encoded = django_hashers.Argon2PasswordHasher().encode("s3cret pass", "saltsaltsaltsalt")
counts = {{}}
for name, hasher in (
    ("django", django_hashers.Argon2PasswordHasher()),
    ("ours", hashers.Argon2PasswordHasher()),
):
    before = ticks
    right = hasher.verify("s3cret pass", encoded)
    wrong = hasher.verify("wrong", encoded)
    counts[name] = [ticks - before, right, wrong]
before = ticks
hashers.PBKDF2PasswordHasher().encode("s3cret pass", "salt", 200_000)
counts["ours pbkdf2"] = [ticks - before]
print(json.dumps(counts))
"""


def test_under_gevent_other_greenlets_run_while_a_password_is_hashed():
    result = subprocess.run(
        [sys.executable, "-c", _UNDER_GEVENT.format(root=str(ROOT))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    # Django's hasher, in the greenlet: the ticker never ran while it hashed.
    assert counts["django"] == [0, True, False]
    ticks, right, wrong = counts["ours"]
    assert (right, wrong) == (True, False)
    assert ticks >= 5, counts
    assert counts["ours pbkdf2"][0] >= 5, counts
