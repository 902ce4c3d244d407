import json
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _
from rest_framework import serializers

from wallet.models import Charge, Hold, Refund

METADATA_MAX_BYTES = 4096


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: no strings, floats or booleans on the value path."""

    default_error_messages = {"invalid": "A JSON integer is required."}

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


def token_count() -> StrictIntegerField:
    return StrictIntegerField(min_value=0, max_value=settings.WALLET_MAX_TOKEN_COUNT, default=0)


class HoldCreateSerializer(serializers.Serializer):
    amount = StrictIntegerField(min_value=1, max_value=settings.WALLET_MAX_AMOUNT)
    metadata = serializers.DictField(required=False, default=dict)

    def validate_metadata(self, value: dict[str, Any]) -> dict[str, Any]:
        # Stored with the hold and hashed for idempotency: keep it small.
        if len(json.dumps(value)) > METADATA_MAX_BYTES:
            raise serializers.ValidationError(
                _("At most %(max)s bytes of metadata.") % {"max": METADATA_MAX_BYTES}
            )
        return value


class UsageSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=120)
    input_tokens = token_count()
    cached_input_tokens = token_count()
    output_tokens = token_count()


class BatchRecordSerializer(UsageSerializer):
    idempotency_key = serializers.CharField(max_length=255, required=False)


class BatchSerializer(serializers.Serializer):
    records = serializers.ListField(
        child=serializers.DictField(),
        min_length=1,
        max_length=settings.WALLET_BATCH_MAX_RECORDS,
    )


class RefundCreateSerializer(serializers.Serializer):
    amount = StrictIntegerField(min_value=1, max_value=settings.WALLET_MAX_AMOUNT)
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class HoldSerializer(serializers.ModelSerializer):
    capture = serializers.SerializerMethodField()

    class Meta:
        model = Hold
        fields = ["id", "status", "amount", "expires_at", "created_at", "closed_at", "capture"]

    def get_capture(self, hold: Hold) -> int | None:
        charge = Charge.objects.filter(hold=hold).values_list("pk", flat=True).first()
        return charge


class ChargeSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="price.model.name")
    price_version = serializers.SerializerMethodField()

    class Meta:
        model = Charge
        fields = [
            "id",
            "hold",
            "model",
            "price_version",
            "input_tokens",
            "cached_input_tokens",
            "output_tokens",
            "cost",
            "amount",
            "refunded_amount",
            "created_at",
        ]

    def get_price_version(self, charge: Charge) -> dict[str, Any]:
        price = charge.price
        return {
            "id": price.pk,
            "effective_from": price.effective_from.isoformat(),
            "input_per_million": price.input_per_million,
            "cached_input_per_million": price.cached_input_per_million,
            "output_per_million": price.output_per_million,
        }


class ChargeRepresenter:
    """What ChargeSerializer gives, built directly (tests hold the two equal): a full usage
    batch answers with 1,000 charges, and the serializer's per-field machinery costs more
    than charging them. One price version and one timestamp per distinct value, shared
    between the charges that have them. Takes a Charge or the batch's BatchCharge."""

    def __init__(self) -> None:
        self.created = serializers.DateTimeField()
        self.versions: dict[int, dict[str, Any]] = {}
        self.times: dict[datetime, Any] = {}

    def __call__(self, charge: Any) -> dict[str, Any]:
        price = charge.price
        version = self.versions.get(price.pk)
        if version is None:
            version = self.versions[price.pk] = {
                "id": price.pk,
                "effective_from": price.effective_from.isoformat(),
                "input_per_million": price.input_per_million,
                "cached_input_per_million": price.cached_input_per_million,
                "output_per_million": price.output_per_million,
            }
        created = self.times.get(charge.created_at)
        if created is None:
            created = self.times[charge.created_at] = self.created.to_representation(
                charge.created_at
            )
        return {
            "id": charge.id,
            "hold": charge.hold_id,
            "model": price.model.name,
            "price_version": version,
            "input_tokens": charge.input_tokens,
            "cached_input_tokens": charge.cached_input_tokens,
            "output_tokens": charge.output_tokens,
            "cost": charge.cost,
            "amount": charge.amount,
            "refunded_amount": charge.refunded_amount,
            "created_at": created,
        }


def charge_represent(charge: Charge) -> dict[str, Any]:
    """What ChargeSerializer(charge).data gives."""
    return ChargeRepresenter()(charge)


class RefundSerializer(serializers.ModelSerializer):
    class Meta:
        model = Refund
        fields = ["id", "charge", "amount", "reason", "created_at"]


class AllowanceOutSerializer(serializers.Serializer):
    monthly_limit = serializers.IntegerField()
    used = serializers.IntegerField()
    remaining = serializers.IntegerField()


class BalanceSerializer(serializers.Serializer):
    balance = serializers.IntegerField()
    held = serializers.IntegerField()
    allowance = AllowanceOutSerializer()


class BatchResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    idempotency_key = serializers.CharField()
    status = serializers.ChoiceField(choices=["charged", "error"])
    charge = ChargeSerializer(allow_null=True)
    error = serializers.DictField(allow_null=True)


class BatchResponseSerializer(serializers.Serializer):
    charged = serializers.IntegerField()
    failed = serializers.IntegerField()
    results = BatchResultSerializer(many=True)
