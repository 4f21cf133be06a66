"""Validation of the query parameters of the derived figures: ``/api/v1/devices/<uid>/energy``, ``/volume`` and
``/statistics``."""

from django.utils import timezone
from rest_framework import serializers

from apps.telemetry.api.fields import DEFAULT_RANGE, InstantField, TimezoneField
from apps.telemetry.derived import DERIVED_INTERVALS, INTERVAL_LENGTHS, MAX_BUCKETS, longest_range


class DerivedRangeSerializer(serializers.Serializer):
    start = InstantField(
        required=False, allow_blank=True, help_text="Epoch ms or ISO-8601, inclusive (default: end - 24 h)"
    )
    end = InstantField(required=False, allow_blank=True, help_text="Epoch ms or ISO-8601, exclusive (default: now)")

    def validate(self, attrs):
        end = attrs.get("end") or timezone.now()
        start = attrs.get("start") or end - DEFAULT_RANGE
        if start >= end:
            raise serializers.ValidationError({"end": "end must be after start."})
        return {**attrs, "start": start, "end": end}


class DerivedBucketsSerializer(DerivedRangeSerializer):
    """One metric in buckets: energy and volume."""

    metric = serializers.CharField(
        error_messages={"required": "Give the metric: ?metric=<key>.", "blank": "Give the metric: ?metric=<key>."}
    )
    interval = serializers.ChoiceField(
        choices=list(DERIVED_INTERVALS),
        default="1h",
        help_text="Default 1h",
        error_messages={"invalid_choice": f"Use one of {', '.join(DERIVED_INTERVALS)}."},
    )
    tz = TimezoneField(default="UTC", help_text="IANA zone for 1d, 1w and 1mo buckets (default UTC)")
    resolution = serializers.ChoiceField(
        choices=["auto", "raw", "1h"],
        default="auto",
        help_text="auto (default): raw readings within raw retention for ranges up to DERIVED_RAW_MAX_DAYS, else "
        "hourly rollups (and raw after the hourly watermark)",
        error_messages={"invalid_choice": "Use one of auto, raw, 1h."},
    )

    def validate(self, attrs):
        attrs = super().validate(attrs)
        interval, span = attrs["interval"], attrs["end"] - attrs["start"]
        if span > longest_range(interval):
            count = span / INTERVAL_LENGTHS[interval]
            raise serializers.ValidationError(
                {"interval": f"{int(count)} buckets of {interval}; at most {MAX_BUCKETS}: choose a coarser interval."}
            )
        return attrs


class DerivedStatisticsSerializer(DerivedRangeSerializer):
    metrics = serializers.CharField(
        help_text="Comma-separated metric keys",
        error_messages={"required": "Give the metrics: ?metrics=a,b.", "blank": "Give the metrics: ?metrics=a,b."},
    )

    def validate_metrics(self, value) -> list[str]:
        keys = list(dict.fromkeys(key for key in value.split(",") if key))
        if not keys:
            raise serializers.ValidationError("Give the metrics: ?metrics=a,b.")
        return keys
