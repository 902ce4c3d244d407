"""Settlement of a month: 1,000,000 charges across 100 partners, closed into statements by the
real service, beside a plain SQL aggregation of the same rows in the same run.

    .venv/bin/python bench/settlement/run.py [--charges 1000000] [--partners 100]

The rows are generated with set-based SQL into a dedicated database (recreated each run), in
the shape the settlement reads: one ledger transaction per charge with three legs (the
user's wallet, the app partner's payable account, the platform's revenue) and one split line
attributing the payable leg to (partner, app, model, agreement version). The charges are
spread evenly over October 2026 and interleaved across partners, as live traffic is.

Figures printed: the time of the settlement (every partner's statement for 2026-10 in one
settlement run, as the beat's Celery task runs it) and the time of the plain aggregation (the
same two sums computed set-based over all partners at once: split lines grouped by partner,
app, model, agreement and role, and payable ledger movements by account), and their ratio.
Goal: within 2x. The statements' totals are checked against the plain sums.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = os.environ.get("BENCH_SETTLEMENT_DB", "tokenpass_bench_settlement")
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")

PLAIN_LINES_SQL = """
SELECT partner_id, app_id, model_name, agreement_id, agreement_version, role, COUNT(*),
       SUM(gross), SUM(amount), SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens)
FROM partners_splitline
WHERE posted_at >= %(start)s AND posted_at < %(end)s
GROUP BY partner_id, app_id, model_name, agreement_id, agreement_version, role
"""
PLAIN_LEDGER_SQL = """
SELECT a.partner_id, SUM(e.amount)
FROM wallet_ledgerentry e
JOIN wallet_ledgertransaction t ON t.id = e.transaction_id
JOIN wallet_ledgeraccount a ON a.id = e.account_id
WHERE a.kind = 'partner_payable' AND t.created_at >= %(start)s AND t.created_at < %(end)s
GROUP BY a.partner_id
"""


def database_recreate() -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def rows_generate(*, charges: int, partners: int) -> int:
    """Partners, apps, agreements and accounts through the ORM; the charges' ledger rows and
    split lines with INSERT ... SELECT over generate_series."""
    from datetime import UTC, datetime

    from django.db import connection

    from accounts.models import User
    from partners.agreements.models import Agreement
    from partners.models import Application, Partner
    from wallet.models import LedgerAccount, Price, PriceModel

    since = datetime(2026, 9, 1, tzinfo=UTC)
    vendor = Partner.objects.create(name="Bench vendor", status="active")
    model = PriceModel.objects.create(vendor=vendor, name="bench-model", context_window=128_000)
    Price.objects.create(
        model=model,
        effective_from=since,
        input_per_million=1_000_000,
        cached_input_per_million=100_000,
        output_per_million=2_000_000,
    )
    owners = Partner.objects.bulk_create(
        [Partner(name=f"Bench partner {n}", status="active") for n in range(partners)]
    )
    apps = Application.objects.bulk_create(
        [
            Application(
                name=f"Bench app {n}",
                partner=partner,
                client_type="confidential",
                authorization_grant_type="authorization-code",
                redirect_uris="https://bench.example/cb",
                client_id=f"bench-{n}",
            )
            for n, partner in enumerate(owners)
        ]
    )
    agreements = Agreement.objects.bulk_create(
        [
            Agreement(
                partner=partner,
                kind=Agreement.Kind.REVENUE_SHARE,
                version=1,
                effective_from=since,
                share_bps=7000,
            )
            for partner in owners
        ]
    )
    payables = LedgerAccount.objects.bulk_create(
        [LedgerAccount(kind="partner_payable", partner=partner) for partner in owners]
    )
    user = User.objects.create(phone="+8613800000000", email="bench@example.com")
    wallet = LedgerAccount.objects.create(kind="wallet", user=user)
    platform = LedgerAccount.objects.create(kind="platform_revenue")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bench_map (p int PRIMARY KEY, partner_id bigint, app_id bigint, "
            "agreement_id bigint, account_id bigint)"
        )
        cursor.executemany(
            "INSERT INTO bench_map VALUES (%s, %s, %s, %s, %s)",
            [
                (n, owners[n].pk, apps[n].pk, agreements[n].pk, payables[n].pk)
                for n in range(partners)
            ],
        )
        # Bulk load only: skip the ledger's per-row triggers (balance and insert-only checks)
        # and foreign-key triggers; the rows are balanced and consistent by construction.
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            """
            CREATE TEMP TABLE bench_charge AS
            SELECT g AS n, g %% %(partners)s AS p,
                   1000 + (g::bigint * 7919) %% 2000 AS amount,
                   TIMESTAMPTZ '2026-10-01 00:00:00+00'
                     + (g - 1) * (INTERVAL '31 days' / %(charges)s) AS at
            FROM generate_series(1, %(charges)s) g
            """,
            {"partners": partners, "charges": charges},
        )
        cursor.execute(
            "INSERT INTO wallet_ledgertransaction (id, kind, reference, metadata, created_at) "
            "SELECT n, 'charge', 'bench:' || n, '{}', at FROM bench_charge"
        )
        cursor.execute(
            """
            INSERT INTO wallet_ledgerentry (transaction_id, account_id, amount)
            SELECT c.n, %(wallet)s, -c.amount FROM bench_charge c
            UNION ALL
            SELECT c.n, m.account_id, c.amount * 7000 / 10000
            FROM bench_charge c JOIN bench_map m ON m.p = c.p
            UNION ALL
            SELECT c.n, %(platform)s, c.amount - c.amount * 7000 / 10000 FROM bench_charge c
            """,
            {"wallet": wallet.pk, "platform": platform.pk},
        )
        cursor.execute(
            """
            INSERT INTO partners_splitline (ledger_transaction_id, posted_at, partner_id, role,
                agreement_id, agreement_version, app_id, model_name, gross, amount,
                input_tokens, cached_input_tokens, output_tokens)
            SELECT c.n, c.at, m.partner_id, 'app_share', m.agreement_id, 1, m.app_id,
                   'bench-model', c.amount, c.amount * 7000 / 10000, c.amount, 0, 0
            FROM bench_charge c JOIN bench_map m ON m.p = c.p
            ORDER BY c.n
            """
        )
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('wallet_ledgertransaction', 'id'), %s)",
            [charges],
        )
        for table in ("wallet_ledgertransaction", "wallet_ledgerentry", "partners_splitline"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return len(owners)


def plain_aggregate() -> tuple[float, dict[int, int], dict[int, int]]:
    from django.db import connection

    from partners.settlement.periods import period_parse

    period = period_parse("2026-10")
    params = {"start": period.starts_at, "end": period.ends_at}
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(PLAIN_LINES_SQL, params)
        lines = cursor.fetchall()
        cursor.execute(PLAIN_LEDGER_SQL, params)
        ledger = dict(cursor.fetchall())
    elapsed = time.perf_counter() - started
    by_partner: dict[int, int] = {}
    for row in lines:
        by_partner[row[0]] = by_partner.get(row[0], 0) + int(row[8])
    return elapsed, by_partner, {k: int(v) for k, v in ledger.items()}


def settle() -> tuple[float, dict[int, int]]:
    """The beat's path: one run closes the period for every partner (one transaction)."""
    from partners.settlement.services import settlement_run_execute

    started = time.perf_counter()
    results = settlement_run_execute(period="2026-10")
    elapsed = time.perf_counter() - started
    assert all(result.created for result in results)
    return elapsed, {result.statement.partner_id: result.statement.total for result in results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--charges", type=int, default=1_000_000)
    parser.add_argument("--partners", type=int, default=100)
    args = parser.parse_args()

    os.environ["DATABASE_URL"] = f"{PG_URL}/{DB_NAME}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    sys.path.insert(0, str(ROOT))
    database_recreate()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    rows_generate(charges=args.charges, partners=args.partners)
    print(
        f"generated {args.charges:,} charges for {args.partners} partners in "
        f"{time.perf_counter() - started:.1f} s"
    )
    plain_aggregate()  # warm the cache for both sides alike
    plain_time, plain_lines, plain_ledger = plain_aggregate()
    settle_time, totals = settle()
    plain_again, _, _ = plain_aggregate()
    plain_time = min(plain_time, plain_again)
    for partner_id, total in totals.items():
        if total != plain_lines.get(partner_id, 0) or total != plain_ledger.get(partner_id, 0):
            print(
                f"MISMATCH partner {partner_id}: statement {total}, plain {plain_lines.get(partner_id)}"
            )
            return 1
    print(f"settlement ({args.partners} statements): {settle_time:.2f} s")
    print(f"plain SQL aggregation (same rows):   {plain_time:.2f} s")
    print(f"ratio settlement / plain: {settle_time / plain_time:.2f}x (goal: within 2x)")
    print(f"statement totals equal the plain sums for all {len(totals)} partners")
    return 0


if __name__ == "__main__":
    sys.exit(main())
