"""Ingest: the one service both the MQTT listener and the HTTPS endpoint end in.

A batch of messages is parsed and validated in memory (pure functions), then written in one transaction
together with the dead letters of whatever was refused. The caller acknowledges (MQTT PUBACK, HTTP 202) only
after this returns, i.e. after the commit; if the database fails, this raises and nothing was acknowledged.
"""

import datetime
from collections import Counter
from dataclasses import dataclass, field

from django.conf import settings

from apps.telemetry.choices import IngestSource, RejectReason
from apps.telemetry.ingest import metrics
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.ingest.parsing import (
    decode_payload,
    parse_device_payload,
    parse_gateway_payload,
    parse_http_payload,
)
from apps.telemetry.ingest.records import ParsedPayload, RecordError, Rejection, ValidReading
from apps.telemetry.ingest.validation import validate_records
from apps.telemetry.ingest.writer import DeadLetterRow, readings_write
from apps.telemetry.models import (
    LatestValue,
    Reading,
    Rollup1d,
    Rollup1h,
    Rollup1m,
    Rollup5m,
    RollupDirtyBucket,
    Series,
)


@dataclass(slots=True)
class IngestMessage:
    """One MQTT message or HTTP body, with what its transport says about its sender."""

    source: IngestSource
    payload: bytes
    received_at: datetime.datetime
    origin: str = ""  # the MQTT topic, or the API key prefix and client address
    device_uid: str | None = None  # MQTT device topic
    gateway_uid: str | None = None  # MQTT gateway topic
    gateway_site_id: int | None = None  # HTTP: the site of the authenticated gateway key
    max_bytes: int = 0


@dataclass(slots=True)
class IngestOutcome:
    """What became of one message. ``rejection`` is set when the payload as a whole was refused."""

    accepted: int = 0
    rejected: int = 0
    errors: list[RecordError] = field(default_factory=list)
    rejection: Rejection | None = None


@dataclass(slots=True)
class IngestBatchResult:
    outcomes: list[IngestOutcome]
    inserted: int
    duplicates: int


def _parse(message: IngestMessage, directory: DeviceDirectory) -> tuple[ParsedPayload, int | None]:
    """Bytes to raw records, and the site the sender is bound to (gateways may only send for their site)."""
    limit = message.max_bytes or (
        settings.INGEST_HTTP_MAX_BYTES if message.source == IngestSource.HTTP else settings.INGEST_MQTT_MAX_BYTES
    )
    document = decode_payload(message.payload, max_bytes=limit)
    bounds = {"received_at": message.received_at, "max_records": settings.INGEST_MAX_RECORDS}
    if message.source == IngestSource.HTTP:
        return parse_http_payload(document, **bounds), message.gateway_site_id
    if message.gateway_uid is not None:
        site_id = directory.gateway_site_id(message.gateway_uid)
        if site_id is None:
            raise Rejection(RejectReason.UNKNOWN_GATEWAY, f"no gateway {message.gateway_uid!r} is registered")
        return parse_gateway_payload(document, **bounds), site_id
    return parse_device_payload(document, device_uid=message.device_uid, **bounds), None


def _dead_letter(message: IngestMessage, reason: RejectReason, detail: str, device_uid: str = "") -> DeadLetterRow:
    return DeadLetterRow(
        received_at=message.received_at,
        source=message.source,
        origin=message.origin[:300],
        device_uid=device_uid[:128],
        reason=reason,
        detail=detail[:500],
        payload=message.payload[: settings.INGEST_DEAD_LETTER_PAYLOAD_BYTES],
        payload_size=len(message.payload),
    )


@dataclass(slots=True)
class PreparedIngest:
    """A batch parsed and validated in memory, ready to be written: what ``ingest_commit`` needs."""

    messages: list[IngestMessage]
    outcomes: list[IngestOutcome]
    readings: list[ValidReading]
    dead_letters: list[DeadLetterRow]
    rejected_by_reason: Counter
    received_at: datetime.datetime


def ingest_prepare(*, messages: list[IngestMessage], directory: DeviceDirectory) -> PreparedIngest:
    """Parse and validate a batch (no writes). May query the database only to reload the device directory."""
    devices = directory.rules()
    now = datetime.datetime.now(datetime.UTC)
    future_tolerance = datetime.timedelta(seconds=settings.INGEST_FUTURE_TOLERANCE_SECONDS)
    retention = datetime.timedelta(days=settings.RAW_RETENTION_DAYS)

    prepared = PreparedIngest(messages, [], [], [], Counter(), now)
    for message in messages:
        outcome = IngestOutcome()
        prepared.outcomes.append(outcome)
        try:
            parsed, site_id = _parse(message, directory)
        except Rejection as rejection:
            outcome.rejection = rejection
            outcome.rejected = 1
            prepared.rejected_by_reason[(message.source, rejection.reason)] += 1
            prepared.dead_letters.append(
                _dead_letter(message, rejection.reason, rejection.detail, message.device_uid or "")
            )
            continue
        valid, errors = validate_records(
            parsed.records,
            devices=devices,
            gateway_site_id=site_id,
            now=now,
            future_tolerance=future_tolerance,
            retention=retention,
        )
        errors = parsed.errors + errors
        prepared.readings.extend(valid)
        outcome.accepted = len(valid)
        outcome.rejected = len(errors)
        outcome.errors = errors
        for error in errors:
            prepared.rejected_by_reason[(message.source, error.reason)] += 1
            detail = f"record {error.index}: {error.metric + ': ' if error.metric else ''}{error.detail}"
            prepared.dead_letters.append(_dead_letter(message, error.reason, detail, error.device_uid))
    return prepared


def ingest_commit(prepared: PreparedIngest) -> IngestBatchResult:
    """Write a prepared batch in one transaction; raises on database failure (nothing is then stored)."""
    result = readings_write(prepared.readings, received_at=prepared.received_at, dead_letters=prepared.dead_letters)

    # Counted only after the commit: a retried batch must not be counted twice.
    for (source, reason), count in prepared.rejected_by_reason.items():
        metrics.REJECTED.labels(source, reason).inc(count)
    source = prepared.messages[0].source if prepared.messages else IngestSource.MQTT
    metrics.RECEIVED.labels(source).inc(len(prepared.messages))
    metrics.ACCEPTED.labels(source).inc(result.inserted)
    metrics.DUPLICATES.labels(source).inc(result.duplicates)
    return IngestBatchResult(outcomes=prepared.outcomes, inserted=result.inserted, duplicates=result.duplicates)


def telemetry_ingest(*, messages: list[IngestMessage], directory: DeviceDirectory) -> IngestBatchResult:
    """Validate and store a batch of messages; return what happened to each. Raises on database failure."""
    return ingest_commit(ingest_prepare(messages=messages, directory=directory))


def ingest_internal_error(*, message: IngestMessage, error: BaseException) -> int:
    """Keep a message that made ingest raise (a bug, not the sender's fault) as an ``internal_error`` dead letter
    naming the exception, and count it, so the listener can acknowledge it instead of failing on it for ever.
    Returns the number of dead letters written (1)."""
    detail = f"{type(error).__module__}.{type(error).__qualname__}: {error}"
    readings_write(
        [],
        received_at=message.received_at,
        dead_letters=[_dead_letter(message, RejectReason.INTERNAL_ERROR, detail, message.device_uid or "")],
    )
    metrics.REJECTED.labels(message.source, RejectReason.INTERNAL_ERROR).inc()
    return 1


# ---------------------------------------------------------------------------------------------------------------------
# A purged device's history
# ---------------------------------------------------------------------------------------------------------------------
def device_history_purge(*, device_id: int) -> int:
    """Delete every row of a device's series (readings, rollups, dirty buckets, latest values) and the series;
    return how many readings were deleted. Runs in the purging transaction (``device_purge``)."""
    series_ids = list(Series.objects.filter(device_id=device_id).values_list("id", flat=True))
    if not series_ids:
        return 0
    readings_deleted, _ = Reading.objects.filter(series_id__in=series_ids).delete()
    for model in (Rollup1m, Rollup5m, Rollup1h, Rollup1d, RollupDirtyBucket, LatestValue):
        model.objects.filter(series_id__in=series_ids).delete()
    Series.objects.filter(id__in=series_ids).delete()
    return readings_deleted
