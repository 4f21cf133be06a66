"""GET /api/v1/series and /api/v1/devices/<uid>/latest: every figure against a plain-Python reference over the
inserted readings, every status code and format, and what each role may not see."""

import array
import csv
import datetime
import io
import itertools
import math
import random
import statistics
import sys
import zoneinfo

import msgpack
import pytest
from django.core.cache import cache
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.devices.models import MetricDefinition
from apps.telemetry.api.renderers import float32_keeps
from apps.telemetry.models import LatestValue, Reading, Rollup1h, Series
from apps.telemetry.queries import CACHE_GENERATION_KEY, series_cache_invalidate
from apps.telemetry.rollups import rollups_advance
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory

URL = "/api/v1/series"
UTC = datetime.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def utc(*args) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=UTC)


def ms(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1000)


# ---------------------------------------------------------------------------------------------------------------------
# Data: readings at irregular instants with a gap, rolled up by the rollup engine
# ---------------------------------------------------------------------------------------------------------------------


def readings_make(*, start, end, step_seconds, seed, gaps=()) -> list[tuple[datetime.datetime, float]]:
    """Readings every ``step_seconds`` ± jitter over ``[start, end)``, none inside the ``gaps``."""
    rng = random.Random(seed)
    readings, moment = [], start
    while moment < end:
        jittered = moment + datetime.timedelta(seconds=rng.randint(0, step_seconds // 2))
        if not any(lo <= jittered < hi for lo, hi in gaps) and jittered < end:
            readings.append((jittered, round(rng.uniform(20, 60), 3)))
        moment += datetime.timedelta(seconds=step_seconds)
    return readings


def store(series: Series, readings) -> None:
    Reading.objects.bulk_create(Reading(series=series, ts=ts, value=value) for ts, value in readings)


def rollup_all(after: datetime.datetime) -> None:
    result = rollups_advance(now=after, time_budget=60)
    assert result.get("caught_up"), result


def reference(readings, *, start, end, floor, aggregates) -> list[list]:
    """Points ``[ts_ms, *aggregates]`` of readings in ``[start, end)`` grouped by ``floor(ts)``, in plain Python."""
    buckets: dict[datetime.datetime, list] = {}
    for ts, value in sorted(readings):
        if start <= ts < end:
            buckets.setdefault(floor(ts), []).append((ts, value))
    points = []
    for bucket, members in sorted(buckets.items()):
        values = [value for _, value in members]
        figures = {
            "avg": statistics.fmean(values),
            "min": min(values),
            "max": max(values),
            "count": len(values),
            "sum": math.fsum(values),
            "stddev": statistics.stdev(values) if len(values) > 1 else None,
            "first": members[0][1],
            "last": members[-1][1],
        }
        points.append([ms(bucket), *(figures[name] for name in aggregates)])
    return points


def utc_floor(seconds: int):
    return lambda ts: datetime.datetime.fromtimestamp(ts.timestamp() // seconds * seconds, tz=UTC)


def local_day_floor(zone):
    def floor(ts):
        local = ts.astimezone(zone)
        return datetime.datetime(local.year, local.month, local.day, tzinfo=zone)

    return floor


def assert_points_equal(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert got[0] == want[0]
        assert got[1:] == pytest.approx(want[1:], rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------

MARCH_START, MARCH_END = utc(2026, 3, 27, 22), utc(2026, 3, 31, 2)
MARCH_GAP = (utc(2026, 3, 28, 5, 0), utc(2026, 3, 28, 9, 0))


@pytest.fixture
def fleet(site_a, site_b):
    """hp-a (site A, supply_temp every ~7 min around the spring DST change, with a 4-hour gap), hp-a2 (site A),
    hp-b (site B); every device type defines supply_temp (°C), power (kW) and cop."""
    heat_pump = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", unit="°C", display_name="Supply temperature")
    MetricDefinitionFactory(device_type=heat_pump, key="power", unit="kW", display_name="Power")
    MetricDefinitionFactory(device_type=heat_pump, key="cop", unit="", display_name="COP")
    devices = {
        "hp-a": DeviceFactory(uid="hp-a", site=site_a, device_type=heat_pump),
        "hp-a2": DeviceFactory(uid="hp-a2", site=site_a, device_type=heat_pump),
        "hp-b": DeviceFactory(uid="hp-b", site=site_b, device_type=heat_pump),
    }
    readings = {
        ("hp-a", "supply_temp"): readings_make(
            start=MARCH_START, end=MARCH_END, step_seconds=420, seed=1, gaps=[MARCH_GAP]
        ),
        ("hp-a", "power"): readings_make(start=MARCH_START, end=MARCH_END, step_seconds=600, seed=2),
        ("hp-a2", "supply_temp"): readings_make(start=MARCH_START, end=MARCH_END, step_seconds=900, seed=3),
        ("hp-b", "supply_temp"): readings_make(start=MARCH_START, end=MARCH_END, step_seconds=900, seed=4),
    }
    for (uid, metric), values in readings.items():
        store(Series.objects.create(device=devices[uid], metric_key=metric), values)
    rollup_all(MARCH_END + datetime.timedelta(hours=1))
    cache.clear()
    return readings


def get(client, user, params, **headers):
    client.force_login(user)
    return client.get(URL, params, headers=headers)


# ---------------------------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", ["1m", "5m", "1h", "1d"])
def test_every_aggregate_matches_reference_at_each_interval(client, bob, fleet, interval):
    aggregates = ["avg", "min", "max", "count", "sum", "stddev", "first", "last"]
    start, end = utc(2026, 3, 28), utc(2026, 3, 31)
    params = {"device": "hp-a", "metrics": "supply_temp", "start": start.isoformat(), "end": ms(end)}
    response = get(client, bob, {**params, "interval": interval, "agg": ",".join(aggregates)})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["start"], body["end"], body["interval"]) == (ms(start), ms(end), interval)
    [series] = body["series"]
    assert (series["device"], series["metric"], series["unit"]) == ("hp-a", "supply_temp", "°C")
    assert series["columns"] == ["ts", *aggregates]
    seconds = {"1m": 60, "5m": 300, "1h": 3600, "1d": 86400}[interval]
    expected = reference(
        fleet["hp-a", "supply_temp"], start=start, end=end, floor=utc_floor(seconds), aggregates=aggregates
    )
    assert_points_equal(series["points"], expected)


def test_gap_leaves_no_points_inside_it(client, bob, fleet):
    response = get(
        client,
        bob,
        {
            "device": "hp-a",
            "metrics": "supply_temp",
            "start": ms(MARCH_GAP[0]) - 3_600_000,
            "end": ms(MARCH_GAP[1]) + 3_600_000,
            "interval": "1h",
            "agg": "count",
        },
    )
    hours = [point[0] for point in response.json()["series"][0]["points"]]
    assert hours == [ms(MARCH_GAP[0]) - 3_600_000, ms(MARCH_GAP[1])]


def test_raw_interval_returns_the_readings(client, bob, fleet):
    start, end = utc(2026, 3, 29, 10), utc(2026, 3, 29, 14)
    response = get(
        client,
        bob,
        {"device": "hp-a", "metrics": "supply_temp,power", "start": ms(start), "end": ms(end), "interval": "raw"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["interval"] == "raw"
    for series, metric in zip(body["series"], ["supply_temp", "power"], strict=True):
        assert series["metric"] == metric and series["columns"] == ["ts", "value"]
        expected = [[ms(ts), value] for ts, value in sorted(fleet["hp-a", metric]) if start <= ts < end]
        assert series["points"] == expected


def test_auto_takes_raw_when_every_series_fits_in_max_points(client, bob, fleet):
    start, end = utc(2026, 3, 29, 10), utc(2026, 3, 29, 12)
    body = get(client, bob, {"device": "hp-a", "metrics": "supply_temp", "start": ms(start), "end": ms(end)}).json()
    assert body["interval"] == "raw"
    assert len(body["series"][0]["points"]) == sum(1 for ts, _ in fleet["hp-a", "supply_temp"] if start <= ts < end)


def test_auto_takes_the_finest_rollup_that_fits_max_points(client, bob, fleet):
    start, end = utc(2026, 3, 29, 0), utc(2026, 3, 29, 12)
    params = {"device": "hp-a", "metrics": "supply_temp", "start": ms(start), "end": ms(end), "agg": "avg,max"}
    # 12 h: 720 one-minute buckets fit 1000 points but raw is tried first; with max_points=100 raw (~100 readings)
    # and 1m (720) do not fit, 5m (144) does not, 1h (12) does.
    body = get(client, bob, {**params, "max_points": 100}).json()
    assert body["interval"] == "1h"
    expected = reference(
        fleet["hp-a", "supply_temp"], start=start, end=end, floor=utc_floor(3600), aggregates=["avg", "max"]
    )
    assert_points_equal(body["series"][0]["points"], expected)
    assert get(client, bob, {**params, "max_points": 150}).json()["interval"] == "5m"
    long = get(client, bob, {**params, "start": ms(utc(2025, 12, 1)), "end": ms(utc(2026, 4, 1))}).json()
    assert long["interval"] == "1d"


@pytest.mark.parametrize(
    ("day", "hours"),
    [(datetime.date(2026, 3, 29), 23), (datetime.date(2026, 10, 25), 25)],
    ids=["spring-forward", "fall-back"],
)
def test_local_days_in_site_timezone_merge_23_or_25_hours(client, bob, fleet, day, hours):
    series = Series.objects.get(device__uid="hp-a2", metric_key="supply_temp")
    if day.month == 10:
        # Readings every 10 minutes around the autumn change, rolled up by the engine.
        extra = readings_make(start=utc(2026, 10, 23, 20), end=utc(2026, 10, 27, 2), step_seconds=600, seed=9)
        store(series, extra)
        rollup_all(utc(2026, 10, 28))
        readings = fleet["hp-a2", "supply_temp"] + extra
    else:
        readings = fleet["hp-a2", "supply_temp"]
    start = datetime.datetime.combine(day - datetime.timedelta(days=1), datetime.time(), tzinfo=BERLIN)
    end = datetime.datetime.combine(day + datetime.timedelta(days=2), datetime.time(), tzinfo=BERLIN)
    aggregates = ["avg", "min", "max", "count", "sum", "stddev", "first", "last"]
    response = get(
        client,
        bob,
        {
            "device": "hp-a2",
            "metrics": "supply_temp",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "interval": "1d",
            "tz": "Europe/Berlin",
            "agg": ",".join(aggregates),
        },
    )
    assert response.status_code == 200, response.content
    points = response.json()["series"][0]["points"]
    expected = reference(readings, start=start, end=end, floor=local_day_floor(BERLIN), aggregates=aggregates)
    assert_points_equal(points, expected)
    midnights = [point[0] for point in points]
    assert midnights[2] - midnights[1] == hours * 3_600_000
    # The same day from the 1-hour rows the server merged: as many rows as the day has hours.
    local_midnight = datetime.datetime.combine(day, datetime.time(), tzinfo=BERLIN)
    next_midnight = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), tzinfo=BERLIN)
    assert Rollup1h.objects.filter(series=series, bucket__gte=local_midnight, bucket__lt=next_midnight).count() == hours


def test_empty_range_and_never_reported_metric_give_empty_points(client, bob, fleet):
    response = get(
        client,
        bob,
        {
            "series": "hp-a:supply_temp,hp-a:cop",
            "start": ms(utc(2025, 1, 1)),
            "end": ms(utc(2025, 1, 2)),
            "interval": "1h",
        },
    )
    assert response.status_code == 200
    assert [(s["metric"], s["unit"], s["points"]) for s in response.json()["series"]] == [
        ("supply_temp", "°C", []),
        ("cop", "", []),
    ]


def test_multi_device_form_keeps_request_order(client, alice, fleet):
    start, end = utc(2026, 3, 29), utc(2026, 3, 30)
    response = get(
        client,
        alice,
        {
            "series": "hp-b:supply_temp,hp-a:power,hp-a2:supply_temp",
            "start": ms(start),
            "end": ms(end),
            "interval": "1h",
            "agg": "count,avg",
        },
    )
    assert response.status_code == 200
    body = response.json()
    keys = [("hp-b", "supply_temp"), ("hp-a", "power"), ("hp-a2", "supply_temp")]
    assert [(s["device"], s["metric"]) for s in body["series"]] == keys
    for series, key in zip(body["series"], keys, strict=True):
        expected = reference(fleet[key], start=start, end=end, floor=utc_floor(3600), aggregates=["count", "avg"])
        assert_points_equal(series["points"], expected)


# ---------------------------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------------------------


def test_unknown_metric_of_a_visible_device_is_400_naming_it(client, bob, fleet):
    response = get(client, bob, {"device": "hp-a", "metrics": "supply_temp,humidity"})
    assert response.status_code == 400
    assert response.json() == {"metrics": ["Device 'hp-a' has no metric 'humidity'."]}
    response = get(client, bob, {"series": "hp-a:humidity"})
    assert response.json() == {"series": ["Device 'hp-a' has no metric 'humidity'."]}


def test_viewer_cannot_read_other_site_series(client, carol, fleet):
    for params in (
        {"device": "hp-a", "metrics": "supply_temp"},
        {"series": "hp-b:supply_temp,hp-a:supply_temp"},  # one forbidden series spoils the request
        {"device": "hp-a", "metrics": "humidity"},  # no metric check before the device check: nothing leaks
        {"device": "no-such-device", "metrics": "supply_temp"},
    ):
        response = get(client, carol, params)
        assert response.status_code == 404, params
        assert response.json() == {"detail": "No such device among the devices you may see."}
    assert get(client, carol, {"device": "hp-b", "metrics": "supply_temp"}).status_code == 200


def test_other_organization_gets_404_and_anonymous_401(client, mallory, fleet):
    assert get(client, mallory, {"device": "hp-a", "metrics": "supply_temp"}).status_code == 404
    assert client.get("/api/v1/devices/hp-a/latest").status_code == 404
    client.logout()
    assert client.get(URL, {"device": "hp-a", "metrics": "supply_temp"}).status_code == 401


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"interval": "2m"}, "interval", '"2m" is not a valid choice.'),
        ({"agg": "avg,median"}, "agg", "Unknown aggregate median"),
        ({"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, "start", "must be before"),
        ({"start": "1774742400000", "end": "1774742400000"}, "start", "must be before"),
        ({"start": "yesterday"}, "start", "ISO-8601"),
        ({"tz": "Mars/Olympus"}, "tz", "not a known IANA timezone"),
        ({"max_points": "0"}, "max_points", "greater than or equal to 1"),
    ],
)
def test_invalid_parameters_are_400_with_a_specific_message(client, bob, fleet, params, field, message):
    response = get(client, bob, {"device": "hp-a", "metrics": "supply_temp", **params})
    assert response.status_code == 400
    assert message in str(response.json()[field])


def test_more_than_50_series_is_400(client, bob, fleet):
    series = ",".join(f"hp-a:metric_{n}" for n in range(51))
    response = get(client, bob, {"series": series})
    assert response.status_code == 400
    assert response.json() == {"series": ["51 series requested; at most 50 per request."]}
    assert "form" in str(get(client, bob, {"series": "hp-a"}).json()["series"])
    assert get(client, bob, {"metrics": "supply_temp"}).status_code == 400


@override_settings(QUERY_MAX_RAW_ROWS=500)
def test_raw_request_over_the_row_bound_is_413_with_suggestions(client, bob, fleet):
    start, end = utc(2026, 3, 28), utc(2026, 3, 31)
    response = get(
        client, bob, {"series": "hp-a:supply_temp,hp-a:power", "start": ms(start), "end": ms(end), "interval": "raw"}
    )
    assert response.status_code == 413
    body = response.json()
    actual = sum(1 for key in [("hp-a", "supply_temp"), ("hp-a", "power")] for ts, _ in fleet[key] if start <= ts < end)
    assert body["reason"] == "too_many_rows" and body["limit"] == 500
    assert actual * 0.9 <= body["estimated_rows"] <= actual * 1.1  # from rollup counts, not by scanning readings
    interval, shorter, export = body["suggestions"]
    assert interval == {"interval": "5m", "points": 864}
    assert shorter["end"] == ms(end) and ms(start) < shorter["start"] < ms(end)
    assert export == {"export": "/api/v1/exports"}
    # The shorter range is a request that succeeds.
    retry = get(client, bob, {"series": "hp-a:supply_temp,hp-a:power", **shorter, "interval": "raw"})
    assert retry.status_code == 200


def test_an_accepted_raw_read_is_one_statement_on_the_readings_without_an_estimate(client, bob, fleet):
    params = {"series": "hp-a:supply_temp,hp-a:power", "start": ms(utc(2026, 3, 28)), "end": ms(utc(2026, 3, 31))}
    client.force_login(bob)
    with CaptureQueriesContext(connection) as answered:
        response = client.get(URL, {**params, "interval": "raw"})
    assert response.status_code == 200 and response.json()["series"][0]["points"]
    statements = [query["sql"] for query in answered.captured_queries]
    assert sum("telemetry_reading" in sql for sql in statements) == 1
    assert not any("telemetry_rollup" in sql for sql in statements)  # the row estimate runs only for a refusal


@override_settings(QUERY_MAX_RAW_ROWS=50)
def test_raw_rows_not_yet_rolled_up_still_hit_the_bound(client, bob, fleet):
    series = Series.objects.create(device=Series.objects.get(metric_key="power").device, metric_key="cop")
    store(series, [(utc(2026, 11, 1) + datetime.timedelta(seconds=n), 3.0) for n in range(60)])
    response = get(
        client,
        bob,
        {
            "device": "hp-a",
            "metrics": "cop",
            "start": ms(utc(2026, 11, 1)),
            "end": ms(utc(2026, 11, 2)),
            "interval": "raw",
        },
    )
    assert response.status_code == 413
    assert response.json()["estimated_rows"] == 51  # the bounded fetch stopped at limit + 1


# ---------------------------------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------------------------------

HISTORICAL = {
    "series": "hp-a:supply_temp,hp-a:power",
    "start": ms(utc(2026, 3, 28)),
    "end": ms(utc(2026, 3, 31)),
    "interval": "1h",
    "agg": "avg,min,max,stddev",
}


@pytest.mark.parametrize("media_type", ["application/msgpack", "application/x-msgpack"])
def test_msgpack_is_the_same_structure(client, bob, fleet, media_type):
    as_json = get(client, bob, HISTORICAL).json()
    response = get(client, bob, HISTORICAL, Accept=media_type)
    assert response.status_code == 200
    assert response["Content-Type"] == media_type
    assert msgpack.unpackb(response.content) == as_json
    assert len(response.content) < len(get(client, bob, HISTORICAL).content)


def test_csv_is_streamed_with_iso_timestamps_in_the_zone(client, bob, fleet):
    as_json = get(client, bob, HISTORICAL).json()
    response = get(client, bob, {**HISTORICAL, "format": "csv", "tz": "Europe/Berlin"})
    assert response.status_code == 200
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["device", "metric", "ts", "avg", "min", "max", "stddev"]
    expected = [
        [s["device"], s["metric"], datetime.datetime.fromtimestamp(p[0] / 1000, tz=BERLIN).isoformat(), *p[1:]]
        for s in as_json["series"]
        for p in s["points"]
    ]
    assert len(rows) - 1 == len(expected)
    for row, want in zip(rows[1:], expected, strict=True):
        assert row[:3] == want[:3]
        assert [float(x) if x else None for x in row[3:]] == pytest.approx(want[3:], rel=1e-12)
    assert rows[1][2].endswith("+01:00")


def test_csv_errors_are_json(client, bob, fleet):
    response = get(client, bob, {**HISTORICAL, "format": "csv", "interval": "2m"})
    assert response.status_code == 400
    assert "interval" in response.json()


# ---------------------------------------------------------------------------------------------------------------------
# Caching
# ---------------------------------------------------------------------------------------------------------------------


def test_historical_range_carries_etag_and_answers_304(client, bob, fleet):
    first = get(client, bob, HISTORICAL)
    assert first["Cache-Control"] == "private, max-age=3600"
    etag = first["ETag"]
    again = get(client, bob, HISTORICAL, If_None_Match=etag)
    assert again.status_code == 304 and again["ETag"] == etag and again.content == b""
    # Another representation has another tag.
    packed = get(client, bob, HISTORICAL, Accept="application/msgpack", If_None_Match=etag)
    assert packed.status_code == 200 and packed["ETag"] != etag


def test_historical_range_is_served_from_cache_until_invalidated(client, bob, fleet):
    before = get(client, bob, HISTORICAL).json()
    Rollup1h.objects.filter(series__device__uid="hp-a").update(min=-1000)  # as if a rollup run rewrote them
    assert get(client, bob, HISTORICAL).json() == before
    series_cache_invalidate()
    after = get(client, bob, HISTORICAL).json()
    assert {point[2] for point in after["series"][0]["points"]} == {-1000}


def test_cache_does_not_bypass_permissions(client, bob, carol, fleet):
    assert get(client, bob, HISTORICAL).status_code == 200
    assert get(client, carol, HISTORICAL).status_code == 404


def test_range_touching_the_last_hour_is_no_store(client, bob, fleet):
    response = get(client, bob, {"device": "hp-a", "metrics": "supply_temp"})  # default: the last 24 h
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert not response.has_header("ETag")


# ---------------------------------------------------------------------------------------------------------------------
# Query counts
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", ["raw", "1h", "auto"])
def test_query_count_does_not_grow_with_series(client, alice, fleet, interval):
    client.force_login(alice)
    few = {
        "series": "hp-a:supply_temp",
        "start": ms(utc(2026, 3, 29)),
        "end": ms(utc(2026, 3, 29, 6)),
        "interval": interval,
    }
    many = {**few, "series": "hp-a:supply_temp,hp-a:power,hp-a:cop,hp-a2:supply_temp,hp-a2:power,hp-b:supply_temp"}
    counts = []
    for params in (few, many):
        cache.clear()
        with CaptureQueriesContext(connection) as queries:
            assert client.get(URL, params).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_series_query_statement_bound(client, alice, fleet, django_assert_max_num_queries):
    client.force_login(alice)
    params = {
        "series": ",".join(f"{uid}:{m}" for uid in ("hp-a", "hp-a2", "hp-b") for m in ("supply_temp", "power")),
        "interval": "1h",
        "start": ms(utc(2026, 3, 29)),
        "end": ms(utc(2026, 3, 30)),
    }
    # session + user, the site scope (groups check; guardian lookups for non-admins), devices, metric
    # definitions, series, and one data statement.
    with django_assert_max_num_queries(8):
        assert client.get(URL, params).status_code == 200


# ---------------------------------------------------------------------------------------------------------------------
# Latest values
# ---------------------------------------------------------------------------------------------------------------------


def test_latest_lists_every_reported_metric_with_unit_and_name(client, bob, fleet, django_assert_max_num_queries):
    for metric in ("supply_temp", "power"):
        ts, value = max(fleet["hp-a", metric])
        LatestValue.objects.create(series=Series.objects.get(device__uid="hp-a", metric_key=metric), ts=ts, value=value)
    client.force_login(bob)
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/devices/hp-a/latest")
    assert response.status_code == 200
    expected = []
    for metric, unit, name in (("power", "kW", "Power"), ("supply_temp", "°C", "Supply temperature")):
        ts, value = max(fleet["hp-a", metric])
        expected.append({"metric": metric, "value": value, "ts": ms(ts), "unit": unit, "display_name": name})
    assert response.json() == {"device": "hp-a", "values": expected}


def test_latest_of_another_site_is_404(client, carol, fleet):
    client.force_login(carol)
    assert client.get("/api/v1/devices/hp-a/latest").status_code == 404
    assert client.get("/api/v1/devices/hp-b/latest").json() == {"device": "hp-b", "values": []}


def test_openapi_documents_the_query_endpoints(client, alice):
    client.force_login(alice)
    schema = client.get("/api/schema", {"format": "json"}).json()
    series = schema["paths"]["/api/v1/series"]["get"]
    assert {"200", "304", "400", "404", "413"} <= set(series["responses"])
    assert {p["name"] for p in series["parameters"]} >= {
        "device",
        "metrics",
        "series",
        "start",
        "end",
        "interval",
        "agg",
        "tz",
        "max_points",
        "format",
    }
    assert "/api/v1/devices/{uid}/latest" in schema["paths"]


# ---------------------------------------------------------------------------------------------------------------------
# The columnar layout (application/vnd.fieldwatch.series.v2+msgpack)
# ---------------------------------------------------------------------------------------------------------------------

COLUMNS = "application/vnd.fieldwatch.series.v2+msgpack"
EVERY_AGGREGATE = "avg,min,max,count,sum,stddev,first,last"
_ARRAY_CODES = {"i32": "i", "f32": "f", "f64": "d"}


def _little_endian(blob: bytes, kind: str) -> list:
    values = array.array(_ARRAY_CODES[kind])
    values.frombytes(blob)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def columns_decode(body: bytes) -> dict:
    """A columnar body back into the JSON layout (``points`` rows of ``[ts, *columns]``, NaN as null), with each
    series' column types on the side: written from docs/series-layout.md, not from the encoder."""
    decoded = msgpack.unpackb(body)
    assert decoded["layout"] == 2
    series_list, types = [], []
    for series in decoded["series"]:
        deltas = _little_endian(series["ts_deltas"], series["ts_delta_type"])
        ts = list(itertools.accumulate(deltas, initial=series["ts_base"])) if series["count"] else []
        columns = [_little_endian(blob, kind) for blob, kind in zip(series["values"], series["types"], strict=True)]
        assert len(ts) == series["count"] and all(len(column) == len(ts) for column in columns)
        assert all(isinstance(value, int) or value.is_integer() for value in deltas)  # whole milliseconds
        points = [[int(moment), *(None if math.isnan(c[i]) else c[i] for c in columns)] for i, moment in enumerate(ts)]
        series_list.append(
            {
                "device": series["device"],
                "metric": series["metric"],
                "unit": series["unit"],
                "columns": ["ts", *series["columns"]],
                "points": points,
            }
        )
        types.append(dict(zip(series["columns"], series["types"], strict=True)))
    payload = {key: decoded[key] for key in ("start", "end", "interval")}
    return {**payload, "series": series_list}, types


def _declare_precision(metric: str, places: int | None) -> None:
    MetricDefinition.objects.filter(key=metric).update(precision=places)


@pytest.mark.parametrize("interval", ["raw", "1m", "5m", "1h", "1d"])
def test_columns_decode_to_exactly_the_json_points_for_every_aggregate(client, bob, fleet, interval):
    params = {
        "series": "hp-a:supply_temp,hp-a:power,hp-a:cop,hp-a2:supply_temp",  # cop never reported: empty
        "start": ms(MARCH_START),
        "end": ms(MARCH_END),
        "interval": interval,
        "agg": EVERY_AGGREGATE,
        "max_points": 100_000,
    }
    if interval == "raw":
        params["start"] = ms(MARCH_GAP[0]) - 86_400_000  # a day before the gap to a day after it
        params["end"] = ms(MARCH_GAP[1]) + 86_400_000
    as_json = get(client, bob, params).json()
    response = get(client, bob, params, Accept=COLUMNS)
    assert response.status_code == 200 and response["Content-Type"] == COLUMNS
    decoded, types = columns_decode(response.content)
    assert decoded == as_json  # no declared precision: float64, bit for bit; counts are exact in float32
    assert {kind for series in types for name, kind in series.items() if name != "count"} <= {"f64"}
    [supply, _, cop, _] = decoded["series"]
    assert cop["points"] == [] and supply["points"]
    if interval in ("1m", "5m", "1h"):  # the 4-hour gap stays a gap: no bucket inside it
        inside = [p for p in supply["points"] if ms(MARCH_GAP[0]) <= p[0] < ms(MARCH_GAP[1]) - 3_600_000]
        assert inside == []
    if interval == "1m":  # one reading a bucket: a null stddev, which travels as NaN and comes back null
        assert all(point[6] is None for point in supply["points"])


def test_columns_send_float32_only_where_the_declared_precision_survives(client, bob, fleet):
    _declare_precision("supply_temp", 3)  # readings have 3 decimals, values 20 to 60
    params = {"device": "hp-a", "metrics": "supply_temp,power", "start": ms(MARCH_START), "end": ms(MARCH_END)}
    params |= {"interval": "1d", "agg": EVERY_AGGREGATE}
    as_json = get(client, bob, params).json()
    response = get(client, bob, params, Accept=COLUMNS)
    decoded, [supply_types, power_types] = columns_decode(response.content)
    # A day's sum runs into the thousands: float32 would lose the third decimal there, so it stays float64.
    assert supply_types == {
        "avg": "f32", "min": "f32", "max": "f32", "count": "f32", "sum": "f64", "stddev": "f32", "first": "f32",
        "last": "f32",
    }  # fmt: skip
    # power declares no precision: float64, but for the whole numbers, which keep 0 decimals whatever the metric
    assert power_types == {name: "f32" if name == "count" else "f64" for name in power_types}
    for got_series, want_series in zip(decoded["series"], as_json["series"], strict=True):
        assert len(got_series["points"]) == len(want_series["points"])
        for got, want in zip(got_series["points"], want_series["points"], strict=True):
            assert got[0] == want[0]
            for value, expected in zip(got[1:], want[1:], strict=True):
                assert (value is None) == (expected is None)
                if expected is not None:
                    assert not math.isnan(value) and abs(value - expected) <= 0.0005
    raw = {**params, "interval": "raw", "start": ms(MARCH_GAP[1]), "end": ms(MARCH_GAP[1]) + 86_400_000}
    decoded, [raw_types, _] = columns_decode(get(client, bob, raw, Accept=COLUMNS).content)
    assert raw_types == {"value": "f32"}
    readings = [p[1] for p in get(client, bob, raw).json()["series"][0]["points"]]
    assert [round(p[1], 3) for p in decoded["series"][0]["points"]] == readings  # readings of 3 decimals: exact


def test_columns_of_a_range_without_readings_are_empty(client, bob, fleet):
    params = {"device": "hp-a", "metrics": "supply_temp", "start": ms(utc(2025, 1, 1)), "end": ms(utc(2025, 1, 2))}
    decoded, _ = columns_decode(get(client, bob, {**params, "interval": "1h"}, Accept=COLUMNS).content)
    assert decoded["series"][0]["points"] == [] and decoded["series"][0]["columns"] == ["ts", "avg"]


def test_columns_are_asked_for_by_format_too_and_today_s_layouts_stay(client, bob, fleet):
    response = get(client, bob, {**HISTORICAL, "format": "columns"})
    assert response["Content-Type"] == COLUMNS and msgpack.unpackb(response.content)["layout"] == 2
    assert get(client, bob, HISTORICAL)["Content-Type"] == "application/json"
    assert "points" in msgpack.unpackb(get(client, bob, HISTORICAL, Accept="application/msgpack").content)["series"][0]
    errors = get(client, bob, {**HISTORICAL, "interval": "2m"}, Accept=COLUMNS)
    assert errors.status_code == 400 and "interval" in errors.json()


@settings(max_examples=300, deadline=None)
@given(
    places=st.integers(min_value=0, max_value=9),
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=20),
)
def test_float32_is_chosen_only_when_every_value_stays_within_half_a_last_place(places, values):
    keeps = float32_keeps(values, places)
    packed = array.array("f", values) if keeps else None
    if keeps:
        for sent, value in zip(packed.tolist(), values, strict=True):
            assert not math.isnan(sent) and abs(sent - value) <= 0.5 * 10.0**-places
    assert not float32_keeps(values, None)


def test_columns_stay_within_the_declared_precision_on_real_rollups(client, bob, fleet):
    for places in (0, 1, 2, 3):
        _declare_precision("supply_temp", places)
        params = {"device": "hp-a", "metrics": "supply_temp", "start": ms(MARCH_START), "end": ms(MARCH_END)}
        params |= {"interval": "1h", "agg": "avg,min,max"}
        as_json = get(client, bob, params).json()["series"][0]["points"]
        decoded, [types] = columns_decode(get(client, bob, params, Accept=COLUMNS).content)
        assert set(types.values()) == {"f32"}
        for got, want in zip(decoded["series"][0]["points"], as_json, strict=True):
            assert all(abs(a - b) <= 0.5 * 10.0**-places for a, b in zip(got[1:], want[1:], strict=True))


def test_etag_is_the_answer_s_version_304_reads_no_data_and_a_rewrite_changes_it(client, bob, fleet):
    first = get(client, bob, HISTORICAL, Accept=COLUMNS)
    etag = first["ETag"]
    with CaptureQueriesContext(connection) as answered:
        again = get(client, bob, HISTORICAL, Accept=COLUMNS, If_None_Match=etag)
    assert again.status_code == 304 and again["ETag"] == etag
    assert not any("telemetry_rollup" in query["sql"] for query in answered.captured_queries)
    series_cache_invalidate()  # what a rollup run that recomputed late data does
    changed = get(client, bob, HISTORICAL, Accept=COLUMNS, If_None_Match=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    _declare_precision("supply_temp", 1)  # another encoding of the same data: another tag too
    precise = get(client, bob, HISTORICAL, Accept=COLUMNS)["ETag"]
    assert precise != changed["ETag"]
    cache.delete(CACHE_GENERATION_KEY)  # Redis flushed: the generation starts afresh, never at a value seen before
    assert get(client, bob, HISTORICAL, Accept=COLUMNS, If_None_Match=precise).status_code == 200
