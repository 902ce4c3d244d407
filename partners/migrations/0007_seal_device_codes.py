"""Device grants created before their codes were sealed: replace the clear codes by digests
(partners/oauth/device.py), so that pending devices keep working and no code stays in clear."""

import re

from django.db import migrations

from partners.oauth.device import device_code_digest, user_code_digest

SEALED = re.compile(r"[0-9a-f]{64}")


def seal(apps, schema_editor):
    DeviceGrant = apps.get_model("oauth2_provider", "DeviceGrant")
    for grant in DeviceGrant.objects.only("pk", "device_code", "user_code").iterator():
        if SEALED.fullmatch(grant.device_code):
            continue
        DeviceGrant.objects.filter(pk=grant.pk).update(
            device_code=device_code_digest(grant.device_code),
            user_code=user_code_digest(grant.user_code),
        )


class Migration(migrations.Migration):
    dependencies = [
        ("partners", "0006_partnerevent_member_actions"),
        ("oauth2_provider", "0022_refreshtoken_token_family_index"),
    ]

    operations = [migrations.RunPython(seal, migrations.RunPython.noop)]
