"""Ingest: the one service both the MQTT listener and the HTTPS endpoint end in.

A batch of messages is parsed and validated in memory (pure functions), then written in one transaction
together with the dead letters of whatever was refused. The caller acknowledges (MQTT PUBACK, HTTP 202) only
after this returns, i.e. after the commit; if the database fails, this raises and nothing was acknowledged.
"""

import datetime
import functools
from collections import ChainMap, Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from apps.core import flags
from apps.devices.choices import DiscoveryPolicy
from apps.devices.models import DiscoveredDevice
from apps.devices.services import devices_auto_register
from apps.devices.validators import EXTERNAL_ID_RE
from apps.telemetry.choices import Dialect, IngestSource, RejectReason
from apps.telemetry.ingest import dialects, metrics
from apps.telemetry.ingest.attributes import parse_attributes
from apps.telemetry.ingest.dialects import Limits, Sender
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.ingest.parsing import decode_payload
from apps.telemetry.ingest.records import (
    DeviceRule,
    GatewayRule,
    ParsedPayload,
    RawRecord,
    RecordError,
    Rejection,
    ValidReading,
)
from apps.telemetry.ingest.validation import device_refusal, is_valid_metric_key, validate_records
from apps.telemetry.ingest.writer import (
    DeadLetterRow,
    DiscoveryRow,
    client_attributes_write,
    discoveries_write,
    readings_write,
)
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


def _dead_letter(
    message: IngestMessage, reason: RejectReason, detail: str, device_uid: str = "", site_id: int | None = None
) -> DeadLetterRow:
    return DeadLetterRow(
        received_at=message.received_at,
        source=message.source,
        origin=message.origin[:300],
        device_uid=device_uid[:128],
        reason=reason,
        detail=detail[:500],
        # A slice as long as the payload is the payload itself (no copy): the letters of one message share it.
        payload=message.payload[: settings.INGEST_DEAD_LETTER_PAYLOAD_BYTES],
        payload_size=len(message.payload),
        site_id=site_id,
        context=replay_context(message),
    )


def replay_context(message: IngestMessage) -> dict[str, Any]:
    """What the transport said about a message's sender, kept with its dead letters so that replaying one
    (apps.telemetry.replay) hands ingest the same message: the device or gateway, the declared dialect, whether it
    carried attributes, and an HTTP endpoint's own parser options (the gateway's come from the gateway at replay)."""
    context: dict[str, Any] = {}
    if message.device_uid:
        context["device"] = message.device_uid
    if message.gateway_uid:
        context["gateway"] = message.gateway_uid
    if message.gateway_site_id is not None:
        context["site"] = message.gateway_site_id
    if message.dialect:
        context["dialect"] = message.dialect
    if message.attributes:
        context["attributes"] = True
    if message.source == IngestSource.HTTP and message.options:
        context["options"] = {
            key: value for key, value in message.options.items() if isinstance(value, str | int | float | bool)
        }
    return context


# The feature flag that switches each dialect beyond Fieldwatch's own on per organization (apps.core.flags).
DIALECT_FLAGS = {
    Dialect.LINE_PROTOCOL: flags.DIALECT_LINE_PROTOCOL,
    Dialect.SENML: flags.DIALECT_SENML,
    Dialect.SPARKPLUG: flags.DIALECT_SPARKPLUG,
}

# A placeholder device id is negative: real ones never are. See IngestBatch._auto_register.
_PROVISIONAL = -1


def _error_detail(error: RecordError) -> str:
    return f"record {error.index}: {error.metric + ': ' if error.metric else ''}{error.detail}"


class IngestBatch:
    """Messages parsed and validated in memory as they are added (no writes), then written by ``commit``.

    A batch validates against one snapshot of the device catalogue, taken when it is created: that is the only
    moment it may query the database (to reload a stale catalogue), so adding a message never fails for a reason
    other than the message. ``readings`` and ``payload_bytes`` are what the listener bounds a flush by.
    """

    def __init__(
        self,
        directory: DeviceDirectory,
        sparkplug_nodes: SparkplugNodes | None = None,
        *,
        keep_refusals: bool = True,
    ):
        # False when replaying dead letters (apps.telemetry.replay): what is refused again is recorded on the
        # letters replayed, not as new letters, discoveries or counts, so a replay can be repeated.
        self.keep_refusals = keep_refusals
        self.rules = directory.rules()
        self.type_parts = directory.type_parts()
        self.site_organizations = directory.site_organizations()
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
        # Devices nobody registered, sent by gateways whose policy is not "reject" (see _unknown_devices):
        self.discoveries: dict[tuple[int, str], DiscoveryRow] = {}  # (site id, uid) -> what was seen of it
        self.provisional: dict[str, tuple[DeviceRule, GatewayRule]] = {}  # uid -> placeholder rule, its gateway

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
            self._dialect_check(message, dialect)
            parsed, site_id = _parse(message, dialect, self.gateways, options)
        except Rejection as rejection:
            self._append(message, outcome, dialect, options)
            self._refuse(outcome, rejection)
            return outcome
        rules = self.rules
        gateway = self.gateways.get(message.gateway_uid) if message.gateway_uid is not None else None
        if gateway is not None and gateway.discovery != DiscoveryPolicy.REJECT:
            rules = self._unknown_devices(parsed.records, gateway, message)
        valid, errors = validate_records(
            parsed.records,
            devices=rules,
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
            self.dead_letters.append(self._letter(message, error.reason, _error_detail(error), error.device_uid))
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
            self.dead_letters.append(self._letter(message, error.reason, _error_detail(error), error.device_uid))
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
        self.dead_letters.append(self._letter(message, rejection.reason, rejection.detail, message.device_uid or ""))

    def _letter(self, message: IngestMessage, reason: RejectReason, detail: str, device_uid: str) -> DeadLetterRow:
        return _dead_letter(message, reason, detail, device_uid, self._site_of(message))

    def _site_of(self, message: IngestMessage) -> int | None:
        """The site the sender is bound to: its gateway's, or the device's own; None for an unknown sender."""
        if message.gateway_site_id is not None:
            return message.gateway_site_id
        if message.gateway_uid is not None:
            gateway = self.gateways.get(message.gateway_uid)
            return gateway.site_id if gateway is not None else None
        if message.device_uid is not None:
            device = self.rules.get(message.device_uid)
            return device.site_id if device is not None else None
        return None

    def _dialect_check(self, message: IngestMessage, dialect: str) -> None:
        """Refuse a dialect switched off for the sender's organization (its feature flag, apps.core.flags). An
        unknown sender is left to the parse and validation, which refuse it as such."""
        flag = DIALECT_FLAGS.get(dialect)
        if flag is None:
            return
        organization_id = self.site_organizations.get(self._site_of(message))
        if organization_id is not None and not flags.flag_active(flag, organization_id, default=True):
            label = Dialect(dialect).label
            raise Rejection(
                RejectReason.DIALECT_DISABLED, f"{label} is not switched on for this organization (flag {flag})"
            )

    def _unknown_devices(
        self, records: list[RawRecord], gateway: GatewayRule, message: IngestMessage
    ) -> Mapping[str, DeviceRule]:
        """The rules to validate a gateway's records against when its policy is not "reject": under
        auto-register (its organization's flag on, a type chosen) unknown devices get a placeholder rule of the
        gateway's type, so their readings are validated as the type's (a strict type still refuses undefined
        metrics) and stored once the commit registered them; otherwise (discover) they are refused as unknown
        devices as always, and what was seen of them is recorded for *Discovered devices*."""
        known = self.rules
        unknown: dict[str, list[RawRecord]] = {}
        for record in records:
            uid = record.device_uid
            if uid not in known and EXTERNAL_ID_RE.match(uid):  # a uid that could never be registered is not news
                unknown.setdefault(uid, []).append(record)
        if not unknown:
            return known
        overlay = {}
        if (
            gateway.discovery == DiscoveryPolicy.AUTO_REGISTER
            and gateway.auto_register_type_id is not None
            and flags.flag_active(flags.DISCOVERY_AUTO_REGISTER, gateway.organization_id)
        ):
            for uid in list(unknown):
                rule = self._provisional_rule(uid, gateway)
                if rule is not None:
                    overlay[uid] = rule
                    del unknown[uid]
        for uid, uid_records in unknown.items():
            self._discovered(uid, uid_records, gateway, message)
        return ChainMap(overlay, known) if overlay else known

    def _provisional_rule(self, uid: str, gateway: GatewayRule) -> DeviceRule | None:
        held = self.provisional.get(uid)
        if held is not None:  # the same uid again in this batch: one device, if from the same site
            return held[0] if held[1].site_id == gateway.site_id else None
        parts = self.type_parts.get(gateway.auto_register_type_id)
        if parts is None or len(self.provisional) >= settings.INGEST_AUTO_REGISTER_PER_FLUSH:
            return None
        rule = DeviceRule(
            device_id=_PROVISIONAL - len(self.provisional), uid=uid, site_id=gateway.site_id, is_active=True, **parts
        )
        self.provisional[uid] = (rule, gateway)
        return rule

    def _discovered(self, uid: str, records: list[RawRecord], gateway: GatewayRule, message: IngestMessage) -> None:
        key = (gateway.site_id, uid)
        row = self.discoveries.get(key)
        if row is None:
            if len(self.discoveries) >= settings.INGEST_DISCOVERIES_PER_FLUSH:
                return  # still dead-lettered; the next flush records it
            row = DiscoveryRow(gateway.site_id, gateway.gateway_id, uid, message.received_at, message.received_at)
            self.discoveries[key] = row
        row.messages += 1
        row.first_seen = min(row.first_seen, message.received_at)
        row.last_seen = max(row.last_seen, message.received_at)
        row.sample = message.payload[: DiscoveredDevice.SAMPLE_MAX_BYTES]
        keys = row.metric_keys
        for record in records:
            for metric_key in record.values:
                if len(keys) >= DiscoveredDevice.METRIC_KEYS_MAX:
                    return
                if is_valid_metric_key(metric_key):
                    keys.add(metric_key)

    def _also_write(self) -> Callable[[], None] | None:
        """What the batch writes beside readings and dead letters, in their transaction: client attributes, and a
        stateful dialect's changed state (Sparkplug aliases)."""
        writes = []
        if self.discoveries and self.keep_refusals:
            writes.append(
                functools.partial(
                    discoveries_write,
                    list(self.discoveries.values()),
                    metric_keys_max=DiscoveredDevice.METRIC_KEYS_MAX,
                )
            )
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
        write = functools.partial(
            readings_write,
            received_at=self.messages[-1].received_at if self.messages else self.now,
            dead_letters=self.dead_letters if self.keep_refusals else (),
            gone_dead_letters=refused.dead_letters if self.keep_refusals else None,
            also=self._also_write(),
        )
        if self.provisional:
            with transaction.atomic():  # the devices are registered with their first readings, or not at all
                result = write(self._auto_register())
        else:
            result = write(self.readings)
        refused.apply()

        # Counted only after the commit: a retried batch must not be counted twice.
        if not self.keep_refusals:
            self.rejected_by_reason.clear()
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

    def _auto_register(self) -> list[ValidReading]:
        """Register the batch's provisional devices (one statement per gateway) and return the readings with
        their placeholder ids replaced. A uid that could not be registered (another site registered it meanwhile)
        keeps its placeholder, which the writer finds absent: its readings are refused as unknown_device."""
        by_gateway: dict[tuple[int, int, int], list[str]] = {}
        for uid, (_, gateway) in self.provisional.items():
            by_gateway.setdefault((gateway.site_id, gateway.auto_register_type_id, gateway.gateway_id), []).append(uid)
        real_ids = {}
        for (site_id, device_type_id, gateway_id), uids in sorted(by_gateway.items()):
            registered = devices_auto_register(
                site_id=site_id, device_type_id=device_type_id, gateway_id=gateway_id or None, uids=uids
            )
            for uid, device_id in registered.items():
                real_ids[self.provisional[uid][0].device_id] = device_id
        return [
            reading._replace(device_id=real_ids.get(reading.device_id, reading.device_id))
            if reading.device_id < 0
            else reading
            for reading in self.readings
        ]


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
        uids.update(
            (rule.device_id, uid) for uid, (rule, _) in batch.provisional.items() if rule.device_id in gone_device_ids
        )
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
                RecordError(record, uid, RejectReason.UNKNOWN_DEVICE, _gone_detail(uid, batch))
                for record, uid in _records_of_devices(index, batch, set(uids.values()))
            ]
            self.changes.append((index, lost, errors))
            letters.extend(batch._letter(message, e.reason, _error_detail(e), e.device_uid) for e in errors)
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


def _gone_detail(uid: str, batch: IngestBatch) -> str:
    if uid in batch.provisional:
        return f"device {uid!r} could not be auto-registered: it was registered on another site meanwhile"
    return f"device {uid!r} was deleted"


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
