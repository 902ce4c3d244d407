"""Wallet charging throughput: through the HTTP API under gunicorn on PostgreSQL, beside the
floor of the same ledger writes done by plain SQL.

Default (HTTP) run, all on 127.0.0.1, each phase bounded by --seconds:
  * spread: --clients keep-alive clients, each charging its own user's wallet with
    POST /api/wallet/charges/ (one request = one charge);
  * hot: the same clients all charging ONE wallet;
  * batch: the clients posting 1,000-record POST /api/wallet/usage/batch/ requests, each
    client on its own wallet;
and, for each, the floor: the same rows (idempotency key, ledger transaction, its two entries,
charge), the same wallet and bucket UPDATEs and the platform-revenue delta, written by plain
SQL through psycopg from the same number of threads (single charges: one transaction each, the
wallet row locked first; batch: one transaction per 1,000 records, rows sent with COPY, one
UPDATE per balance).
The app has no partner agreements, so a charge's split is one platform-revenue leg.
Printed: rates, API / floor ratios, hot / spread; the ledger audit must pass at the end.

    .venv/bin/python bench/wallet/run.py [--seconds 10] [--clients 8] [--workers N]
                                         [--phases spread,hot,batch]
    .venv/bin/python bench/wallet/run.py --in-process [--seconds 5] [--threads 4]

gunicorn runs config.settings.production (DEBUG off, persistent connections) against its own
database, tokenpass_bench_wallet, recreated each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.client import HTTPConnection, HTTPException
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import (
    PG_URL,
    ROOT,
    free_port,
    production_env,
    recreate_database,
    start_gunicorn,
    stop,
    tree_cpu_seconds,
    wait_for_http,
)

DB_NAME = "tokenpass_bench_wallet"


def prepare() -> None:
    recreate_database(DB_NAME)
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


def in_process_main(args: argparse.Namespace) -> None:
    prepare()
    n = args.threads
    one = scenario("1 thread, 1 wallet", threads=1, same_wallet=True, seconds=args.seconds)
    many = scenario(f"{n} threads, {n} wallets", threads=n, same_wallet=False, seconds=args.seconds)
    same = scenario(f"{n} threads, 1 wallet", threads=n, same_wallet=True, seconds=args.seconds)
    print(f"parallel users / uncontended:      {many / one:5.2f}")
    print(f"one contended wallet / uncontended: {same / one:5.2f}")


# ---------------------------------------------------------------------------------------------
# HTTP run

SEED_SCRIPT = """
import json
from django.conf import settings
from django.utils import timezone
from datetime import timedelta
from oauth2_provider.models import AccessToken
from accounts.models import User
from partners.models import Application, Partner
from wallet import services
from wallet.ledger import system_account
from wallet.models import Bucket, LedgerAccount, Price, PriceModel

partner = Partner.objects.create(name="Bench partner", status="active")
app = Application.objects.create(
    name="Bench app", partner=partner, client_type="confidential",
    authorization_grant_type="authorization-code", redirect_uris="https://bench.example/cb",
)
model = PriceModel.objects.create(name="bench-model", vendor=partner, context_window=128000)
price = Price.objects.create(
    model=model, effective_from=timezone.now() - timedelta(days=1), input_per_million=1000000,
    cached_input_per_million=100000, output_per_million=2000000,
)
users = []
for i in range({users}):
    user = User.objects.create_user(phone="+8613%09d" % (700000000 + i), password=None)
    services.wallet_topup_credit(
        provider="bench", provider_transaction_id="seed-%d" % i, user=user, amount=10**13
    )
    services.allowance_set(user=user, app=app, monthly_limit=settings.WALLET_MAX_AMOUNT)
    token = "bench-wallet-token-%d-%s" % (i, "x" * 24)
    AccessToken.objects.create(
        user=user, application=app, token=token, scope="wallet:charge",
        expires=timezone.now() + timedelta(hours=2),
    )
    wallet = LedgerAccount.objects.get(user=user, kind="wallet")
    bucket = Bucket.objects.get(wallet=wallet)
    users.append({{"id": user.pk, "token": token, "wallet": wallet.pk, "bucket": bucket.pk}})
revenue = system_account(LedgerAccount.Kind.PLATFORM_REVENUE)
with open({out!r}, "w") as handle:
    json.dump({{"app": app.pk, "price": price.pk, "revenue": revenue.pk, "users": users}}, handle)
"""

RECORD = {"model": "bench-model", "input_tokens": 1000, "output_tokens": 100}
COST = 1000 + 200  # 1 token per input token, 2 per output token
BATCH = 1000


def server_env() -> dict[str, str]:
    return production_env(database=DB_NAME)


def drive(port: int, tokens: list[str], *, batch: bool, seconds: float) -> tuple[float, int]:
    """One thread per token, keep-alive, until the deadline. Returns (charges per second,
    failed requests or records)."""
    charged = [0] * len(tokens)
    failed = [0] * len(tokens)
    barrier = threading.Barrier(len(tokens))
    deadline = [0.0]
    body = json.dumps({"records": [RECORD] * BATCH} if batch else RECORD)
    path = "/api/wallet/usage/batch/" if batch else "/api/wallet/charges/"

    def work(i: int) -> None:
        conn = HTTPConnection("127.0.0.1", port, timeout=300)
        headers = {
            "Authorization": f"Bearer {tokens[i]}",
            "Content-Type": "application/json",
            "X-Forwarded-Proto": "https",
        }
        barrier.wait()
        while time.monotonic() < deadline[0]:
            headers["Idempotency-Key"] = uuid.uuid4().hex
            try:
                conn.request("POST", path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, HTTPException):
                # A worker killed on its timeout: count the request as failed, reconnect.
                failed[i] += BATCH if batch else 1
                conn.close()
                conn = HTTPConnection("127.0.0.1", port, timeout=300)
                continue
            if batch and response.status == 200:
                result = json.loads(data)
                charged[i] += result["charged"]
                failed[i] += result["failed"]
            elif response.status == 201:
                charged[i] += 1
            else:
                failed[i] += 1
        conn.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(tokens))]
    deadline[0] = time.monotonic() + seconds
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(charged) / (time.monotonic() - started), sum(failed)


def floor(seed: dict, users: list[dict], *, batch: bool, seconds: float, threads: int) -> float:
    """The same ledger writes by plain SQL (psycopg), from ``threads`` threads: per charge an
    idempotency key, a ledger transaction, its two entries and a charge row; the wallet row
    locked first; the wallet and bucket balances moved and a revenue delta appended (once per
    transaction)."""
    import psycopg

    counts = [0] * threads
    barrier = threading.Barrier(threads)
    deadline = [0.0]
    n = BATCH if batch else 1
    split = json.dumps([[seed["revenue"], COST]])

    def work(i: int) -> None:
        user = users[i % len(users)]
        with psycopg.connect(f"{PG_URL}/{DB_NAME}") as conn:
            barrier.wait()
            while time.monotonic() < deadline[0]:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(
                        "SELECT balance FROM wallet_ledgeraccount WHERE id = %s FOR UPDATE",
                        (user["wallet"],),
                    )
                    keys = [uuid.uuid4().hex for _ in range(n)]
                    cur.execute(
                        "INSERT INTO wallet_idempotencykey"
                        " (app_id, key, operation, request_hash, result, created_at)"
                        " SELECT %s, k, 'charge', md5(k), '{}'::jsonb, now()"
                        " FROM unnest(%s::text[]) AS k",
                        (seed["app"], keys),
                    )
                    cur.execute(
                        "INSERT INTO wallet_ledgertransaction (kind, reference, metadata, created_at)"
                        " SELECT 'charge', 'charge:' || k, '{}'::jsonb, now()"
                        " FROM unnest(%s::text[]) AS k RETURNING id",
                        (keys,),
                    )
                    tx_ids = [row[0] for row in cur.fetchall()]
                    with cur.copy(
                        "COPY wallet_ledgerentry (transaction_id, account_id, amount) FROM STDIN"
                    ) as copy:
                        for tx_id in tx_ids:
                            copy.write_row((tx_id, user["wallet"], -COST))
                            copy.write_row((tx_id, seed["revenue"], COST))
                    with cur.copy(
                        "COPY wallet_charge (user_id, app_id, price_id, input_tokens,"
                        " cached_input_tokens, output_tokens, cost, amount, refunded_amount,"
                        " split, transaction_id, created_at) FROM STDIN"
                    ) as copy:
                        for tx_id in tx_ids:
                            copy.write_row(
                                (
                                    user["id"],
                                    seed["app"],
                                    seed["price"],
                                    1000,
                                    0,
                                    100,
                                    COST,
                                    COST,
                                    0,
                                    split,
                                    tx_id,
                                    "now",
                                )
                            )
                    total = COST * n
                    cur.execute(
                        "UPDATE wallet_bucket SET remaining = remaining - %s WHERE id = %s",
                        (total, user["bucket"]),
                    )
                    cur.execute(
                        "UPDATE wallet_ledgeraccount SET balance = balance + %s WHERE id = %s",
                        (-total, user["wallet"]),
                    )
                    # The platform's revenue moves through a delta, as in the API.
                    cur.execute(
                        "INSERT INTO wallet_balancedelta (account_id, amount, created_at)"
                        " VALUES (%s, %s, now())",
                        (seed["revenue"], total),
                    )
                counts[i] += n

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    deadline[0] = time.monotonic() + seconds
    started = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.monotonic() - started)


def http_main(args: argparse.Namespace) -> None:

    clients = args.clients
    phases = set(args.phases.split(","))
    if not phases <= {"spread", "hot", "batch"}:
        sys.exit(f"unknown phase in --phases {args.phases}")
    spread = hot = batch = spread_floor = hot_floor = batch_floor = 0.0
    spread_failed = hot_failed = batch_failed = 0
    recreate_database(DB_NAME)
    env = server_env()
    python = sys.executable
    quiet: dict = {"cwd": ROOT, "env": env, "check": True, "stdout": subprocess.DEVNULL}
    print(f"preparing database {DB_NAME} ...", flush=True)
    subprocess.run([python, "manage.py", "migrate", "--noinput", "--skip-checks"], **quiet)
    with tempfile.TemporaryDirectory() as workdir:
        out = str(Path(workdir) / "seed.json")
        # users: one per client (spread, batch), then one hot wallet.
        script = SEED_SCRIPT.format(users=clients + 1, out=out)
        subprocess.run([python, "manage.py", "shell", "-c", script], **quiet)
        seed = json.loads(Path(out).read_text())
    users = seed["users"]
    spread_users, hot_user = users[:clients], users[clients]
    port = free_port()
    server = start_gunicorn("config.wsgi:application", port=port, workers=args.workers, env=env)
    try:
        wait_for_http(port)
        tokens = [u["token"] for u in spread_users]
        drive(port, tokens, batch=False, seconds=min(2.0, args.seconds))  # warm-up
        spread_cpu = hot_cpu = 0.0
        if "spread" in phases:
            cpu = tree_cpu_seconds(server.pid)
            spread, spread_failed = drive(port, tokens, batch=False, seconds=args.seconds)
            spread_cpu = tree_cpu_seconds(server.pid) - cpu
        if "hot" in phases:
            cpu = tree_cpu_seconds(server.pid)
            hot, hot_failed = drive(
                port, [hot_user["token"]] * clients, batch=False, seconds=args.seconds
            )
            hot_cpu = tree_cpu_seconds(server.pid) - cpu
        if "batch" in phases:
            batch, batch_failed = drive(port, tokens, batch=True, seconds=args.seconds)
    finally:
        stop(server)
    if "spread" in phases:
        spread_floor = floor(seed, spread_users, batch=False, seconds=args.seconds, threads=clients)
    if "hot" in phases:
        hot_floor = floor(seed, [hot_user], batch=False, seconds=args.seconds, threads=clients)
    if "batch" in phases:
        batch_floor = floor(seed, spread_users, batch=True, seconds=args.seconds, threads=clients)

    audit = subprocess.run(
        [python, "manage.py", "wallet_audit"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    load = os.getloadavg()
    print(
        f"\ngunicorn {args.workers} workers (config/gunicorn.py), {clients} clients,"
        f" {args.seconds:g} s per phase,"
        f" {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(f"{'':34} {'API':>12} {'floor (SQL)':>12} {'API/floor':>10}  failed")
    rows = [
        ("spread", "charges/s, spread over wallets", spread, spread_floor, spread_failed),
        ("hot", "charges/s, one hot wallet", hot, hot_floor, hot_failed),
        ("batch", "usage records/s, 1,000-record batch", batch, batch_floor, batch_failed),
    ]
    for phase, label, api, sql, failed in rows:
        if phase in phases:
            print(f"{label:34} {api:12.1f} {sql:12.1f} {api / sql:10.3f}  {failed}")
    for phase, rate, cpu in (("spread", spread, spread_cpu), ("hot", hot, hot_cpu)):
        if phase in phases:
            per_charge = 1000 * cpu / max(rate * args.seconds, 1)
            print(f"gunicorn CPU per charge, {phase}: {per_charge:5.1f} ms")
    if {"spread", "hot"} <= phases:
        print(f"hot / spread (API):   {hot / spread:6.2f}   (target >= 0.33)")
        print(f"hot / spread (floor): {hot_floor / spread_floor:6.2f}")
    if "batch" in phases:
        print(f"batch records/s (API): {batch:.0f}   (target 10,000)")
    print(f"ledger audit: {'ok' if audit.returncode == 0 else 'FAILED'}")
    if audit.returncode != 0:
        sys.exit(audit.stdout[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 1)
    parser.add_argument("--phases", default="spread,hot,batch")
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    if args.in_process:
        in_process_main(args)
    else:
        http_main(args)


if __name__ == "__main__":
    main()
