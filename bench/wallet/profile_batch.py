"""Where the time of one usage batch goes: 1,000-record POST /api/wallet/usage/batch/ requests
through the whole Django stack (middleware, OAuth, DRF, the service) in this one process,
with production settings on PostgreSQL (database tokenpass_prof_batch, recreated each run).

Printed: CPU and wall time per request in this process (PostgreSQL's own time is in the wall
time only), SQL statements per request, and a cProfile of the measured requests.

    .venv/bin/python bench/wallet/profile_batch.py [--requests 5] [--agreements] [--varied]
                                                   [--top 30] [--sort cumulative]

--agreements gives the app's partner a tiered revenue share and the model a capability
purchase and a co-building commitment, so that every record's split has four lines; --varied
gives every record a different usage (the benchmark's records are all the same).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402
from bench.wallet.run import BATCH, PG_URL, RECORD, server_env  # noqa: E402

DB_NAME = "tokenpass_prof_batch"


def setup() -> None:
    recreate_database(DB_NAME)
    os.environ.update(server_env())
    os.environ["DATABASE_URL"] = f"{PG_URL}/{DB_NAME}"
    os.environ["ALLOWED_HOSTS"] = "127.0.0.1,testserver"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed(*, agreements: bool) -> str:
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone
    from oauth2_provider.models import AccessToken

    from accounts.models import User
    from partners.agreements import services as agreement_services
    from partners.agreements.models import Agreement
    from partners.models import Application, Partner
    from wallet import services
    from wallet.models import Price, PriceModel

    partner = Partner.objects.create(name="Profile partner", status="active")
    vendor = Partner.objects.create(name="Profile vendor", status="active")
    app = Application.objects.create(
        name="Profile app",
        partner=partner,
        client_type="confidential",
        authorization_grant_type="authorization-code",
        redirect_uris="https://bench.example/cb",
    )
    model = PriceModel.objects.create(name=RECORD["model"], vendor=vendor, context_window=128000)
    since = timezone.now() - timedelta(days=1)
    Price.objects.create(
        model=model,
        effective_from=since,
        input_per_million=1_000_000,
        cached_input_per_million=100_000,
        output_per_million=2_000_000,
    )
    if agreements:
        agreement_services.agreement_create(
            partner_id=partner.pk,
            kind=Agreement.Kind.REVENUE_SHARE,
            share_bps=7000,
            tiers=[{"from": 10**9, "bps": 8500}],
            effective_from=since,
        )
        agreement_services.agreement_create(
            partner_id=vendor.pk,
            kind=Agreement.Kind.CAPABILITY_PURCHASE,
            model_name=model.name,
            input_per_million=100_000,
            output_per_million=200_000,
            effective_from=since,
        )
        builder = Partner.objects.create(name="Profile builder", status="active")
        agreement_services.agreement_create(
            partner_id=builder.pk,
            kind=Agreement.Kind.CO_BUILDING,
            model_name=model.name,
            input_per_million=50_000,
            output_per_million=50_000,
            committed_amount=10**12,
            share_bps=300,
            effective_from=since,
        )
    user = User.objects.create_user(phone="+8613700000001", password=None)
    services.wallet_topup_credit(
        provider="profile", provider_transaction_id="seed", user=user, amount=10**13
    )
    services.allowance_set(user=user, app=app, monthly_limit=settings.WALLET_MAX_AMOUNT)
    token = "profile-batch-token-" + "x" * 24
    AccessToken.objects.create(
        user=user,
        application=app,
        token=token,
        scope="wallet:charge",
        expires=timezone.now() + timedelta(hours=2),
    )
    return token


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--agreements", action="store_true")
    parser.add_argument("--varied", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="cumulative")
    args = parser.parse_args()
    setup()
    token = seed(agreements=args.agreements)

    from django.db import connection
    from django.test import Client

    client = Client(
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_X_FORWARDED_PROTO="https",
        HTTP_HOST="testserver",
    )
    records = [RECORD] * BATCH
    if args.varied:
        # Every record a different usage, as real traffic is: nothing computed for one record
        # can be reused for the next.
        records = [
            {**RECORD, "input_tokens": 500 + n, "cached_input_tokens": n % 7, "output_tokens": n}
            for n in range(BATCH)
        ]
    body = json.dumps({"records": records})
    statements = [0]
    timings: dict[str, list[float]] = {}

    def count(execute, sql, params, many, context):
        statements[0] += 1
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            label = " ".join(sql.split())[:90]
            timings.setdefault(label, []).append(time.perf_counter() - started)

    def post() -> None:
        response = client.post(
            "/api/wallet/usage/batch/",
            body,
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=uuid.uuid4().hex,
        )
        assert response.status_code == 200, response.content[:500]
        assert json.loads(response.content)["charged"] == BATCH

    for _ in range(2):  # warm-up: imports, caches, the first connection
        post()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    ticks = os.sysconf("SC_CLK_TCK")

    def backend_cpu() -> float:
        # utime + stime of the PostgreSQL backend serving this process (proc(5)), in seconds.
        fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    profiler = cProfile.Profile()
    cpu, wall = time.process_time(), time.perf_counter()
    with connection.execute_wrapper(count):
        profiler.enable()
        for _ in range(args.requests):
            post()
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    n = args.requests
    print(
        f"{n} requests of {BATCH} records: {1000 * cpu / n:.0f} ms CPU and {1000 * wall / n:.0f} ms"
        f" wall per request (profiled), {statements[0] / n:.1f} SQL statements per request"
    )
    print("wall time per request of each SQL statement (ms, including sending the parameters):")
    for label, spent in sorted(timings.items(), key=lambda item: -sum(item[1])):
        print(f"  {1000 * sum(spent) / n:7.2f}  x{len(spent) / n:<4g} {label}")
    stats = pstats.Stats(profiler)
    by_package: dict[str, float] = {}
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "site-packages/" in filename:
            package = filename.split("site-packages/")[1].split("/")[0]
        elif str(ROOT) in filename:
            package = "tokenpass " + filename.replace(str(ROOT) + "/", "")
        elif filename.startswith("~") or filename.startswith("<"):
            package = "builtins"
        else:
            package = "stdlib " + Path(filename).name
        by_package[package] = by_package.get(package, 0.0) + tottime
    print("own time per request by package or file (ms, profiled):")
    for package, spent in sorted(by_package.items(), key=lambda item: -item[1])[:25]:
        print(f"  {1000 * spent / n:7.2f}  {package}")
    stats.sort_stats(args.sort).print_stats(args.top)
    runs = max(n, 10)
    cpu, wall, db = time.process_time(), time.perf_counter(), backend_cpu()
    for _ in range(runs):
        post()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    db = backend_cpu() - db
    print(
        f"without the profiler ({runs} requests): {1000 * cpu / runs:.0f} ms CPU in this process,"
        f" {1000 * db / runs:.0f} ms CPU in its PostgreSQL backend, {1000 * wall / runs:.0f} ms"
        " wall per request"
    )


if __name__ == "__main__":
    main()
