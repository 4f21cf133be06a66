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
import itertools
import json
import math
from dataclasses import dataclass, field
from operator import itemgetter

import msgpack
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


def rollup_sql(*, interval: str, aggregates: list[str], tz: str) -> str:
    """Rows ``(series_id, ts_ms, *aggregates)`` ordered by series and bucket; params: ids, start, end (and tz)."""
    expressions = ", ".join(AGGREGATE_SQL[name] for name in aggregates)
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
            f"SELECT series_id, {epoch_ms_sql('day')}, {expressions} FROM ("
            f" SELECT series_id, date_trunc('day', bucket, %s) AS day, {', '.join(merged)}"
            f" FROM telemetry_rollup_1h WHERE series_id = ANY(%s::int4[]) AND bucket >= %s AND bucket < %s"
            f" GROUP BY series_id, day"
            f") merged ORDER BY series_id, day"
        )
    table = f"telemetry_rollup_{interval}"
    return (
        f"SELECT series_id, {epoch_ms_sql('bucket')}, {expressions} FROM {table}"
        f" WHERE series_id = ANY(%s::int4[]) AND bucket >= %s AND bucket < %s ORDER BY series_id, bucket"
    )


def rollup_params(*, ids: list[int], start, end, interval: str, tz: str) -> list:
    params = [ids, start, end]
    return [tz, *params] if interval == Resolution.DAY.value and tz != "UTC" else params


RAW_SQL = (
    f"SELECT series_id, {epoch_ms_sql('ts')}, value FROM telemetry_reading"
    " WHERE series_id = ANY(%s::int4[]) AND ts >= %s AND ts < %s ORDER BY series_id, ts LIMIT %s"
)

# auto's raw attempt: at most max_points + 1 readings per series, so a dense series costs a bounded index scan.
RAW_PER_SERIES_SQL = (
    f"SELECT s.id, {epoch_ms_sql('r.ts')}, r.value FROM unnest(%s::int4[]) AS s(id)"
    " CROSS JOIN LATERAL (SELECT ts, value FROM telemetry_reading WHERE series_id = s.id AND ts >= %s AND ts < %s"
    " ORDER BY ts LIMIT %s) r ORDER BY s.id, r.ts"
)


def _group(rows: list[tuple]) -> dict[int, list[tuple]]:
    """Rows ordered by series id -> {series id: [(ts_ms, ...), ...]}."""
    # Tuples, not lists: they encode the same in JSON and MessagePack, and slicing is the whole cost here.
    return {series_id: [row[1:] for row in group] for series_id, group in itertools.groupby(rows, key=itemgetter(0))}


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


def series_fetch(*, refs: list[SeriesRef], query: SeriesQuery, now: datetime.datetime | None = None) -> dict:
    """The response body for ``refs`` (already permission-checked), in one data statement.

    Raises ``TooManyRows`` for an explicit raw request over ``QUERY_MAX_RAW_ROWS``.
    """
    now = now or datetime.datetime.now(UTC)
    ids = [ref.id for ref in refs if ref.id is not None]
    interval, grouped = query.interval, None

    if interval == AUTO and raw_is_candidate(start=query.start, end=query.end, max_points=query.max_points):
        rows = rows_fetch(RAW_PER_SERIES_SQL, [ids, query.start, query.end, query.max_points + 1]) if ids else []
        grouped = _group(rows)
        if all(len(points) <= query.max_points for points in grouped.values()):
            interval = RAW
        else:
            grouped = None
    if interval == AUTO:
        interval = interval_candidates(start=query.start, end=query.end, max_points=query.max_points, now=now)[0]

    if grouped is None and interval == RAW:
        limit = settings.QUERY_MAX_RAW_ROWS
        estimated = raw_rows_estimate(ids=ids, start=query.start, end=query.end, now=now)
        if estimated > limit:
            raise too_many_rows(estimated=estimated, query=query, now=now)
        # The estimate can miss readings not rolled up at all; the LIMIT makes the bound hold regardless.
        rows = rows_fetch(RAW_SQL, [ids, query.start, query.end, limit + 1]) if ids else []
        if len(rows) > limit:
            raise too_many_rows(estimated=len(rows), query=query, now=now)
        grouped = _group(rows)
    elif grouped is None:
        sql = rollup_sql(interval=interval, aggregates=query.aggregates, tz=query.tz)
        params = rollup_params(ids=ids, start=query.start, end=query.end, interval=interval, tz=query.tz)
        grouped = _group(rows_fetch(sql, params)) if ids else {}

    columns = ["ts", "value"] if interval == RAW else ["ts", *query.aggregates]
    return {
        "start": epoch_ms(query.start),
        "end": epoch_ms(query.end),
        "interval": interval,
        "series": [
            {
                "device": ref.device,
                "metric": ref.metric,
                "unit": ref.unit,
                "columns": columns,
                "points": grouped.get(ref.id, []),
            }
            for ref in refs
        ],
    }


# ---------------------------------------------------------------------------------------------------------------------
# Caching of historical ranges
# ---------------------------------------------------------------------------------------------------------------------


def is_cacheable(*, end: datetime.datetime, now: datetime.datetime) -> bool:
    """Only ranges that ended over an hour ago: later ones still change as readings arrive and rollups close."""
    return end <= now - datetime.timedelta(hours=1)


def cache_key(*, refs: list[SeriesRef], query: SeriesQuery) -> str:
    """Canonical parameters -> cache key.

    The key holds the resolved series (ids, units) and the sites they belong to, so it is only reachable after the
    permission check that resolved them (which runs on every request, cached or not). It also holds a generation
    that ``series_cache_invalidate`` bumps, for rollup runs that rewrite old buckets with late data; without that
    call, a cached response is at most ``CACHE_TTL_SECONDS`` stale.
    """
    canonical = {
        "series": [[ref.id, ref.device, ref.metric, ref.unit, ref.site_id] for ref in refs],
        "start": epoch_ms(query.start),
        "end": epoch_ms(query.end),
        "interval": query.interval,
        "aggregates": query.aggregates,
        "tz": query.tz,
        "max_points": query.max_points,
        "generation": cache.get(CACHE_GENERATION_KEY, 0),
    }
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    return f"telemetry:series-query:{digest}"


def payload_digest(payload: dict, *, salt: str) -> str:
    """Hash of the canonical parameters (``salt``, the cache key) and the data: the basis of the ETag."""
    digest = hashlib.sha256(salt.encode())
    digest.update(msgpack.packb(payload))  # not JSON: a year of 50 series encodes ten times faster
    return digest.hexdigest()


def series_cache_invalidate() -> None:
    """Make every cached series response unreachable (a rollup run rewrote buckets older than an hour)."""
    try:
        cache.incr(CACHE_GENERATION_KEY)
    except ValueError:
        cache.set(CACHE_GENERATION_KEY, 1, timeout=None)
