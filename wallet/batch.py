"""Usage batches: up to WALLET_BATCH_MAX_RECORDS usage records of one user charged in one
durable transaction, each with the outcome ``services.wallet_charge`` would give it charged on
its own in the same order (a charge, new or replayed, or the error it would raise).

The work is set-based, so that a full batch costs a few dozen statements and little Python:

1. the records' idempotency keys are claimed with one ``INSERT ... ON CONFLICT DO NOTHING``
   (in key order, so two batches never wait on each other), each claimed key already holding
   the id its charge will get (drawn from the charge sequence), so no key is updated later;
2. the wallet is locked once, due buckets expire, and cost, allowance, balance, bucket draws
   (soonest-expiring first) and the split are computed in Python record after record
   (``splits.SplitContext`` carries the month's tier and commitment tallies forward);
3. the ledger transactions, entries, split lines and charges go in with one
   ``INSERT ... SELECT FROM unnest(...)`` each, from arrays, with no model instance per row;
4. the deferred checks (entries sum to zero, foreign keys) are run, then the cached balances
   move, the shared platform and partner rows last: their row locks, which every charge on the
   platform needs, are held only from that UPDATE to the commit.

A record that fails stores nothing (its key is deleted again), so it may be retried.
"""

import hashlib
import json
import os
from datetime import datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from partners.agreements.models import SplitLine
from partners.models import Application
from wallet import splits
from wallet.exceptions import (
    AllowanceExceeded,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidRequest,
    WalletError,
)
from wallet.ledger import UnbalancedTransaction, ledger_balances_move, user_accounts_lock
from wallet.models import (
    Bucket,
    Charge,
    IdempotencyKey,
    LedgerEntry,
    LedgerTransaction,
    Price,
)
from wallet.pricing import Usage, cost_compute, price_in_force, usage_validate
from wallet.services import (
    _bucket_order,
    _spendable_balance,
    _split_legs,
    allowance_limit,
    allowance_used,
    idempotency_key_validate,
    wallet_charge,
)

# The statements below name the tables they write.
assert IdempotencyKey._meta.db_table == "wallet_idempotencykey"
assert Bucket._meta.db_table == "wallet_bucket"
assert LedgerTransaction._meta.db_table == "wallet_ledgertransaction"
assert LedgerEntry._meta.db_table == "wallet_ledgerentry"
assert SplitLine._meta.db_table == "partners_splitline"
assert Charge._meta.db_table == "wallet_charge"


class BatchCharge(NamedTuple):
    """A charge of a batch, new or replayed: the fields of its Charge row, with its price (and
    the price's model) loaded. A tuple, because building 1,000 model instances costs more than
    writing the rows."""

    id: int
    hold_id: int | None
    price: Price
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost: int
    amount: int
    refunded_amount: int
    split: list[list[int]]
    transaction_id: int
    created_at: datetime


class _Record(NamedTuple):
    key: str
    model: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    digest: str


def int_array(values: list[int]) -> str:
    """A PostgreSQL array literal of integers (cast it with ``::bigint[]``). Built by ``join``
    because the driver's array adaptation costs more per element than the database's parse."""
    return "{" + ",".join(map(str, values)) + "}"


def text_array(values: list[str]) -> str:
    """A PostgreSQL array literal of strings (cast it with ``::text[]``): every element double
    quoted, with backslashes and double quotes escaped, which is all the array syntax needs.
    The literal itself is passed as a query parameter."""
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )


def _charge_digest(*, user_id: int, model_json: str, input_: int, cached: int, output: int) -> str:
    # The bytes that services.request_hash(operation="charge", ...) hashes for wallet_charge's
    # request (keys sorted, compact separators), written out: a record then replays a charge
    # made through the single endpoint with the same key and body. A test holds the two equal.
    canonical = (
        f'{{"operation":"charge","request":{{"cached_input_tokens":{cached},'
        f'"input_tokens":{input_},"model":{model_json},"output_tokens":{output},'
        f'"user":{user_id}}}}}'
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _record_validate(key: Any, data: dict[str, Any]) -> tuple[str, str, Usage]:
    """The checks ``wallet_charge`` makes, for a record that is not plainly valid: raises its
    InvalidRequest, or returns the record normalised."""
    key = idempotency_key_validate(key)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(_("A model name is required."), details={"field": "model"})
    usage = usage_validate(
        input_tokens=data.get("input_tokens", 0),
        cached_input_tokens=data.get("cached_input_tokens", 0),
        output_tokens=data.get("output_tokens", 0),
    )
    return key, model, usage


def _keys_claim(
    *, app: Application, digests: dict[str, str]
) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[str, dict[str, Any]]]]:
    """Insert the keys of ``app`` at once, each with the id of the charge it will record (drawn
    from the charge sequence now; a key whose record fails is deleted again, and a gap in the
    sequence is harmless). Returns (claimed key -> (key row id, charge id), taken key ->
    (request hash, result) of the earlier request). A concurrent request holding one of the
    keys makes this wait until it commits (then its record is returned) or rolls back (then
    the key is claimed here); keys go in sorted order so that two batches never deadlock."""
    keys = sorted(digests)
    with connection.cursor() as cursor:
        cursor.execute(
            """WITH seq AS (SELECT pg_get_serial_sequence(%s, 'id')::regclass AS charge_ids)
            INSERT INTO wallet_idempotencykey
                (app_id, key, operation, request_hash, result, created_at)
            SELECT %s, t.key, 'charge', t.hash,
                jsonb_build_object('charge', nextval((SELECT charge_ids FROM seq))), %s
            FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(key, hash, n)
            ORDER BY t.n
            ON CONFLICT (app_id, key) WHERE app_id IS NOT NULL DO NOTHING
            RETURNING id, key, (result ->> 'charge')::bigint""",
            [
                "wallet_charge",
                app.pk,
                timezone.now(),
                text_array(keys),
                text_array([digests[k] for k in keys]),
            ],
        )
        claimed = {key: (pk, charge_id) for pk, key, charge_id in cursor.fetchall()}
    taken = [key for key in keys if key not in claimed]
    earlier: dict[str, tuple[str, dict[str, Any]]] = {}
    if taken:
        rows = IdempotencyKey.objects.filter(app=app, key__in=taken)
        earlier = {
            key: (h, result) for key, h, result in rows.values_list("key", "request_hash", "result")
        }
    return claimed, earlier


def _batch_charge_of(charge: Charge) -> BatchCharge:
    return BatchCharge(
        id=charge.pk,
        hold_id=charge.hold_id,
        price=charge.price,
        input_tokens=charge.input_tokens,
        cached_input_tokens=charge.cached_input_tokens,
        output_tokens=charge.output_tokens,
        cost=charge.cost,
        amount=charge.amount,
        refunded_amount=charge.refunded_amount,
        split=charge.split,
        transaction_id=charge.transaction_id,
        created_at=charge.created_at,
    )


class _Posting(NamedTuple):
    """What one split contributes to every record that has it: the transaction's entries
    (merged per account, sorted, zeros dropped, as ``ledger_post`` writes them), the charge's
    ``split`` column, and the split lines' partner, role, agreement and version, gross, amount
    and token counts."""

    entries: list[tuple[int, int]]
    split: list[list[int]]
    split_json: str
    lines: list[tuple[int, str, int, int, int, int, int, int, int]]


def _posting_of(*, wallet_id: int, cost: int, split: splits.Split) -> _Posting:
    totals: dict[int, int] = {wallet_id: -cost}
    for account, share in split:
        if not isinstance(share, int) or isinstance(share, bool):
            raise TypeError("ledger amounts are integers")
        totals[account.pk] = totals.get(account.pk, 0) + share
    if sum(totals.values()) != 0:
        raise UnbalancedTransaction(f"a charge's legs sum to {sum(totals.values())}")
    legs = [[account.pk, share] for account, share in split]
    return _Posting(
        entries=sorted((pk, amount) for pk, amount in totals.items() if amount),
        split=legs,
        # json.dumps(legs), written out (a list of pairs of integers; a test holds the two equal).
        split_json="[" + ", ".join(f"[{pk}, {share}]" for pk, share in legs) + "]",
        lines=[
            (
                line.partner_id,
                line.role,
                line.agreement.pk,
                line.agreement.version,
                line.gross,
                line.amount,
                line.input_tokens,
                line.cached_input_tokens,
                line.output_tokens,
            )
            for line in split.lines
        ],
    )


def _platform_posting(*, wallet_id: int, revenue_id: int, cost: int) -> _Posting:
    """``_posting_of`` a split that gives all of ``cost`` to the platform's revenue."""
    if not cost:
        return _Posting(entries=[], split=[], split_json="[]", lines=[])
    return _Posting(
        entries=sorted([(wallet_id, -cost), (revenue_id, cost)]),
        split=[[revenue_id, cost]],
        split_json=f"[[{revenue_id}, {cost}]]",
        lines=[],
    )


def usage_batch_charge(
    *, user: User, app: Application, records: list[tuple[str, dict[str, Any]]]
) -> list[BatchCharge | WalletError]:
    """Charge many usage records of one user in one transaction (see the module docstring).
    ``records`` are (idempotency key, {model, input_tokens, cached_input_tokens,
    output_tokens}); the result has one outcome per record, in order: a BatchCharge (new or
    replayed) or the WalletError ``wallet_charge`` would raise for it."""
    if connection.vendor != "postgresql":
        return _usage_batch_charge_one_by_one(user=user, app=app, records=records)
    return _usage_batch_charge_set_based(user=user, app=app, records=records)


@transaction.atomic(durable=True)
def _usage_batch_charge_set_based(
    *, user: User, app: Application, records: list[tuple[str, dict[str, Any]]]
) -> list[BatchCharge | WalletError]:
    outcomes: list[BatchCharge | WalletError | None] = [None] * len(records)
    valid: dict[int, _Record] = {}
    first_of: dict[str, int] = {}
    duplicates: list[int] = []
    cap = settings.WALLET_MAX_TOKEN_COUNT
    model_json: dict[str, str] = {}
    for index, (key, data) in enumerate(records):
        model = data.get("model")
        i = data.get("input_tokens", 0)
        c = data.get("cached_input_tokens", 0)
        o = data.get("output_tokens", 0)
        # The usual record passes these plain checks; any other goes through the validators
        # wallet_charge uses, which either normalise it or give its error.
        if not (
            type(key) is str
            and 0 < len(key) <= 255
            and key.isprintable()
            and type(model) is str
            and model
            and type(i) is int
            and 0 <= i <= cap
            and type(c) is int
            and 0 <= c <= cap
            and type(o) is int
            and 0 <= o <= cap
        ):
            try:
                key, model, usage = _record_validate(key, data)
            except WalletError as error:
                outcomes[index] = error
                continue
            i, c, o = (
                int(usage.input_tokens),
                int(usage.cached_input_tokens),
                int(usage.output_tokens),
            )
        if model not in model_json:
            model_json[model] = json.dumps(model)
        digest = _charge_digest(
            user_id=user.pk, model_json=model_json[model], input_=i, cached=c, output=o
        )
        valid[index] = _Record(key, model, i, c, o, digest)
        if key in first_of:
            duplicates.append(index)
        else:
            first_of[key] = index
    claimed: dict[str, tuple[int, int]] = {}
    if first_of:
        claimed, earlier = _keys_claim(
            app=app, digests={key: valid[index].digest for key, index in first_of.items()}
        )
        replayed: dict[int, int] = {}
        for key, (digest, result) in earlier.items():
            index = first_of[key]
            if digest != valid[index].digest:
                outcomes[index] = IdempotencyConflict(details={"idempotency_key": key})
            else:
                replayed[index] = result["charge"]
        if replayed:
            found = Charge.objects.select_related("price__model").in_bulk(list(replayed.values()))
            for index, charge_id in replayed.items():
                outcomes[index] = _batch_charge_of(found[charge_id])
    todo = sorted(first_of[key] for key in claimed)
    if todo:
        _charge_claimed(
            user=user, app=app, todo=todo, valid=valid, claimed=claimed, outcomes=outcomes
        )
    for index in duplicates:
        record = valid[index]
        first = first_of[record.key]
        if record.digest != valid[first].digest:
            outcomes[index] = IdempotencyConflict(details={"idempotency_key": record.key})
        else:
            outcomes[index] = outcomes[first]
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


def _usage_batch_charge_one_by_one(
    *, user: User, app: Application, records: list[tuple[str, dict[str, Any]]]
) -> list[BatchCharge | WalletError]:
    """The batch for the local demo's SQLite, which has no arrays to write rows from: each
    record charged on its own by ``wallet_charge``, whose outcomes the set-based batch
    reproduces."""
    outcomes: list[BatchCharge | WalletError] = []
    for key, data in records:
        try:
            charge = wallet_charge(
                user=user,
                app=app,
                model=data.get("model"),  # type: ignore[arg-type]  # checked by wallet_charge
                input_tokens=data.get("input_tokens", 0),
                cached_input_tokens=data.get("cached_input_tokens", 0),
                output_tokens=data.get("output_tokens", 0),
                idempotency_key=key,
            )
        except WalletError as error:
            outcomes.append(error)
        else:
            outcomes.append(_batch_charge_of(charge))
    return outcomes


def _charge_claimed(
    *,
    user: User,
    app: Application,
    todo: list[int],
    valid: dict[int, _Record],
    claimed: dict[str, tuple[int, int]],
    outcomes: list[BatchCharge | WalletError | None],
) -> None:
    """Charge the records whose keys this batch claimed, in order, and write them."""
    now = timezone.now()
    wallet, _holds = user_accounts_lock(user=user)
    balance = _spendable_balance(wallet=wallet, now=now)
    limit = allowance_limit(user=user, app=app)
    used = allowance_used(user=user, app=app, now=now)
    live = list(
        Bucket.objects.filter(wallet=wallet, remaining__gt=0, expired_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(*_bucket_order())
        .values_list("pk", "remaining")
    )
    room = [remaining for _pk, remaining in live]
    drawn = [0] * len(live)
    at = 0  # the bucket being drawn: every earlier one is empty
    prices: dict[str, Price | WalletError] = {}
    context = splits.SplitContext()
    # A split that read no tally (no volume tier or commitment among its agreements) depends
    # only on its price and usage, so records with the same ones share it; see SplitContext.
    shared: dict[tuple[int, int, int, int, int], tuple[splits.Split, _Posting]] = {}
    # Prices with no agreement in force for this app: the platform's revenue takes every charge
    # whole (price id -> the revenue account's id). Learnt from the price's first split with an
    # amount, which has a line for every agreement in force, even one that earns nothing.
    unshared: dict[int, int] = {}
    # (record index, price, cost, posting)
    drafts: list[tuple[int, Price, int, _Posting]] = []
    for index in todo:
        record = valid[index]
        price = prices.get(record.model)
        if price is None:
            try:
                price = prices[record.model] = price_in_force(model_name=record.model, at=now)
            except WalletError as error:
                price = prices[record.model] = error
        if isinstance(price, WalletError):
            outcomes[index] = price
            continue
        usage = Usage(record.input_tokens, record.cached_input_tokens, record.output_tokens)
        cost = cost_compute(price=price, usage=usage)
        if used + cost > limit:
            outcomes[index] = AllowanceExceeded(
                details={"monthly_limit": limit, "used": used, "requested": cost}
            )
            continue
        if balance < cost:
            outcomes[index] = InsufficientBalance(details={"available": balance, "required": cost})
            continue
        left = cost
        while left and at < len(room):
            take = min(left, room[at])
            room[at] -= take
            drawn[at] += take
            left -= take
            if not room[at]:
                at += 1
        if left:
            # The balance equals the sum of the buckets; reaching this means it broke.
            raise InsufficientBalance(_("The wallet's buckets do not cover its balance."))
        balance -= cost
        used += cost
        split_key = (
            price.pk,
            cost,
            record.input_tokens,
            record.cached_input_tokens,
            record.output_tokens,
        )
        if price.pk in unshared:
            posting = _platform_posting(
                wallet_id=wallet.pk, revenue_id=unshared[price.pk], cost=cost
            )
        elif split_key in shared:
            posting = shared[split_key][1]
        else:
            split = _split_legs(
                app=app, price=price, amount=cost, usage=usage, at=now, context=context
            )
            posting = _posting_of(wallet_id=wallet.pk, cost=cost, split=split)
            if cost and not split.lines:
                ((revenue, _share),) = split
                unshared[price.pk] = revenue.pk
            if not context.tallies:
                shared[split_key] = (split, posting)
        drafts.append((index, price, cost, posting))
    _buckets_draw(pks=[pk for pk, _remaining in live], drawn=drawn)
    _post(
        user=user, app=app, now=now, drafts=drafts, valid=valid, claimed=claimed, outcomes=outcomes
    )
    failed = [
        claimed[valid[index].key][0]
        for index in todo
        if not isinstance(outcomes[index], BatchCharge)
    ]
    if failed:
        IdempotencyKey.objects.filter(pk__in=failed).delete()
    net: dict[int, int] = {}
    for _index, _price, _cost, posting in drafts:
        for pk, amount in posting.entries:
            net[pk] = net.get(pk, 0) + amount
    # The wallet's cached balance moves; the platform's revenue and the partners' payables get
    # deltas, so that concurrent batches and charges never wait on their rows.
    ledger_balances_move(net=net, user_pks={wallet.pk})


def _buckets_draw(*, pks: list[int], drawn: list[int]) -> None:
    taken = [(pk, take) for pk, take in zip(pks, drawn, strict=True) if take]
    if not taken:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            """UPDATE wallet_bucket AS b SET remaining = b.remaining - v.take
            FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, take) WHERE b.id = v.id""",
            [int_array([pk for pk, _ in taken]), int_array([take for _, take in taken])],
        )


def _post(
    *,
    user: User,
    app: Application,
    now: datetime,
    drafts: list[tuple[int, Price, int, _Posting]],
    valid: dict[int, _Record],
    claimed: dict[str, tuple[int, int]],
    outcomes: list[BatchCharge | WalletError | None],
) -> None:
    """Insert the ledger transactions, their entries, the split lines and the charges of the
    records charged, one INSERT per table from arrays."""
    if not drafts:
        return
    random = os.urandom(16 * len(drafts)).hex()
    references = [f"charge:{random[32 * n : 32 * n + 32]}" for n in range(len(drafts))]
    with connection.cursor() as cursor:
        cursor.execute(
            """INSERT INTO wallet_ledgertransaction (kind, reference, metadata, created_at)
            SELECT %s, t.reference, jsonb_build_object('app', %s::bigint, 'model', t.model), %s
            FROM unnest(%s::text[], %s::text[]) AS t(reference, model)
            RETURNING reference, id""",
            [
                LedgerTransaction.Kind.CHARGE.value,
                app.pk,
                now,
                text_array(references),
                text_array([valid[index].model for index, _p, _c, _posting in drafts]),
            ],
        )
        tx_of = dict(cursor.fetchall())
        tx_ids = [tx_of[reference] for reference in references]

        entry_tx: list[int] = []
        entry_account: list[int] = []
        entry_amount: list[int] = []
        # (transaction, model, partner, role, agreement, version, gross, amount, token counts)
        lines: list[tuple[Any, ...]] = []
        for tx_id, (index, _price, _cost, posting) in zip(tx_ids, drafts, strict=True):
            for account_id, share in posting.entries:
                entry_tx.append(tx_id)
                entry_account.append(account_id)
                entry_amount.append(share)
            for line in posting.lines:
                lines.append((tx_id, valid[index].model, *line))
        if entry_tx:
            cursor.execute(
                """INSERT INTO wallet_ledgerentry (transaction_id, account_id, amount)
                SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[])""",
                [int_array(entry_tx), int_array(entry_account), int_array(entry_amount)],
            )
        if lines:
            columns = [list(column) for column in zip(*lines, strict=True)]
            cursor.execute(
                """INSERT INTO partners_splitline (ledger_transaction_id, posted_at, app_id,
                    model_name, partner_id, role, agreement_id, agreement_version, gross, amount,
                    input_tokens, cached_input_tokens, output_tokens)
                SELECT t.tx, %s, %s, t.model, t.partner, t.role, t.agreement, t.version,
                    t.gross, t.amount, t.input, t.cached, t.output
                FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[], %s::bigint[],
                    %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
                    %s::bigint[])
                    AS t(tx, model, partner, role, agreement, version, gross, amount, input,
                        cached, output)""",
                [
                    now,
                    app.pk,
                    *(
                        text_array(column) if position in (1, 3) else int_array(column)
                        for position, column in enumerate(columns)
                    ),
                ],
            )

        charge_ids = [claimed[valid[index].key][1] for index, _p, _c, _posting in drafts]
        cursor.execute(
            """INSERT INTO wallet_charge (id, user_id, app_id, hold_id, price_id,
                input_tokens, cached_input_tokens, output_tokens, cost, amount, refunded_amount,
                split, transaction_id, created_at)
            SELECT t.id, %s, %s, NULL, t.price, t.input, t.cached, t.output, t.cost, t.cost, 0,
                t.split::jsonb, t.tx, %s
            FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
                %s::bigint[], %s::text[], %s::bigint[])
                AS t(id, price, input, cached, output, cost, split, tx)""",
            [
                user.pk,
                app.pk,
                now,
                int_array(charge_ids),
                int_array([price.pk for _i, price, _c, _p in drafts]),
                int_array([valid[index].input_tokens for index, _p, _c, _posting in drafts]),
                int_array([valid[index].cached_input_tokens for index, _p, _c, _posting in drafts]),
                int_array([valid[index].output_tokens for index, _p, _c, _posting in drafts]),
                int_array([cost for _i, _p, cost, _posting in drafts]),
                text_array([posting.split_json for _i, _p, _c, posting in drafts]),
                int_array(tx_ids),
            ],
        )
    for charge_id, tx_id, (index, price, cost, posting) in zip(
        charge_ids, tx_ids, drafts, strict=True
    ):
        record = valid[index]
        outcomes[index] = BatchCharge(
            charge_id,
            None,
            price,
            record.input_tokens,
            record.cached_input_tokens,
            record.output_tokens,
            cost,
            cost,
            0,
            posting.split,
            tx_id,
            now,
        )


def wallet_usage_batch_charge(
    *, user: User, app: Application, records: list[tuple[str, dict[str, Any]]]
) -> list[Charge | WalletError]:
    """``usage_batch_charge`` with each charge as a Charge instance (its price loaded)."""
    outcomes: list[Charge | WalletError] = []
    for outcome in usage_batch_charge(user=user, app=app, records=records):
        if isinstance(outcome, BatchCharge):
            charge = Charge(
                id=outcome.id,
                user_id=user.pk,
                app_id=app.pk,
                hold_id=outcome.hold_id,
                price=outcome.price,
                input_tokens=outcome.input_tokens,
                cached_input_tokens=outcome.cached_input_tokens,
                output_tokens=outcome.output_tokens,
                cost=outcome.cost,
                amount=outcome.amount,
                refunded_amount=outcome.refunded_amount,
                split=outcome.split,
                transaction_id=outcome.transaction_id,
                created_at=outcome.created_at,
            )
            charge._state.adding = False
            charge._state.db = connection.alias
            outcomes.append(charge)
        else:
            outcomes.append(outcome)
    return outcomes
