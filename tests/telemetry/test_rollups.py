"""The rollup engine on real PostgreSQL: every aggregate of every resolution against a plain-Python reference.

The reference below buckets and aggregates the inserted readings itself (integer microseconds, sorted lists), so it
shares nothing with the SQL under test but the definition of a UTC bucket and of "closed".
"""

import math
import random
import statistics
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections, transaction

from apps.telemetry import rollups
from apps.telemetry.ingest.records import ValidReading
from apps.telemetry.ingest.writer import SeriesResolver, readings_write
from apps.telemetry.models import Reading, RollupDirtyBucket, RollupWatermark, Series
from apps.telemetry.rollups import GRACE, ROLLUP_MODELS, rollups_advance
from tests.devices.factories import DeviceFactory

SECONDS = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2025, 3, 1, tzinfo=UTC)
# Not aligned to any resolution: 1m is closed to 07:37, 5m to 07:35, 1h to 07:00 and 1d to the 2nd day's end.
NOW = T0 + timedelta(days=2, hours=7, minutes=39, seconds=30)
FIELDS = ("count", "sum", "sum_sq", "min", "max", "first_ts", "first_value", "last_ts", "last_value")


# --- the independent reference -----------------------------------------------------------------------------------


def micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


def closed_until(now: datetime, resolution: str) -> int:
    """Epoch microseconds up to which buckets of ``resolution`` are closed: whole minutes before now - grace,
    then whole coarser buckets within that."""
    minute_cut = micros(now - GRACE) // 60_000_000 * 60_000_000
    step = SECONDS[resolution] * 1_000_000
    return minute_cut // step * step


def reference(readings, now: datetime) -> dict:
    """{resolution: {(series_id, bucket start): (count, sum, sum_sq, min, max, first_ts, first, last_ts, last)}}."""
    result = {}
    for resolution, seconds in SECONDS.items():
        step = seconds * 1_000_000
        cut = closed_until(now, resolution)
        groups = defaultdict(list)
        for series_id, ts, value in readings:
            start = micros(ts) // step * step
            if start + step <= cut:
                groups[series_id, start].append((ts, value))
        rows = {}
        for (series_id, start), points in groups.items():
            points.sort()
            values = [value for _, value in points]
            bucket = EPOCH + timedelta(microseconds=start)
            rows[series_id, bucket] = (
                len(values),
                math.fsum(values),
                math.fsum(value * value for value in values),
                min(values),
                max(values),
                points[0][0],
                points[0][1],
                points[-1][0],
                points[-1][1],
            )
        result[resolution] = rows
    return result


def stored() -> dict:
    return {
        resolution: {
            (row[0], row[1]): tuple(row[2:])
            for row in model.objects.values_list("series_id", "bucket", *FIELDS).order_by("series_id", "bucket")
        }
        for resolution, model in ROLLUP_MODELS.items()
    }


def assert_matches(actual: dict, expected: dict) -> None:
    for resolution in SECONDS:
        assert actual[resolution].keys() == expected[resolution].keys(), resolution
        for key, want in expected[resolution].items():
            got = actual[resolution][key]
            count, total, squares, low, high, first_ts, first, last_ts, last = want
            assert got[0] == count, (resolution, key)
            assert got[1] == pytest.approx(total, rel=1e-12), (resolution, key)
            assert got[2] == pytest.approx(squares, rel=1e-12), (resolution, key)
            assert got[3:] == (low, high, first_ts, first, last_ts, last), (resolution, key)


def watermarks() -> dict:
    return dict(RollupWatermark.objects.values_list("resolution", "rolled_until"))


# --- data ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def device(db):
    return DeviceFactory(uid="hp-1")


@pytest.fixture
def series(device):
    return [Series.objects.create(device=device, metric_key=key) for key in ("power", "flow", "temp")]


def generate(series, start: datetime, end: datetime, seed: int = 4) -> list[tuple[int, datetime, float]]:
    """Irregular readings (1-90 s apart, microsecond timestamps) with gaps: every series pauses 3 h on day 1,
    the second one is silent for most of day 2."""
    rnd = random.Random(seed)
    readings = []
    for index, one in enumerate(series):
        ts = start + timedelta(seconds=rnd.uniform(0, 30))
        while ts < end:
            in_gap = T0 + timedelta(hours=5) <= ts < T0 + timedelta(hours=8)
            in_gap |= index == 1 and T0 + timedelta(days=1, hours=2) <= ts < T0 + timedelta(days=1, hours=22)
            if not in_gap:
                readings.append((one.id, ts, rnd.gauss(20, 8)))
            ts += timedelta(seconds=rnd.uniform(1, 90), microseconds=rnd.randrange(1_000_000))
    return readings


def insert(readings) -> None:
    Reading.objects.bulk_create([Reading(series_id=s, ts=ts, value=v) for s, ts, v in readings], batch_size=5000)


@pytest.fixture
def readings(series):
    rows = generate(series, T0, NOW + timedelta(minutes=10))  # some readings are not closed yet at NOW
    insert(rows)
    return rows


# --- correctness -----------------------------------------------------------------------------------------------------


def test_every_aggregate_of_every_resolution_matches_a_python_reference(readings):
    figures = rollups_advance(now=NOW)

    expected = reference(readings, NOW)
    assert_matches(stored(), expected)
    assert figures["caught_up"] is True
    assert figures["buckets"] == {resolution: len(rows) for resolution, rows in expected.items()}
    assert figures["readings"] == sum(row[0] for row in expected["1m"].values())
    assert figures["dirty"] == 0


def test_standard_deviation_is_derivable_from_count_sum_and_sum_of_squares(readings):
    rollups_advance(now=NOW)

    by_bucket = defaultdict(list)
    for series_id, ts, value in readings:
        by_bucket[series_id, EPOCH + timedelta(seconds=micros(ts) // 3_600_000_000 * 3600)].append(value)
    rows = ROLLUP_MODELS["1h"].objects.values_list("series_id", "bucket", "count", "sum", "sum_sq")
    assert rows
    for series_id, bucket, count, total, squares in rows:
        derived = math.sqrt(max(squares / count - (total / count) ** 2, 0.0))
        assert derived == pytest.approx(statistics.pstdev(by_bucket[series_id, bucket]), rel=1e-6)


def test_gaps_leave_no_buckets_and_do_not_shift_first_and_last(readings, series):
    rollups_advance(now=NOW)

    gap = (T0 + timedelta(hours=5), T0 + timedelta(hours=8))
    assert not ROLLUP_MODELS["1m"].objects.filter(bucket__gte=gap[0], bucket__lt=gap[1]).exists()
    assert not ROLLUP_MODELS["1h"].objects.filter(bucket__gte=gap[0], bucket__lt=gap[1]).exists()
    # The day of the gap still has its first and last readings at the day's ends.
    day = ROLLUP_MODELS["1d"].objects.get(series=series[0], bucket=T0)
    own = sorted((ts, v) for s, ts, v in readings if s == series[0].id and ts < T0 + timedelta(days=1))
    assert (day.first_ts, day.first_value, day.last_ts, day.last_value) == (*own[0], *own[-1])


def test_watermarks_start_at_the_first_readings_day_and_advance_to_the_closed_boundaries(readings):
    rollups_advance(now=NOW)

    assert watermarks() == {
        "1m": T0 + timedelta(days=2, hours=7, minutes=37),
        "5m": T0 + timedelta(days=2, hours=7, minutes=35),
        "1h": T0 + timedelta(days=2, hours=7),
        "1d": T0 + timedelta(days=2),
    }


def test_running_again_changes_nothing(readings):
    rollups_advance(now=NOW)
    before, marks = stored(), watermarks()

    figures = rollups_advance(now=NOW)

    assert stored() == before
    assert watermarks() == marks
    assert figures["buckets"] == dict.fromkeys(SECONDS, 0)


def test_rolling_up_the_same_range_again_rewrites_identical_rows(readings):
    rollups_advance(now=NOW)
    before = stored()

    RollupWatermark.objects.all().delete()  # forget the progress: every bucket is upserted a second time
    rollups_advance(now=NOW)

    # The same rows; sums may be added in another order by another plan (the last bits of a float, as
    # assert_matches allows), every other column exactly.
    assert_matches(stored(), before)


def test_incremental_runs_roll_up_only_closed_buckets(series):
    first_now = T0 + timedelta(days=1, hours=3, minutes=2, seconds=10)
    early = generate(series, T0, first_now)
    insert(early)
    rollups_advance(now=first_now)
    assert_matches(stored(), reference(early, first_now))
    assert watermarks()["1m"] == T0 + timedelta(days=1, hours=3)

    late = generate(series, first_now, NOW, seed=5)  # readings that arrive on time, after the first run
    insert(late)
    figures = rollups_advance(now=NOW)

    assert_matches(stored(), reference(early + late, NOW))
    assert watermarks()["1m"] == T0 + timedelta(days=2, hours=7, minutes=37)
    expected_new = sum(row[0] for row in reference(early + late, NOW)["1m"].values()) - sum(
        row[0] for row in reference(early, first_now)["1m"].values()
    )
    assert figures["readings"] == expected_new


def test_an_empty_database_rolls_up_nothing_and_later_data_is_rolled_up(series):
    figures = rollups_advance(now=NOW)

    assert figures["buckets"] == dict.fromkeys(SECONDS, 0)
    assert all(not model.objects.exists() for model in ROLLUP_MODELS.values())
    assert watermarks()["1m"] == T0 + timedelta(days=2, hours=7, minutes=37)

    # History backfilled within raw retention is rolled up as closed ranges, not lost behind the watermark.
    rows = generate(series, T0, NOW + timedelta(minutes=10))
    insert(rows)
    RollupWatermark.objects.all().delete()
    rollups_advance(now=NOW)
    assert_matches(stored(), reference(rows, NOW))


def test_a_run_over_a_backlog_works_in_bounded_chunks_and_catches_up(readings, monkeypatch):
    monkeypatch.setattr(rollups, "READINGS_PER_STATEMENT", 500)

    figures = rollups_advance(now=NOW)

    assert figures["transactions"] > 10
    assert figures["caught_up"] is True
    assert_matches(stored(), reference(readings, NOW))


def test_with_no_time_budget_each_run_does_one_chunk_and_later_runs_catch_up(readings, monkeypatch):
    monkeypatch.setattr(rollups, "READINGS_PER_STATEMENT", 2000)

    runs = [rollups_advance(now=NOW, time_budget=0)]
    while not runs[-1]["caught_up"]:
        runs.append(rollups_advance(now=NOW, time_budget=0))
        assert len(runs) < 100

    assert len(runs) > 3
    assert all(run["transactions"] == 1 for run in runs)
    assert_matches(stored(), reference(readings, NOW))


# --- late data -------------------------------------------------------------------------------------------------------


def write(device, metric_key: str, ts: datetime, value: float) -> None:
    readings_write([ValidReading(device.id, metric_key, ts, value)], received_at=NOW, resolver=SeriesResolver())


def test_the_writer_marks_only_readings_behind_the_1m_watermark_dirty(device, series):
    write(device, "power", T0 + timedelta(minutes=3), 1.0)  # no watermark yet: nothing is behind it
    assert not RollupDirtyBucket.objects.exists()

    RollupWatermark.objects.create(resolution="1m", rolled_until=T0 + timedelta(hours=1))
    write(device, "power", T0 + timedelta(minutes=10, seconds=59, microseconds=999_999), 2.0)
    write(device, "power", T0 + timedelta(minutes=10, seconds=1), 3.0)  # same bucket: one mark
    write(device, "flow", T0 + timedelta(minutes=59, seconds=59), 4.0)
    write(device, "flow", T0 + timedelta(hours=1), 5.0)  # at the watermark: not late
    write(device, "flow", T0 + timedelta(minutes=59, seconds=59), 6.0)  # a duplicate: nothing inserted, no mark

    marks = set(RollupDirtyBucket.objects.values_list("series_id", "bucket"))
    assert marks == {(series[0].id, T0 + timedelta(minutes=10)), (series[1].id, T0 + timedelta(minutes=59))}


def test_late_readings_are_recomputed_in_every_resolution_by_the_next_run(readings, device, series):
    rollups_advance(now=NOW)
    late = [
        (series[0].id, T0 + timedelta(hours=2, minutes=14, seconds=30), -500.0),  # into a minute with readings
        (series[1].id, T0 + timedelta(hours=6, seconds=1), 900.0),  # into the 3-hour gap: a new bucket everywhere
        (series[2].id, T0 + timedelta(days=2, hours=7, minutes=36, seconds=5), 42.0),  # 1m closed, 5m still open
        (series[2].id, T0 + timedelta(hours=2, minutes=14, seconds=31), 7.5),
    ]
    keys = {s.id: s.metric_key for s in series}
    for series_id, ts, value in late:
        write(device, keys[series_id], ts, value)
    assert RollupDirtyBucket.objects.count() == 4

    figures = rollups_advance(now=NOW)

    assert figures["dirty"] == 4
    assert not RollupDirtyBucket.objects.exists()
    assert_matches(stored(), reference(readings + late, NOW))

    # And once NOW moves on, the 5m bucket that was still open picks the late reading up normally.
    later = NOW + timedelta(minutes=5)
    rollups_advance(now=later)
    assert_matches(stored(), reference(readings + late, later))


# --- concurrency -----------------------------------------------------------------------------------------------------


def test_a_run_skips_while_another_holds_the_lock(transactional_db, readings):
    holding, release, done = threading.Event(), threading.Event(), threading.Event()

    def other_run():
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [rollups.ADVISORY_LOCK_KEY])
                holding.set()
                release.wait(10)
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=other_run)
    thread.start()
    assert holding.wait(10)
    try:
        assert rollups_advance(now=NOW) == {"skipped": "another run holds the lock"}
        assert not ROLLUP_MODELS["1m"].objects.exists()
    finally:
        release.set()
        thread.join(10)
    assert rollups_advance(now=NOW)["caught_up"] is True


def test_two_concurrent_runs_do_not_double_count(transactional_db, readings, monkeypatch):
    monkeypatch.setattr(rollups, "READINGS_PER_STATEMENT", 300)  # many short transactions: they interleave
    start = threading.Barrier(2)
    results, errors = [], []

    def run():
        try:
            start.wait(10)
            results.append(rollups_advance(now=NOW))
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    finished = [result for result in results if "skipped" not in result]
    while not any(result["caught_up"] for result in finished):  # a run that lost the lock midway stops early
        finished.append(rollups_advance(now=NOW))
    expected = reference(readings, NOW)
    assert_matches(stored(), expected)
    assert sum(result["readings"] for result in finished) == sum(row[0] for row in expected["1m"].values())
