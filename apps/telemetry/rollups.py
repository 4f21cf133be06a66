"""The rollup engine: raw readings -> 1m -> 5m -> 1h -> 1d buckets, incrementally from watermarks.

Every resolution has a watermark (RollupWatermark.rolled_until): its buckets ending at or before it are final.
A run (``rollups_advance``, every 30 s from beat) does, per transaction:

1. recompute the *dirty* 1-minute buckets the ingest writer marked because a reading arrived behind the 1m
   watermark, then the 5m/1h/1d buckets that contain them, one statement per resolution over the whole set;
2. roll up the newly closed range: 1m from raw readings, then each coarser resolution merged from the one before
   it (count and sums add, min/max fold, first/last are picked by timestamp), one statement per resolution;
3. move the watermarks.

Every write is an upsert keyed by (series, bucket) computed from complete inputs, so running anything twice
changes nothing. A run works in bounded transactions (about ``READINGS_PER_STATEMENT`` raw readings each) and
loops until caught up or ``TIME_BUDGET_SECONDS`` is spent, so a first run over months of history neither holds one
giant transaction nor takes hours of beat ticks to catch up. A transaction-level advisory lock makes a second,
concurrent run skip instead of double-counting.

Late readings and in-flight flushes: the ingest writer marks a reading's 1m bucket dirty when the reading is older
than the 1m ``closing_until``, which it reads FOR SHARE in its flush statement. Before computing a range, a run
publishes the new ``closing_until`` in a short transaction of its own; that UPDATE waits for every flush that read
the old value (they hold the row share-locked until they commit), and every later flush sees the new value. So
each late reading is either committed before the range is computed (and included) or marked dirty (and
recomputed next run): none slips between. Ingest waits on the lock only for that one-row update.
"""

import datetime
import time

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.telemetry.models import Rollup1d, Rollup1h, Rollup1m, Rollup5m
from apps.telemetry.queries import series_cache_invalidate
from apps.telemetry.site_energy import site_energy_mark_dirty

# ---------------------------------------------------------------------------------------------------------------------
# Resolutions
# ---------------------------------------------------------------------------------------------------------------------

RESOLUTIONS = ("1m", "5m", "1h", "1d")  # finest first: each is merged from the one before it
RESOLUTION_SECONDS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
ROLLUP_MODELS = {"1m": Rollup1m, "5m": Rollup5m, "1h": Rollup1h, "1d": Rollup1d}

# UTC buckets. 2000-01-01 is a whole number of days after the Unix epoch, so a bucket start is simply the epoch
# seconds floored to a multiple of the resolution; Python (below) and date_bin (SQL) agree on every boundary.
ORIGIN = "2000-01-01T00:00:00Z"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)

# A 1-minute bucket is closed GRACE after it ends. Readings normally land within a second, but gateways that batch
# once a minute and broker or buffer delays add up to about a minute; two minutes lets nearly all of them in on
# time (late ones still become dirty and are fixed by the next run). Coarser resolutions need no grace of their
# own: they close when the finer watermark passes their end, so they are only ever merged from final rows.
GRACE = datetime.timedelta(minutes=2)

# Work bounds of a run. Each 1m statement covers a time span sized to hold about this many raw readings (adapted
# from the previous chunk, as densities vary by site and history); each transaction takes at most DIRTY_BATCH
# dirty buckets. The loop stops after TIME_BUDGET_SECONDS, well inside the 30 s beat interval.
READINGS_PER_STATEMENT = 1_000_000
DIRTY_BATCH = 50_000
TIME_BUDGET_SECONDS = 20.0
_FIRST_SPAN = datetime.timedelta(hours=1)
_MIN_SPAN = datetime.timedelta(minutes=1)
_MAX_SPAN = datetime.timedelta(days=7)

# pg_try_advisory_xact_lock key of the rollup engine (an arbitrary constant, unique within the project).
ADVISORY_LOCK_KEY = 0x46575F524F4C4C55  # "FW_ROLLU"

_TABLES = {resolution: model._meta.db_table for resolution, model in ROLLUP_MODELS.items()}
_STRIDES = {resolution: f"{seconds} seconds" for resolution, seconds in RESOLUTION_SECONDS.items()}
_FINER = {"5m": "1m", "1h": "5m", "1d": "1h"}
_COLUMNS = "series_id, bucket, count, sum, sum_sq, min, max, first_ts, first_value, last_ts, last_value"


def bucket_floor(ts: datetime.datetime, resolution: str) -> datetime.datetime:
    """Start of the UTC bucket of ``resolution`` containing ``ts`` (the same boundary as date_bin in SQL)."""
    seconds = RESOLUTION_SECONDS[resolution]
    micros = (ts - _EPOCH) // datetime.timedelta(microseconds=1)
    return _EPOCH + datetime.timedelta(microseconds=micros - micros % (seconds * 1_000_000))


# ---------------------------------------------------------------------------------------------------------------------
# Statements
# ---------------------------------------------------------------------------------------------------------------------
# first/last: ``min(ARRAY[epoch, value])[2]`` is the value at the earliest timestamp (arrays compare element by
# element; timestamps of one series are unique, and microseconds are exact in a float8 epoch until year 2255). It is
# an ordinary aggregate, so PostgreSQL can hash-aggregate and run it in parallel workers in one pass. The
# alternatives measured on 50 series x 6 h at 1 Hz: ``(array_agg(value ORDER BY ts))[1]`` was 1.2-2x slower (it
# forces a sort per group and cannot be partially aggregated) and DISTINCT ON / join-back subqueries 4-5x slower
# (a second pass over the readings). date_part, not extract: extract returns numeric since PostgreSQL 14.

_UPSERT = """
    ON CONFLICT (series_id, bucket) DO UPDATE SET
        count = EXCLUDED.count, sum = EXCLUDED.sum, sum_sq = EXCLUDED.sum_sq, min = EXCLUDED.min, max = EXCLUDED.max,
        first_ts = EXCLUDED.first_ts, first_value = EXCLUDED.first_value,
        last_ts = EXCLUDED.last_ts, last_value = EXCLUDED.last_value
"""

_RAW_AGGREGATES = """
    count(*), sum(r.value), sum(r.value * r.value), min(r.value), max(r.value),
    min(r.ts), (min(ARRAY[date_part('epoch', r.ts), r.value]))[2],
    max(r.ts), (max(ARRAY[date_part('epoch', r.ts), r.value]))[2]
"""

_MERGED_AGGREGATES = """
    sum(f.count)::int4, sum(f.sum), sum(f.sum_sq), min(f.min), max(f.max),
    min(f.first_ts), (min(ARRAY[date_part('epoch', f.first_ts), f.first_value]))[2],
    max(f.last_ts), (max(ARRAY[date_part('epoch', f.last_ts), f.last_value]))[2]
"""

# Readings (and rollups) are keyed (series_id, ts) with no index on ts alone, so a time range is read as one index
# range scan per series. OFFSET 0 keeps the LATERAL subquery from being flattened into a join, for which the
# planner picks a sequential scan of the whole table once the range is a few percent of it: on 5 M readings a
# 14-day chunk took 0.67 s that way against 0.44 s per series, and the gap grows with the table (a catch-up over a
# year would scan the whole table once per chunk). The outer query reports buckets and readings written.
_CLOSED_1M = f"""
    WITH written AS (
        INSERT INTO telemetry_rollup_1m ({_COLUMNS})
        SELECT s.id, date_bin('1 minute', r.ts, '{ORIGIN}') AS bucket, {_RAW_AGGREGATES}
        FROM telemetry_series s
        CROSS JOIN LATERAL (
            SELECT ts, value FROM telemetry_reading WHERE series_id = s.id AND ts >= %(lo)s AND ts < %(hi)s OFFSET 0
        ) r
        GROUP BY s.id, bucket
        {_UPSERT}
        RETURNING count
    )
    SELECT count(*), coalesce(sum(count), 0) FROM written
"""


def _closed_coarse_sql(resolution: str) -> str:
    return f"""
        INSERT INTO {_TABLES[resolution]} ({_COLUMNS})
        SELECT s.id, date_bin('{_STRIDES[resolution]}', f.bucket, '{ORIGIN}') AS coarse, {_MERGED_AGGREGATES}
        FROM telemetry_series s
        CROSS JOIN LATERAL (
            SELECT * FROM {_TABLES[_FINER[resolution]]}
            WHERE series_id = s.id AND bucket >= %(lo)s AND bucket < %(hi)s OFFSET 0
        ) f
        GROUP BY s.id, coarse
        {_UPSERT}
    """


# Dirty buckets are moved into a transaction-private table, so the statement per resolution joins a plain table
# instead of shipping the set to Python and back. Taken in key order and bounded; rows marked while this runs are
# committed after our snapshot and stay for the next run. IF NOT EXISTS + TRUNCATE: inside a caller's transaction
# (tests) ON COMMIT has not dropped the table of the previous chunk yet.
_DIRTY_TABLE = "CREATE TEMP TABLE IF NOT EXISTS rollup_dirty (series_id int4, bucket timestamptz) ON COMMIT DROP"
_DIRTY_TAKE = f"""
    WITH taken AS (
        DELETE FROM telemetry_rollupdirtybucket
        WHERE (series_id, bucket) IN (
            SELECT series_id, bucket FROM telemetry_rollupdirtybucket ORDER BY series_id, bucket LIMIT {DIRTY_BATCH}
        )
        RETURNING series_id, bucket
    )
    INSERT INTO rollup_dirty (series_id, bucket) SELECT series_id, bucket FROM taken
"""
_DIRTY_1M = f"""
    INSERT INTO telemetry_rollup_1m ({_COLUMNS})
    SELECT d.series_id, d.bucket, {_RAW_AGGREGATES}
    FROM rollup_dirty d
    JOIN telemetry_reading r ON r.series_id = d.series_id AND r.ts >= d.bucket AND r.ts < d.bucket + interval '1 minute'
    GROUP BY d.series_id, d.bucket
    {_UPSERT}
"""


def _dirty_coarse_sql(resolution: str) -> str:
    # Only buckets this resolution has closed: open ones are computed by the closed-range statement when they close.
    stride = _STRIDES[resolution]
    return f"""
        INSERT INTO {_TABLES[resolution]} ({_COLUMNS})
        SELECT t.series_id, t.coarse, {_MERGED_AGGREGATES}
        FROM (
            SELECT DISTINCT series_id, date_bin('{stride}', bucket, '{ORIGIN}') AS coarse FROM rollup_dirty
        ) t
        JOIN {_TABLES[_FINER[resolution]]} f
          ON f.series_id = t.series_id AND f.bucket >= t.coarse AND f.bucket < t.coarse + interval '{stride}'
        WHERE t.coarse + interval '{stride}' <= %(watermark)s
        GROUP BY t.series_id, t.coarse
        {_UPSERT}
    """


_CLOSED_COARSE = {resolution: _closed_coarse_sql(resolution) for resolution in _FINER}
_DIRTY_COARSE = {resolution: _dirty_coarse_sql(resolution) for resolution in _FINER}

# The earliest reading, as one index probe per series (min(ts) alone would scan the whole table: ts is not indexed
# on its own).
_FIRST_READING = """
    SELECT min(first.ts) FROM telemetry_series s
    CROSS JOIN LATERAL (SELECT ts FROM telemetry_reading r WHERE r.series_id = s.id ORDER BY ts LIMIT 1) first
"""

# With the lock, settings for this transaction only: a chunk aggregates about a million groups, which spills to disk
# at the default work_mem (4 MB); and JIT compilation cost 0.5 s per chunk statement for no gain (measured: the
# aggregation of 1 M readings took 2.7 s with JIT, 1.1 s without).
_LOCK_AND_SETTINGS = """
    SELECT pg_try_advisory_xact_lock(%s), set_config('work_mem', '64MB', true), set_config('jit', 'off', true)
"""

_WATERMARKS_SAVE = """
    INSERT INTO telemetry_rollupwatermark (resolution, rolled_until, updated_at)
    SELECT resolution, rolled_until, now() FROM unnest(%s::text[], %s::timestamptz[]) AS w (resolution, rolled_until)
    ON CONFLICT (resolution) DO UPDATE SET rolled_until = EXCLUDED.rolled_until, updated_at = EXCLUDED.updated_at
    WHERE telemetry_rollupwatermark.rolled_until IS DISTINCT FROM EXCLUDED.rolled_until
"""


# ---------------------------------------------------------------------------------------------------------------------
# The service
# ---------------------------------------------------------------------------------------------------------------------


def rollups_advance(*, now: datetime.datetime | None = None, time_budget: float = TIME_BUDGET_SECONDS) -> dict:
    """Recompute dirty buckets and roll up every closed bucket past the watermarks; return what was done.

    ``now`` decides which buckets are closed (tests pass it; the beat job uses the clock). Returns
    ``{"skipped": ...}`` when another run holds the lock, else the buckets written per resolution, the raw
    readings rolled up, the dirty buckets recomputed, the new watermarks, whether it caught up and the seconds taken.
    """
    started = time.monotonic()
    now = now or timezone.now()
    target = bucket_floor(now - GRACE, "1m")
    figures = {
        "buckets": dict.fromkeys(RESOLUTIONS, 0),
        "readings": 0,
        "dirty": 0,
        "transactions": 0,
        "caught_up": False,
        "watermarks": {},
    }
    span = _FIRST_SPAN
    while True:
        _closing_publish(target)
        # One transaction per bounded chunk: the advisory lock is transaction-level, so it is taken again each
        # time; if another run got it in between, it carries on and this one stops.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_LOCK_AND_SETTINGS, [ADVISORY_LOCK_KEY])
            if not cursor.fetchone()[0]:
                if not figures["transactions"]:
                    return {"skipped": "another run holds the lock"}
                break
            figures["transactions"] += 1
            marks = _watermarks_load(cursor, now)
            dirty = _dirty_recompute(cursor, marks)
            readings, span = _closed_advance(cursor, marks, target, span, figures["buckets"])
            figures["dirty"] += dirty
            figures["readings"] += readings
            figures["watermarks"] = {resolution: marks[resolution].isoformat() for resolution in RESOLUTIONS}
        if marks["1m"] >= target and dirty < DIRTY_BATCH:
            figures["caught_up"] = True
            break
        if time.monotonic() - started >= time_budget:
            break
    if figures["dirty"]:
        # Late data rewrote buckets that cached historical responses may hold.
        series_cache_invalidate()
    figures["seconds"] = round(time.monotonic() - started, 3)
    return figures


def _closing_publish(target: datetime.datetime) -> None:
    """Tell ingest the 1m range up to ``target`` is being closed, after in-flight flushes finish (see docstring)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE telemetry_rollupwatermark SET closing_until = %s"
            " WHERE resolution = '1m' AND (closing_until IS NULL OR closing_until < %s)",
            [target, target],
        )


def _watermarks_load(cursor, now: datetime.datetime) -> dict[str, datetime.datetime]:
    """The watermarks, creating missing ones at the start of the day of the earliest reading.

    With no readings at all they start raw retention ago: history backfilled later within retention is then rolled
    up as ordinary closed ranges (cheaply: empty ranges are a few index probes) rather than as dirty buckets.
    A day boundary is a boundary of every resolution, so all four can start at the same instant.
    """
    cursor.execute("SELECT resolution, rolled_until FROM telemetry_rollupwatermark")
    marks = dict(cursor.fetchall())
    if len(marks) < len(RESOLUTIONS):
        cursor.execute(_FIRST_READING)
        first = cursor.fetchone()[0] or now - datetime.timedelta(days=settings.RAW_RETENTION_DAYS)
        floor = bucket_floor(first, "1d")
        missing = [resolution for resolution in RESOLUTIONS if resolution not in marks]
        cursor.execute(_WATERMARKS_SAVE, [missing, [floor] * len(missing)])
        marks.update(dict.fromkeys(missing, floor))
    return marks


def _dirty_recompute(cursor, marks: dict[str, datetime.datetime]) -> int:
    """Recompute a batch of dirty 1m buckets from raw, then the closed coarser buckets containing them."""
    cursor.execute("SELECT EXISTS (SELECT FROM telemetry_rollupdirtybucket)")
    if not cursor.fetchone()[0]:  # the usual case: no temporary table, no catalogue churn
        return 0
    cursor.execute(_DIRTY_TABLE)
    cursor.execute("TRUNCATE rollup_dirty")
    cursor.execute(_DIRTY_TAKE)
    taken = cursor.rowcount
    cursor.execute(_DIRTY_1M)
    for resolution in _FINER:
        cursor.execute(_DIRTY_COARSE[resolution], {"watermark": marks[resolution]})
    # The sites' stored hourly kWh computed from the hourly buckets just recomputed: marked in this transaction, so
    # that they are recomputed whenever these buckets are committed.
    site_energy_mark_dirty(cursor, watermark=marks["1h"], origin=ORIGIN)
    return taken


def _closed_advance(cursor, marks, target, span, buckets) -> tuple[int, datetime.timedelta]:
    """Roll up one bounded chunk of closed 1m buckets and everything it closes above; update ``marks`` in place.

    Returns the raw readings rolled up and the span the next chunk should cover.
    """
    readings = 0
    lo = marks["1m"]
    if lo < target:
        # Whole minutes: a bucket split across two chunks would be upserted twice, each time from part of its readings.
        hi = min(target, bucket_floor(lo + span, "1m"))
        cursor.execute(_CLOSED_1M, {"lo": lo, "hi": hi})
        written, readings = cursor.fetchone()
        buckets["1m"] += written
        marks["1m"] = hi
        # Size the next chunk to hold about READINGS_PER_STATEMENT readings, growing at most 8x at a time.
        factor = min(8.0, READINGS_PER_STATEMENT / max(readings, 1))
        span = min(_MAX_SPAN, max(_MIN_SPAN, (hi - lo) * factor))
    for resolution, finer in _FINER.items():
        hi = bucket_floor(marks[finer], resolution)
        if hi > marks[resolution]:
            cursor.execute(_CLOSED_COARSE[resolution], {"lo": marks[resolution], "hi": hi})
            buckets[resolution] += cursor.rowcount
            marks[resolution] = hi
    cursor.execute(_WATERMARKS_SAVE, [list(RESOLUTIONS), [marks[resolution] for resolution in RESOLUTIONS]])
    return readings, span
