"""Backtest: how many alerts a rule would have opened over a past range, computed from the 1-minute rollups.

One SQL statement per backtest whatever the range and the number of devices: the buckets of every covered
series are decided with window functions (a gaps-and-islands pass), never a Python loop over readings. The
decisions are the evaluation's (``apps.alerts.evaluation``), read at the rollups' 1-minute resolution:

* threshold: a bucket *triggers* when one of its readings meets the condition (its max for ``>``/``>=``, its min
  for ``<``/``<=``, either for *outside*) and *clears* when its last reading clears (past the clear threshold with
  hysteresis, else no longer meeting the condition); with a *for* duration it triggers once a run of buckets whose
  readings all meet the condition has lasted that long (the run restarts at a bucket with a reading that does not);
* rate of change: the change of a bucket's extreme readings from the first reading of the bucket one window
  earlier (the rollups' first value), rising, falling or either; it clears when the bucket's last reading's change
  is within the delta;
* no data: a silence longer than the rule's between two buckets heard from (for a device-level rule, any metric),
  or from the range's start, or until the range's end.

An alert opens at a triggering bucket when the previous decisive bucket (one that triggered or cleared) left no
alert open: one alert per rule and device at a time, as the partial unique index has it. The range ends at the
1-minute rollups' watermark (readings not rolled up yet are not counted) and starts with no alert open.
"""

import datetime
from dataclasses import dataclass

from django.db import connection
from django.utils import timezone

from apps.alerts.choices import Operator, RateDirection, RuleKind
from apps.alerts.models import AlertRule
from apps.devices.models import Device, MetricDefinition
from apps.telemetry.choices import Resolution
from apps.telemetry.models import RollupWatermark

BACKTEST_DAYS = 7
RESOLUTION = Resolution.MINUTE

# Per operator: some reading of the bucket meets the condition, every reading does, the bucket's last reading clears
# the alert (past the clear threshold with hysteresis, else no longer meeting the condition), and the reading that
# made it trigger. Only parameters come from the rule, never SQL text.
_CLEAR = "CASE WHEN %(clear)s::float8 IS NULL THEN {plain} ELSE {hysteresis} END"
_THRESHOLD_SQL = {
    Operator.GT: (
        "max > %(t)s",
        "min > %(t)s",
        _CLEAR.format(plain="last_value <= %(t)s", hysteresis="last_value < %(clear)s"),
        "max",
    ),
    Operator.GE: (
        "max >= %(t)s",
        "min >= %(t)s",
        _CLEAR.format(plain="last_value < %(t)s", hysteresis="last_value < %(clear)s"),
        "max",
    ),
    Operator.LT: (
        "min < %(t)s",
        "max < %(t)s",
        _CLEAR.format(plain="last_value >= %(t)s", hysteresis="last_value > %(clear)s"),
        "min",
    ),
    Operator.LE: (
        "min <= %(t)s",
        "max <= %(t)s",
        _CLEAR.format(plain="last_value > %(t)s", hysteresis="last_value > %(clear)s"),
        "min",
    ),
    Operator.OUTSIDE: (
        "(min < %(t)s OR max > %(high)s)",
        "(max < %(t)s OR min > %(high)s)",
        "last_value BETWEEN %(t)s AND %(high)s",
        "CASE WHEN max > %(high)s THEN max ELSE min END",
    ),
}

# The bucket rows of the covered series in the range, for threshold and rate rules.
_BUCKETS = """
    SELECT s.device_id, r.bucket, r.first_ts, r.last_ts, r.first_value, r.last_value, r.min, r.max
    FROM telemetry_series s
    JOIN telemetry_rollup_1m r ON r.series_id = s.id
    WHERE s.device_id = ANY(%(devices)s) AND s.metric_key = %(metric)s
      AND r.bucket >= %(read_from)s AND r.bucket < %(end)s
"""

# Openings = triggering buckets whose previous decisive bucket left no alert open (``open_after`` is false after a
# clearing bucket, true after a triggering one that did not also clear).
_OPENINGS = """
    , decisive AS (
        SELECT device_id, at, value, triggers,
               lag(NOT clears) OVER (PARTITION BY device_id ORDER BY bucket) AS open_before
        FROM decided WHERE triggers OR clears
    )
    SELECT device_id, at, value FROM decisive WHERE triggers AND NOT coalesce(open_before, false) ORDER BY at, device_id
"""

_THRESHOLD = (
    "WITH buckets AS (SELECT *, {holds} AS holds, {holds_all} AS holds_all, {clears} AS clears FROM ("
    + _BUCKETS
    + """) b),
    runs AS (  -- runs of buckets whose every reading holds, numbered by the breaking buckets before them
        SELECT *, count(*) FILTER (WHERE NOT holds_all) OVER (PARTITION BY device_id ORDER BY bucket) AS run
        FROM buckets
    ),
    started AS (
        SELECT *, min(first_ts) FILTER (WHERE holds_all)
                      OVER (PARTITION BY device_id, run ORDER BY bucket) AS run_start
        FROM runs
    ),
    decided AS (
        SELECT device_id, bucket, clears,
               CASE WHEN %(for)s::interval IS NULL THEN holds
                    ELSE holds_all AND last_ts - run_start >= %(for)s::interval END AS triggers,
               CASE WHEN %(for)s::interval IS NULL THEN bucket ELSE run_start + %(for)s::interval END AS at,
               {value} AS value
        FROM started
    )"""
    + _OPENINGS
)

_RATE_HOLDS = {
    RateDirection.RISING: ("rise > %(delta)s", "last_change > %(delta)s", "rise"),
    RateDirection.FALLING: ("-fall > %(delta)s", "-last_change > %(delta)s", "fall"),
    RateDirection.EITHER: (
        "(rise > %(delta)s OR -fall > %(delta)s)",
        "abs(last_change) > %(delta)s",
        "CASE WHEN rise >= -fall THEN rise ELSE fall END",
    ),
}

# The reference of a bucket is the first reading of the earliest bucket within one window before it (the frame is
# read from the window before the range's start, so the first buckets have theirs).
_RATE = (
    "WITH buckets AS (SELECT *, first_value(first_value) OVER (PARTITION BY device_id ORDER BY bucket "
    "RANGE BETWEEN %(window)s::interval PRECEDING AND CURRENT ROW) AS reference FROM ("
    + _BUCKETS
    + """) b),
    changes AS (
        SELECT device_id, bucket, max - reference AS rise, min - reference AS fall,
               last_value - reference AS last_change
        FROM buckets WHERE bucket >= %(start)s
    ),
    decided AS (
        SELECT device_id, bucket, bucket AS at, {triggers} AS triggers, NOT ({holds_last}) AS clears, {value} AS value
        FROM changes
    )"""
    + _OPENINGS
)

# Silences: from each heard bucket's last reading to the next one's first (or to the range's end), and from the
# range's start to the first reading (a device never heard from in the range: the whole range).
_NO_DATA = """
    WITH heard AS (
        SELECT s.device_id, r.bucket, min(r.first_ts) AS first_ts, max(r.last_ts) AS last_ts
        FROM telemetry_series s
        JOIN telemetry_rollup_1m r ON r.series_id = s.id
        WHERE s.device_id = ANY(%(devices)s) AND (%(metric)s = '' OR s.metric_key = %(metric)s)
          AND r.bucket >= %(start)s AND r.bucket < %(end)s
        GROUP BY s.device_id, r.bucket
    ),
    gaps AS (
        SELECT device_id, last_ts AS since,
               lead(first_ts, 1, %(end)s) OVER (PARTITION BY device_id ORDER BY bucket) AS until
        FROM heard
        UNION ALL
        SELECT d.device_id, %(start)s, coalesce(min(h.first_ts), %(end)s)
        FROM unnest(%(devices)s::bigint[]) AS d (device_id)
        LEFT JOIN heard h ON h.device_id = d.device_id
        GROUP BY d.device_id
    )
    SELECT device_id, since + %(silence)s::interval, NULL::float8 FROM gaps
    WHERE until - since > %(silence)s::interval
    ORDER BY 2, 1
"""


@dataclass(frozen=True)
class BacktestOpening:
    device_uid: str
    at: datetime.datetime
    value: float | None


@dataclass(frozen=True)
class BacktestResult:
    start: datetime.datetime
    end: datetime.datetime
    resolution: str
    devices: int
    openings: list[BacktestOpening]

    @property
    def count(self) -> int:
        return len(self.openings)


def rule_covered_devices(rule: AlertRule) -> list[Device]:
    """The active devices a rule applies to, as the rules index expands its scope (one device, or a site's devices
    of one type or of any type), and for a metric rule only those whose type has the metric."""
    if rule.device_id:
        devices = Device.objects.filter(pk=rule.device_id)
    else:
        devices = Device.objects.filter(site_id=rule.site_id)
        if rule.device_type_id:
            devices = devices.filter(device_type_id=rule.device_type_id)
    devices = devices.filter(is_active=True)
    if rule.metric_key:
        types = MetricDefinition.objects.filter(key=rule.metric_key).values("device_type_id")
        devices = devices.filter(device_type_id__in=types)
    return list(devices.only("id", "uid").order_by("id"))


def _rolled_until(now: datetime.datetime) -> datetime.datetime:
    watermark = RollupWatermark.objects.filter(resolution=RESOLUTION).values_list("rolled_until", flat=True).first()
    return min(now, watermark) if watermark else now


def _statement(rule: AlertRule) -> tuple[str, dict]:
    params = {"metric": rule.metric_key}
    if rule.kind == RuleKind.THRESHOLD:
        holds, holds_all, clears, value = _THRESHOLD_SQL[rule.operator]
        sql = _THRESHOLD.format(holds=holds, holds_all=holds_all, clears=clears, value=value)
        params |= {"t": rule.threshold, "high": rule.threshold_high, "clear": rule.clear_threshold}
        params["for"] = rule.for_duration
    elif rule.kind == RuleKind.RATE_OF_CHANGE:
        triggers, holds_last, value = _RATE_HOLDS[rule.rate_direction]
        sql = _RATE.format(triggers=triggers, holds_last=holds_last, value=value)
        params |= {"delta": rule.rate_delta, "window": rule.rate_window}
    else:
        sql, params["silence"] = _NO_DATA, rule.silence
    return sql, params


def rule_backtest(
    *, rule: AlertRule, now: datetime.datetime | None = None, days: int = BACKTEST_DAYS
) -> BacktestResult:
    """The alerts ``rule`` (saved or not, validated by ``alert_rule_validate``) would have opened over the last
    ``days``, on the devices it covers: one statement over the 1-minute rollups."""
    end = _rolled_until(now or timezone.now())
    start = end - datetime.timedelta(days=days)
    devices = rule_covered_devices(rule)
    uids = {device.id: device.uid for device in devices}
    openings: list[BacktestOpening] = []
    if devices:
        sql, params = _statement(rule)
        read_from = start - rule.rate_window if rule.kind == RuleKind.RATE_OF_CHANGE else start
        params |= {"devices": list(uids), "start": start, "end": end, "read_from": read_from}
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            openings = [BacktestOpening(uids[device_id], at, value) for device_id, at, value in cursor.fetchall()]
    return BacktestResult(start=start, end=end, resolution=RESOLUTION, devices=len(devices), openings=openings)
