"""One-shot charges per second through wallet_charge on PostgreSQL, and what contention
costs.

Scenarios (each runs for --seconds, on real threads, each with its own connection):
  * 1 thread charging 1 wallet (the uncontended figure);
  * N threads charging N different wallets (parallel users);
  * N threads charging the same wallet (one user's charges serialize on its lock).
Printed: charges/s, database queries per charge, and ratios to the uncontended figure.
Every scenario ends with the ledger audit, which must pass.

    .venv/bin/python bench/wallet/run.py [--seconds 5] [--threads 4]

Only 127.0.0.1 is contacted; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB_NAME = "tokenpass_bench_wallet"
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")


def prepare() -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    os.environ["DATABASE_URL"] = f"{PG_URL}/{DB_NAME}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    os.environ["CELERY_BROKER_URL"] = "memory://"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def scenario(name: str, *, threads: int, same_wallet: bool, seconds: float) -> float:
    from django.db import connection

    from accounts.models import User
    from partners.models import Application, Partner
    from wallet import services
    from wallet.audit import wallet_audit_run
    from wallet.models import Price, PriceModel

    partner, _ = Partner.objects.get_or_create(name="Bench vendor", status="active")
    app, _ = Application.objects.get_or_create(
        name="Bench app",
        defaults={
            "partner": partner,
            "client_type": "confidential",
            "authorization_grant_type": "authorization-code",
            "redirect_uris": "https://bench.example/cb",
        },
    )
    model, created = PriceModel.objects.get_or_create(
        name="bench-model", defaults={"vendor": partner, "context_window": 128_000}
    )
    if created:
        from django.utils import timezone

        Price.objects.create(
            model=model,
            effective_from=timezone.now(),
            input_per_million=1_000_000,
            cached_input_per_million=100_000,
            output_per_million=2_000_000,
        )
    stamp = time.monotonic_ns()
    users = [
        User.objects.create_user(phone=f"+8613{(stamp + i) % 10**9:09d}", password=None)
        for i in range(1 if same_wallet else threads)
    ]
    for user in users:
        services.wallet_topup_credit(
            provider="bench", provider_transaction_id=f"{stamp}-{user.pk}", user=user, amount=10**12
        )
    counts = [0] * threads
    queries = [0] * threads
    deadline = time.monotonic() + seconds
    barrier = threading.Barrier(threads)

    def query_counter(index: int):
        def wrapper(execute, sql, params, many, context):
            queries[index] += 1
            return execute(sql, params, many, context)

        return wrapper

    def work(index: int) -> None:
        user = users[0 if same_wallet else index]
        try:
            barrier.wait()
            with connection.execute_wrapper(query_counter(index)):
                while time.monotonic() < deadline:
                    services.wallet_charge(
                        user=user,
                        app=app,
                        model="bench-model",
                        input_tokens=1000,
                        cached_input_tokens=0,
                        output_tokens=100,
                        idempotency_key=f"{stamp}-{index}-{counts[index]}",
                    )
                    counts[index] += 1
        finally:
            connection.close()

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    total = sum(counts)
    rate = total / elapsed
    audit = wallet_audit_run()
    print(
        f"{name:<34} {rate:9.1f} charges/s  {sum(queries) / max(total, 1):5.1f} queries/charge"
        f"  audit {'ok' if audit.ok else 'FAILED'}",
        flush=True,
    )
    if not audit.ok:
        sys.exit(f"ledger audit failed: {audit.problems[:5]}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    prepare()
    n = args.threads
    one = scenario("1 thread, 1 wallet", threads=1, same_wallet=True, seconds=args.seconds)
    many = scenario(f"{n} threads, {n} wallets", threads=n, same_wallet=False, seconds=args.seconds)
    same = scenario(f"{n} threads, 1 wallet", threads=n, same_wallet=True, seconds=args.seconds)
    print(f"parallel users / uncontended:      {many / one:5.2f}")
    print(f"one contended wallet / uncontended: {same / one:5.2f}")


if __name__ == "__main__":
    main()
