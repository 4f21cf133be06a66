"""The values that travel through ingest, from bytes to committed rows. Plain data: no ORM, no I/O.

parsing     bytes -> document -> RawRecord*          (shape errors become RecordError, whole-payload ones Rejection)
validation  RawRecord* x DeviceRule -> ValidReading* (every refusal a RecordError with a RejectReason code)
writer      ValidReading* -> rows in telemetry_reading, LatestValue and Device.last_seen, in one transaction
            -> CommittedReading* to the receivers of ``apps.telemetry.signals.readings_committed``
"""

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from apps.telemetry.choices import RejectReason


class Rejection(Exception):
    """The whole payload is refused (it does not parse, is too large, has no usable shape)."""

    def __init__(self, reason: RejectReason, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class RecordError:
    """One refused record, or one refused value of a record (``metric`` set): the neighbours still go through."""

    index: int
    device_uid: str
    reason: RejectReason
    detail: str
    metric: str = ""

    def as_dict(self) -> dict:
        data = {"index": self.index, "device": self.device_uid, "reason": self.reason.value, "detail": self.detail}
        if self.metric:
            data["metric"] = self.metric
        return data


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One device's values at one instant, as sent. ``ts`` is already a UTC datetime (receipt time if absent).

    ``units``: the unit the sender gave for a value, by metric key, in canonical spelling (ingest.units), for the
    dialects that carry one (SenML's ``u``); validation refuses a value whose unit is not its metric's. None when
    the dialect has no units, which costs validation nothing."""

    index: int
    device_uid: str
    ts: datetime.datetime
    values: dict[str, Any]
    units: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class MetricRule:
    key: str
    min_value: float | None
    max_value: float | None
    unit: str = ""  # canonical spelling (ingest.units); "" when the metric defines none: any unit goes


@dataclass(frozen=True, slots=True)
class GatewayRule:
    """What ingest needs to know of a gateway, cached in-process by uid (see ingest.directory): its site (it may only
    speak for devices there), its dialect settings (``Gateway.dialect_options``), handed to the parsers, and what
    becomes of readings for devices nobody registered (``discovery``)."""

    site_id: int
    options: Mapping[str, Any]
    gateway_id: int = 0
    organization_id: int = 0
    discovery: str = "reject"  # its DiscoveryPolicy, or its site's when it has none
    auto_register_type_id: int | None = None  # the type auto-registered devices get


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """What validation needs to know of a device, cached in-process by uid (see ingest.directory)."""

    device_id: int
    uid: str
    site_id: int
    is_active: bool
    strict: bool
    metrics: dict[str, MetricRule]
    # Validates the ``values`` object against the type's JSON Schema; returns an error message or None.
    check_schema: Callable[[dict], str | None] | None = None
    raw_retention: datetime.timedelta | None = None


class ValidReading(NamedTuple):
    """A reading that passed validation. A tuple, not a dataclass: ingest creates one per value, 10^5 a second,
    and a frozen dataclass costs about four times as much to construct."""

    device_id: int
    metric_key: str
    ts: datetime.datetime
    value: float


class CommittedReading(NamedTuple):
    """A reading that is now durably stored (inserted by this flush, not a duplicate). A tuple for speed, as
    ValidReading."""

    series_id: int
    device_id: int
    metric_key: str
    ts: datetime.datetime
    value: float


@dataclass(slots=True)
class ParsedPayload:
    records: list[RawRecord] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    # What a stateful dialect learned besides the records (Sparkplug: the edge node's next birth state), for the
    # ingest service to keep; None for the stateless ones.
    state: Any = None
