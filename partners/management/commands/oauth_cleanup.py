"""Delete expired OAuth grants and tokens (DOT's clear_expired), the authorization code
records that no live token needs any more, ended windows of client authentication
failures and revocations of client credentials tokens that have expired: what the hourly ``partners.oauth_cleanup`` beat task does, by hand. Safe to run as
often as you like."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from partners.oauth.services import oauth_expired_prune


class Command(BaseCommand):
    help = "Delete expired OAuth tokens, grants and authorization code records."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--code-days",
            type=float,
            default=2.0,
            help="Keep authorization code records at least this long (replay detection).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        pruned = oauth_expired_prune(code_older_than_seconds=int(options["code_days"] * 86400))
        self.stdout.write(
            f"Expired tokens cleared; {pruned['authorization_codes']} authorization code records, "
            f"{pruned['client_auth_windows']} ended client authentication failure windows and "
            f"{pruned['access_token_revocations']} revocations of expired client credentials "
            "tokens deleted."
        )
