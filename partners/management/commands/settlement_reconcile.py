"""Compare a period's statements with the wallet's ledger; exit 1 on any difference."""

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from partners.settlement.periods import InvalidPeriod
from partners.settlement.selectors import Reconciliation, settlement_reconcile


def reconciliation_lines(result: Reconciliation) -> list[str]:
    lines = [
        f"Reconciliation of {result.period.kind} {result.period.label}",
        f"{'partner':<32} {'statement':>14} {'ledger':>14} {'attributed':>14} {'unattributed':>12}  ",
    ]
    for row in result.rows:
        earnings = "missing" if row.statement_earnings is None else str(row.statement_earnings)
        lines.append(
            f"{row.partner[:32]:<32} {earnings:>14} {row.ledger:>14} {row.attributed:>14} "
            f"{row.unattributed:>12}  {'ok' if row.ok else 'DIFFERENT'}"
        )
    lines += [
        f"charges captured {result.captured}, their posted legs {result.captured_legs}",
        f"split lines {result.split_lines}, payable legs of captures {result.ledger_from_captures}",
        f"adjustments {result.adjustments}, in the ledger {result.ledger_adjustments}",
        f"paid {result.paid}, payouts in the ledger {result.ledger_payouts}",
        "OK" if result.ok else "DIFFERENCES: " + "; ".join(result.problems),
    ]
    return lines


class Command(BaseCommand):
    help = "Reconcile PERIOD (YYYY-MM or YYYY-MM-DD): statements against the ledger."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("period")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = settlement_reconcile(period=options["period"])
        except InvalidPeriod as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write("\n".join(reconciliation_lines(result)))
        if not result.ok:
            sys.exit(1)
