"""Building and running series queries: interval choice, one SQL statement per request, row estimates, cache keys.

Nothing here checks permissions: callers pass series they have already resolved through
``apps.telemetry.selectors`` (which scopes by ``device_list_for_user``). Everything is read-only.

Buckets are UTC and half-open ``[bucket, bucket + interval)``; a request for ``[start, end)`` returns the buckets
whose *start* lies in the range, so a range that does not begin on a bucket boundary leaves out the bucket that
straddles ``start``. ``1d`` with a timezone other than UTC merges the ``1h`` rollups of each local calendar day
(23 or 25 of them on DST changes), since the ``1d`` table holds UTC days.

Aggregates are computed from the mergeable rollup columns: ``avg = sum / count``; ``stddev`` is the *sample*
standard deviation ``sqrt(max(0, (sum_sq - sum² / count) / (count - 1)))`` (null for a single reading);
``first``/``last`` are the values of the earliest/latest reading in the bucket.
"""

import datetime
import hashlib
import json
import math
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

from apps.core.db.binary import rows_fetch
from apps.core.time import epoch_ms, epoch_ms_sql
from apps.telemetry.choices import Resolution

RAW = "raw"
AUTO = "auto"
# Finest first: auto picks the first one that fits.
INTERVAL_SECONDS = {
    Resolution.MINUTE.value: 60,
    Resolution.FIVE_MINUTES.value: 300,
    Resolution.HOUR.value: 3600,
    Resolution.DAY.value: 86400,
}
INTERVALS = [AUTO, RAW, *INTERVAL_SECONDS]

# SQL expression of each aggregate over the rollup columns (a table row, or a merged row with the same names): the one
# definition, used by the series API, exports and the derived statistics. greatest(0, ...) absorbs the rounding that
# can make sum_sq - sum²/count slightly negative for a constant series.
AGGREGATE_SQL = {
    "avg": "sum / count",
    "min": "min",
    "max": "max",
    "count": "count",
    "sum": "sum",
    "stddev": "CASE WHEN count > 1 THEN sqrt(greatest(0, (sum_sq - sum * sum / count) / (count - 1))) END",
    "first": "first_value",
    "last": "last_value",
}
AGGREGATES = list(AGGREGATE_SQL)
DEFAULT_AGGREGATES = ["avg"]

UTC = datetime.UTC
CACHE_TTL_SECONDS = 3600
CACHE_GENERATION_KEY = "telemetry:series-query:generation"


@dataclass(frozen=True, slots=True)
class SeriesRef:
    """A series the user may read, as the response names it."""

    id: int | None  # None: the metric is defined for the device type but has never reported (an empty series)
    device: str
    metric: str
    unit: str
    site_id: int
    precision: int | None = None  # decimal places the metric's definition declares (None: not declared)


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    """Validated parameters of a series request (see ``api.query_serializers``)."""

    pairs: list[tuple[str, str]]  # (device uid, metric key), request order, no duplicates
    start: datetime.datetime
    end: datetime.datetime
    interval: str = AUTO
    aggregates: list[str] = field(default_factory=lambda: list(DEFAULT_AGGREGATES))
    tz: str = "UTC"
    max_points: int = 1000


@dataclass(slots=True)
class TooManyRows(Exception):
    """A raw request over ``QUERY_MAX_RAW_ROWS``: what it would return and what to ask for instead."""

    estimated_rows: int
    limit: int
    suggestions: list[dict]

    def as_dict(self) -> dict:
        return {
            "reason": "too_many_rows",
            "detail": f"The range holds about {self.estimated_rows} raw readings; the limit is {self.limit}.",
            "estimated_rows": self.estimated_rows,
            "limit": self.limit,
            "suggestions": self.suggestions,
        }


@dataclass(frozen=True, slots=True)
class SeriesColumns:
    """One series of a response, column by column: ``ts`` in epoch ms ascending, and one list per value column (a
    point is ``ts[i], values[0][i], ...``). Columns as the database aggregated them, so no object per point is built
    to hold them; the encodings (``api.renderers``) read them as they are."""

    ref: SeriesRef
    ts: list[int]
    values: list[list[float | None]]

    def points(self) -> list[tuple]:
        """The JSON layout's rows ``(ts, *values)``, built in C by ``zip``."""
        return list(zip(self.ts, *self.values, strict=True))


@dataclass(frozen=True, slots=True)
class SeriesData:
    """What a series request answers: the range (epoch ms), the interval used, the value columns, the series."""

    start: int
    end: int
    interval: str
    columns: list[str]  # value columns: ["value"] for raw, else the aggregates asked for
    series: list[SeriesColumns]

    def points_payload(self) -> dict:
        """The JSON (and MessagePack v1) body: ``series[].points`` rows of ``["ts", *columns]``."""
        columns = ["ts", *self.columns]
        return {
            "start": self.start,
            "end": self.end,
            "interval": self.interval,
            "series": [
                {
                    "device": one.ref.device,
                    "metric": one.ref.metric,
                    "unit": one.ref.unit,
                    "columns": columns,
                    "points": one.points(),
                }
                for one in self.series
            ],
        }


# ---------------------------------------------------------------------------------------------------------------------
# Interval choice
# ---------------------------------------------------------------------------------------------------------------------


def bucket_count(*, start: datetime.datetime, end: datetime.datetime, interval: str) -> int:
    """Buckets (points per series) of ``interval`` whose start lies in ``[start, end)``, UTC-aligned."""
    seconds = INTERVAL_SECONDS[interval]
    first = math.ceil(start.timestamp() / seconds)
    last = math.ceil(end.timestamp() / seconds)  # exclusive
    return max(0, last - first)


def retention_horizon(*, interval: str, now: datetime.datetime):
    """The oldest instant still kept at rollup ``interval`` (None: kept forever)."""
    days = settings.ROLLUP_RETENTION_DAYS.get(interval)
    return None if days is None else now - datetime.timedelta(days=days)


def interval_candidates(*, start: datetime.datetime, end: datetime.datetime, max_points: int, now: datetime.datetime):
    """Rollup intervals, finest first, that give at most ``max_points`` buckets and still hold data at ``start``.

    A resolution whose retention horizon is after ``start`` is skipped (``5m`` for a range two years back), or the
    chart would show the front of the range empty. ``1d`` is always a candidate: it is kept forever.
    """
    fitting = []
    for interval in INTERVAL_SECONDS:
        horizon = retention_horizon(interval=interval, now=now)
        if horizon is not None and start < horizon:
            continue
        if bucket_count(start=start, end=end, interval=interval) <= max_points:
            fitting.append(interval)
    return fitting or [Resolution.DAY.value]


def raw_is_candidate(*, start: datetime.datetime, end: datetime.datetime, max_points: int) -> bool:
    """Whether ``auto`` should try raw readings first: only when even ``1m`` fits, since raw is at least as dense
    as one reading a minute for most devices. The caller confirms with a bounded per-series count."""
    return bucket_count(start=start, end=end, interval=Resolution.MINUTE.value) <= max_points


# ---------------------------------------------------------------------------------------------------------------------
# SQL: one statement for every series of the request
# ---------------------------------------------------------------------------------------------------------------------


def _value_columns(expressions: list[str]) -> str:
    """``expr AS c0, expr AS c1, ...``: the value columns every row statement names the same way."""
    return ", ".join(f"{expression} AS c{index}" for index, expression in enumerate(expressions))


def rollup_sql(*, interval: str, aggregates: list[str], tz: str) -> str:
    """Rows ``(series_id, ts, c0..)`` (``ts`` epoch ms, one ``c`` per aggregate) ordered by series and bucket; params:
    ids, start, end (and tz)."""
    values = _value_columns([AGGREGATE_SQL[name] for name in aggregates])
    if interval == Resolution.DAY.value and tz != "UTC":
        # Local calendar days from 1-hour rows: date_trunc with a zone gives the local midnight as timestamptz,
        # so a DST day merges 23 or 25 hourly rows. first/last need an ordered pick, built only when asked for.
        merged = [
            "sum(count)::int8 AS count",
            "sum(sum) AS sum",
            "sum(sum_sq) AS sum_sq",
            "min(min) AS min",
            "max(max) AS max",
        ]
        if "first" in aggregates:
            merged.append("(array_agg(first_value ORDER BY first_ts))[1] AS first_value")
        if "last" in aggregates:
            merged.append("(array_agg(last_value ORDER BY last_ts DESC))[1] AS last_value")
        return (
            f"SELECT series_id, {epoch_ms_sql('day')} AS ts, {values} FROM ("
            f" SELECT series_id, date_trunc('day', bucket, %s) AS day, {', '.join(merged)}"
            f" FROM telemetry_rollup_1h WHERE series_id = ANY(%s::int4[]) AND bucket >= %s AND bucket < %s"
            f" GROUP BY series_id, day"
            f") merged ORDER BY series_id, day"
        )
    table = f"telemetry_rollup_{interval}"
    return (
        f"SELECT series_id, {epoch_ms_sql('bucket')} AS ts, {values} FROM {table}"
        f" WHERE series_id = ANY(%s::int4[]) AND bucket >= %s AND bucket < %s ORDER BY series_id, bucket"
    )


def rollup_params(*, ids: list[int], start, end, interval: str, tz: str) -> list:
    params = [ids, start, end]
    return [tz, *params] if interval == Resolution.DAY.value and tz != "UTC" else params


# Ordered by the table's columns, qualified: a bare ``ts`` in ORDER BY names the output column (the epoch-ms
# expression), which the primary key's order does not give, so PostgreSQL sorted every row (24 h of one series:
# 1.83 ms with the sort, 1.47 ms in index order).
RAW_SQL = (
    f"SELECT series_id, {epoch_ms_sql('ts')} AS ts, value AS c0 FROM telemetry_reading"
    " WHERE series_id = ANY(%s::int4[]) AND ts >= %s AND ts < %s"
    " ORDER BY telemetry_reading.series_id, telemetry_reading.ts LIMIT %s"
)

# auto's raw attempt: at most max_points + 1 readings per series, so a dense series costs a bounded index scan.
RAW_PER_SERIES_SQL = (
    f"SELECT s.id AS series_id, {epoch_ms_sql('r.ts')} AS ts, r.value AS c0 FROM unnest(%s::int4[]) AS s(id)"
    " CROSS JOIN LATERAL (SELECT ts, value FROM telemetry_reading WHERE series_id = s.id AND ts >= %s AND ts < %s"
    " ORDER BY ts LIMIT %s) r ORDER BY s.id, r.ts"
)


def columns_sql(rows_sql: str, *, values: int) -> str:
    """``rows_sql`` (rows ``(series_id, ts, c0..)`` ordered by series and ts) as one row per series of arrays,
    ``(series_id, ts[], c0[], ...)``.

    A year of 50 series is 18,250 points: fetched as rows, psycopg builds a tuple per point and Python regroups them;
    as arrays the database sends 50 rows and psycopg's C loaders build the lists. The arrays take the order of the
    sorted subquery (one sort for every column; ``array_agg(... ORDER BY ts)`` would sort once per column), which
    PostgreSQL keeps without promising it, so ``_columns`` checks it and sorts a series that came otherwise.
    """
    arrays = ", ".join(["array_agg(ts)", *(f"array_agg(c{index})" for index in range(values))])
    return f"SELECT series_id, {arrays} FROM ({rows_sql}) rows GROUP BY series_id"


def _columns(rows: list[tuple]) -> dict[int, tuple[list[int], list[list]]]:
    """Rows of ``columns_sql`` -> {series id: (ts, [column, ...])}, each column in ascending ``ts``."""
    grouped = {}
    for series_id, ts, *values in rows:
        if ts != sorted(ts):  # O(n) on sorted input: the guard for the order the statement does not promise
            order = sorted(range(len(ts)), key=ts.__getitem__)
            ts, values = [ts[i] for i in order], [[column[i] for i in order] for column in values]
        grouped[series_id] = (ts, values)
    return grouped


# ---------------------------------------------------------------------------------------------------------------------
# Raw row estimate (without scanning readings)
# ---------------------------------------------------------------------------------------------------------------------


def raw_rows_estimate(*, ids: list[int], start: datetime.datetime, end: datetime.datetime, now) -> int:
    """Readings of ``ids`` in ``[start, end)``, estimated from the rollups' counts without touching readings.

    Reads the coarsest resolution that still has about 24 buckets in the range (so the two edge buckets, counted
    whole, are a small error), and extrapolates the part past that resolution's watermark (not rolled up yet) at
    the rate of the rolled-up part. One statement; at most a few hundred index rows per series.
    """
    if not ids:
        return 0
    span = (end - start).total_seconds()
    interval = Resolution.MINUTE.value
    for candidate, seconds in INTERVAL_SECONDS.items():
        horizon = retention_horizon(interval=candidate, now=now)
        if span / seconds >= 24 and (horizon is None or start >= horizon):
            interval = candidate
    seconds = INTERVAL_SECONDS[interval]
    aligned_start = datetime.datetime.fromtimestamp(start.timestamp() // seconds * seconds, tz=UTC)
    rows = rows_fetch(
        f"SELECT coalesce(sum(count), 0)::int8,"
        f" (SELECT rolled_until FROM telemetry_rollupwatermark WHERE resolution = %s)"
        f" FROM telemetry_rollup_{interval} WHERE series_id = ANY(%s::int4[]) AND bucket >= %s AND bucket < %s",
        [interval, ids, aligned_start, end],
    )
    counted, rolled_until = rows[0]
    covered = span if rolled_until is None else (min(end, rolled_until) - start).total_seconds()
    if rolled_until is None or covered <= 0 or covered >= span:
        return int(counted)
    return int(counted * span / covered)


def too_many_rows(*, estimated: int, query: SeriesQuery, now) -> TooManyRows:
    limit = settings.QUERY_MAX_RAW_ROWS
    coarser = interval_candidates(start=query.start, end=query.end, max_points=query.max_points, now=now)[0]
    span = query.end - query.start
    shorter = span * (limit / estimated) * 0.9  # a margin: the estimate is not exact
    shorter_start = query.end - datetime.timedelta(seconds=int(shorter.total_seconds()) // 60 * 60)
    return TooManyRows(
        estimated_rows=estimated,
        limit=limit,
        suggestions=[
            {"interval": coarser, "points": bucket_count(start=query.start, end=query.end, interval=coarser)},
            {"start": epoch_ms(shorter_start), "end": epoch_ms(query.end)},
            {"export": "/api/v1/exports"},
        ],
    )


# ---------------------------------------------------------------------------------------------------------------------
# Running a query
# ---------------------------------------------------------------------------------------------------------------------


def series_fetch(*, refs: list[SeriesRef], query: SeriesQuery, now: datetime.datetime | None = None) -> SeriesData:
    """The data of ``refs`` (already permission-checked), column by column, in one data statement.

    Raises ``TooManyRows`` for an explicit raw request over ``QUERY_MAX_RAW_ROWS``.
    """
    now = now or datetime.datetime.now(UTC)
    ids = [ref.id for ref in refs if ref.id is not None]
    interval, grouped = query.interval, None

    if interval == AUTO and raw_is_candidate(start=query.start, end=query.end, max_points=query.max_points):
        sql = columns_sql(RAW_PER_SERIES_SQL, values=1)
        grouped = _columns(rows_fetch(sql, [ids, query.start, query.end, query.max_points + 1])) if ids else {}
        if all(len(ts) <= query.max_points for ts, _ in grouped.values()):
            interval = RAW
        else:
            grouped = None
    if interval == AUTO:
        interval = interval_candidates(start=query.start, end=query.end, max_points=query.max_points, now=now)[0]

    if grouped is None and interval == RAW:
        # The bounded fetch first, the estimate only for a refusal: an accepted request (nearly all of them) costs
        # one statement, and a refused one at most what the largest accepted one does (limit + 1 readings). Estimating
        # first cost every 24-hour read of a series a second round trip as long as the fetch itself.
        limit = settings.QUERY_MAX_RAW_ROWS
        sql = columns_sql(RAW_SQL, values=1)
        grouped = _columns(rows_fetch(sql, [ids, query.start, query.end, limit + 1])) if ids else {}
        fetched = sum(len(ts) for ts, _ in grouped.values())
        if fetched > limit:
            # The fetch stopped at limit + 1; the rollups' counts say how far over it the range is (they miss
            # readings not rolled up yet, hence the larger of the two).
            estimated = raw_rows_estimate(ids=ids, start=query.start, end=query.end, now=now)
            raise too_many_rows(estimated=max(estimated, fetched), query=query, now=now)
    elif grouped is None:
        rows_sql = rollup_sql(interval=interval, aggregates=query.aggregates, tz=query.tz)
        sql = columns_sql(rows_sql, values=len(query.aggregates))
        params = rollup_params(ids=ids, start=query.start, end=query.end, interval=interval, tz=query.tz)
        grouped = _columns(rows_fetch(sql, params)) if ids else {}

    columns = ["value"] if interval == RAW else list(query.aggregates)
    empty = ([], [[] for _ in columns])
    return SeriesData(
        start=epoch_ms(query.start),
        end=epoch_ms(query.end),
        interval=interval,
        columns=columns,
        series=[SeriesColumns(ref, *grouped.get(ref.id, empty)) for ref in refs],
    )


# ---------------------------------------------------------------------------------------------------------------------
# Caching of historical ranges
# ---------------------------------------------------------------------------------------------------------------------


def is_cacheable(*, end: datetime.datetime, now: datetime.datetime) -> bool:
    """Only ranges that ended over an hour ago: later ones still change as readings arrive and rollups close."""
    return end <= now - datetime.timedelta(hours=1)


def series_version(*, refs: list[SeriesRef], query: SeriesQuery) -> str:
    """Digest of the canonical parameters and the data's version: the cache key's and the ETag's basis.

    It holds the resolved series (ids, units, precisions) and the sites they belong to, so it is only reachable after
    the permission check that resolved them (which runs on every request, cached or not). The data's version is a
    generation that ``series_cache_invalidate`` bumps whenever stored history changes under a range that ended over
    an hour ago (a rollup run recomputing late data, retention, an archive restore); so the digest changes when the
    answer can, without reading or hashing the answer. Without that call, a cached response is at most
    ``CACHE_TTL_SECONDS`` stale.
    """
    canonical = {
        "series": [[ref.id, ref.device, ref.metric, ref.unit, ref.site_id, ref.precision] for ref in refs],
        "start": epoch_ms(query.start),
        "end": epoch_ms(query.end),
        "interval": query.interval,
        "aggregates": query.aggregates,
        "tz": query.tz,
        "max_points": query.max_points,
        "generation": _generation(),
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def cache_key(*, version: str, encoding: str) -> str:
    """Where the encoded body of ``version`` in ``encoding`` (a renderer's format) is cached."""
    return f"telemetry:series-query:{version}:{encoding}"


def _generation() -> int:
    """The data's version. A missing one (a new or flushed Redis) starts at the clock, not at 0, so it never repeats
    a generation an ETag held by some client was made with."""
    generation = cache.get(CACHE_GENERATION_KEY)
    if generation is None:
        cache.add(CACHE_GENERATION_KEY, time.time_ns(), timeout=None)
        generation = cache.get(CACHE_GENERATION_KEY)
    return generation


def series_cache_invalidate() -> None:
    """Make every cached series response unreachable and its ETag stale (stored history changed under ranges that
    ended over an hour ago)."""
    try:
        cache.incr(CACHE_GENERATION_KEY)
    except ValueError:  # missing: any fresh generation will do
        cache.add(CACHE_GENERATION_KEY, time.time_ns(), timeout=None)
