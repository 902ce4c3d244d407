"""POST /api/wallet/usage/batch/: up to WALLET_BATCH_MAX_RECORDS usage records, each with its
own result (wallet.batch charges them).

A full batch is 1,000 records, so the per-record Python counts: a record that is plainly valid
(the usual case) is checked by ``record_plainly_valid`` instead of DRF's per-field machinery,
and the charges are represented from the batch's tuples. Anything else goes through the
serializers, which give every error body; tests hold both paths to the same answers.
"""

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error

from wallet.api import serializers as s
from wallet.api.serializers import ChargeRepresenter
from wallet.api.views import ERRORS, IDEMPOTENCY_HEADER, WalletApiView, error_body
from wallet.batch import BatchCharge, usage_batch_charge

TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens")


def _plain_text(value: Any, *, max_length: int) -> bool:
    # What CharField(max_length) accepts unchanged, for the plain case: printable ASCII (so no
    # NUL or surrogate), not blank, nothing for trim_whitespace to strip.
    return (
        type(value) is str
        and 0 < len(value) <= max_length
        and value.isascii()
        and value.isprintable()
        and value.strip() == value
    )


def records_plainly_valid(data: Any) -> list[dict[str, Any]] | None:
    """The records of a batch body that BatchSerializer would accept as they are (a JSON object
    whose ``records`` is a list of 1 to WALLET_BATCH_MAX_RECORDS objects), else None."""
    if type(data) is not dict:
        return None
    records = data.get("records")
    if (
        type(records) is not list
        or not 1 <= len(records) <= settings.WALLET_BATCH_MAX_RECORDS
        or any(type(record) is not dict for record in records)
    ):
        return None
    return records


def record_plainly_valid(record: dict[str, Any]) -> bool:
    """Whether BatchRecordSerializer would accept ``record`` and validate it to the same
    model and token counts (a count left out is 0). False sends the record to the serializer,
    which decides (and may still accept it)."""
    if not _plain_text(record.get("model"), max_length=120):
        return False
    cap = settings.WALLET_MAX_TOKEN_COUNT
    for name in TOKEN_FIELDS:
        if name in record:
            value = record[name]
            if type(value) is not int or not 0 <= value <= cap:
                return False
    key = record.get("idempotency_key", "-")
    return _plain_text(key, max_length=255)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the block. A full batch allocates some
    100,000 short-lived objects, which reference counting frees; meanwhile the collector's
    allocation counters would start a full collection of the worker's long-lived objects
    every few requests (about 10 ms of the request's 50 ms of CPU on average, measured). What
    the block leaves in cycles is collected after it, as usual."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class UsageBatchView(WalletApiView):
    @extend_schema(
        request=s.BatchSerializer,
        responses={200: s.BatchResponseSerializer, **ERRORS},
        parameters=[IDEMPOTENCY_HEADER],
        tags=["wallet"],
    )
    def post(self, request: Request) -> Response:
        """Charge up to WALLET_BATCH_MAX_RECORDS usage records, each on its own: a record that
        fails (bad input, balance, allowance) does not stop the others. A record without an
        ``idempotency_key`` gets "<Idempotency-Key header>#<index>", so replaying the whole
        batch charges nothing twice."""
        with collector_paused():
            return self._post(request)

    def _post(self, request: Request) -> Response:
        batch_key = self.idempotency_key()
        records = records_plainly_valid(request.data)
        if records is None:
            records = self.validated(s.BatchSerializer, request.data)["records"]
        # (index, idempotency key, error or None); the valid records go to the batch.
        results: list[tuple[int, str, dict[str, Any] | None]] = []
        to_charge: list[tuple[str, dict[str, Any]]] = []
        validator: s.BatchRecordSerializer | None = None
        for index, raw in enumerate(records):
            key = raw.get("idempotency_key")
            if not isinstance(key, str) or not key:
                key = f"{batch_key}#{index}"
            if record_plainly_valid(raw):
                # The batch reads only the model and the counts; the rest is ignored, as the
                # serializer would drop it.
                to_charge.append((key, raw))
                results.append((index, key, None))
                continue
            validator = validator or s.BatchRecordSerializer()
            try:
                data = dict(validator.run_validation(raw))
            except ValidationError as invalid:
                invalid_body = {
                    "code": "invalid_request",
                    "message": _("The record is not valid."),
                    "details": as_serializer_error(invalid),
                }
                results.append((index, key, invalid_body))
                continue
            data.pop("idempotency_key", None)
            to_charge.append((key, data))
            results.append((index, key, None))
        # The valid records are charged together, in one transaction, each with its own
        # outcome (see wallet.batch).
        outcomes = iter(
            usage_batch_charge(user=self.user, app=self.app, records=to_charge) if to_charge else []
        )
        represent = ChargeRepresenter()
        body: list[dict[str, Any]] = []
        charged = 0
        for index, key, error in results:
            outcome = next(outcomes) if error is None else None
            if isinstance(outcome, BatchCharge):
                charged += 1
                body.append(
                    {
                        "index": index,
                        "idempotency_key": key,
                        "status": "charged",
                        "charge": represent(outcome),
                        "error": None,
                    }
                )
                continue
            body.append(
                {
                    "index": index,
                    "idempotency_key": key,
                    "status": "error",
                    "charge": None,
                    "error": error_body(outcome) if outcome is not None else error,
                }
            )
        return Response({"charged": charged, "failed": len(body) - charged, "results": body})
