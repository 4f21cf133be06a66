"""Ingest: the one service both the MQTT listener and the HTTPS endpoint end in.

A batch of messages is parsed and validated in memory (pure functions), then written in one transaction
together with the dead letters of whatever was refused. The caller acknowledges (MQTT PUBACK, HTTP 202) only
after this returns, i.e. after the commit; if the database fails, this raises and nothing was acknowledged.
"""

import datetime
import functools
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from apps.telemetry.choices import Dialect, IngestSource, RejectReason
from apps.telemetry.ingest import dialects, metrics
from apps.telemetry.ingest.attributes import parse_attributes
from apps.telemetry.ingest.dialects import Limits, Sender
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.ingest.parsing import decode_payload
from apps.telemetry.ingest.records import GatewayRule, ParsedPayload, RecordError, Rejection, ValidReading
from apps.telemetry.ingest.validation import device_refusal, validate_records
from apps.telemetry.ingest.writer import DeadLetterRow, client_attributes_write, readings_write
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
from apps.telemetry.sparkplug import SparkplugBatch, SparkplugNodes


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
    attributes: bool = False  # client attributes (apps.telemetry.ingest.attributes), not readings
    dialect: str = ""  # set when the transport says (an endpoint or topic tree of the dialect); else detected
    options: Mapping[str, Any] = field(default_factory=dict)  # what the dialect's parser needs from the transport


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


def _max_bytes(message: IngestMessage) -> int:
    if message.max_bytes:
        return message.max_bytes
    return settings.INGEST_HTTP_MAX_BYTES if message.source == IngestSource.HTTP else settings.INGEST_MQTT_MAX_BYTES


def _sender(message: IngestMessage, gateways: Mapping[str, GatewayRule]) -> tuple[int | None, Mapping[str, Any]]:
    """The site the sender is bound to (a gateway may only speak for devices of its site; None for a device) and,
    for a gateway topic, the gateway's dialect options."""
    if message.source == IngestSource.HTTP:
        return message.gateway_site_id, {}
    if message.gateway_uid is None:
        return None, {}
    gateway = gateways.get(message.gateway_uid)
    if gateway is None:
        raise Rejection(RejectReason.UNKNOWN_GATEWAY, f"no gateway {message.gateway_uid!r} is registered")
    return gateway.site_id, gateway.options


def _parse(
    message: IngestMessage,
    dialect: Dialect,
    gateways: Mapping[str, GatewayRule],
    options: Mapping[str, Any] | None = None,
) -> tuple[ParsedPayload, int | None]:
    """Bytes to raw records in ``dialect``, and the site the sender is bound to (gateways may only send for their
    site). A gateway topic's message gets the gateway's dialect options from the directory (the listener knows only
    the uid); the HTTP views put the key's gateway's options in the message themselves. ``options``: the parser's,
    when the batch adds to those (a stateful dialect's state)."""
    site_id, gateway_options = _sender(message, gateways)
    limits = Limits(
        received_at=message.received_at, max_bytes=_max_bytes(message), max_records=settings.INGEST_MAX_RECORDS
    )
    # A device topic, or ThingsBoard's HTTP API (the token names the device): the records are that device's.
    device_uid = message.device_uid if message.gateway_uid is None else None
    options = message.options if options is None else options
    if gateway_options:  # the gateway's settings, under whatever the message or the batch says
        options = {**gateway_options, **options}
    sender = Sender(
        device_uid=device_uid,
        http=message.source == IngestSource.HTTP and device_uid is None,
        options=options,
    )
    return dialects.parse(message.payload, dialect, sender, limits), site_id


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


def _error_detail(error: RecordError) -> str:
    return f"record {error.index}: {error.metric + ': ' if error.metric else ''}{error.detail}"


class IngestBatch:
    """Messages parsed and validated in memory as they are added (no writes), then written by ``commit``.

    A batch validates against one snapshot of the device catalogue, taken when it is created: that is the only
    moment it may query the database (to reload a stale catalogue), so adding a message never fails for a reason
    other than the message. ``readings`` and ``payload_bytes`` are what the listener bounds a flush by.
    """

    def __init__(self, directory: DeviceDirectory, sparkplug_nodes: SparkplugNodes | None = None):
        self.rules = directory.rules()
        # Sparkplug B edge nodes' birth state (the MQTT listener's): loaded here at the process's first batch.
        self.sparkplug = SparkplugBatch(sparkplug_nodes) if sparkplug_nodes is not None else None
        self.gateways = directory.gateways()
        self.now = datetime.datetime.now(datetime.UTC)
        self.future_tolerance = datetime.timedelta(seconds=settings.INGEST_FUTURE_TOLERANCE_SECONDS)
        self.retention = datetime.timedelta(days=settings.RAW_RETENTION_DAYS)
        self.messages: list[IngestMessage] = []
        self.outcomes: list[IngestOutcome] = []
        self.dialects: list[str] = []  # of each message, for the per-dialect counters
        self.options: list[Mapping[str, Any]] = []  # what each message was parsed with (re-parsed the same way)
        self.readings: list[ValidReading] = []
        # readings[reading_ends[i - 1]:reading_ends[i]] came from messages[i]: what a deleted device's readings
        # are traced back to (see _gone_devices_refused).
        self.reading_ends: list[int] = []
        self.dead_letters: list[DeadLetterRow] = []
        self.attributes: dict[int, dict[str, Any]] = {}  # device id -> client attributes to merge
        self.rejected_by_reason: Counter = Counter()
        self.payload_bytes = 0

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, message: IngestMessage) -> IngestOutcome:
        """Parse and validate one message into the batch; return its outcome (final unless ``commit`` finds one of
        its devices deleted meanwhile)."""
        if message.attributes:
            return self._add_attributes(message)
        outcome = IngestOutcome()
        dialect = dialects.dialect_of(message.payload, message.dialect, message.options)
        options = message.options
        if dialect == Dialect.SPARKPLUG and self.sparkplug is not None:
            options = self.sparkplug.options(options)
        try:
            parsed, site_id = _parse(message, dialect, self.gateways, options)
        except Rejection as rejection:
            self._append(message, outcome, dialect, options)
            self._refuse(outcome, rejection)
            return outcome
        valid, errors = validate_records(
            parsed.records,
            devices=self.rules,
            gateway_site_id=site_id,
            now=self.now,
            future_tolerance=self.future_tolerance,
            retention=self.retention,
        )
        errors = parsed.errors + errors
        if parsed.state is not None and self.sparkplug is not None:
            self.sparkplug.absorb(parsed.state, received_at=message.received_at, rules=self.rules, site_id=site_id)
        self.readings.extend(valid)
        self._append(message, outcome, dialect, options)
        outcome.accepted = len(valid)
        outcome.rejected = len(errors)
        outcome.errors = errors
        for error in errors:
            self.rejected_by_reason[message.source, dialect, error.reason] += 1
            self.dead_letters.append(_dead_letter(message, error.reason, _error_detail(error), error.device_uid))
        return outcome

    def _add_attributes(self, message: IngestMessage) -> IngestOutcome:
        """Client attributes: checked like readings' devices (known, active, on the gateway's site), kept for the
        commit; each device's later values of a key replace earlier ones."""
        outcome = IngestOutcome()
        self._append(message, outcome, Dialect.NATIVE, message.options)
        try:
            site_id, _ = _sender(message, self.gateways)
            document = decode_payload(message.payload, max_bytes=_max_bytes(message))
            parsed = parse_attributes(document, device_uid=message.device_uid if message.gateway_uid is None else None)
        except Rejection as rejection:
            self._refuse(outcome, rejection)
            return outcome
        errors = list(parsed.errors)
        for index, uid, attributes in parsed.updates:
            rule = self.rules.get(uid)
            problem = device_refusal(rule, gateway_site_id=site_id)
            if problem is not None:
                errors.append(RecordError(index, uid[:128], *problem))
                continue
            self.attributes.setdefault(rule.device_id, {}).update(attributes)
            outcome.accepted += len(attributes)
        outcome.rejected, outcome.errors = len(errors), errors
        for error in errors:
            self.rejected_by_reason[message.source, Dialect.NATIVE, error.reason] += 1
            self.dead_letters.append(_dead_letter(message, error.reason, _error_detail(error), error.device_uid))
        return outcome

    def add_internal_error(self, message: IngestMessage, error: BaseException) -> IngestOutcome:
        """Keep a message whose ``add`` raised (a bug, not the sender's fault) as an ``internal_error`` dead letter
        naming the exception, so it is stored and acknowledged with the batch instead of failing it for ever."""
        detail = f"{type(error).__module__}.{type(error).__qualname__}: {error}"
        outcome = IngestOutcome()
        self._append(message, outcome, message.dialect or Dialect.NATIVE, message.options)
        self._refuse(outcome, Rejection(RejectReason.INTERNAL_ERROR, detail))
        return outcome

    def _append(self, message: IngestMessage, outcome: IngestOutcome, dialect: str, options: Mapping) -> None:
        self.messages.append(message)
        self.outcomes.append(outcome)
        self.dialects.append(dialect)
        self.options.append(options)
        self.reading_ends.append(len(self.readings))
        self.payload_bytes += len(message.payload)

    def _refuse(self, outcome: IngestOutcome, rejection: Rejection) -> None:
        message = self.messages[-1]
        outcome.rejection = rejection
        outcome.rejected = 1
        self.rejected_by_reason[message.source, self.dialects[-1], rejection.reason] += 1
        self.dead_letters.append(_dead_letter(message, rejection.reason, rejection.detail, message.device_uid or ""))

    def _also_write(self) -> Callable[[], None] | None:
        """What the batch writes beside readings and dead letters, in their transaction: client attributes, and a
        stateful dialect's changed state (Sparkplug aliases)."""
        writes = []
        if self.attributes:
            writes.append(functools.partial(client_attributes_write, self.attributes))
        if self.sparkplug is not None and self.sparkplug.changed:
            writes.append(self.sparkplug.persist)
        if not writes:
            return None

        def write_all() -> None:
            for write in writes:
                write()

        return write_all

    def commit(self) -> IngestBatchResult:
        """Write the batch in one transaction; raises on database failure (nothing is then stored, and the same
        batch may be committed again)."""
        refused = _GoneDevices(self)
        result = readings_write(
            self.readings,
            received_at=self.messages[-1].received_at if self.messages else self.now,
            dead_letters=self.dead_letters,
            gone_dead_letters=refused.dead_letters,
            also=self._also_write(),
        )
        refused.apply()

        # Counted only after the commit: a retried batch must not be counted twice.
        for (source, dialect, reason), count in self.rejected_by_reason.items():
            metrics.REJECTED.labels(source, reason).inc(count)
            metrics.DIALECT_REJECTED.labels(dialect, reason).inc(count)
        source = self.messages[0].source if self.messages else IngestSource.MQTT
        metrics.RECEIVED.labels(source).inc(len(self.messages))
        for dialect, count in Counter(self.dialects).items():
            metrics.DIALECT_MESSAGES.labels(source, dialect).inc(count)
        metrics.ACCEPTED.labels(source).inc(result.inserted)
        metrics.DUPLICATES.labels(source).inc(result.duplicates)
        return IngestBatchResult(outcomes=self.outcomes, inserted=result.inserted, duplicates=result.duplicates)


class _GoneDevices:
    """Readings of devices deleted after the batch was validated: the writer stores none of them, and they are
    reported as what they are, ``unknown_device`` (a dead letter per record, the message's outcome, the counter),
    not as duplicates. Rare, so it may re-parse the messages concerned to name the records.

    ``dead_letters`` runs inside the write transaction (possibly more than once, if it is retried); ``apply``
    changes the outcomes and counts only once the write committed.
    """

    def __init__(self, batch: IngestBatch):
        self.batch = batch
        self.changes: list[tuple[int, int, list[RecordError]]] = []  # (message index, readings, errors)

    def dead_letters(self, gone_device_ids: frozenset[int]) -> list[DeadLetterRow]:
        batch = self.batch
        uids = {rule.device_id: uid for uid, rule in batch.rules.items() if rule.device_id in gone_device_ids}
        self.changes = []
        letters = []
        start = 0
        for index, end in enumerate(batch.reading_ends):
            lost = sum(1 for reading in batch.readings[start:end] if reading.device_id in gone_device_ids)
            start = end
            if not lost:
                continue
            message = batch.messages[index]
            errors = [
                RecordError(record, uid, RejectReason.UNKNOWN_DEVICE, f"device {uid!r} was deleted")
                for record, uid in _records_of_devices(index, batch, set(uids.values()))
            ]
            self.changes.append((index, lost, errors))
            letters.extend(_dead_letter(message, e.reason, _error_detail(e), e.device_uid) for e in errors)
        return letters

    def apply(self) -> None:
        for index, lost, errors in self.changes:
            outcome = self.batch.outcomes[index]
            outcome.accepted -= lost
            outcome.rejected += len(errors)
            outcome.errors = outcome.errors + errors
            source = self.batch.messages[index].source
            metrics.REJECTED.labels(source, RejectReason.UNKNOWN_DEVICE).inc(len(errors))
            metrics.DIALECT_REJECTED.labels(self.batch.dialects[index], RejectReason.UNKNOWN_DEVICE).inc(len(errors))


def _records_of_devices(index: int, batch: IngestBatch, uids: set[str]) -> list[tuple[int, str]]:
    """(record index, device uid) of the records of the batch's ``index``-th message that belong to ``uids``;
    parsing is deterministic (with the options it was first parsed with), so these are the records whose readings
    the batch holds."""
    message = batch.messages[index]
    parsed, _ = _parse(message, Dialect(batch.dialects[index]), batch.gateways, batch.options[index])
    return [(record.index, record.device_uid) for record in parsed.records if record.device_uid in uids]


def telemetry_ingest(*, messages: list[IngestMessage], directory: DeviceDirectory) -> IngestBatchResult:
    """Validate and store a batch of messages; return what happened to each. Raises on database failure."""
    batch = IngestBatch(directory)
    for message in messages:
        batch.add(message)
    return batch.commit()


def ingest_internal_error(*, message: IngestMessage, error: BaseException) -> int:
    """Store a message that made ingest raise as an ``internal_error`` dead letter on its own (the listener's last
    resort when a write raised and bisecting left this message alone). Returns the number of dead letters (1)."""
    detail = f"{type(error).__module__}.{type(error).__qualname__}: {error}"
    readings_write(
        [],
        received_at=message.received_at,
        dead_letters=[_dead_letter(message, RejectReason.INTERNAL_ERROR, detail, message.device_uid or "")],
    )
    metrics.REJECTED.labels(message.source, RejectReason.INTERNAL_ERROR).inc()
    metrics.DIALECT_REJECTED.labels(message.dialect or Dialect.NATIVE, RejectReason.INTERNAL_ERROR).inc()
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
