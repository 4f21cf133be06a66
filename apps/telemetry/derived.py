"""Derived figures over raw readings: energy from power, volume from totalizers, range statistics.

Each figure is one SQL statement over the readings' primary key range (window functions for the step between
consecutive readings), never a Python loop over readings.

Bucketing: buckets are ``[b, b + interval)``. Intervals shorter than a day are UTC-aligned (an hour is an hour in
every zone we serve); ``1d`` buckets are calendar days in the requested time zone, so a DST day in Europe/Berlin
is 23 or 25 hours long. Empty buckets are omitted, as in the series API.

Energy semantics: the power curve is the straight line between consecutive readings (the trapezoidal rule) where
they are at most ``ENERGY_MAX_GAP_SECONDS`` apart; across a longer gap nothing is counted. The curve is integrated
over ``[start, end)`` exactly: a segment that crosses a bucket boundary (or the range's start or end) is split at the
boundary, each part's energy the trapezoid under the interpolated line. So the buckets add up to the total, and
the readings just outside the range (within one gap bound) contribute the part of their segment inside it.

Volume semantics: the consumption between consecutive readings is their difference, or, when the register dropped
(a reset or a meter swap), the new value (counted from 0). Each difference belongs to the bucket of its later
reading; the first reading of the range is differenced against the last one before the range, so a range's volume
equals the meter's advance over it.

Statistics: avg, min, max and count are computed from raw readings in one aggregate statement (exact for any range
while raw data is retained; the rollup-based series API serves ranges beyond raw retention), by the series API's
aggregate definitions.
"""

import datetime
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from apps.telemetry.queries import AGGREGATE_SQL

# Power units energy understands -> factor to kW.
POWER_UNITS = {"W": 0.001, "kW": 1.0, "MW": 1000.0}
DERIVED_INTERVALS = {
    "1m": datetime.timedelta(minutes=1),
    "5m": datetime.timedelta(minutes=5),
    "15m": datetime.timedelta(minutes=15),
    "1h": datetime.timedelta(hours=1),
    "1d": datetime.timedelta(days=1),
}
# Local-time origin of the bins: a midnight, so 1d bins are calendar days.
_ORIGIN = datetime.datetime(2000, 1, 1)


@dataclass
class DerivedBuckets:
    """Per-bucket values (bucket start as an aware UTC datetime) and the total over the range."""

    points: list[tuple[datetime.datetime, float]] = field(default_factory=list)
    total: float = 0.0


def bucket_zone(interval: str, tz: str) -> str:
    """The zone buckets are aligned in: the requested one for days, UTC below a day."""
    return tz if interval == "1d" else "UTC"


_ENERGY_SQL = """
WITH readings AS (
    SELECT ts, value FROM telemetry_reading
    WHERE series_id = %(series_id)s AND ts >= %(start)s - %(gap)s AND ts <= %(end)s + %(gap)s
), segments AS (
    SELECT lag(ts) OVER w AS t0, lag(value) OVER w AS v0, ts AS t1, value AS v1
    FROM readings
    WINDOW w AS (ORDER BY ts)
), bridged AS (
    SELECT t0, v0, t1, v1, date_part('epoch', t1 - t0) AS span
    FROM segments
    WHERE t0 IS NOT NULL AND t1 - t0 <= %(gap)s AND t1 > %(start)s AND t0 < %(end)s
), pieces AS (
    -- Each segment cut at the bucket boundaries it crosses and at the range's ends.
    SELECT bin.local_start, s.t0, s.v0, s.v1, s.span,
           greatest(s.t0, bin.lo, %(start)s) AS lo,
           least(s.t1, bin.hi, %(end)s) AS hi
    FROM bridged s
    CROSS JOIN LATERAL (
        SELECT g AS local_start, g AT TIME ZONE %(tz)s AS lo, (g + %(step)s) AT TIME ZONE %(tz)s AS hi
        FROM generate_series(
            date_bin(%(step)s, s.t0 AT TIME ZONE %(tz)s, %(origin)s), s.t1 AT TIME ZONE %(tz)s, %(step)s
        ) AS g
    ) AS bin
), energy AS (
    -- Trapezoid under the interpolated line between lo and hi: mean of the line's two ends times the duration.
    SELECT local_start,
           (v0 + (v1 - v0) * (date_part('epoch', lo - t0) + date_part('epoch', hi - t0)) / (2 * span))
             * date_part('epoch', hi - lo) / 3600.0 AS kwh
    FROM pieces
    WHERE hi > lo
)
SELECT local_start AT TIME ZONE %(tz)s AS bucket, sum(kwh) * %(factor)s
FROM energy
GROUP BY local_start
ORDER BY local_start
"""


def energy_buckets(
    *,
    series_id: int,
    unit_factor: float,
    start: datetime.datetime,
    end: datetime.datetime,
    interval: str,
    tz: str = "UTC",
    max_gap_seconds: int | None = None,
) -> DerivedBuckets:
    """kWh per bucket and in total from a power series (``unit_factor`` converts its unit to kW)."""
    gap = datetime.timedelta(seconds=settings.ENERGY_MAX_GAP_SECONDS if max_gap_seconds is None else max_gap_seconds)
    params = {
        "series_id": series_id,
        "start": start,
        "end": end,
        "gap": gap,
        "step": DERIVED_INTERVALS[interval],
        "tz": bucket_zone(interval, tz),
        "origin": _ORIGIN,
        "factor": unit_factor,
    }
    with connection.cursor() as cursor:
        cursor.execute(_ENERGY_SQL, params)
        points = [(bucket, kwh) for bucket, kwh in cursor.fetchall()]
    return DerivedBuckets(points=points, total=sum(kwh for _, kwh in points))


_VOLUME_SQL = """
WITH readings AS (
    (SELECT ts, value FROM telemetry_reading
     WHERE series_id = %(series_id)s AND ts < %(start)s ORDER BY ts DESC LIMIT 1)
    UNION ALL
    (SELECT ts, value FROM telemetry_reading
     WHERE series_id = %(series_id)s AND ts >= %(start)s AND ts < %(end)s)
), steps AS (
    SELECT ts, value, lag(value) OVER (ORDER BY ts) AS previous FROM readings
)
SELECT date_bin(%(step)s, ts AT TIME ZONE %(tz)s, %(origin)s) AT TIME ZONE %(tz)s AS bucket,
       sum(CASE WHEN value >= previous THEN value - previous ELSE value END)
FROM steps
WHERE previous IS NOT NULL AND ts >= %(start)s
GROUP BY 1
ORDER BY 1
"""


def volume_buckets(
    *, series_id: int, start: datetime.datetime, end: datetime.datetime, interval: str, tz: str = "UTC"
) -> DerivedBuckets:
    """Consumption per bucket and in total from a totalizer series, resets counted from 0."""
    params = {
        "series_id": series_id,
        "start": start,
        "end": end,
        "step": DERIVED_INTERVALS[interval],
        "tz": bucket_zone(interval, tz),
        "origin": _ORIGIN,
    }
    with connection.cursor() as cursor:
        cursor.execute(_VOLUME_SQL, params)
        points = [(bucket, volume) for bucket, volume in cursor.fetchall()]
    return DerivedBuckets(points=points, total=sum(volume for _, volume in points))


STATISTICS = ["avg", "min", "max", "count"]
# The readings of each series folded into the rollup columns the aggregate definitions read.
_STATISTICS_SQL = f"""
SELECT id, {", ".join(AGGREGATE_SQL[name] for name in STATISTICS)}
FROM (
    SELECT s.id, count(r.value) AS count, sum(r.value) AS sum, min(r.value) AS min, max(r.value) AS max
    FROM unnest(%s::int[]) AS s (id)
    LEFT JOIN telemetry_reading r ON r.series_id = s.id AND r.ts >= %s AND r.ts < %s
    GROUP BY s.id
) folded
"""


def statistics_compute(
    *, series_ids: list[int], start: datetime.datetime, end: datetime.datetime
) -> dict[int, dict[str, float | int | None]]:
    """avg, min, max and count per series over ``[start, end)``: one statement for all series."""
    with connection.cursor() as cursor:
        cursor.execute(_STATISTICS_SQL, [series_ids, start, end])
        return {series_id: dict(zip(STATISTICS, values, strict=True)) for series_id, *values in cursor.fetchall()}
