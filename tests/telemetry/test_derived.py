"""Energy, volume and statistics endpoints, every figure checked against a plain-Python reference over the
readings the test inserted: trapezoids cut at bucket boundaries, gaps over the bound, W vs kW, counter resets,
empty ranges and DST days in Europe/Berlin."""

import datetime
import itertools
import math
import random
import zoneinfo

import pytest

from apps.devices.choices import MetricKind
from apps.telemetry.models import Reading, Series
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory

UTC = datetime.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
GAP = 900


def ms(value: datetime.datetime) -> int:
    return int(value.timestamp() * 1000)


def iso(value: datetime.datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------------------------------


def ref_energy(readings, buckets, start, end, gap=GAP, factor=1.0):
    """kWh per bucket: for each pair of consecutive readings at most `gap` apart, the area under the straight line
    between them, restricted to [bucket start, bucket end) ∩ [start, end)."""
    out = {}
    for (t0, v0), (t1, v1) in itertools.pairwise(readings):
        if (t1 - t0).total_seconds() > gap:
            continue
        for b0, b1 in buckets:
            lo, hi = max(t0, b0, start), min(t1, b1, end)
            if hi <= lo:
                continue

            def power(t, t0=t0, t1=t1, v0=v0, v1=v1):
                return v0 + (v1 - v0) * (t - t0).total_seconds() / (t1 - t0).total_seconds()

            out[b0] = out.get(b0, 0.0) + (power(lo) + power(hi)) / 2 * (hi - lo).total_seconds() / 3600 * factor
    return out


def ref_volume(readings, buckets, start, end):
    """Per bucket: the positive steps, or the new value after a drop, of readings in the bucket and the range,
    each against the reading just before it (which may lie before the range)."""
    out = {}
    for (_, previous), (t, value) in itertools.pairwise(readings):
        if not start <= t < end:
            continue
        for b0, b1 in buckets:
            if b0 <= t < b1:
                out[b0] = out.get(b0, 0.0) + (value - previous if value >= previous else value)
    return out


def hours(start, end):
    edges = []
    t = start
    while t < end:
        edges.append((t, t + datetime.timedelta(hours=1)))
        t += datetime.timedelta(hours=1)
    return edges


def berlin_days(first: datetime.date, count: int):
    """Calendar days in Berlin as UTC intervals (23 h and 25 h on DST changes)."""
    days = []
    for i in range(count):
        day = first + datetime.timedelta(days=i)
        lo = datetime.datetime.combine(day, datetime.time(), BERLIN)
        hi = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(), BERLIN)
        days.append((lo.astimezone(UTC), hi.astimezone(UTC)))
    return days


def as_points(reference: dict):
    return [[ms(bucket), pytest.approx(value, rel=1e-9, abs=1e-12)] for bucket, value in sorted(reference.items())]


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def meter(site_a, site_b, settings):
    settings.ENERGY_MAX_GAP_SECONDS = GAP
    # The readings below are dated 2024: inside raw retention, so the endpoints read them raw (older ranges come
    # from hourly rollups: tests/telemetry/test_energy.py).
    settings.RAW_RETENTION_DAYS = 36500
    site_a.emission_factor_kg_per_kwh = "0.3800"
    site_a.save()
    device_type = DeviceTypeFactory(organization=site_a.organization)
    for key, unit, kind in (
        ("power", "kW", MetricKind.GAUGE),
        ("power_w", "W", MetricKind.GAUGE),
        ("water", "m³", MetricKind.TOTALIZER),
        ("temp", "°C", MetricKind.GAUGE),
    ):
        MetricDefinitionFactory(device_type=device_type, key=key, unit=unit, kind=kind, min_value=None, max_value=None)
    device = DeviceFactory(uid="meter-1", site=site_a, device_type=device_type)
    DeviceFactory(uid="meter-b", site=site_b, device_type=device_type)
    return device


def insert(device, metric, readings):
    series, _ = Series.objects.get_or_create(device=device, metric_key=metric)
    Reading.objects.bulk_create([Reading(series=series, ts=ts, value=value) for ts, value in readings])
    return readings


def power_readings(start, end, seed=1):
    """Irregular readings (40 s to 8 min apart) with two gaps over the bound (20 min and 2 h)."""
    rng = random.Random(seed)
    readings = []
    t = start
    while t < end:
        readings.append((t, round(rng.uniform(0, 12), 3)))
        step = rng.uniform(40, 480)
        if len(readings) in (30, 90):
            step = 1200 if len(readings) == 30 else 7200
        t += datetime.timedelta(seconds=round(step, 3))
    return readings


# ---------------------------------------------------------------------------------------------------------------------
# Energy
# ---------------------------------------------------------------------------------------------------------------------


def test_energy_per_hour_matches_trapezoids_cut_at_boundaries_without_bridging_long_gaps(client, bob, meter):
    start = datetime.datetime(2024, 6, 3, 0, 0, tzinfo=UTC)
    readings = insert(
        meter, "power", power_readings(start - datetime.timedelta(minutes=10), start + datetime.timedelta(hours=13))
    )
    lo, hi = start + datetime.timedelta(minutes=7, seconds=30), start + datetime.timedelta(hours=12, minutes=3)
    client.force_login(bob)
    response = client.get(
        "/api/v1/devices/meter-1/energy", {"metric": "power", "start": iso(lo), "end": iso(hi), "interval": "1h"}
    )
    assert response.status_code == 200, response.content
    body = response.json()
    reference = ref_energy(readings, hours(start, start + datetime.timedelta(hours=13)), lo, hi)
    series = body["series"][0]
    assert series["columns"] == ["ts", "energy_kwh", "co2e_kg"]
    assert [point[:2] for point in series["points"]] == as_points(reference)
    assert [point[2] for point in series["points"]] == pytest.approx([v * 0.38 for _, v in sorted(reference.items())])
    total = sum(reference.values())
    assert series["total"]["energy_kwh"] == pytest.approx(total, rel=1e-9)
    assert series["total"]["co2e_kg"] == pytest.approx(total * 0.38, rel=1e-9)
    # The gaps matter: bridging them would have added energy.
    assert total < sum(
        ref_energy(readings, hours(start, start + datetime.timedelta(hours=13)), lo, hi, gap=10**6).values()
    )
    assert (body["start"], body["end"], body["interval"]) == (ms(lo), ms(hi), "1h")


def test_energy_of_a_watt_metric_is_divided_by_1000(client, bob, meter):
    start = datetime.datetime(2024, 6, 3, tzinfo=UTC)
    kw = power_readings(start, start + datetime.timedelta(hours=6), seed=7)
    insert(meter, "power", kw)
    insert(meter, "power_w", [(t, v * 1000) for t, v in kw])
    client.force_login(bob)
    params = {"start": iso(start), "end": iso(start + datetime.timedelta(hours=6)), "interval": "1h"}
    in_kw = client.get("/api/v1/devices/meter-1/energy", {**params, "metric": "power"}).json()["series"][0]
    in_w = client.get("/api/v1/devices/meter-1/energy", {**params, "metric": "power_w"}).json()["series"][0]
    reference = ref_energy(
        kw, hours(start, start + datetime.timedelta(hours=6)), start, start + datetime.timedelta(hours=6)
    )
    assert in_w["points"] and [p[:2] for p in in_w["points"]] == as_points(reference)
    assert in_w["total"]["energy_kwh"] == pytest.approx(in_kw["total"]["energy_kwh"], rel=1e-12)
    assert (in_w["unit"], in_w["source_unit"]) == ("kWh", "W")


def test_energy_per_day_in_berlin_uses_23_and_25_hour_days_at_dst_changes(client, bob, meter):
    for first in (datetime.date(2024, 3, 30), datetime.date(2024, 10, 26)):
        days = berlin_days(first, 3)
        start, end = days[0][0], days[-1][1]
        # Constant 2 kW every 5 minutes: each day's energy is 2 kW times its length, 46 h of kWh on the spring day.
        readings = [
            (start + datetime.timedelta(minutes=5 * i), 2.0)
            for i in range(int((end - start).total_seconds() // 300) + 1)
        ]
        insert(meter, "power", readings)
        client.force_login(bob)
        response = client.get(
            "/api/v1/devices/meter-1/energy",
            {"metric": "power", "start": iso(start), "end": iso(end), "interval": "1d", "tz": "Europe/Berlin"},
        )
        assert response.status_code == 200, response.content
        points = response.json()["series"][0]["points"]
        assert [p[:2] for p in points] == as_points(ref_energy(readings, days, start, end))
        assert [round(p[1]) for p in points] == ([48, 46, 48] if first.month == 3 else [48, 50, 48])


def test_energy_of_an_empty_range_is_zero_with_no_points(client, bob, meter):
    insert(meter, "power", [(datetime.datetime(2024, 6, 3, tzinfo=UTC), 5.0)])
    client.force_login(bob)
    response = client.get(
        "/api/v1/devices/meter-1/energy",
        {"metric": "power", "start": "2024-07-01T00:00:00Z", "end": "2024-07-02T00:00:00Z", "interval": "1h"},
    )
    series = response.json()["series"][0]
    assert (series["points"], series["total"]) == ([], {"energy_kwh": 0.0, "co2e_kg": 0.0})


def test_energy_refuses_a_metric_that_is_not_power_and_hides_other_sites(client, bob, carol, meter):
    client.force_login(bob)
    response = client.get("/api/v1/devices/meter-1/energy", {"metric": "temp"})
    assert response.status_code == 400 and "power metric" in response.json()["metric"]
    assert client.get("/api/v1/devices/meter-1/energy", {"metric": "nope"}).status_code == 400
    assert client.get("/api/v1/devices/meter-1/energy", {"metric": "power", "tz": "Mars/Base"}).status_code == 400
    response = client.get("/api/v1/devices/meter-1/energy", {"metric": "power", "start": "9" * 20})
    assert response.status_code == 400 and "outside the years 1970 to 2200" in response.json()["start"]
    client.force_login(carol)
    assert client.get("/api/v1/devices/meter-1/energy", {"metric": "power"}).status_code == 404
    assert client.get("/api/v1/devices/meter-1/statistics", {"metrics": "power"}).status_code == 404
    assert client.get("/api/v1/devices/meter-1/volume", {"metric": "water"}).status_code == 404


# ---------------------------------------------------------------------------------------------------------------------
# Volume
# ---------------------------------------------------------------------------------------------------------------------


def totalizer_readings(start):
    """A register advancing by varying steps, reset to 0 twice (after reading 25 and reading 60)."""
    rng = random.Random(3)
    readings, value = [], 1000.0
    for i in range(100):
        # At a reset the register starts again near 0.
        value = round(rng.uniform(0, 2), 3) if i in (25, 60) else round(value + rng.uniform(0, 3), 3)
        readings.append((start + datetime.timedelta(minutes=7 * i + rng.uniform(0, 3)), value))
    return readings


def test_volume_per_hour_counts_resets_from_zero_and_includes_the_step_into_the_range(client, bob, meter):
    start = datetime.datetime(2024, 6, 3, tzinfo=UTC)
    readings = insert(meter, "water", totalizer_readings(start))
    lo, hi = start + datetime.timedelta(hours=1, minutes=10), start + datetime.timedelta(hours=10)
    client.force_login(bob)
    response = client.get(
        "/api/v1/devices/meter-1/volume", {"metric": "water", "start": iso(lo), "end": iso(hi), "interval": "1h"}
    )
    assert response.status_code == 200, response.content
    series = response.json()["series"][0]
    reference = ref_volume(readings, hours(start, hi), lo, hi)
    assert series["points"] == as_points(reference)
    assert series["total"]["volume"] == pytest.approx(sum(reference.values()), rel=1e-9)
    assert series["unit"] == "m³"
    # Plain last - first across the resets would be far smaller (here negative): the resets were counted.
    in_range = [v for t, v in readings if lo <= t < hi]
    assert in_range[-1] - in_range[0] < 0 < series["total"]["volume"]


def test_volume_of_an_empty_range_is_zero(client, bob, meter):
    client.force_login(bob)
    series = client.get(
        "/api/v1/devices/meter-1/volume", {"metric": "water", "start": "2024-01-01", "end": "2024-01-02"}
    ).json()["series"][0]
    assert (series["points"], series["total"]) == ([], {"volume": 0.0})


# ---------------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------------


def test_statistics_per_metric_with_total_energy_and_volume(client, bob, meter, django_assert_max_num_queries):
    start = datetime.datetime(2024, 6, 3, tzinfo=UTC)
    power = insert(meter, "power", power_readings(start, start + datetime.timedelta(hours=8), seed=11))
    water = insert(meter, "water", totalizer_readings(start))
    temp = insert(meter, "temp", [(start + datetime.timedelta(minutes=i), 20 + math.sin(i / 7)) for i in range(600)])
    lo, hi = start + datetime.timedelta(minutes=33), start + datetime.timedelta(hours=7, minutes=50)
    client.force_login(bob)
    # Constant: the request's own, then per derived figure its statement under JIT off (inside the test's
    # transaction a savepoint, the setting, the statement and the release).
    with django_assert_max_num_queries(15):
        response = client.get(
            "/api/v1/devices/meter-1/statistics", {"metrics": "power,water,temp", "start": iso(lo), "end": iso(hi)}
        )
    assert response.status_code == 200, response.content
    by_metric = {item["metric"]: item for item in response.json()["series"]}
    for metric, readings in (("power", power), ("water", water), ("temp", temp)):
        values = [v for t, v in readings if lo <= t < hi]
        item = by_metric[metric]
        assert item["count"] == len(values)
        assert (item["min"], item["max"]) == (min(values), max(values))
        assert item["avg"] == pytest.approx(sum(values) / len(values), rel=1e-12)
    energy = sum(ref_energy(power, [(lo, hi)], lo, hi).values())
    assert by_metric["power"]["energy_kwh"] == pytest.approx(energy, rel=1e-9)
    assert by_metric["power"]["co2e_kg"] == pytest.approx(energy * 0.38, rel=1e-9)
    assert by_metric["water"]["volume"] == pytest.approx(sum(ref_volume(water, [(lo, hi)], lo, hi).values()))
    assert "energy_kwh" not in by_metric["temp"] and "volume" not in by_metric["temp"]


def test_statistics_of_an_empty_range(client, bob, meter):
    client.force_login(bob)
    response = client.get(
        "/api/v1/devices/meter-1/statistics", {"metrics": "power,temp", "start": "2024-01-01", "end": "2024-01-02"}
    )
    assert response.status_code == 200
    assert [(i["count"], i["avg"], i["min"], i["max"]) for i in response.json()["series"]] == [
        (0, None, None, None)
    ] * 2
