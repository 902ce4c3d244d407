"""Rotate the OpenID Connect signing keys without breaking live tokens.

Run without options (e.g. daily from cron) it takes one step at a time: retire previous keys
whose tokens have all expired; activate the staged key once it has been published for at least
--publish-hours (so partners' cached JWKS already hold it); otherwise stage a new key if none is
staged and the active key is older than --max-age-days."""

import time
from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from partners.oauth import keys


class Command(BaseCommand):
    help = "Stage, activate and retire OpenID Connect signing keys."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--init", action="store_true", help="Create the key-set file.")
        parser.add_argument("--stage", action="store_true", help="Publish a new key.")
        parser.add_argument(
            "--activate", action="store_true", help="Sign with the staged key from now on."
        )
        parser.add_argument(
            "--retire", action="store_true", help="Remove keys whose tokens have all expired."
        )
        parser.add_argument("--publish-hours", type=float, default=24.0)
        parser.add_argument("--max-age-days", type=float, default=90.0)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._handle(**options)
        except (ImproperlyConfigured, LookupError) as exc:
            raise CommandError(str(exc)) from exc

    def _handle(self, **options: Any) -> None:
        if options["init"]:
            path = keys.keys_file_path()
            if path is None:
                raise CommandError("Set OIDC_PRIVATE_KEYS_FILE.")
            created = keys.key_set_init(path=path)
            self.stdout.write(f"{'Created' if created else 'Already present'}: {path}")
            return
        explicit = options["stage"] or options["activate"] or options["retire"]
        if options["retire"] or not explicit:
            for kid in keys.key_retire_expired():
                self.stdout.write(f"Retired {kid}")
        if options["stage"]:
            self.stdout.write(f"Staged {keys.key_stage().kid}")
        if options["activate"]:
            self.stdout.write(f"Activated {keys.key_activate().kid}")
        if not explicit:
            self._auto_step(options["publish_hours"], options["max_age_days"])
        for key in keys.key_set_load().keys:
            self.stdout.write(f"  {key.state:8} {key.kid}")

    def _auto_step(self, publish_hours: float, max_age_days: float) -> None:
        now = time.time()
        key_set = keys.key_set_load()
        staged = [k for k in key_set.keys if k.state == keys.KEY_STAGED]
        if staged:
            if now - staged[0].created_at >= publish_hours * 3600:
                self.stdout.write(f"Activated {keys.key_activate().kid}")
            return
        active = key_set.active
        since = active.activated_at or active.created_at
        if now - since >= max_age_days * 86400:
            self.stdout.write(f"Staged {keys.key_stage().kid}")
