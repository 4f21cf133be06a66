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

Sources: a figure comes from raw readings while its range is within raw retention and at most
``DERIVED_RAW_MAX_DAYS`` long; otherwise from hourly rollups (kept forever), with the range taken in whole hours, and
from raw readings after the hourly watermark (the hours not rolled up yet). ``DerivedBuckets.resolution`` says which.
From rollups, energy is the trapezoid inside each hour (``(last_ts - first_ts) / (count - 1) * (sum - (first + last) /
2)``, exact for evenly spaced readings) plus the segment joining one hour's last reading to the next hour's first
(split at the boundary, not bridged over a gap, as from raw); volume is each hour's advance (``last - first``, or
``(max - first) + last`` when ``min < first`` shows a reset inside the hour: exact when the register's highest value
came before the reset) plus the step from the previous hour's last reading to this hour's first, resets counted from 0.
Buckets of an hour or more in rollup mode are unions of whole hours, so local days, weeks (from Monday) and months
are exact in zones with whole-hour offsets.

Statistics: avg, min, max and count are computed from raw readings in one aggregate statement (exact for any range
while raw data is retained; the rollup-based series API serves ranges beyond raw retention), by the series API's
aggregate definitions.
"""

import datetime
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from apps.devices.energy import POWER_UNITS  # noqa: F401  (re-exported: where energy's units were always found)
from apps.telemetry.models import RollupWatermark
from apps.telemetry.queries import AGGREGATE_SQL

# Bucket intervals -> PostgreSQL interval literals. Weeks start on Monday and months on the 1st, local time.
DERIVED_INTERVALS = {
    "1m": "1 minute",
    "5m": "5 minutes",
    "15m": "15 minutes",
    "1h": "1 hour",
    "1d": "1 day",
    "1w": "7 days",
    "1mo": "1 month",
}
# Nominal lengths, for bounding the number of buckets a request may ask for.
INTERVAL_LENGTHS = {
    "1m": datetime.timedelta(minutes=1),
    "5m": datetime.timedelta(minutes=5),
    "15m": datetime.timedelta(minutes=15),
    "1h": datetime.timedelta(hours=1),
    "1d": datetime.timedelta(days=1),
    "1w": datetime.timedelta(days=7),
    "1mo": datetime.timedelta(days=28),
}
# The most buckets one computation answers, API or page: what a request may make the database compute and send.
MAX_BUCKETS = 10_000


def longest_range(interval: str) -> datetime.timedelta:
    """The longest range computed in buckets of ``interval``: ``MAX_BUCKETS`` of them."""
    return INTERVAL_LENGTHS[interval] * MAX_BUCKETS


LOCAL_INTERVALS = {"1d", "1w", "1mo"}  # calendar buckets, aligned in the requested zone
ROLLUP_INTERVALS = {"1h", *LOCAL_INTERVALS}  # what hourly rollups can be summed into
RAW, HOURLY = "raw", "1h"
# Local-time origin of the bins: a midnight that is a Monday, so 1d bins are calendar days and 1w bins ISO weeks.
_ORIGIN = datetime.datetime(2000, 1, 3)
_HOUR = datetime.timedelta(hours=1)


@dataclass
class DerivedBuckets:
    """Per-bucket values (bucket start as an aware UTC datetime) and the total over the range, with where they came
    from: ``resolution`` "raw" or "1h" (hourly rollups up to ``raw_from``, raw readings after it, if set), over the
    range ``[start, end)`` actually covered (whole hours from rollups)."""

    points: list[tuple[datetime.datetime, float]] = field(default_factory=list)
    total: float = 0.0
    resolution: str = RAW
    raw_from: datetime.datetime | None = None
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None

    @classmethod
    def of_plan(
        cls, points: list[tuple[datetime.datetime, float]], plan: "DerivedPlan", total: float | None = None
    ) -> "DerivedBuckets":
        """``points`` (in bucket order) as the figures of ``plan``: their total (unless given: points summed where
        they are stored), and the plan's resolution, split and range."""
        return cls(
            points=points,
            total=sum(value for _, value in points) if total is None else total,
            resolution=plan.resolution,
            raw_from=plan.split,
            start=plan.start,
            end=plan.end,
        )


def bucket_zone(interval: str, tz: str) -> str:
    """The zone buckets are aligned in: the requested one for days, weeks and months, UTC below a day."""
    return tz if interval in LOCAL_INTERVALS else "UTC"


def _bin_sql(interval: str, local: str) -> str:
    """The start of the (local) bucket containing the local timestamp expression ``local``."""
    if interval == "1mo":
        return f"date_trunc('month', {local})"
    return f"date_bin(%(step)s::interval, {local}, %(origin)s)"


def local_bucket_sql(interval: str, ts_sql: str) -> str:
    """SQL of the start (timestamptz) of the ``interval`` bucket containing the timestamptz expression ``ts_sql``,
    aligned as the figure statements align theirs (parameters ``bucket_parameters``): for whoever groups other
    hourly figures into the same local days (``energy.heating_degree_days_by_day``)."""
    return f"{_bin_sql(interval, f'{ts_sql} AT TIME ZONE %(tz)s')} AT TIME ZONE %(tz)s"


def bucket_parameters(interval: str, tz: str) -> dict:
    """The parameters ``local_bucket_sql`` refers to."""
    return {"step": DERIVED_INTERVALS[interval], "tz": bucket_zone(interval, tz), "origin": _ORIGIN}


@dataclass(frozen=True)
class DerivedPlan:
    """Where a derived figure over ``[start, end)`` is read from: raw readings only, or hourly rollups over
    ``[start, split)`` (start floored to the hour) and raw readings over ``[split, end)``."""

    resolution: str
    start: datetime.datetime
    end: datetime.datetime
    split: datetime.datetime | None = None


def _floor_hour(ts: datetime.datetime) -> datetime.datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


class IntervalNeedsRaw(ValueError):
    """Buckets below an hour asked for over a range that is read from hourly rollups."""


def derived_plan(
    *,
    start: datetime.datetime,
    end: datetime.datetime,
    interval: str,
    now: datetime.datetime | None = None,
    raw_retention_days: int | None = None,
    resolution: str = "auto",
) -> DerivedPlan:
    """Raw while ``[start, end)`` is within raw retention and at most ``DERIVED_RAW_MAX_DAYS`` long (or
    ``resolution="raw"``), else hourly rollups up to the hourly watermark and raw after it. Raises
    ``IntervalNeedsRaw`` for sub-hour buckets that would have to come from rollups."""
    now = now or datetime.datetime.now(datetime.UTC)
    retention = datetime.timedelta(days=raw_retention_days or settings.RAW_RETENTION_DAYS)
    long_range = end - start > datetime.timedelta(days=settings.DERIVED_RAW_MAX_DAYS)
    if resolution == RAW or (resolution == "auto" and start >= now - retention and not long_range):
        return DerivedPlan(resolution=RAW, start=start, end=end)
    if interval not in ROLLUP_INTERVALS:
        raise IntervalNeedsRaw(
            f"{interval} buckets come only from raw readings: this range is read from hourly rollups "
            f"(older than raw retention or over {settings.DERIVED_RAW_MAX_DAYS} days); use 1h or coarser."
        )
    rolled = RollupWatermark.objects.filter(resolution=HOURLY).values_list("rolled_until", flat=True).first()
    start = _floor_hour(start)
    end_hour = _floor_hour(end)
    split = min(end_hour, rolled) if rolled is not None else start
    split = max(split, start)
    # Past raw retention nothing raw is left after the split: the range ends at the last whole hour.
    end = end if end >= now - retention else max(end_hour, start)
    return DerivedPlan(resolution=HOURLY, start=start, end=end, split=split if split < end else None)


# ---------------------------------------------------------------------------------------------------------------------
# Energy: segments (t0, v0) -> (t1, v1) of the power curve, integrated per bucket by the trapezoidal rule
# ---------------------------------------------------------------------------------------------------------------------


def _segment_energy_sql(interval: str) -> str:
    """CTEs ``pieces`` and ``energy (series_id, local_start, kwh)`` over a CTE ``bridged (series_id, t0, v0, t1,
    v1)``: each segment cut at the bucket boundaries it crosses and at the range's ends."""
    return f"""
, pieces AS (
    SELECT s.series_id, s.factor, bin.local_start, s.t0, s.v0, s.v1, date_part('epoch', s.t1 - s.t0) AS span,
           greatest(s.t0, bin.lo, %(start)s) AS lo,
           least(s.t1, bin.hi, %(end)s) AS hi
    FROM bridged s
    CROSS JOIN LATERAL (
        SELECT g AS local_start, g AT TIME ZONE %(tz)s AS lo, (g + %(step)s::interval) AT TIME ZONE %(tz)s AS hi
        FROM generate_series(
            {_bin_sql(interval, "s.t0 AT TIME ZONE %(tz)s")}, s.t1 AT TIME ZONE %(tz)s, %(step)s::interval
        ) AS g
    ) AS bin
), energy AS (
    -- Trapezoid under the interpolated line between lo and hi: mean of the line's two ends times the duration.
    SELECT series_id, factor, local_start,
           (v0 + (v1 - v0) * (date_part('epoch', lo - t0) + date_part('epoch', hi - t0)) / (2 * span))
             * date_part('epoch', hi - lo) / 3600.0 AS kwh
    FROM pieces
    WHERE hi > lo
)"""


def _energy_raw_sql(interval: str, key: str) -> str:
    return (
        """
WITH readings AS (
    SELECT s.id AS series_id, s.factor, r.ts, r.value
    FROM unnest(%(ids)s::int4[], %(factors)s::float8[]) AS s (id, factor)
    CROSS JOIN LATERAL (
        SELECT ts, value FROM telemetry_reading
        WHERE series_id = s.id AND ts >= %(start)s - %(gap)s AND ts <= %(end)s + %(gap)s OFFSET 0
    ) r
), segments AS (
    SELECT series_id, factor, lag(ts) OVER w AS t0, lag(value) OVER w AS v0, ts AS t1, value AS v1
    FROM readings
    WINDOW w AS (PARTITION BY series_id ORDER BY ts)
), bridged AS (
    SELECT series_id, factor, t0, v0, t1, v1
    FROM segments
    WHERE t0 IS NOT NULL AND t1 - t0 <= %(gap)s AND t1 > %(start)s AND t0 < %(end)s
)"""
        + _segment_energy_sql(interval)
        + f"""
SELECT {key}, local_start AT TIME ZONE %(tz)s AS bucket, sum(kwh * factor)
FROM energy
GROUP BY 1, local_start
ORDER BY 1, local_start
"""
    )


# The hourly rows of each series in [start, end), with the hour before the range (its last reading starts the
# segment into the range) and the first reading after it (ends the segment out of the range), ``inside`` telling
# them apart. Ordered by first_ts: the pseudo-rows have first_ts = last_ts = their reading's time.
_ROLLUP_ROWS = """
WITH hourly AS (
    SELECT s.id AS series_id, s.factor, h.*
    FROM unnest(%(ids)s::int4[], %(factors)s::float8[]) AS s (id, factor)
    CROSS JOIN LATERAL (
        (SELECT bucket, false AS inside, count, sum, min, max, first_ts, first_value, last_ts, last_value
         FROM telemetry_rollup_1h WHERE series_id = s.id AND bucket < %(start)s ORDER BY bucket DESC LIMIT 1)
        UNION ALL
        (SELECT bucket, true, count, sum, min, max, first_ts, first_value, last_ts, last_value
         FROM telemetry_rollup_1h WHERE series_id = s.id AND bucket >= %(start)s AND bucket < %(end)s OFFSET 0)
        UNION ALL
        (SELECT bucket, false, 1, first_value, first_value, first_value, first_ts, first_value, first_ts, first_value
         FROM telemetry_rollup_1h WHERE series_id = s.id AND bucket >= %(end)s ORDER BY bucket LIMIT 1)
        UNION ALL
        (SELECT ts, false, 1, value, value, value, ts, value, ts, value
         FROM telemetry_reading WHERE series_id = s.id AND ts >= %(end)s ORDER BY ts LIMIT 1)
    ) h
), joined AS (
    SELECT *, lag(last_ts) OVER w AS previous_ts, lag(last_value) OVER w AS previous_value
    FROM hourly
    WINDOW w AS (PARTITION BY series_id ORDER BY first_ts, inside DESC)
)"""


def _energy_rollup_sql(interval: str, key: str) -> str:
    return (
        _ROLLUP_ROWS
        + """
, bridged AS (
    SELECT series_id, factor, previous_ts AS t0, previous_value AS v0, first_ts AS t1, first_value AS v1
    FROM joined
    WHERE previous_ts IS NOT NULL AND first_ts > previous_ts AND first_ts - previous_ts <= %(gap)s
)"""
        + _segment_energy_sql(interval)
        + f"""
, inside_hours AS (
    -- The trapezoids between an hour's own readings, taken as evenly spaced.
    SELECT series_id, factor, {_bin_sql(interval, "bucket AT TIME ZONE %(tz)s")} AS local_start,
           date_part('epoch', last_ts - first_ts) / (count - 1) * (sum - (first_value + last_value) / 2) / 3600.0
    FROM joined
    WHERE inside AND count > 1
)
SELECT {key}, local_start AT TIME ZONE %(tz)s AS bucket, sum(kwh * factor)
FROM (SELECT series_id, factor, local_start, kwh FROM energy UNION ALL SELECT * FROM inside_hours) AS parts
GROUP BY 1, local_start
ORDER BY 1, local_start
"""
    )


def _volume_raw_sql(interval: str, key: str) -> str:
    # Per series, inside the lateral: its readings come from the index in time order, so the step from each
    # reading's predecessor needs only that series' few rows sorted, and its buckets are summed there; the outer
    # aggregate adds one row per series and bucket. Over the whole set instead (1,000 series, 2.6 hours of readings
    # every 5 minutes, 31,000 rows), sorting all rows for the window and again for the buckets took 53 ms against
    # 37 ms (bench/energy_pages.py data, JIT off).
    return f"""
SELECT {key}, r.bucket AT TIME ZONE %(tz)s AS bucket, sum(r.volume * s.factor)
FROM unnest(%(ids)s::int4[], %(factors)s::float8[]) AS s (series_id, factor)
CROSS JOIN LATERAL (
    SELECT {_bin_sql(interval, "ts AT TIME ZONE %(tz)s")} AS bucket,
           sum(CASE WHEN value >= previous THEN value - previous ELSE value END) AS volume
    FROM (
        SELECT ts, value, lag(value) OVER (ORDER BY ts) AS previous
        FROM (
            (SELECT ts, value FROM telemetry_reading
             WHERE series_id = s.series_id AND ts < %(start)s ORDER BY ts DESC LIMIT 1)
            UNION ALL
            (SELECT ts, value FROM telemetry_reading
             WHERE series_id = s.series_id AND ts >= %(start)s AND ts < %(end)s ORDER BY ts)
        ) AS readings
    ) AS steps
    WHERE previous IS NOT NULL AND ts >= %(start)s
    GROUP BY 1
) AS r
GROUP BY 1, 2
ORDER BY 1, 2
"""


def _volume_rollup_sql(interval: str, key: str) -> str:
    # Volume needs only the hours inside the range and the last one before it (the rows after the range end the
    # segments out of it, which only energy has), so it does not read _ROLLUP_ROWS: one index scan over
    # (series_id, bucket) gives the rows ordered by series and hour, and the window takes each hour's step from its
    # predecessor without sorting them (inside the range, ordering by bucket is ordering by first_ts). The step into
    # the range, from the hour before it, is one more row per series. The factor is joined once per row by hash.
    # Over a year of 1,000 series (8.06 M rows) that took 8.4 s against 12.0 s with _ROLLUP_ROWS, whose sort by
    # (series, first_ts) spilled 584 MB to disk (bench/energy_pages.py data; docs/energy-pages-performance.md).
    return f"""
WITH s AS (
    SELECT id, factor FROM unnest(%(ids)s::int4[], %(factors)s::float8[]) AS s (id, factor)
), steps AS (
    SELECT series_id, bucket,
           CASE WHEN previous IS NULL THEN 0
                WHEN first_value >= previous THEN first_value - previous
                ELSE first_value END
           + CASE WHEN min >= first_value THEN last_value - first_value ELSE max - first_value + last_value END
           AS volume
    FROM (
        SELECT series_id, bucket, min, max, first_value, last_value,
               lag(last_value) OVER (PARTITION BY series_id ORDER BY bucket) AS previous
        FROM telemetry_rollup_1h
        WHERE series_id = ANY(%(ids)s::int4[]) AND bucket >= %(start)s AND bucket < %(end)s
    ) hours
    UNION ALL
    -- The step from the last hour before the range to the first hour inside it (resets counted from 0).
    SELECT s.id, f.bucket,
           CASE WHEN f.first_value >= b.last_value THEN f.first_value - b.last_value ELSE f.first_value END
    FROM s
    CROSS JOIN LATERAL (
        SELECT last_value FROM telemetry_rollup_1h
        WHERE series_id = s.id AND bucket < %(start)s ORDER BY bucket DESC LIMIT 1
    ) b
    CROSS JOIN LATERAL (
        SELECT bucket, first_value FROM telemetry_rollup_1h
        WHERE series_id = s.id AND bucket >= %(start)s AND bucket < %(end)s ORDER BY bucket LIMIT 1
    ) f
)
SELECT {key}, {_bin_sql(interval, "bucket AT TIME ZONE %(tz)s")} AT TIME ZONE %(tz)s AS bucket, sum(volume * s.factor)
FROM steps JOIN s ON s.id = steps.series_id
GROUP BY 1, 2
ORDER BY 1, 2
"""


def _run(
    builder, *, ids: list[int], start, end, interval: str, tz: str, gap=None, factors: list[float] | None = None
) -> dict[int | None, dict]:
    """``{series_id: {bucket: value}}`` of one statement over every series; with ``factors`` (one per series),
    ``{None: {bucket: sum of value * factor}}``: a site's total comes back as one row per bucket, summed in the
    same aggregate that makes the buckets (a second grouping over (series, bucket) rows cost twice the time)."""
    combine = factors is not None
    by_series: dict[int | None, dict] = {series_id: {} for series_id in ([None] if combine else ids)}
    if not ids or start >= end:
        return by_series
    sql, params = _statement(builder, ids=ids, start=start, end=end, interval=interval, tz=tz, gap=gap, factors=factors)
    with transaction.atomic(), connection.cursor() as cursor:
        figure_statement_settings(cursor)
        cursor.execute(sql, params)
        for series_id, bucket, value in cursor.fetchall():
            by_series[series_id][bucket] = value
    return by_series


def figure_statement_settings(cursor) -> None:
    """Settings for the rest of the caller's transaction before a figure statement (over hourly rollups or raw
    readings)."""
    # Over 1.3 M hourly rows (1,000 series x 8 weeks) the statement took 11.5 s with JIT and 8.3 s without:
    # compiling costs more than it saves on these plans. A raw statement over 1,000 series crosses the JIT cost
    # threshold too, on a few hours of readings: 8.7 ms of compiling in a 55 ms statement that gained nothing.
    cursor.execute("SET LOCAL jit = off")


def _statement(builder, *, ids, start, end, interval: str, tz: str, gap, factors) -> tuple[str, dict]:
    """The SQL and parameters of one figure statement: rows ``(series id or NULL with factors, bucket, value)``."""
    combine = factors is not None
    params = {
        "ids": ids,
        "factors": factors if combine else [1.0] * len(ids),
        "start": start,
        "end": end,
        "gap": gap,
        "step": DERIVED_INTERVALS[interval],
        "tz": bucket_zone(interval, tz),
        "origin": _ORIGIN,
    }
    return builder(interval, "NULL::int4" if combine else "series_id"), params


def combined_rollup_statements(
    *,
    power: list[tuple[int, float]],
    registers: list[tuple[int, float]],
    start: datetime.datetime,
    end: datetime.datetime,
    interval: str,
    tz: str,
    max_gap_seconds: int | None = None,
    combine: bool = True,
) -> list[tuple[str, dict]]:
    """The statements ``energy_figures`` and ``volume_figures`` run over hourly rollups for ``[start, end)`` with
    ``factors``, for whoever stores their rows rather than fetching them (``site_energy``): each gives rows ``(NULL,
    bucket, value times factor)``. ``power`` and ``registers`` are ``(series id, factor)`` pairs; an empty kind
    has no statement. ``combine=False``: the statements they run without ``factors`` (rows ``(series id, bucket,
    value)`` in the series' own unit; the caller applies each series' factor to the value, as ``energy.kwh``)."""
    statements = []
    for builder, pairs, gap in (
        (_energy_rollup_sql, power, energy_gap(max_gap_seconds)),
        (_volume_rollup_sql, registers, None),
    ):
        if pairs and start < end:
            ids, factors = [series_id for series_id, _ in pairs], [factor for _, factor in pairs]
            statements.append(
                _statement(
                    builder,
                    ids=ids,
                    start=start,
                    end=end,
                    interval=interval,
                    tz=tz,
                    gap=gap,
                    factors=factors if combine else None,
                )
            )
    return statements


def _figures(
    *, raw_sql, rollup_sql, ids: list[int], plan: DerivedPlan, interval: str, tz: str, gap=None, factors=None
) -> dict[int | None, DerivedBuckets]:
    """Run the plan: raw over the whole range, or rollups before the split and raw after, merged per bucket."""
    arguments = {"ids": ids, "interval": interval, "tz": tz, "gap": gap, "factors": factors}
    if plan.resolution == RAW:
        parts = [_run(raw_sql, start=plan.start, end=plan.end, **arguments)]
    else:
        split = plan.split or plan.end
        parts = [_run(rollup_sql, start=plan.start, end=split, **arguments)]
        if plan.split is not None:
            parts.append(_run(raw_sql, start=plan.split, end=plan.end, **arguments))
    results = {}
    for series_id in parts[0]:
        merged: dict[datetime.datetime, float] = {}
        for part in parts:
            for bucket, value in part[series_id].items():
                merged[bucket] = merged.get(bucket, 0.0) + value
        results[series_id] = DerivedBuckets.of_plan(sorted(merged.items()), plan)
    return results


def energy_gap(max_gap_seconds: int | None = None) -> datetime.timedelta:
    """The longest step between two power readings that energy bridges (``ENERGY_MAX_GAP_SECONDS`` by default)."""
    return datetime.timedelta(seconds=settings.ENERGY_MAX_GAP_SECONDS if max_gap_seconds is None else max_gap_seconds)


def energy_figures(
    *,
    series_ids: list[int],
    plan: DerivedPlan,
    interval: str,
    tz: str = "UTC",
    max_gap_seconds: int | None = None,
    factors: list[float] | None = None,
) -> dict[int | None, DerivedBuckets]:
    """Energy per bucket and in total of power series, in the series' own unit times hours (the caller converts to
    kWh), one statement per source whatever the number of series. With ``factors`` (one per series), the series'
    sum times their factors, under the key None."""
    return _figures(
        raw_sql=_energy_raw_sql,
        rollup_sql=_energy_rollup_sql,
        ids=series_ids,
        plan=plan,
        interval=interval,
        tz=tz,
        gap=energy_gap(max_gap_seconds),
        factors=factors,
    )


def volume_figures(
    *, series_ids: list[int], plan: DerivedPlan, interval: str, tz: str = "UTC", factors: list[float] | None = None
) -> dict[int | None, DerivedBuckets]:
    """Consumption per bucket and in total of totalizer series, resets counted from 0, one statement per source
    (summed times ``factors`` under the key None, as ``energy_figures``)."""
    return _figures(
        raw_sql=_volume_raw_sql,
        rollup_sql=_volume_rollup_sql,
        ids=series_ids,
        plan=plan,
        interval=interval,
        tz=tz,
        factors=factors,
    )


def energy_buckets(
    *,
    series_id: int,
    unit_factor: float,
    start: datetime.datetime,
    end: datetime.datetime,
    interval: str,
    tz: str = "UTC",
    max_gap_seconds: int | None = None,
    plan: DerivedPlan | None = None,
) -> DerivedBuckets:
    """kWh per bucket and in total from a power series (``unit_factor`` converts its unit to kW); raw readings
    unless a ``plan`` says otherwise."""
    plan = plan or DerivedPlan(resolution=RAW, start=start, end=end)
    result = energy_figures(
        series_ids=[series_id], plan=plan, interval=interval, tz=tz, max_gap_seconds=max_gap_seconds
    )[series_id]
    return scaled(result, unit_factor)


def volume_buckets(
    *,
    series_id: int,
    start: datetime.datetime,
    end: datetime.datetime,
    interval: str,
    tz: str = "UTC",
    plan: DerivedPlan | None = None,
) -> DerivedBuckets:
    """Consumption per bucket and in total from a totalizer series, resets counted from 0."""
    plan = plan or DerivedPlan(resolution=RAW, start=start, end=end)
    return volume_figures(series_ids=[series_id], plan=plan, interval=interval, tz=tz)[series_id]


def scaled(result: DerivedBuckets, factor: float) -> DerivedBuckets:
    """The same buckets times ``factor`` (a unit conversion)."""
    return DerivedBuckets(
        points=[(bucket, value * factor) for bucket, value in result.points],
        total=result.total * factor,
        resolution=result.resolution,
        raw_from=result.raw_from,
        start=result.start,
        end=result.end,
    )


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
