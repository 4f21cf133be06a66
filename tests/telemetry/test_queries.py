"""apps.telemetry.queries: interval choice and the raw row estimate, against counts worked out by hand."""

import datetime

import pytest
from django.db import connection
from django.test import override_settings

from apps.core.time import epoch_ms
from apps.telemetry import queries
from apps.telemetry.models import RollupWatermark

UTC = datetime.UTC
NOW = datetime.datetime(2026, 11, 23, 12, tzinfo=UTC)


def at(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def test_bucket_count_counts_bucket_starts_inside_the_range():
    assert queries.bucket_count(start=at(2026, 1, 1), end=at(2026, 1, 2), interval="1h") == 24
    # 00:30 -> 02:30 holds the starts 01:00 and 02:00 only.
    assert queries.bucket_count(start=at(2026, 1, 1, 0, 30), end=at(2026, 1, 1, 2, 30), interval="1h") == 2
    assert queries.bucket_count(start=at(2026, 1, 1), end=at(2026, 1, 1, 0, 0, 1), interval="1d") == 1


def test_auto_candidates_are_the_finest_fitting_max_points():
    day = {"start": NOW - datetime.timedelta(days=1), "end": NOW, "now": NOW}
    assert queries.interval_candidates(**day, max_points=1000)[0] == "5m"  # 1440 one-minute buckets > 1000
    assert queries.interval_candidates(**day, max_points=1440)[0] == "1m"
    assert queries.interval_candidates(**day, max_points=24)[0] == "1h"
    assert queries.interval_candidates(**day, max_points=1)[0] == "1d"
    year = {"start": NOW - datetime.timedelta(days=365), "end": NOW, "now": NOW}
    assert queries.interval_candidates(**year, max_points=1000) == ["1d"]
    assert queries.interval_candidates(**year, max_points=10)[0] == "1d"  # nothing fits: the coarsest


@override_settings(ROLLUP_RETENTION_DAYS={"1m": 30, "5m": 365, "1h": None, "1d": None})
def test_auto_skips_resolutions_already_dropped_at_the_start_of_the_range():
    old_hour = {"start": NOW - datetime.timedelta(days=40), "end": NOW - datetime.timedelta(days=40, hours=-1)}
    assert queries.interval_candidates(**old_hour, max_points=1000, now=NOW)[0] == "5m"  # 1m is kept 30 days
    older = {"start": NOW - datetime.timedelta(days=400), "end": NOW - datetime.timedelta(days=399)}
    assert queries.interval_candidates(**older, max_points=1000, now=NOW)[0] == "1h"


def test_raw_is_tried_only_when_one_minute_buckets_fit():
    assert queries.raw_is_candidate(start=at(2026, 1, 1), end=at(2026, 1, 1, 16, 40), max_points=1000)
    assert not queries.raw_is_candidate(start=at(2026, 1, 1), end=at(2026, 1, 1, 16, 41), max_points=1000)


def test_local_days_are_merged_from_hour_rows_and_utc_days_read_the_day_table():
    assert "telemetry_rollup_1h" in queries.rollup_sql(interval="1d", aggregates=["avg"], tz="Europe/Berlin")
    assert "telemetry_rollup_1d" in queries.rollup_sql(interval="1d", aggregates=["avg"], tz="UTC")
    assert "array_agg" not in queries.rollup_sql(interval="1d", aggregates=["avg", "max"], tz="Europe/Berlin")


def _hour_rows(series_id: int, start: datetime.datetime, hours: int, count: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO telemetry_rollup_1h (series_id, bucket, count, sum, sum_sq, min, max, first_ts, first_value,"
            " last_ts, last_value) SELECT %s, b, %s, 0, 0, 0, 0, b, 0, b, 0"
            " FROM generate_series(%s::timestamptz, %s::timestamptz, interval '1 hour') b",
            [series_id, count, start, start + datetime.timedelta(hours=hours - 1)],
        )


def test_raw_estimate_reads_rollup_counts_and_extrapolates_past_the_watermark(db):
    _hour_rows(1, at(2026, 11, 1), 48, 60)  # two days of 60 readings an hour
    _hour_rows(2, at(2026, 11, 1), 48, 6)
    estimate = queries.raw_rows_estimate(ids=[1, 2], start=at(2026, 11, 1), end=at(2026, 11, 3), now=NOW)
    assert estimate == 48 * 66
    # Only the first day is rolled up at 1h: the second is extrapolated at the first day's rate.
    RollupWatermark.objects.create(resolution="1h", rolled_until=at(2026, 11, 2))
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM telemetry_rollup_1h WHERE bucket >= %s", [at(2026, 11, 2)])
    estimate = queries.raw_rows_estimate(ids=[1, 2], start=at(2026, 11, 1), end=at(2026, 11, 3), now=NOW)
    assert estimate == 48 * 66
    assert queries.raw_rows_estimate(ids=[], start=at(2026, 11, 1), end=at(2026, 11, 3), now=NOW) == 0


@override_settings(QUERY_MAX_RAW_ROWS=1000)
def test_too_many_rows_suggests_a_coarser_interval_and_a_range_that_fits():
    query = queries.SeriesQuery(pairs=[("d", "m")], start=at(2026, 11, 1), end=at(2026, 11, 11))
    refusal = queries.too_many_rows(estimated=10_000, query=query, now=NOW)
    coarser, shorter, export = refusal.suggestions
    assert coarser == {"interval": "1h", "points": 240}
    # a tenth of the range, less a 10 % margin, to the minute: 0.9 days
    assert shorter == {"start": epoch_ms(at(2026, 11, 10, 2, 24)), "end": epoch_ms(at(2026, 11, 11))}
    assert export == {"export": "/api/v1/exports"}
    assert refusal.as_dict()["reason"] == "too_many_rows"


@pytest.mark.parametrize("interval", ["1m", "5m", "1h"])
def test_utc_rollup_sql_filters_one_table_by_series_and_range(interval):
    sql = queries.rollup_sql(interval=interval, aggregates=["avg", "stddev"], tz="Europe/Berlin")
    assert f"FROM telemetry_rollup_{interval} WHERE series_id = ANY(%s::int4[]) AND bucket >= %s AND bucket < %s" in sql
