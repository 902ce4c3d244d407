"""One single charge, profiled in one process: POST /api/wallet/charges/ through Django's full
request stack (middleware, DRF, OAuth bearer authentication with an RFC 9068 JWT access
token) with config.settings.production, against its own database (tokenpass_prof_charge,
recreated each run). The app's partner has a tiered revenue share and the model's vendor a
capability purchase, so the split pays two partners and the platform.

Printed: the SQL statements of one charge (CaptureQueriesContext), CPU milliseconds per
charge over --charges requests, and the functions that take the most cumulative time.

    .venv/bin/python bench/wallet/profile_charge.py [--charges 300] [--top 40] [--sql]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The HTTP run's production settings and database server.
from run import PG_URL, ROOT, recreate_database, server_env

DB_NAME = "tokenpass_prof_charge"


def setup() -> None:
    recreate_database(DB_NAME)
    # As gunicorn runs in bench/wallet/run.py, on this script's own database; the test
    # client's requests come to "testserver".
    env = server_env()
    env.update({"DATABASE_URL": f"{PG_URL}/{DB_NAME}", "ALLOWED_HOSTS": "testserver"})
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def seed() -> str:
    """A funded user, a charging app, a priced model, two agreements; returns a JWT access
    token with wallet:charge."""
    from datetime import timedelta
    from types import SimpleNamespace

    from django.conf import settings
    from django.utils import timezone
    from oauth2_provider.models import AccessToken

    from accounts.models import User
    from partners.agreements.models import Agreement
    from partners.agreements.services import agreement_create
    from partners.models import Application, Partner
    from partners.oauth.tokens import access_token_generate
    from wallet import services
    from wallet.models import Price, PriceModel

    now = timezone.now()
    partner = Partner.objects.create(name="Profile partner", status="active")
    vendor = Partner.objects.create(name="Profile vendor", status="active")
    app = Application.objects.create(
        name="Profile app",
        partner=partner,
        client_type="confidential",
        authorization_grant_type="authorization-code",
        redirect_uris="https://profile.example/cb",
    )
    model = PriceModel.objects.create(name="profile-model", vendor=vendor, context_window=128000)
    Price.objects.create(
        model=model,
        effective_from=now - timedelta(days=1),
        input_per_million=1_000_000,
        cached_input_per_million=100_000,
        output_per_million=2_000_000,
    )
    agreement_create(
        partner_id=partner.pk,
        kind=Agreement.Kind.REVENUE_SHARE,
        effective_from=now - timedelta(days=1),
        share_bps=1000,
        tiers=[{"from": 10**9, "bps": 1500}],
    )
    agreement_create(
        partner_id=vendor.pk,
        kind=Agreement.Kind.CAPABILITY_PURCHASE,
        effective_from=now - timedelta(days=1),
        model_name="profile-model",
        input_per_million=500_000,
        output_per_million=1_000_000,
    )
    user = User.objects.create_user(phone="+8613900000001", password=None)
    services.wallet_topup_credit(
        provider="profile", provider_transaction_id="seed", user=user, amount=10**13
    )
    services.allowance_set(user=user, app=app, monthly_limit=settings.WALLET_MAX_AMOUNT)
    request = SimpleNamespace(
        client=app, user=user, scopes=["wallet:charge"], expires_in=3600, resource=None
    )
    token = access_token_generate(request)
    AccessToken.objects.create(
        user=user,
        application=app,
        token=token,
        scope="wallet:charge",
        expires=now + timedelta(hours=2),
    )
    return token


# (label, [(path suffix, function name), ...]) of the parts of a charge.
PARTS: list[tuple[str, list[tuple[str, str]]]] = [
    ("request, middleware, DRF (whole)", [("django/test/client.py", "request")]),
    ("authentication (bearer token)", [("rest_framework/request.py", "_authenticate")]),
    ("input validation", [("wallet/api/views.py", "validated")]),
    ("wallet_charge (service, whole)", [("wallet/services.py", "wallet_charge")]),
    (
        "  idempotency claim + result",
        [("wallet/services.py", "_idempotency_claim"), ("wallet/services.py", "_idempotency_done")],
    ),
    ("  pricing", [("wallet/pricing.py", "price_in_force")]),
    ("  locking the wallet", [("wallet/ledger.py", "user_accounts_lock")]),
    ("  allowance", [("wallet/services.py", "_allowance_check")]),
    (
        "  buckets (expiry, balance, draw)",
        [
            ("wallet/services.py", "_spendable_balance"),
            ("wallet/services.py", "_buckets_take"),
            ("wallet/services.py", "_wallet_spend"),
        ],
    ),
    ("  split (agreements, tallies, accounts)", [("wallet/splits.py", "capture_split")]),
    ("  split lines", [("wallet/splits.py", "capture_split_record")]),
    ("  ledger posting", [("wallet/ledger.py", "ledger_post")]),
    ("  commit", [("django/db/backends/base/base.py", "commit")]),
    (
        "response (serializer)",
        [
            ("wallet/api/serializers.py", "charge_represent"),
            ("rest_framework/serializers.py", "data"),
        ],
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=300)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--sql", action="store_true", help="print every statement of a charge")
    args = parser.parse_args()
    setup()
    token = seed()

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_X_FORWARDED_PROTO="https",
        enforce_csrf_checks=True,
    )
    body = {"model": "profile-model", "input_tokens": 1000, "output_tokens": 100}

    def charge() -> None:
        response = client.post(
            "/api/wallet/charges/",
            body,
            content_type="application/json",
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, (response.status_code, response.content[:500])

    for _ in range(20):  # warm-up: imports, keys, connection
        charge()
    with CaptureQueriesContext(connection) as queries:
        charge()
    print(f"SQL statements per charge: {len(queries.captured_queries)}")
    if args.sql:
        for query in queries.captured_queries:
            print(f"  {query['sql'][:220]}")
    started_cpu, started = time.process_time(), time.monotonic()
    for _ in range(args.charges):
        charge()
    cpu, wall = time.process_time() - started_cpu, time.monotonic() - started
    print(
        f"{args.charges} charges, no profiler: {1000 * cpu / args.charges:.2f} ms CPU (this"
        f" process, PostgreSQL not included) and {1000 * wall / args.charges:.2f} ms wall each"
    )
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.charges):
        charge()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = max(stats.total_tt, 1e-9)  # type: ignore[attr-defined]
    print("\nshare of the profiled time (cumulative, so parts overlap where they nest):")
    for label, names in PARTS:
        spent = sum(
            row[3]
            for (path, _line, name), row in stats.stats.items()  # type: ignore[attr-defined]
            if any(path.endswith(suffix) and name == fn for suffix, fn in names)
        )
        print(f"  {label:<34} {100 * spent / total:5.1f} %")
    if args.top:
        stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
