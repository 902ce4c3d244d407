"""Delete expired OAuth grants and tokens (DOT's clear_expired), the authorization code
records that no live token needs any more, and ended windows of client authentication
failures. Safe to run as often as you like."""

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand
from oauth2_provider.models import clear_expired

from partners.oauth.ratelimit import client_auth_failures_prune
from partners.oauth.services import authorization_codes_prune


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
        clear_expired()
        pruned = authorization_codes_prune(older_than_seconds=int(options["code_days"] * 86400))
        windows = client_auth_failures_prune()
        self.stdout.write(
            f"Expired tokens cleared; {pruned} authorization code records and {windows} ended "
            "client authentication failure windows deleted."
        )
