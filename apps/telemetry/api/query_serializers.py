"""Validation of the query parameters of ``GET /api/v1/series``: each refusal names the parameter and what to fix."""

import datetime

from django.conf import settings
from rest_framework import serializers

from apps.devices.validators import METRIC_KEY_RE
from apps.telemetry import queries
from apps.telemetry.api.fields import DEFAULT_RANGE, InstantField, TimezoneField, series_pair


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class SeriesQuerySerializer(serializers.Serializer):
    device = serializers.CharField(required=False, help_text="Device uid, with `metrics`.")
    metrics = serializers.CharField(required=False, help_text="Comma-separated metric keys of `device`.")
    series = serializers.CharField(
        required=False,
        help_text=f"Instead of device/metrics: `uid:metric,uid:metric,...`, at most {settings.QUERY_MAX_SERIES}.",
    )
    start = InstantField(required=False, help_text="ISO-8601 or epoch ms; default `end` - 24 h.")
    end = InstantField(required=False, help_text="ISO-8601 or epoch ms, exclusive; default now.")
    interval = serializers.ChoiceField(choices=queries.INTERVALS, default=queries.AUTO)
    agg = serializers.CharField(
        required=False,
        help_text=f"Comma-separated, of {', '.join(queries.AGGREGATES)}; default `avg`. Ignored for raw. "
        "`stddev` is the sample standard deviation (n - 1).",
    )
    tz = TimezoneField(required=False, default="UTC", help_text="IANA zone of `1d` buckets; default UTC.")
    max_points = serializers.IntegerField(
        required=False, default=settings.QUERY_DEFAULT_MAX_POINTS, min_value=1, max_value=100_000
    )

    def validate_agg(self, value):
        names = _split(value)
        unknown = [name for name in names if name not in queries.AGGREGATE_SQL]
        if unknown or not names:
            raise serializers.ValidationError(
                f"Unknown aggregate {', '.join(unknown) or '(empty)'}; use any of {', '.join(queries.AGGREGATES)}."
            )
        return list(dict.fromkeys(names))

    def _pairs(self, attrs) -> list[tuple[str, str]]:
        if "series" in attrs:
            if "device" in attrs or "metrics" in attrs:
                raise serializers.ValidationError({"series": "Give either `series` or `device` with `metrics`."})
            pairs = []
            for item in _split(attrs["series"]):
                pair = series_pair(item)
                if pair is None:
                    raise serializers.ValidationError({"series": f"{item!r} is not of the form `device_uid:metric`."})
                pairs.append(pair)
            field = "series"
        elif "device" in attrs:
            if "metrics" not in attrs:
                raise serializers.ValidationError({"metrics": "Give the metric keys of the device, comma-separated."})
            metrics = _split(attrs["metrics"])
            for metric in metrics:
                if not METRIC_KEY_RE.fullmatch(metric):
                    raise serializers.ValidationError({"metrics": f"{metric!r} is not a metric key."})
            pairs = [(attrs["device"], metric) for metric in metrics]
            field = "metrics"
        else:
            raise serializers.ValidationError({"device": "Give `device` and `metrics`, or `series`."})
        pairs = list(dict.fromkeys(pairs))
        if not pairs:
            raise serializers.ValidationError({field: "Name at least one series."})
        if len(pairs) > settings.QUERY_MAX_SERIES:
            raise serializers.ValidationError(
                {field: f"{len(pairs)} series requested; at most {settings.QUERY_MAX_SERIES} per request."}
            )
        return pairs

    def validate(self, attrs):
        pairs = self._pairs(attrs)
        end = attrs.get("end") or datetime.datetime.now(datetime.UTC)
        start = attrs.get("start") or end - DEFAULT_RANGE
        if start >= end:
            raise serializers.ValidationError({"start": "`start` must be before `end`."})
        return queries.SeriesQuery(
            pairs=pairs,
            start=start,
            end=end,
            interval=attrs["interval"],
            aggregates=attrs.get("agg") or list(queries.DEFAULT_AGGREGATES),
            tz=attrs["tz"],
            max_points=attrs["max_points"],
        )


# ---------------------------------------------------------------------------------------------------------------------
# Response shapes, for the OpenAPI document only
# ---------------------------------------------------------------------------------------------------------------------


class SeriesDataSerializer(serializers.Serializer):
    device = serializers.CharField()
    metric = serializers.CharField()
    unit = serializers.CharField()
    columns = serializers.ListField(child=serializers.CharField(), help_text='`["ts", "value"]` or `["ts", *agg]`.')
    points = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(allow_null=True)),
        help_text="Rows matching `columns`; `ts` in epoch ms (bucket start). `stddev` is the sample standard deviation "
        "(n - 1), null for one reading.",
    )


class SeriesResponseSerializer(serializers.Serializer):
    start = serializers.IntegerField(help_text="Epoch ms.")
    end = serializers.IntegerField(help_text="Epoch ms, exclusive.")
    interval = serializers.CharField(help_text="The interval used (what `auto` chose).")
    series = SeriesDataSerializer(many=True)


class TooManyRowsSerializer(serializers.Serializer):
    reason = serializers.CharField()
    detail = serializers.CharField()
    estimated_rows = serializers.IntegerField()
    limit = serializers.IntegerField()
    suggestions = serializers.ListField(child=serializers.DictField())


class LatestValueSerializer(serializers.Serializer):
    metric = serializers.CharField()
    value = serializers.FloatField()
    ts = serializers.IntegerField(help_text="Epoch ms.")
    unit = serializers.CharField()
    display_name = serializers.CharField()


class DeviceLatestSerializer(serializers.Serializer):
    device = serializers.CharField()
    values = LatestValueSerializer(many=True)
