"""Replace recovery codes stored in clear in otp_static's StaticToken by their keyed hash.

From this release on, accounts.services_mfa stores recovery_code_hash(code) and hashes what it
is given before the lookup; codes written earlier in clear would otherwise stop working. The
hash is repeated here (migrations must not depend on code that may change later). A hashed
value is 16 characters long, a clear code 8, so running this twice changes nothing.
"""

import hashlib
import hmac
from base64 import urlsafe_b64encode

from django.conf import settings
from django.db import migrations

_KEY_SALT = b"tokenpass.accounts.recovery-code"
_HASH_CHARS = 16


def _hash(code: str) -> str:
    key = hashlib.sha256(_KEY_SALT + settings.SECRET_KEY.encode()).digest()
    normal = "".join(ch for ch in code if ch.isalnum()).lower()
    digest = hmac.new(key, normal.encode(), hashlib.sha256).digest()
    return urlsafe_b64encode(digest).decode("ascii")[:_HASH_CHARS]


def hash_clear_codes(apps, schema_editor):  # type: ignore[no-untyped-def]
    StaticToken = apps.get_model("otp_static", "StaticToken")
    for token in StaticToken.objects.all().iterator():
        if len(token.token) < _HASH_CHARS:
            token.token = _hash(token.token)
            token.save(update_fields=["token"])


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_usersession"),
        ("otp_static", "0003_add_timestamps"),
    ]

    # A hash cannot be turned back into the code: reversing leaves the hashes in place.
    operations = [migrations.RunPython(hash_clear_codes, migrations.RunPython.noop)]
