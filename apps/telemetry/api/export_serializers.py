"""Request and response shapes of the export endpoints."""

from django.conf import settings
from rest_framework import serializers

from apps.devices.validators import EXTERNAL_ID_RE, METRIC_KEY_RE
from apps.telemetry.api.fields import InstantField, series_pair
from apps.telemetry.choices import ExportFormat
from apps.telemetry.exports import EXPORT_TABLES
from apps.telemetry.queries import AGGREGATES, RAW


def parse_series_pairs(value) -> list[tuple[str, str]]:
    """``["<uid>:<metric>", ...]`` or ``{"device": uid, "metrics": [...]}`` -> ordered, de-duplicated pairs."""
    if isinstance(value, dict):
        device, metrics = value.get("device"), value.get("metrics")
        if not isinstance(device, str) or not EXTERNAL_ID_RE.fullmatch(device):
            raise serializers.ValidationError({"series": 'The object form needs "device": "<uid>".'})
        if not isinstance(metrics, list) or not metrics:
            raise serializers.ValidationError({"series": 'The object form needs "metrics": ["<metric>", ...].'})
        for metric in metrics:
            if not isinstance(metric, str) or not METRIC_KEY_RE.fullmatch(metric):
                raise serializers.ValidationError({"series": f"{metric!r} is not a metric key."})
        pairs = [(device, metric) for metric in metrics]
    elif isinstance(value, list) and value:
        pairs = []
        for item in value:
            pair = series_pair(item)
            if pair is None:
                raise serializers.ValidationError({"series": f'{item!r} is not "<device uid>:<metric>".'})
            pairs.append(pair)
    else:
        raise serializers.ValidationError(
            {"series": 'Give ["<device uid>:<metric>", ...] or {"device": "<uid>", "metrics": [...]}.'}
        )
    pairs = list(dict.fromkeys(pairs))
    if len(pairs) > settings.QUERY_MAX_SERIES:
        raise serializers.ValidationError(
            {"series": f"{len(pairs)} series asked; an export takes at most {settings.QUERY_MAX_SERIES}."}
        )
    return pairs


class ExportCreateSerializer(serializers.Serializer):
    """Validates the body of ``POST /api/v1/exports``; series are resolved against the user's scope by the view."""

    series = serializers.JSONField(help_text='["<uid>:<metric>", ...] (at most 50) or {"device", "metrics"}')
    start = InstantField(help_text="Epoch milliseconds or ISO-8601, inclusive")
    end = InstantField(help_text="Epoch milliseconds or ISO-8601, exclusive")
    interval = serializers.ChoiceField(choices=list(EXPORT_TABLES), default=RAW)
    agg = serializers.ListField(
        child=serializers.ChoiceField(choices=AGGREGATES),
        required=False,
        allow_empty=False,
        help_text="Aggregates of rollup intervals, as in the series API; default `avg`. `stddev` is the sample "
        "standard deviation (n - 1), null (empty in CSV) for a bucket of one reading.",
    )
    format = serializers.ChoiceField(choices=ExportFormat.choices, default=ExportFormat.CSV)

    def validate(self, attrs):
        attrs["pairs"] = parse_series_pairs(attrs["series"])
        if attrs["start"] >= attrs["end"]:
            raise serializers.ValidationError({"end": "end must be after start."})
        if attrs["interval"] == RAW and attrs.get("agg"):
            raise serializers.ValidationError(
                {"agg": "Aggregates apply to rollup intervals (1m, 5m, 1h, 1d), not raw."}
            )
        if attrs.get("agg"):
            attrs["agg"] = list(dict.fromkeys(attrs["agg"]))
        return attrs


class ExportJobSerializer(serializers.Serializer):
    """What ``GET /api/v1/exports/<id>`` reports."""

    id = serializers.UUIDField()
    status = serializers.CharField()
    progress = serializers.IntegerField()
    format = serializers.CharField()
    parameters = serializers.JSONField()
    rows = serializers.IntegerField(allow_null=True)
    file_size = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    attempts = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()

    def get_url(self, job) -> str:
        return f"/api/v1/exports/{job.id}"

    def get_download_url(self, job) -> str | None:
        return f"/api/v1/exports/{job.id}/download" if job.status == "done" else None
