from django.db import models


class IngestSource(models.TextChoices):
    MQTT = "mqtt", "MQTT"
    HTTP = "http", "HTTPS API"


class Dialect(models.TextChoices):
    """The payload languages ingest speaks (apps.telemetry.ingest.dialects); a label of the per-dialect counters."""

    NATIVE = "native", "Fieldwatch JSON / MessagePack"
    SPARKPLUG = "sparkplug", "Sparkplug B 3.0"
    LINE_PROTOCOL = "line_protocol", "InfluxDB line protocol"
    SENML = "senml", "SenML (RFC 8428) JSON / CBOR"


class RejectReason(models.TextChoices):
    """Why ingest refused input. Codes are stable: they appear in API responses, metrics and the dead-letter table."""

    UNPARSEABLE = "unparseable", "Payload is neither valid JSON nor MessagePack"
    INVALID_SHAPE = "invalid_shape", "Payload does not have a supported shape"
    TOO_LARGE = "too_large", "Payload exceeds the size bound"
    TOO_MANY_RECORDS = "too_many_records", "Payload exceeds the record count bound"
    UNKNOWN_DEVICE = "unknown_device", "Device is not registered"
    UNKNOWN_GATEWAY = "unknown_gateway", "Gateway is not registered"
    INVALID_TOPIC = "invalid_topic", "MQTT topic is not a telemetry topic"
    INACTIVE_DEVICE = "inactive_device", "Device is deactivated"
    WRONG_SITE = "wrong_site", "Device is not on the gateway's site"
    UNKNOWN_METRIC = "unknown_metric", "Metric is not defined for the device type"
    INVALID_VALUE = "invalid_value", "Value is not a finite number or boolean"
    OUT_OF_RANGE = "out_of_range", "Value is outside the metric's plausible range"
    SCHEMA_VIOLATION = "schema_violation", "Values do not satisfy the device type's JSON Schema"
    INVALID_TIMESTAMP = "invalid_timestamp", "Timestamp cannot be read"
    FUTURE_TIMESTAMP = "future_timestamp", "Timestamp is too far in the future"
    STALE_TIMESTAMP = "stale_timestamp", "Timestamp is older than raw retention"
    SPARKPLUG_UNPARSEABLE = "sparkplug_unparseable", "Payload is not a Sparkplug B protobuf payload"
    SPARKPLUG_UNKNOWN_ALIAS = (
        "sparkplug_unknown_alias",
        "Sparkplug metric not defined by a current birth certificate (a rebirth was requested)",
    )
    SPARKPLUG_UNSUPPORTED_TYPE = (
        "sparkplug_unsupported_type",
        "Sparkplug metric type is not a reading (string, bytes, dataset, template, array...)",
    )
    INVALID_SYNTAX = "invalid_syntax", "A line or record does not follow its format's syntax"
    UNSUPPORTED_VALUE = "unsupported_value", "Value is of a kind readings cannot hold (a string or binary data)"
    UNIT_MISMATCH = "unit_mismatch", "Unit sent differs from the metric's unit"
    INTERNAL_ERROR = "internal_error", "Ingest failed on this input (a bug): kept for diagnosis"
    DIALECT_DISABLED = "dialect_disabled", "The payload's dialect is not switched on for the organization"


class ReplayResult(models.TextChoices):
    """What replaying a dead letter through ingest did (apps.telemetry.replay)."""

    STORED = "stored", "Stored: every record went through"
    PARTLY = "partly", "Partly stored: some records are still refused"
    REFUSED = "refused", "Refused again"
    NOT_REPLAYABLE = "not_replayable", "Cannot be replayed"


class Resolution(models.TextChoices):
    """Rollup resolutions, finest first. Each is built from the one before it (rollups are mergeable)."""

    MINUTE = "1m", "1 minute"
    FIVE_MINUTES = "5m", "5 minutes"
    HOUR = "1h", "1 hour"
    DAY = "1d", "1 day"


class ExportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ExportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    JSON = "json", "JSON"
    MSGPACK = "msgpack", "MessagePack"
