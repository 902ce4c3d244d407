from typing import Any

from rest_framework import serializers

from partners.portal.selectors import GROUPINGS, MAX_USAGE_DAYS


class StatementSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    period = serializers.CharField(source="period_kind")
    period_start = serializers.DateField()
    period_end = serializers.DateField(help_text="Exclusive.")
    status = serializers.CharField()
    currency = serializers.CharField()
    earnings = serializers.IntegerField(help_text="Platform tokens.")
    carried_in = serializers.IntegerField()
    adjustments = serializers.IntegerField()
    total = serializers.IntegerField()
    approved_at = serializers.DateTimeField(allow_null=True)
    paid_at = serializers.DateTimeField(allow_null=True)
    payout_reference = serializers.CharField()
    created_at = serializers.DateTimeField()


class StatementLineSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    kind = serializers.CharField()
    role = serializers.CharField()
    app = serializers.CharField(
        source="app_client_id",
        allow_null=True,
        help_text="client_id of your app; null for another partner's app or no app.",
    )
    model = serializers.CharField()
    agreement_version = serializers.IntegerField(allow_null=True)
    captures = serializers.IntegerField()
    gross = serializers.IntegerField()
    amount = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    reason = serializers.CharField()


class StatementDetailSerializer(StatementSerializer):
    lines = StatementLineSerializer(many=True)


class StatementListQuerySerializer(serializers.Serializer):
    period = serializers.ChoiceField(choices=["day", "month"], required=False)
    status = serializers.ChoiceField(
        choices=["closed", "approved", "paid", "carried_forward"], required=False
    )


class UsageQuerySerializer(serializers.Serializer):
    start = serializers.DateField(help_text="First day (UTC), inclusive.")
    end = serializers.DateField(
        help_text=f"Last day (UTC), inclusive; at most {MAX_USAGE_DAYS} days."
    )
    group_by = serializers.CharField(
        required=False,
        default="day",
        help_text="Comma separated: any of day, app, model; or none for one total row.",
    )
    app = serializers.CharField(required=False, help_text="Only this app (its client_id).")

    def validate_group_by(self, value: str) -> list[str]:
        if value.strip() == "none":
            return []
        parts = [p.strip() for p in value.split(",") if p.strip()]
        unknown = sorted(set(parts) - set(GROUPINGS))
        if unknown:
            raise serializers.ValidationError(f"Unknown grouping: {', '.join(unknown)}.")
        return list(dict.fromkeys(parts))

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["end"] < attrs["start"]:
            raise serializers.ValidationError({"end": "The end is before the start."})
        if (attrs["end"] - attrs["start"]).days + 1 > MAX_USAGE_DAYS:
            raise serializers.ValidationError(
                {"end": f"The range may cover at most {MAX_USAGE_DAYS} days."}
            )
        return attrs


class UsageRowSerializer(serializers.Serializer):
    day = serializers.DateField(allow_null=True)
    app = serializers.CharField(allow_null=True, source="app_client_id")
    app_name = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    charges = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    amount = serializers.IntegerField(help_text="Platform tokens charged.")
    refunded = serializers.IntegerField()


class UsageResponseSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    group_by = serializers.ListField(child=serializers.CharField())
    rows = UsageRowSerializer(many=True)


class StatementPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = StatementSerializer(many=True)
