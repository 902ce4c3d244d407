"""Every write to the wallet. Views, the API, admin actions, commands and tasks call these.

Each value-moving service runs in its own durable transaction, locks the user's accounts
(see wallet.ledger for the lock order), re-reads state under the lock and posts one balanced
ledger transaction. Requests from apps carry an idempotency key: a replay returns the first
result, the same key with a different request raises IdempotencyConflict.
"""

import hashlib
import json
import secrets
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.audit import audit_event_record
from accounts.models import AuditEvent, User
from partners.models import Application
from partners.webhooks.services import webhook_charge_refunded_enqueue
from wallet import splits
from wallet.exceptions import (
    AllowanceExceeded,
    CodeNotRedeemable,
    HoldNotOpen,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidRequest,
    NotFound,
    RefundTooLarge,
    TooManyAttempts,
)
from wallet.ledger import (
    balance_deltas_fold,
    ledger_post,
    system_account,
    user_accounts_lock,
)
from wallet.models import (
    Bucket,
    Charge,
    Hold,
    HoldAllocation,
    IdempotencyKey,
    LedgerAccount,
    LedgerTransaction,
    PaymentTopUp,
    Plan,
    PlanGrant,
    Price,
    RedemptionBatch,
    RedemptionCode,
    Refund,
    SpendingAllowance,
    Subscription,
)
from wallet.pricing import Usage, cost_compute, price_in_force, usage_validate

Kind = LedgerAccount.Kind
TxKind = LedgerTransaction.Kind
FOLD_BATCH = 10_000

# ---------------------------------------------------------------------------------------------
# Validation and idempotency


def amount_validate(amount: Any, *, field: str = "amount", allow_zero: bool = False) -> int:
    """A positive integer no larger than WALLET_MAX_AMOUNT, or InvalidRequest."""
    low = 0 if allow_zero else 1
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int)
        or not low <= amount <= settings.WALLET_MAX_AMOUNT
    ):
        raise InvalidRequest(
            _("%(field)s must be an integer between %(low)s and %(high)s.")
            % {"field": field, "low": low, "high": settings.WALLET_MAX_AMOUNT},
            details={"field": field},
        )
    return amount


def idempotency_key_validate(key: Any) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= 255 or not key.isprintable():
        raise InvalidRequest(
            _("The idempotency key must be 1 to 255 printable characters."),
            details={"field": "idempotency_key"},
        )
    return key


def request_hash(*, operation: str, request: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"operation": operation, "request": request}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to commit or roll back.
CLAIM_SQL = """INSERT INTO wallet_idempotencykey
    (app_id, key, operation, request_hash, result, created_at)
VALUES (%s, %s, %s, %s, '{}'::jsonb, %s)
ON CONFLICT DO NOTHING RETURNING id, result"""
# The same, the result holding a primary key reserved for the row the request creates.
CLAIM_RESERVING_SQL = """INSERT INTO wallet_idempotencykey
    (app_id, key, operation, request_hash, result, created_at)
VALUES (
    %s, %s, %s, %s,
    jsonb_build_object(%s::text, nextval(pg_get_serial_sequence(%s, 'id'))),
    %s
)
ON CONFLICT DO NOTHING RETURNING id, result"""


def _idempotency_claim(
    *,
    app: Application | None,
    key: str,
    operation: str,
    request: dict[str, Any],
    reserve: type[models.Model] | None = None,
) -> tuple[IdempotencyKey, bool]:
    """Insert the key, or find the first request's record. Returns (record, is_replay).

    A concurrent request with the same key waits on the unique index until the first one
    commits (then it replays) or rolls back (then it goes ahead itself). With ``reserve``, the
    new record's result is already {model name: a fresh primary key of that model}: the
    service creates its row with that key, so the result needs no second write (a request
    that fails rolls the record back with everything else)."""
    key = idempotency_key_validate(key)
    digest = request_hash(operation=operation, request=request)
    now = timezone.now()
    assert IdempotencyKey._meta.db_table == "wallet_idempotencykey"
    if connection.vendor != "postgresql":
        return _idempotency_claim_portable(
            app=app, key=key, operation=operation, digest=digest, reserve=reserve, now=now
        )
    params: list[Any] = [app.pk if app is not None else None, key, operation, digest]
    if reserve is not None:
        params += [reserve._meta.model_name or "", reserve._meta.db_table]
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_RESERVING_SQL if reserve is not None else CLAIM_SQL, [*params, now])
        row = cursor.fetchone()
    if row is not None:
        result = json.loads(row[1]) if isinstance(row[1], str) else row[1]
        record = IdempotencyKey(
            pk=row[0],
            app=app,
            key=key,
            operation=operation,
            request_hash=digest,
            result=result,
            created_at=now,
        )
        record._state.adding = False
        return record, False
    return _idempotency_replay(app=app, key=key, digest=digest), True


def _idempotency_replay(*, app: Application | None, key: str, digest: str) -> IdempotencyKey:
    """The first request's record for a key already taken; IdempotencyConflict if this
    request's body differs."""
    existing = IdempotencyKey.objects.filter(key=key).filter(
        Q(app=app) if app is not None else Q(app__isnull=True)
    )
    record = existing.get()
    if record.request_hash != digest:
        raise IdempotencyConflict(details={"idempotency_key": key})
    return record


def _idempotency_claim_portable(
    *,
    app: Application | None,
    key: str,
    operation: str,
    digest: str,
    reserve: type[models.Model] | None,
    now: datetime,
) -> tuple[IdempotencyKey, bool]:
    """``_idempotency_claim`` for the local demo's SQLite (no ON CONFLICT ... RETURNING, no
    sequences to reserve from). SQLite has one writer at a time, and this transaction holds
    the write lock from the key's INSERT on, so the next primary key cannot be taken by
    another request before the service inserts its row."""
    try:
        with transaction.atomic():
            record = IdempotencyKey.objects.create(
                app=app,
                key=key,
                operation=operation,
                request_hash=digest,
                result={},
                created_at=now,
            )
    except IntegrityError:
        return _idempotency_replay(app=app, key=key, digest=digest), True
    if reserve is not None:
        last = reserve._default_manager.order_by("-pk").values_list("pk", flat=True).first()
        record.result = {reserve._meta.model_name or "": (last or 0) + 1}
        record.save(update_fields=["result"])
    return record, False


def _idempotency_done(record: IdempotencyKey, **result: int) -> None:
    record.result = result
    record.save(update_fields=["result"])


# ---------------------------------------------------------------------------------------------
# Buckets


def _bucket_order() -> list[Any]:
    # Soonest-expiring first; buckets that never expire last.
    return [F("expires_at").asc(nulls_last=True), "pk"]


def _buckets_expire_due(*, wallet: LedgerAccount, now: datetime) -> int:
    """Move what is left in the wallet's expired buckets to breakage. Caller holds the wallet
    lock. Returns the number of buckets expired."""
    due = list(
        Bucket.objects.filter(
            wallet=wallet, expired_at__isnull=True, remaining__gt=0, expires_at__lte=now
        ).order_by("pk")
    )
    _buckets_expire(wallet=wallet, due=due, now=now)
    return len(due)


def _buckets_expire(*, wallet: LedgerAccount, due: list[Bucket], now: datetime) -> None:
    """Post each of ``due`` (the wallet's buckets past their expiry, in primary-key order) to
    breakage and mark it expired. Caller holds the wallet lock."""
    breakage = system_account(Kind.BREAKAGE) if due else None
    for bucket in due:
        assert breakage is not None
        ledger_post(
            kind=TxKind.EXPIRY,
            reference=f"bucket-expiry:{bucket.pk}",
            legs=[(wallet, -bucket.remaining), (breakage, bucket.remaining)],
            metadata={"bucket": bucket.pk, "source": bucket.source},
        )
        Bucket.objects.filter(pk=bucket.pk).update(remaining=0, expired_at=now)


def _wallet_spend(*, wallet: LedgerAccount, amount: int, now: datetime) -> list[tuple[Bucket, int]]:
    """Expire the wallet's due buckets, check its balance and take ``amount`` from its live
    buckets, soonest-expiring first, with one read of the buckets. ``wallet`` was read under
    its lock (``user_accounts_lock``). Returns what was taken from which bucket; raises
    InsufficientBalance (the caller's transaction then rolls back the expiries too)."""
    buckets = list(
        Bucket.objects.filter(wallet=wallet, remaining__gt=0, expired_at__isnull=True).order_by(
            *_bucket_order()
        )
    )
    due = sorted(
        (b for b in buckets if b.expires_at is not None and b.expires_at <= now),
        key=lambda b: b.pk,
    )
    _buckets_expire(wallet=wallet, due=due, now=now)
    balance = wallet.balance - sum(bucket.remaining for bucket in due)
    if balance < amount:
        raise InsufficientBalance(details={"available": balance, "required": amount})
    expired = {bucket.pk for bucket in due}
    taken: list[tuple[Bucket, int]] = []
    left = amount
    for bucket in buckets:
        if left == 0:
            break
        if bucket.pk in expired:
            continue
        take = min(left, bucket.remaining)
        Bucket.objects.filter(pk=bucket.pk).update(remaining=F("remaining") - take)
        taken.append((bucket, take))
        left -= take
    if left:
        # The balance equals the sum of the buckets; reaching this means that invariant broke.
        raise InsufficientBalance(_("The wallet's buckets do not cover its balance."))
    return taken


def _spendable_balance(*, wallet: LedgerAccount, now: datetime) -> int:
    """Expire due buckets, then return the wallet's balance re-read under the lock."""
    _buckets_expire_due(wallet=wallet, now=now)
    wallet.refresh_from_db(fields=["balance"])
    return wallet.balance


def _bucket_credit(
    *,
    wallet: LedgerAccount,
    source: str,
    amount: int,
    expires_at: datetime | None,
    ledger_tx: LedgerTransaction,
) -> Bucket:
    return Bucket.objects.create(
        wallet=wallet,
        source=source,
        amount=amount,
        remaining=amount,
        expires_at=expires_at,
        credit_transaction=ledger_tx,
    )


def _credit(
    *,
    user: User,
    amount: int,
    source_account: LedgerAccount,
    bucket_source: str,
    expires_at: datetime | None,
    kind: str,
    reference: str,
    metadata: dict[str, Any] | None = None,
) -> Bucket:
    """Credit the user's wallet from ``source_account`` into a new bucket. Inside a
    transaction; locks the user's accounts."""
    wallet, _holds = user_accounts_lock(user=user)
    ledger_tx = ledger_post(
        kind=kind,
        reference=reference,
        legs=[(source_account, -amount), (wallet, amount)],
        metadata=metadata,
    )
    return _bucket_credit(
        wallet=wallet,
        source=bucket_source,
        amount=amount,
        expires_at=expires_at,
        ledger_tx=ledger_tx,
    )


# ---------------------------------------------------------------------------------------------
# Allowances


def month_start(now: datetime) -> datetime:
    """Start of the calendar month (UTC) that contains ``now``."""
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(start: datetime) -> datetime:
    return (start + timedelta(days=32)).replace(day=1)


def _allowance_state(*, user: User, app: Application, now: datetime) -> tuple[int, int]:
    """(monthly limit, used this month) of ``app`` on ``user``'s wallet, in one statement:
    used is the month's charges net of refunds plus the open holds."""
    assert SpendingAllowance._meta.db_table == "wallet_spendingallowance"
    assert Charge._meta.db_table == "wallet_charge" and Hold._meta.db_table == "wallet_hold"
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT
                (SELECT monthly_limit FROM wallet_spendingallowance
                 WHERE user_id = %(user)s AND app_id = %(app)s),
                (SELECT COALESCE(SUM(amount - refunded_amount), 0) FROM wallet_charge
                 WHERE user_id = %(user)s AND app_id = %(app)s AND created_at >= %(since)s),
                (SELECT COALESCE(SUM(amount), 0) FROM wallet_hold
                 WHERE user_id = %(user)s AND app_id = %(app)s AND status = %(open)s)""",
            {"user": user.pk, "app": app.pk, "since": month_start(now), "open": Hold.Status.OPEN},
        )
        limit, charged, held = cursor.fetchone()
    if limit is None:
        limit = settings.WALLET_DEFAULT_MONTHLY_ALLOWANCE
    return int(limit), int(charged) + int(held)


def allowance_limit(*, user: User, app: Application) -> int:
    return _allowance_state(user=user, app=app, now=timezone.now())[0]


def allowance_used(*, user: User, app: Application, now: datetime) -> int:
    """Tokens the app took from the user this month, net of refunds, plus its open holds."""
    return _allowance_state(user=user, app=app, now=now)[1]


def _allowance_check(*, user: User, app: Application, amount: int, now: datetime) -> None:
    """Raise AllowanceExceeded if ``amount`` more would pass the month's allowance. Caller
    holds the user's wallet lock, which serializes every spend of this user."""
    limit, used = _allowance_state(user=user, app=app, now=now)
    if used + amount > limit:
        raise AllowanceExceeded(details={"monthly_limit": limit, "used": used, "requested": amount})


@transaction.atomic
def allowance_set(*, user: User, app: Application, monthly_limit: int) -> SpendingAllowance:
    """Set the monthly allowance of ``app`` on ``user``'s wallet (the consent page calls it)."""
    amount_validate(monthly_limit, field="monthly_limit", allow_zero=True)
    allowance, _created = SpendingAllowance.objects.update_or_create(
        user=user,
        app=app,
        defaults={"monthly_limit": monthly_limit, "updated_at": timezone.now()},
    )
    return allowance


# ---------------------------------------------------------------------------------------------
# Holds, captures, charges, refunds


@transaction.atomic(durable=True)
def wallet_hold_create(
    *,
    user: User,
    app: Application,
    amount: int,
    idempotency_key: str,
    metadata: dict[str, Any] | None = None,
) -> Hold:
    """Reserve ``amount`` tokens of ``user``'s wallet for ``app`` until captured, released or
    expired (settings.WALLET_HOLD_TTL). Raises InvalidRequest, IdempotencyConflict,
    AllowanceExceeded or InsufficientBalance; on any of them nothing is written."""
    amount_validate(amount)
    metadata = metadata or {}
    record, replay = _idempotency_claim(
        app=app,
        key=idempotency_key,
        operation="hold_create",
        request={"user": user.pk, "amount": amount, "metadata": metadata},
        reserve=Hold,
    )
    if replay:
        return Hold.objects.get(pk=record.result["hold"])
    now = timezone.now()
    wallet, holds = user_accounts_lock(user=user)
    _allowance_check(user=user, app=app, amount=amount, now=now)
    taken = _wallet_spend(wallet=wallet, amount=amount, now=now)
    ledger_tx = ledger_post(
        kind=TxKind.HOLD,
        reference=f"hold:{uuid.uuid4().hex}",
        legs=[(wallet, -amount), (holds, amount)],
        metadata={"app": app.pk},
    )
    hold = Hold.objects.create(
        pk=record.result["hold"],
        user=user,
        app=app,
        amount=amount,
        expires_at=now + settings.WALLET_HOLD_TTL,
        transaction=ledger_tx,
        metadata=metadata,
    )
    HoldAllocation.objects.bulk_create(
        [HoldAllocation(hold=hold, bucket=bucket, amount=take) for bucket, take in taken]
    )
    return hold


def _hold_lock(
    *, hold_id: Any, app: Application | None
) -> tuple[Hold, LedgerAccount, LedgerAccount]:
    """Lock the hold's user accounts, then the hold, and return them re-read."""
    filters = {"pk": hold_id} if app is None else {"pk": hold_id, "app": app}
    try:
        user = Hold.objects.select_related("user").get(**filters).user
    except (Hold.DoesNotExist, ValueError, TypeError):
        raise NotFound(_("No such hold.")) from None
    wallet, holds = user_accounts_lock(user=user)
    hold = Hold.objects.select_for_update().get(pk=hold_id)
    return hold, wallet, holds


def _allocations_settle(*, hold: Hold, consume: int, now: datetime) -> tuple[int, int]:
    """Consume ``consume`` tokens of the hold's allocations (soonest-expiring buckets first)
    and give the rest back: to their buckets if still live, to breakage if they expired while
    held. Returns (returned to the wallet, sent to breakage)."""
    allocations = hold.allocations.select_related("bucket").order_by(
        F("bucket__expires_at").asc(nulls_last=True), "bucket__pk"
    )
    returned = expired = 0
    for allocation in allocations:
        take = min(consume, allocation.amount)
        consume -= take
        back = allocation.amount - take
        if not back:
            continue
        bucket = allocation.bucket
        if bucket.expires_at is not None and bucket.expires_at <= now:
            expired += back
        else:
            Bucket.objects.filter(pk=bucket.pk).update(remaining=F("remaining") + back)
            returned += back
    assert consume == 0
    return returned, expired


def _hold_close(
    *,
    hold: Hold,
    wallet: LedgerAccount,
    holds: LedgerAccount,
    status: str,
    reference: str,
    now: datetime,
) -> None:
    """Release an open hold entirely (released by the app or expired)."""
    returned, expired = _allocations_settle(hold=hold, consume=0, now=now)
    ledger_post(
        kind=TxKind.RELEASE,
        reference=reference,
        legs=[
            (holds, -hold.amount),
            (wallet, returned),
            *([(system_account(Kind.BREAKAGE), expired)] if expired else []),
        ],
        metadata={"hold": hold.pk, "status": status},
    )
    hold.status = status
    hold.closed_at = now
    hold.save(update_fields=["status", "closed_at"])


def _split_legs(
    *,
    app: Application,
    price: Price,
    amount: int,
    usage: Usage,
    at: datetime,
    context: splits.SplitContext | None = None,
) -> splits.Split:
    legs = splits.capture_split(
        app=app, price=price, amount=amount, usage=usage, at=at, context=context
    )
    if any(share <= 0 for _account, share in legs) or sum(s for _a, s in legs) != amount:
        raise ValueError("capture_split must return positive shares summing to the amount")
    return legs


@transaction.atomic(durable=True)
def wallet_hold_capture(
    *,
    hold_id: Any,
    app: Application,
    model: str,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    idempotency_key: str,
) -> Charge:
    """Charge real usage against an open hold: the cost (price in force now) is taken up to
    the hold's amount, the rest is released, and the earnings split is posted in the same
    ledger transaction. Raises NotFound, HoldNotOpen (captured, released or expired),
    UnknownModel, InvalidRequest or IdempotencyConflict."""
    usage = usage_validate(
        input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens,
    )
    record, replay = _idempotency_claim(
        app=app,
        key=idempotency_key,
        operation="hold_capture",
        request={"hold": str(hold_id), "model": model, **usage.__dict__},
        reserve=Charge,
    )
    if replay:
        return Charge.objects.select_related("price__model").get(pk=record.result["charge"])
    now = timezone.now()
    hold, wallet, holds = _hold_lock(hold_id=hold_id, app=app)
    if hold.status != Hold.Status.OPEN:
        raise HoldNotOpen(details={"status": hold.status})
    if hold.expires_at <= now:
        raise HoldNotOpen(_("The hold has expired."), details={"status": Hold.Status.EXPIRED})
    price = price_in_force(model_name=model, at=now)
    cost = cost_compute(price=price, usage=usage)
    amount = min(cost, hold.amount)
    split = _split_legs(app=app, price=price, amount=amount, usage=usage, at=now)
    returned, expired = _allocations_settle(hold=hold, consume=amount, now=now)
    ledger_tx = ledger_post(
        kind=TxKind.CAPTURE,
        reference=f"capture:{hold.pk}",
        legs=[
            (holds, -hold.amount),
            (wallet, returned),
            *([(system_account(Kind.BREAKAGE), expired)] if expired else []),
            *split,
        ],
        metadata={"hold": hold.pk, "app": app.pk, "model": model, "cost": cost},
    )
    splits.capture_split_record(split=split, ledger_tx=ledger_tx)
    hold.status = Hold.Status.CAPTURED
    hold.closed_at = now
    hold.save(update_fields=["status", "closed_at"])
    charge = Charge.objects.create(
        pk=record.result["charge"],
        user_id=hold.user_id,
        app=app,
        hold=hold,
        price=price,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        cost=cost,
        amount=amount,
        split=[[account.pk, share] for account, share in split],
        transaction=ledger_tx,
    )
    return charge


@transaction.atomic(durable=True)
def wallet_hold_release(*, hold_id: Any, app: Application, idempotency_key: str) -> Hold:
    """Give all of an open hold back to the wallet. Raises NotFound or HoldNotOpen."""
    record, replay = _idempotency_claim(
        app=app, key=idempotency_key, operation="hold_release", request={"hold": str(hold_id)}
    )
    if replay:
        return Hold.objects.get(pk=record.result["hold"])
    now = timezone.now()
    hold, wallet, holds = _hold_lock(hold_id=hold_id, app=app)
    if hold.status != Hold.Status.OPEN:
        raise HoldNotOpen(details={"status": hold.status})
    _hold_close(
        hold=hold,
        wallet=wallet,
        holds=holds,
        status=Hold.Status.RELEASED,
        reference=f"release:{hold.pk}",
        now=now,
    )
    _idempotency_done(record, hold=hold.pk)
    return hold


@transaction.atomic(durable=True)
def wallet_hold_expire(*, hold_id: int) -> bool:
    """Release a hold whose TTL has passed. Idempotent: returns False if the hold is not open
    or not yet due."""
    now = timezone.now()
    hold, wallet, holds = _hold_lock(hold_id=hold_id, app=None)
    if hold.status != Hold.Status.OPEN or hold.expires_at > now:
        return False
    _hold_close(
        hold=hold,
        wallet=wallet,
        holds=holds,
        status=Hold.Status.EXPIRED,
        reference=f"hold-expiry:{hold.pk}",
        now=now,
    )
    return True


def wallet_holds_expire_due(*, limit: int = 1000) -> int:
    """Expire every open hold past its TTL (the beat task calls it). Returns how many."""
    due = Hold.objects.filter(status=Hold.Status.OPEN, expires_at__lte=timezone.now())
    ids = list(due.order_by("expires_at").values_list("pk", flat=True)[:limit])
    return sum(1 for hold_id in ids if wallet_hold_expire(hold_id=hold_id))


@transaction.atomic(durable=True)
def wallet_charge(
    *,
    user: User,
    app: Application,
    model: str,
    input_tokens: int,
    cached_input_tokens: int,
    output_tokens: int,
    idempotency_key: str,
) -> Charge:
    """Charge a known usage in one step. Raises InvalidRequest, UnknownModel,
    IdempotencyConflict, AllowanceExceeded or InsufficientBalance (nothing is written)."""
    usage = usage_validate(
        input_tokens=input_tokens,
        cached_input_tokens=cached_input_tokens,
        output_tokens=output_tokens,
    )
    record, replay = _idempotency_claim(
        app=app,
        key=idempotency_key,
        operation="charge",
        request={"user": user.pk, "model": model, **usage.__dict__},
        reserve=Charge,
    )
    if replay:
        return Charge.objects.select_related("price__model").get(pk=record.result["charge"])
    now = timezone.now()
    price = price_in_force(model_name=model, at=now)
    cost = cost_compute(price=price, usage=usage)
    # The split's reads that need no lock, before the wallet's lock: a user's charges queue
    # on it, so it is held for as few statements as possible.
    context = splits.SplitContext()
    splits.split_prefetch(app=app, price=price, at=now, context=context)
    wallet, _holds = user_accounts_lock(user=user)
    _allowance_check(user=user, app=app, amount=cost, now=now)
    _wallet_spend(wallet=wallet, amount=cost, now=now)
    split = _split_legs(app=app, price=price, amount=cost, usage=usage, at=now, context=context)
    ledger_tx = ledger_post(
        kind=TxKind.CHARGE,
        reference=f"charge:{uuid.uuid4().hex}",
        legs=[(wallet, -cost), *split],
        metadata={"app": app.pk, "model": model},
    )
    splits.capture_split_record(split=split, ledger_tx=ledger_tx)
    return Charge.objects.create(
        pk=record.result["charge"],
        user=user,
        app=app,
        price=price,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        cost=cost,
        amount=cost,
        split=[[account.pk, share] for account, share in split],
        transaction=ledger_tx,
    )


@transaction.atomic(durable=True)
def wallet_refund(
    *,
    charge_id: Any,
    app: Application,
    amount: int,
    idempotency_key: str,
    reason: str = "",
) -> Refund:
    """Give back ``amount`` of a charge (full or partial; never more than its amount in
    total). The earnings split is reversed in proportion, rounding differences fall to the
    platform's revenue. The tokens come back as a non-expiring refund bucket. Raises NotFound,
    RefundTooLarge, InvalidRequest or IdempotencyConflict."""
    amount_validate(amount)
    reason = (reason or "")[:500]
    record, replay = _idempotency_claim(
        app=app,
        key=idempotency_key,
        operation="refund",
        request={"charge": str(charge_id), "amount": amount, "reason": reason},
        reserve=Refund,
    )
    if replay:
        return Refund.objects.get(pk=record.result["refund"])
    try:
        user = Charge.objects.select_related("user").get(pk=charge_id, app=app).user
    except (Charge.DoesNotExist, ValueError, TypeError):
        raise NotFound(_("No such charge.")) from None
    wallet, _holds = user_accounts_lock(user=user)
    charge = Charge.objects.select_for_update().get(pk=charge_id)
    left = charge.amount - charge.refunded_amount
    if amount > left:
        raise RefundTooLarge(details={"refundable": left, "requested": amount})
    before, after = charge.refunded_amount, charge.refunded_amount + amount
    accounts = LedgerAccount.objects.in_bulk([pk for pk, _ in charge.split])
    reversal: list[tuple[LedgerAccount, int]] = []
    for pk, share in charge.split:
        part = share * after // charge.amount - share * before // charge.amount
        reversal.append((accounts[pk], -part))
    rounding = amount + sum(part for _account, part in reversal)
    if rounding:
        reversal.append((system_account(Kind.PLATFORM_REVENUE), -rounding))
    ledger_tx = ledger_post(
        kind=TxKind.REFUND,
        reference=f"refund:{uuid.uuid4().hex}",
        legs=[(wallet, amount), *reversal],
        metadata={"charge": charge.pk, "app": app.pk, "reason": reason},
    )
    _bucket_credit(
        wallet=wallet,
        source=Bucket.Source.REFUND,
        amount=amount,
        expires_at=None,
        ledger_tx=ledger_tx,
    )
    charge.refunded_amount = after
    charge.save(update_fields=["refunded_amount"])
    refund = Refund.objects.create(
        pk=record.result["refund"],
        charge=charge,
        amount=amount,
        reason=reason,
        transaction=ledger_tx,
    )
    # The app's partner hears of it through the webhook outbox, written in this transaction
    # and delivered after commit.
    webhook_charge_refunded_enqueue(refund=refund)
    return refund


# ---------------------------------------------------------------------------------------------
# Shared accounts' balances


def wallet_balances_fold(*, rounds: int = 100) -> int:
    """Fold the shared accounts' pending balance deltas into their cached balances (the beat
    task calls it), ``balance_deltas_fold``'s limit at a time, each in its own transaction.
    Returns how many were folded; 0 if another fold is running."""
    folded = 0
    for _round in range(rounds):
        count = balance_deltas_fold(limit=FOLD_BATCH)
        folded += count or 0
        if not count or count < FOLD_BATCH:
            break
    return folded


# ---------------------------------------------------------------------------------------------
# Expiry of buckets


@transaction.atomic(durable=True)
def wallet_buckets_expire(*, wallet_id: int) -> int:
    """Expire the due buckets of one wallet into breakage. Idempotent."""
    wallet = LedgerAccount.objects.select_related("user").get(pk=wallet_id, kind=Kind.WALLET)
    assert wallet.user is not None
    wallet, _holds = user_accounts_lock(user=wallet.user)
    return _buckets_expire_due(wallet=wallet, now=timezone.now())


def wallet_buckets_expire_due(*, limit: int = 1000) -> int:
    """Expire due buckets of every wallet (the beat task calls it). Returns how many."""
    wallet_ids = (
        Bucket.objects.filter(
            expired_at__isnull=True, remaining__gt=0, expires_at__lte=timezone.now()
        )
        .values_list("wallet_id", flat=True)
        .distinct()[:limit]
    )
    return sum(wallet_buckets_expire(wallet_id=wallet_id) for wallet_id in list(wallet_ids))


# ---------------------------------------------------------------------------------------------
# Credits: staff, redemption codes, plans, payments


@transaction.atomic(durable=True)
def wallet_staff_credit(
    *,
    user: User,
    amount: int,
    reason: str,
    actor: User,
    idempotency_key: str,
    source: str = Bucket.Source.COMPENSATION,
    expires_at: datetime | None = None,
) -> Bucket:
    """Credit a user's wallet by hand (compensation or promotion) and record who did it and
    why in the audit log, in the same transaction."""
    amount_validate(amount)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidRequest(_("A reason is required."), details={"field": "reason"})
    source_kinds: dict[str, str] = {
        Bucket.Source.COMPENSATION: Kind.STAFF_COMPENSATION,
        Bucket.Source.PROMOTION: Kind.PROMOTIONS,
    }
    if source not in source_kinds:
        raise InvalidRequest(_("Unknown credit source."), details={"field": "source"})
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidRequest(
            _("The expiry must be in the future."), details={"field": "expires_at"}
        )
    record, replay = _idempotency_claim(
        app=None,
        key=f"staff-credit:{idempotency_key}",
        operation="staff_credit",
        request={
            "user": user.pk,
            "amount": amount,
            "reason": reason,
            "source": source,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    if replay:
        return Bucket.objects.get(pk=record.result["bucket"])
    bucket = _credit(
        user=user,
        amount=amount,
        source_account=system_account(source_kinds[source]),
        bucket_source=source,
        expires_at=expires_at,
        kind=TxKind.STAFF_CREDIT,
        reference=f"staff-credit:{uuid.uuid4().hex}",
        metadata={"actor": actor.pk, "reason": reason},
    )
    audit_event_record(
        action=AuditEvent.Action.WALLET_CREDIT,
        user=user,
        actor=actor,
        data={"amount": amount, "reason": reason, "source": source, "bucket": bucket.pk},
    )
    _idempotency_done(record, bucket=bucket.pk)
    return bucket


CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


def code_normalize(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def code_hash(code: str) -> str:
    return hashlib.sha256(code_normalize(code).encode()).hexdigest()


@transaction.atomic(durable=True)
def redemption_batch_create(
    *,
    name: str,
    amount: int,
    count: int,
    codes_expire_at: datetime,
    credit_valid_days: int | None,
    created_by: User,
) -> tuple[RedemptionBatch, list[str]]:
    """Generate ``count`` random codes (80 bits each) worth ``amount`` tokens. The plain codes
    are returned once, here, and never stored."""
    amount_validate(amount)
    if not 1 <= count <= settings.WALLET_REDEMPTION_BATCH_MAX:
        raise InvalidRequest(
            _("count must be between 1 and %(max)s.")
            % {"max": settings.WALLET_REDEMPTION_BATCH_MAX},
            details={"field": "count"},
        )
    batch = RedemptionBatch.objects.create(
        name=name,
        amount=amount,
        count=count,
        codes_expire_at=codes_expire_at,
        credit_valid_days=credit_valid_days,
        created_by=created_by,
    )
    codes = []
    for _index in range(count):
        raw = "".join(secrets.choice(CODE_ALPHABET) for _char in range(16))
        codes.append("-".join(raw[i : i + 4] for i in range(0, 16, 4)))
    RedemptionCode.objects.bulk_create(
        [RedemptionCode(batch=batch, code_hash=code_hash(code), hint=code[-4:]) for code in codes]
    )
    return batch, codes


def _redeem_failures_key(user: User) -> str:
    return f"wallet:redeem-failures:{user.pk}"


def wallet_code_redeem(*, user: User, code: str) -> Bucket:
    """Redeem a code into ``user``'s wallet. A code is redeemed once, whatever the
    concurrency (a conditional UPDATE claims it). Failures are counted per user and refused
    past WALLET_REDEEM_FAILURE_LIMIT per hour, so codes cannot be guessed by trial. Raises
    CodeNotRedeemable (one error for unknown, used and expired codes) or TooManyAttempts."""
    failures_key = _redeem_failures_key(user)
    if cache.get(failures_key, 0) >= settings.WALLET_REDEEM_FAILURE_LIMIT:
        raise TooManyAttempts()
    try:
        return _code_redeem(user=user, code=code)
    except CodeNotRedeemable:
        cache.add(failures_key, 0, timeout=3600)
        cache.incr(failures_key)
        raise


@transaction.atomic(durable=True)
def _code_redeem(*, user: User, code: str) -> Bucket:
    now = timezone.now()
    found = (
        RedemptionCode.objects.select_related("batch")
        .filter(code_hash=code_hash(code), batch__codes_expire_at__gt=now)
        .first()
    )
    if found is None or found.redeemed_at is not None:
        raise CodeNotRedeemable()
    claimed = RedemptionCode.objects.filter(pk=found.pk, redeemed_at__isnull=True).update(
        redeemed_by=user, redeemed_at=now
    )
    if claimed != 1:
        raise CodeNotRedeemable()
    batch = found.batch
    expires_at = now + timedelta(days=batch.credit_valid_days) if batch.credit_valid_days else None
    return _credit(
        user=user,
        amount=batch.amount,
        source_account=system_account(Kind.PROMOTIONS),
        bucket_source=Bucket.Source.PROMOTION,
        expires_at=expires_at,
        kind=TxKind.REDEMPTION,
        reference=f"redemption:{found.pk}",
        metadata={"batch": batch.pk, "code": found.pk},
    )


def _plan_grant(*, subscription: Subscription, now: datetime) -> PlanGrant | None:
    """Grant the allotment of the period that contains ``now`` unless already granted.
    Inside a transaction."""
    start = month_start(now)
    period: date = start.date()
    user_accounts_lock(user=subscription.user)
    # Re-checked under the user's lock; the unique constraint is the backstop.
    if PlanGrant.objects.filter(subscription=subscription, period_start=period).exists():
        return None
    plan = subscription.plan
    bucket = _credit(
        user=subscription.user,
        amount=plan.allotment,
        source_account=system_account(Kind.PLAN_ALLOTMENTS),
        bucket_source=Bucket.Source.PLAN,
        expires_at=next_month_start(start),
        kind=TxKind.PLAN_GRANT,
        reference=f"plan-grant:{subscription.pk}:{period.isoformat()}",
        metadata={"subscription": subscription.pk, "plan": plan.pk},
    )
    return PlanGrant.objects.create(subscription=subscription, period_start=period, bucket=bucket)


# Not durable: the admin's add view calls it inside its own transaction.
@transaction.atomic
def subscription_create(*, user: User, plan: Plan) -> Subscription:
    """Subscribe ``user`` to ``plan`` and grant this month's allotment now."""
    subscription = Subscription.objects.create(user=user, plan=plan)
    _plan_grant(subscription=subscription, now=timezone.now())
    return subscription


@transaction.atomic(durable=True)
def subscription_grant(*, subscription_id: int) -> PlanGrant | None:
    """Grant the current period's allotment if the subscription is live and has not had it."""
    now = timezone.now()
    subscription = Subscription.objects.select_related("plan", "user").get(pk=subscription_id)
    live = subscription.started_at <= now and (
        subscription.ends_at is None or subscription.ends_at > now
    )
    if not live or not subscription.plan.is_active:
        return None
    return _plan_grant(subscription=subscription, now=now)


def subscriptions_grant_due() -> int:
    """Grant this period's allotments to every live subscription (the beat task)."""
    now = timezone.now()
    period = month_start(now).date()
    pending = (
        Subscription.objects.filter(started_at__lte=now, plan__is_active=True)
        .filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))
        .exclude(grants__period_start=period)
        .values_list("pk", flat=True)
    )
    return sum(1 for pk in list(pending) if subscription_grant(subscription_id=pk))


def wallet_topup_credit(
    *,
    provider: str,
    provider_transaction_id: str,
    user: User,
    amount: int,
    payload: dict[str, Any] | None = None,
) -> tuple[PaymentTopUp, bool]:
    """Credit a paid top-up exactly once per (provider, provider transaction id). Returns
    (top-up, created); a repeated notification returns the first top-up and False."""
    amount_validate(amount)
    existing = PaymentTopUp.objects.filter(
        provider=provider, provider_transaction_id=provider_transaction_id
    )
    try:
        return _topup_credit(
            provider=provider,
            provider_transaction_id=provider_transaction_id,
            user=user,
            amount=amount,
            payload=payload or {},
        ), True
    except IntegrityError:
        # A concurrent or earlier notification for the same payment won.
        topup = existing.first()
        if topup is None:
            raise
        return topup, False


@transaction.atomic(durable=True)
def _topup_credit(
    *,
    provider: str,
    provider_transaction_id: str,
    user: User,
    amount: int,
    payload: dict[str, Any],
) -> PaymentTopUp:
    topup = PaymentTopUp.objects.filter(
        provider=provider, provider_transaction_id=provider_transaction_id
    ).first()
    if topup is not None:
        raise IntegrityError("already credited")
    bucket = _credit(
        user=user,
        amount=amount,
        source_account=system_account(Kind.TOPUP_CLEARING),
        bucket_source=Bucket.Source.PURCHASE,
        expires_at=None,
        kind=TxKind.TOPUP,
        reference=f"payment:{provider}:{provider_transaction_id}"[:200],
        metadata={"provider": provider, "provider_transaction_id": provider_transaction_id},
    )
    return PaymentTopUp.objects.create(
        provider=provider,
        provider_transaction_id=provider_transaction_id,
        user=user,
        amount=amount,
        transaction=bucket.credit_transaction,
        payload=payload,
    )
