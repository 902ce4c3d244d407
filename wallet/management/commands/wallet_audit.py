import sys

from django.core.management.base import BaseCommand

from wallet.audit import wallet_audit_run


class Command(BaseCommand):
    help = "Prove the ledger invariants; print a report and exit 1 on any breach."

    def handle(self, *args, **options) -> None:
        run = wallet_audit_run()
        for name in run.checked["checks"]:
            failures = [p["row"] for p in run.problems if p["check"] == name]
            status = "FAIL" if failures else "ok"
            self.stdout.write(f"{status:4}  {name}" + (f"  {failures}" if failures else ""))
        self.stdout.write(f"accounts checked: {run.checked['accounts']}")
        if run.ok:
            self.stdout.write(self.style.SUCCESS("wallet audit passed"))
            return
        self.stderr.write(self.style.ERROR(f"wallet audit FAILED: {len(run.problems)} problem(s)"))
        sys.exit(1)
