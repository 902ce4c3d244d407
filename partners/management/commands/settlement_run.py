"""Close a settlement period for every partner (or one), now or through the Celery queue."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from partners.settlement import services, tasks
from partners.settlement.periods import InvalidPeriod, period_parse


class Command(BaseCommand):
    help = (
        "Close PERIOD (YYYY-MM or YYYY-MM-DD) into statements; closed periods are left as they are."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("period")
        parser.add_argument("--partner", type=int, action="append", help="Partner id (repeatable).")
        parser.add_argument("--queue", action="store_true", help="Queue Celery tasks instead.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            period = period_parse(options["period"])
        except InvalidPeriod as exc:
            raise CommandError(str(exc)) from None
        if timezone.now() < period.ends_at + settings.SETTLEMENT_CLOSE_GRACE:
            raise CommandError(f"{period.label} has not ended yet (plus the grace).")
        if options["queue"]:
            if options["partner"]:
                for partner_id in options["partner"]:
                    tasks.settlement_close.delay(partner_id, period.label)
            else:
                tasks.settlement_run.delay(period.label)
            self.stdout.write(f"queued {period.label}")
            return
        results = services.settlement_run_execute(
            period=period, partner_ids=options["partner"] or None
        )
        for result in results:
            statement = result.statement
            state = "closed" if result.created else "already closed"
            self.stdout.write(
                f"partner {statement.partner_id} {period.label}: {state}, statement "
                f"{statement.pk}, total {statement.total}"
            )
