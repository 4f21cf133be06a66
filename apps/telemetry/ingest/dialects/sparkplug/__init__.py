"""Sparkplug B 3.0: topics, payloads and the edge node's birth state -> raw records. Pure: no ORM, no settings, no I/O.

Sparkplug is stateful where the other dialects are not. A birth certificate (NBIRTH for the edge node, DBIRTH for a
device behind it) names each metric, gives its datatype and usually an alias; data messages (NDATA, DDATA) may then
carry the alias alone. So a message is read against the edge node's ``NodeState`` (what its births defined), and
reading it yields the next state together with the records. The ingest service keeps the states (persisted with the
batch that changed them, ``apps.telemetry.sparkplug``); this module only computes.

``parse_message(payload, topic, node, limits, uids)`` returns a ``ParsedPayload`` whose ``state`` is a
``SparkplugEffect``: the node's next state, whether a rebirth must be requested (and why), and which devices a birth
brought online or a death took offline. See docs/sparkplug.md for the wire contract.
"""

import dataclasses
import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from google.protobuf.message import DecodeError

from apps.telemetry.choices import RejectReason
from apps.telemetry.ingest.dialects.sparkplug import proto
from apps.telemetry.ingest.parsing import TimestampError, describe_value, parse_timestamp
from apps.telemetry.ingest.records import ParsedPayload, RawRecord, RecordError, Rejection
from apps.telemetry.ingest.validation import METRIC_KEY_MAX_LENGTH

pb = proto.load()

NAMESPACE = "spBv1.0"
NODE_MESSAGES = frozenset({"NBIRTH", "NDATA", "NDEATH"})
DEVICE_MESSAGES = frozenset({"DBIRTH", "DDATA", "DDEATH"})
# Sparkplug traffic that is not telemetry: commands (ours, among others) and host application STATE. A listener
# subscribed to the whole namespace sees them and lets them pass.
COMMAND_MESSAGES = frozenset({"NCMD", "DCMD"})
SEQ_MODULUS = 256
REBIRTH_METRIC = "Node Control/Rebirth"
BD_SEQ_METRIC = "bdSeq"
# Metrics of the protocol itself, not of the equipment: never readings, never rejected.
PROTOCOL_PREFIXES = ("Node Control/", "Device Control/")

# Datatypes (Metric.datatype) and the value field each is read from.
DT = pb.DataType
SIGNED_BITS = {DT.Value("Int8"): 8, DT.Value("Int16"): 16, DT.Value("Int32"): 32, DT.Value("Int64"): 64}
UNSIGNED = frozenset(DT.Value(name) for name in ("UInt8", "UInt16", "UInt32", "UInt64"))
FLOATS = frozenset({DT.Value("Float"), DT.Value("Double")})
BOOLEAN = DT.Value("Boolean")
DATETIME = DT.Value("DateTime")
INTEGER_FIELDS = ("int_value", "long_value")  # either, whatever the width: encoders differ on UInt32
FLOAT_FIELDS = ("float_value", "double_value")


def datatype_name(datatype: int) -> str:
    return DT.Name(datatype) if datatype in DT.values() else f"datatype {datatype}"


# ---------------------------------------------------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """``spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]``; ``device_id`` is "" for node messages."""

    group_id: str
    message_type: str
    edge_node_id: str
    device_id: str = ""

    @property
    def node_key(self) -> tuple[str, str]:
        return (self.group_id, self.edge_node_id)


def is_sparkplug(topic: str) -> bool:
    return topic.startswith(NAMESPACE + "/")


def is_passing_traffic(topic: str) -> bool:
    """A Sparkplug topic the listener receives but does not ingest: NCMD/DCMD commands and host STATE."""
    parts = topic.split("/")
    return len(parts) >= 3 and parts[0] == NAMESPACE and (parts[1] == "STATE" or parts[2] in COMMAND_MESSAGES)


def parse_topic(topic: str) -> SparkplugTopic:
    """The parts of a telemetry topic; ``Rejection(INVALID_TOPIC)`` for anything else."""
    parts = topic.split("/")
    if len(parts) in (4, 5) and parts[0] == NAMESPACE and all(parts[1:]):
        kind = parts[2]
        if (kind in NODE_MESSAGES and len(parts) == 4) or (kind in DEVICE_MESSAGES and len(parts) == 5):
            return SparkplugTopic(parts[1], kind, parts[3], parts[4] if len(parts) == 5 else "")
    raise Rejection(RejectReason.INVALID_TOPIC, f"not a Sparkplug B telemetry topic: {describe_value(topic)}")


def command_topic(group_id: str, edge_node_id: str) -> str:
    return f"{NAMESPACE}/{group_id}/NCMD/{edge_node_id}"


def rebirth_command(timestamp_ms: int) -> bytes:
    """The NCMD payload asking an edge node to publish its births again (Sparkplug 3.0: metric
    ``Node Control/Rebirth``, Boolean true)."""
    payload = pb.Payload(timestamp=timestamp_ms)
    payload.metrics.add(name=REBIRTH_METRIC, timestamp=timestamp_ms, datatype=BOOLEAN, boolean_value=True)
    return payload.SerializeToString()


# ---------------------------------------------------------------------------------------------------------------------
# Identity: Sparkplug ids -> Fieldwatch device uids, metric names -> metric keys
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UidTemplates:
    """How ``<group_id>/<edge_node_id>/<device_id>`` names a Fieldwatch device: ``str.format`` templates with the
    fields ``group_id``, ``edge_node_id`` and ``device_id`` (settings SPARKPLUG_NODE_UID / SPARKPLUG_DEVICE_UID)."""

    node: str = "{edge_node_id}"
    device: str = "{edge_node_id}.{device_id}"

    def uid(self, topic: SparkplugTopic, device_id: str | None = None) -> str:
        device_id = topic.device_id if device_id is None else device_id
        template = self.device if device_id else self.node
        return template.format(group_id=topic.group_id, edge_node_id=topic.edge_node_id, device_id=device_id)


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_KEY = re.compile(r"[^a-z0-9]+")


@functools.lru_cache(maxsize=65536)  # a fleet repeats the same few hundred names in every message
def metric_key(name: str) -> str | None:
    """A Sparkplug metric name as a Fieldwatch metric key (``[a-z][a-z0-9_]{0,62}``), or None when nothing is left.

    Accents are dropped (``Température`` -> ``temperature``), camelCase splits into words (``SupplyTemp`` ->
    ``supply_temp``, ``HTTPPort`` -> ``http_port``), then lowercase, every run of other characters (the ``/`` of
    folders, spaces, dots) becomes one ``_``, and leading/trailing ``_`` go: ``Inputs/Temperature`` ->
    ``inputs_temperature``. A key starting with a digit gets ``m_`` in front; longer than 63 characters is cut.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    key = _NOT_KEY.sub("_", _CAMEL_BOUNDARY.sub("_", ascii_name).lower()).strip("_")
    if not key:
        return None
    if key[0].isdigit():
        key = "m_" + key
    return key[:METRIC_KEY_MAX_LENGTH].rstrip("_")


# ---------------------------------------------------------------------------------------------------------------------
# The edge node's state
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MetricDef:
    """A metric a birth defined: whose it is (``device_id``, "" for the node itself), its name and datatype."""

    device_id: str
    name: str
    datatype: int


@dataclass(frozen=True, slots=True)
class NodeState:
    """What the listener knows of one edge node (group_id, edge_node_id) from its births and deaths.

    ``online``: an NBIRTH came and no NDEATH since; data is read only then (aliases of an earlier session may mean
    something else now). ``devices``: device ids with a DBIRTH and no DDEATH since. ``aliases`` (unique per edge
    node, devices included) and ``names`` ((device_id, name) -> datatype) are what the births defined. ``seq``: the
    last sequence number seen (0..255), None when unknown.
    """

    online: bool = False
    bd_seq: int | None = None
    seq: int | None = None
    aliases: Mapping[int, MetricDef] = field(default_factory=dict)
    names: Mapping[tuple[str, str], int] = field(default_factory=dict)
    devices: frozenset[str] = frozenset()

    def as_json(self) -> dict:
        """The persisted form (SparkplugNode.definitions): births' metric definitions and the born devices."""
        return {
            "aliases": {str(alias): [d.device_id, d.name, d.datatype] for alias, d in self.aliases.items()},
            "names": [[device_id, name, datatype] for (device_id, name), datatype in self.names.items()],
            "devices": sorted(self.devices),
        }

    @classmethod
    def from_json(cls, *, online: bool, bd_seq: int | None, seq: int | None, definitions: dict) -> "NodeState":
        aliases = {int(alias): MetricDef(*entry) for alias, entry in definitions.get("aliases", {}).items()}
        names = {(device_id, name): datatype for device_id, name, datatype in definitions.get("names", [])}
        return cls(online, bd_seq, seq, aliases, names, frozenset(definitions.get("devices", [])))


@dataclass(frozen=True, slots=True)
class Liveness:
    """A device that a message showed alive (birth, data) or dead (death); ``announce``: births and deaths, which
    the dashboard is told of at once."""

    device_uid: str
    alive: bool
    announce: bool


@dataclass(slots=True)
class SparkplugEffect:
    """What a message does besides its records (``ParsedPayload.state``). ``node`` is the state after it;
    ``defined``: births or a death changed more than the sequence number (the whole state must be written);
    ``rebirth``: why the edge node must be asked to rebirth, "" when it need not be."""

    topic: SparkplugTopic
    node: NodeState
    defined: bool = False
    rebirth: str = ""
    liveness: list[Liveness] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------------------------
def decode(payload: bytes, *, max_bytes: int):
    """Payload bytes -> the protobuf ``Payload``; ``Rejection`` when too large or not a Sparkplug B payload."""
    if len(payload) > max_bytes:
        raise Rejection(RejectReason.TOO_LARGE, f"{len(payload)} bytes exceed the bound of {max_bytes}")
    message = pb.Payload()
    try:
        message.ParseFromString(payload)
    except (DecodeError, ValueError, RecursionError) as error:  # upb raises DecodeError; guard the rest anyway
        raise Rejection(RejectReason.SPARKPLUG_UNPARSEABLE, f"not a Sparkplug B payload: {error}") from None
    return message


def parse_message(
    payload: bytes,
    topic: SparkplugTopic,
    node: NodeState | None,
    *,
    received_at: datetime,
    max_bytes: int,
    max_records: int,
    uids: UidTemplates,
) -> ParsedPayload:
    """One Sparkplug message read against the edge node's state (None: nothing known of the node)."""
    message = decode(payload, max_bytes=max_bytes)
    if len(message.metrics) > max_records:
        detail = f"{len(message.metrics)} metrics exceed the bound of {max_records}"
        raise Rejection(RejectReason.TOO_MANY_RECORDS, detail)
    node = node or NodeState()
    reader = _Reader(message, topic, uids, received_at)
    kind = topic.message_type
    if kind == "NDEATH":
        return reader.node_death(node)
    effect = SparkplugEffect(topic, node)
    reader.check_sequence(effect)
    if kind == "NBIRTH":
        reader.node_birth(effect)
    elif kind == "DBIRTH":
        reader.device_birth(effect)
    elif kind == "DDEATH":
        reader.device_death(effect)
    else:  # NDATA, DDATA
        reader.data(effect)
    reader.result.state = effect
    return reader.result


class _Reader:
    """The metrics of one message -> records (grouped by device and timestamp) and per-metric errors."""

    def __init__(self, message, topic: SparkplugTopic, uids: UidTemplates, received_at: datetime):
        self.message = message
        self.topic = topic
        self.uids = uids
        self.uid = uids.uid(topic)
        self.received_at = received_at
        self.result = ParsedPayload()
        # A metric without a timestamp of its own takes the payload's (the send time), else the time of receipt.
        self.default_ts: datetime | TimestampError = received_at
        if message.HasField("timestamp"):
            try:
                self.default_ts = self._timestamp(message.timestamp)
            except TimestampError as error:
                self.default_ts = error  # refused per metric that would take it
        self._groups: dict[datetime, RawRecord] = {}
        self._names: dict[tuple[datetime, str], str] = {}  # (ts, key) -> the metric name that took the key

    # --- message kinds ---------------------------------------------------------------------------------------------
    def check_sequence(self, effect: SparkplugEffect) -> None:
        """Every message but NDEATH carries ``seq``, one more (mod 256) than the node's previous one; an NBIRTH
        starts the count. A gap means messages were lost: the state may be stale, so ask for a rebirth. The same
        number again is a redelivery (at least once), not a gap."""
        message, node = self.message, effect.node
        if not message.HasField("seq") or not 0 <= message.seq < SEQ_MODULUS:
            effect.rebirth = "no valid sequence number" if not message.HasField("seq") else f"seq {message.seq}"
            return
        seq = message.seq
        if self.topic.message_type != "NBIRTH" and node.online and node.seq is not None:
            expected = (node.seq + 1) % SEQ_MODULUS
            if seq not in (expected, node.seq):
                effect.rebirth = f"sequence gap: expected seq {expected}, got {seq}"
        effect.node = dataclasses.replace(node, seq=seq)

    def node_birth(self, effect: SparkplugEffect) -> None:
        """A new session of the edge node: every earlier definition and device is forgotten."""
        bd_seq = None
        aliases: dict[int, MetricDef] = {}
        names: dict[tuple[str, str], int] = {}
        for index, metric in enumerate(self.message.metrics):
            if metric.name == BD_SEQ_METRIC:
                bd_seq = _bd_seq(metric)
            self._define(index, metric, "", aliases, names)
        effect.node = NodeState(True, bd_seq, effect.node.seq, aliases, names, frozenset())
        effect.defined = True
        effect.liveness.append(Liveness(self.uid, alive=True, announce=True))
        if effect.rebirth.startswith("sequence gap"):  # a birth is where a count starts: never a gap
            effect.rebirth = ""

    def device_birth(self, effect: SparkplugEffect) -> None:
        """The device's definitions replace its earlier ones. A birth names and types every metric, so its values
        are read even when the node is not born here (a lost NBIRTH); the node is asked to rebirth then."""
        node, device_id = effect.node, self.topic.device_id
        aliases = {alias: d for alias, d in node.aliases.items() if d.device_id != device_id}
        names = {key: datatype for key, datatype in node.names.items() if key[0] != device_id}
        for index, metric in enumerate(self.message.metrics):
            self._define(index, metric, device_id, aliases, names)
        effect.node = dataclasses.replace(node, aliases=aliases, names=names, devices=node.devices | {device_id})
        effect.defined = True
        effect.liveness.append(Liveness(self.uid, alive=True, announce=True))
        if not node.online:
            effect.rebirth = effect.rebirth or "DBIRTH from an edge node without a current NBIRTH"

    def device_death(self, effect: SparkplugEffect) -> None:
        node = effect.node
        effect.node = dataclasses.replace(node, devices=node.devices - {self.topic.device_id})
        effect.defined = True
        effect.liveness.append(Liveness(self.uid, alive=False, announce=True))

    def node_death(self, node: NodeState) -> ParsedPayload:
        """The node and all its devices are offline - unless the death is of an earlier session: an NDEATH carries
        the bdSeq of the NBIRTH it belongs to, and a broker may deliver a stale one (the will of a connection the
        node already replaced) after the new birth. Such a death is ignored."""
        effect = SparkplugEffect(self.topic, node)
        self.result.state = effect
        bd_seq = next((_bd_seq(m) for m in self.message.metrics if m.name == BD_SEQ_METRIC), None)
        if node.online and node.bd_seq is not None and bd_seq is not None and bd_seq != node.bd_seq:
            return self.result
        effect.node = dataclasses.replace(node, online=False, seq=None, devices=frozenset())
        effect.defined = True
        effect.liveness.append(Liveness(self.uid, alive=False, announce=True))
        for device_id in sorted(node.devices):
            effect.liveness.append(Liveness(self._uid_of(device_id), alive=False, announce=True))
        return self.result

    def data(self, effect: SparkplugEffect) -> None:
        """NDATA/DDATA: each metric resolved through the birth (alias or name) for its name and datatype. Data from
        a node or device without a current birth is refused as a whole: its aliases may mean anything."""
        node, device_id = effect.node, self.topic.device_id
        if not node.online or (device_id and device_id not in node.devices):
            whose = "edge node" if not node.online else "device"
            detail = f"no current {'NBIRTH' if not node.online else 'DBIRTH'} for this {whose}: rebirth requested"
            count = len(self.message.metrics)
            self.result.errors.append(
                RecordError(0, self.uid, RejectReason.SPARKPLUG_UNKNOWN_ALIAS, f"{count} metrics: {detail}")
            )
            effect.rebirth = effect.rebirth or detail
            return
        effect.liveness.append(Liveness(self.uid, alive=True, announce=False))
        for index, metric in enumerate(self.message.metrics):
            definition = self._resolve(index, metric, node, device_id)
            if definition is None:
                effect.rebirth = effect.rebirth or "unknown metric alias or name"
                continue
            self._add_value(index, metric, definition.name, definition.datatype)

    # --- metrics ---------------------------------------------------------------------------------------------------
    def _define(self, index: int, metric, device_id: str, aliases: dict, names: dict) -> None:
        """A birth's metric: its definition into the state, its value (if any) into the records."""
        if not metric.name:
            self._error(index, RejectReason.INVALID_SHAPE, "a birth certificate metric without a name", "")
            return
        datatype = metric.datatype if metric.HasField("datatype") else 0
        names[(device_id, metric.name)] = datatype
        if metric.HasField("alias"):
            taken = aliases.get(metric.alias)
            if taken is not None and (taken.device_id, taken.name) != (device_id, metric.name):
                detail = f"alias {metric.alias} is already {taken.name!r} of {self._uid_of(taken.device_id)}"
                self._error(index, RejectReason.INVALID_SHAPE, detail, metric.name)
            else:
                aliases[metric.alias] = MetricDef(device_id, metric.name, datatype)
        if metric.name != BD_SEQ_METRIC and (metric.WhichOneof("value") is not None or metric.is_null):
            self._add_value(index, metric, metric.name, datatype)

    def _resolve(self, index: int, metric, node: NodeState, device_id: str) -> MetricDef | None:
        if metric.HasField("alias"):
            definition = node.aliases.get(metric.alias)
            if definition is not None and definition.device_id == device_id:
                if metric.HasField("datatype"):  # a data message may restate the type: its own word counts
                    return MetricDef(device_id, definition.name, metric.datatype)
                return definition
            label = f"alias {metric.alias}"
            self._error(index, RejectReason.SPARKPLUG_UNKNOWN_ALIAS, f"{label} is not in the birth certificate", label)
            return None
        if metric.name:
            datatype = metric.datatype if metric.HasField("datatype") else node.names.get((device_id, metric.name))
            if datatype is not None:
                return MetricDef(device_id, metric.name, datatype)
            detail = "metric is neither in the birth certificate nor typed"
            self._error(index, RejectReason.SPARKPLUG_UNKNOWN_ALIAS, detail, metric.name)
            return None
        self._error(index, RejectReason.SPARKPLUG_UNKNOWN_ALIAS, "metric has neither a name nor an alias", "")
        return None

    def _add_value(self, index: int, metric, name: str, datatype: int) -> None:
        if name.startswith(PROTOCOL_PREFIXES):
            return
        key = metric_key(name)
        if key is None:
            self._error(index, RejectReason.UNKNOWN_METRIC, "name has no letter or digit to make a key of", name)
            return
        if metric.is_null:
            self._error(index, RejectReason.INVALID_VALUE, "the value is null (is_null)", key)
            return
        value = _value(metric, datatype)
        if isinstance(value, str):  # why it is not a reading
            reason = RejectReason.INVALID_VALUE if value.startswith("no ") else RejectReason.SPARKPLUG_UNSUPPORTED_TYPE
            self._error(index, reason, value, key)
            return
        try:
            ts = self._timestamp(metric.timestamp) if metric.HasField("timestamp") else self.default_ts
            if isinstance(ts, TimestampError):
                raise ts
        except TimestampError as error:
            self._error(index, RejectReason.INVALID_TIMESTAMP, str(error), key)
            return
        taken = self._names.setdefault((ts, key), name)
        if taken != name:
            self._error(index, RejectReason.UNKNOWN_METRIC, f"{name!r} and {taken!r} both normalise to {key}", key)
            return
        record = self._groups.get(ts)
        if record is None:
            record = self._groups[ts] = RawRecord(index, self.uid, ts, {})
            self.result.records.append(record)
        record.values[key] = value

    def _error(self, index: int, reason: RejectReason, detail: str, metric: str) -> None:
        label = metric if len(metric) <= 80 and metric.isprintable() else describe_value(metric)
        self.result.errors.append(RecordError(index, self.uid, reason, detail, label))

    def _timestamp(self, ms: int) -> datetime:
        return parse_timestamp(ms, received_at=self.received_at)

    def _uid_of(self, device_id: str) -> str:
        return self.uids.uid(self.topic, device_id)


def _bd_seq(metric) -> int | None:
    """The birth/death sequence number (0..255, Sparkplug 3.0), None when absent or out of range."""
    field_name = metric.WhichOneof("value")
    value = getattr(metric, field_name) if field_name in INTEGER_FIELDS else None
    return value if value is not None and 0 <= value < SEQ_MODULUS else None


def _value(metric, datatype: int) -> float | int | bool | str:
    """The metric's value as a reading value (int, float or bool), or why it is not one (a str)."""
    field_name = metric.WhichOneof("value")
    bits = SIGNED_BITS.get(datatype)
    if bits is not None or datatype in UNSIGNED:
        if field_name not in INTEGER_FIELDS:
            return f"no integer value for {datatype_name(datatype)}"
        raw = getattr(metric, field_name)
        if bits is None:
            return raw
        # Two's complement in the low ``bits`` bits: encoders agree on those, not on what fills the rest.
        raw &= (1 << bits) - 1
        return raw - (1 << bits) if raw >> (bits - 1) else raw
    if datatype in FLOATS:
        if field_name not in FLOAT_FIELDS:
            return f"no floating-point value for {datatype_name(datatype)}"
        return getattr(metric, field_name)
    if datatype == BOOLEAN:
        return metric.boolean_value if field_name == "boolean_value" else "no boolean value for Boolean"
    if datatype == DATETIME:
        if field_name not in INTEGER_FIELDS:
            return "no epoch-milliseconds value for DateTime"
        return getattr(metric, field_name) / 1000  # stored as epoch seconds
    return f"{datatype_name(datatype)} is not a number, boolean or datetime"
