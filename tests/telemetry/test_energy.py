"""Energy figures against values computed by hand, for a Berlin day with the autumn DST change (25 hours), a
3-hour gap in reporting and an energy-register reset, from raw readings and from hourly rollups: the API and the
energy report (cost by time-of-use band, CO₂e) must agree with the hand figures from either source."""

import datetime
import zoneinfo

import pytest

from apps.devices.choices import MetricKind
from apps.devices.energy import site_tariff
from apps.devices.models import MetricDefinition
from apps.telemetry import energy
from apps.telemetry.models import Reading, RollupWatermark, Series
from apps.telemetry.rollups import rollups_advance
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory

UTC = datetime.UTC
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
# 26 October 2025 in Berlin: 00:00 CEST (22:00 UTC the day before) to 00:00 CET (23:00 UTC), 25 hours.
DAY_START = datetime.datetime(2025, 10, 25, 22, tzinfo=UTC)
DAY_END = datetime.datetime(2025, 10, 26, 23, tzinfo=UTC)
GAP_FROM = datetime.datetime(2025, 10, 26, 5, tzinfo=UTC)  # no reading after this one ...
GAP_TO = datetime.datetime(2025, 10, 26, 8, tzinfo=UTC)  # ... until this one: 3 h, over the 900 s bound
RESET_AT = datetime.datetime(2025, 10, 26, 12, 30, tzinfo=UTC)
STEP = datetime.timedelta(minutes=10)

# By hand. Power: 6 kW from 00:00 CEST to the gap (22:00-05:00 UTC, 7 h = 42 kWh), nothing across the gap, 3 kW
# from 08:00 to 23:00 UTC (15 h = 45 kWh): 87 kWh. CO₂e at 0.38 kg/kWh: 33.06 kg. Cost: local 00:00-06:00 (all 7 real
# hours before the gap, the repeated 02:00 hour included) at the 0.10 night band = 4.20, the rest at the 0.30 flat
# price = 13.50: 17.70.
POWER_KWH, POWER_CO2E, POWER_COST = 87.0, 87.0 * 0.38, 4.20 + 13.50
# Register: +1 kWh every 10 minutes for the day's 25 hours (150 steps, the one across the gap +18), except the step
# of the reset, which counts the new value 0.5 instead of 1: 150 - 1 + 0.5 = 149.5 kWh.
REGISTER_KWH = 149.5


def _times(start, end):
    t = start
    while t <= end:
        yield t
        t += STEP


def power_readings():
    """Every 10 minutes from 21:00 UTC the day before to 01:00 UTC the day after, none inside the gap."""
    start, end = DAY_START - datetime.timedelta(hours=1), DAY_END + datetime.timedelta(hours=2)
    return [(t, 6.0 if t <= GAP_FROM else 3.0) for t in _times(start, end) if not GAP_FROM < t < GAP_TO]


def register_readings():
    """+1 kWh per 10 minutes (also while silent across the gap), reset to 0 at 12:25 and at 0.5 by 12:30."""
    readings, value = [], 1000.0
    for t in _times(DAY_START - datetime.timedelta(hours=1), DAY_END + datetime.timedelta(hours=2)):
        value = 0.5 if t == RESET_AT else value + 1
        if not GAP_FROM < t < GAP_TO:
            readings.append((t, value))
    return readings


@pytest.fixture
def pump(site_a, settings):
    settings.ENERGY_MAX_GAP_SECONDS = 900
    site_a.timezone = "Europe/Berlin"
    site_a.emission_factor_kg_per_kwh = "0.3800"
    site_a.tariff_flat_price = "0.3000"
    site_a.tariff_bands = [{"from": "00:00", "to": "06:00", "price": 0.10}]
    site_a.full_clean()
    site_a.save()
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(
        device_type=device_type, key="power", unit="kW", kind=MetricKind.GAUGE, min_value=None, max_value=None
    )
    MetricDefinitionFactory(
        device_type=device_type, key="meter", unit="kWh", kind=MetricKind.TOTALIZER, min_value=None, max_value=None
    )
    device = DeviceFactory(uid="hp-dst", site=site_a, device_type=device_type)
    for key, readings in (("power", power_readings()), ("meter", register_readings())):
        series = Series.objects.create(device=device, metric_key=key)
        Reading.objects.bulk_create([Reading(series=series, ts=ts, value=value) for ts, value in readings])
    RollupWatermark.objects.all().delete()
    rollups_advance(now=DAY_END + datetime.timedelta(days=2), time_budget=60)
    return device


def _get(client, path, **params):
    response = client.get(path, params)
    assert response.status_code == 200, response.json()
    return response.json()


@pytest.mark.parametrize("resolution", ["raw", "1h"])
def test_energy_of_a_dst_day_with_a_gap_matches_the_hand_figures_from_raw_and_from_rollups(
    client, bob, pump, resolution
):
    client.force_login(bob)
    body = _get(
        client,
        "/api/v1/devices/hp-dst/energy",
        metric="power",
        start=DAY_START.isoformat(),
        end=DAY_END.isoformat(),
        interval="1d",
        tz="Europe/Berlin",
        resolution=resolution,
    )
    assert body["resolution"] == resolution
    series = body["series"][0]
    assert series["points"] == [
        [int(DAY_START.timestamp() * 1000), pytest.approx(POWER_KWH), pytest.approx(POWER_CO2E)]
    ]
    assert series["total"] == {"energy_kwh": pytest.approx(POWER_KWH), "co2e_kg": pytest.approx(POWER_CO2E)}

    hourly = _get(
        client,
        "/api/v1/devices/hp-dst/energy",
        metric="power",
        start=DAY_START.isoformat(),
        end=DAY_END.isoformat(),
        interval="1h",
        resolution=resolution,
    )["series"][0]["points"]
    # 25 hours in the day; the hours of the gap (05:00, 06:00, 07:00 UTC) have no bucket, as none is bridged.
    assert len(hourly) == 22
    assert [kwh for _, kwh, _ in hourly[:7]] == [pytest.approx(6.0)] * 7


@pytest.mark.parametrize("resolution", ["raw", "1h"])
def test_register_volume_counts_the_reset_from_zero_and_the_advance_across_the_gap(client, bob, pump, resolution):
    client.force_login(bob)
    body = _get(
        client,
        "/api/v1/devices/hp-dst/volume",
        metric="meter",
        start=DAY_START.isoformat(),
        end=DAY_END.isoformat(),
        interval="1d",
        tz="Europe/Berlin",
        resolution=resolution,
    )
    assert body["resolution"] == resolution
    assert body["series"][0]["total"] == {"volume": pytest.approx(REGISTER_KWH)}


@pytest.mark.parametrize("resolution", ["raw", "1h"])
def test_energy_report_prices_time_of_use_bands_in_local_hours_from_raw_and_from_rollups(pump, resolution):
    power = MetricDefinition.objects.get(device_type=pump.device_type, key="power")
    series_id = Series.objects.get(device=pump, metric_key="power").id
    now = DAY_END + datetime.timedelta(days=1)  # 28 October 00:00 in Berlin: the 7-day window covers the 26th
    report = energy.energy_report(
        sources=[(series_id, power)],
        span="7d",
        tz="Europe/Berlin",
        emission_factor=0.38,
        tariff=site_tariff(pump.site),
        now=now,
        raw_retention_days=3650,
        resolution=resolution,
    )
    assert report.resolution == resolution
    day = next(bucket for bucket in report.buckets if bucket.start == DAY_START.astimezone(BERLIN))
    assert day.kwh == pytest.approx(POWER_KWH)
    assert day.cost == pytest.approx(POWER_COST)
    # The readings start 21:00 UTC on the 25th (1 h at 6 kW) and end 01:00 UTC on the 27th (2 h at 3 kW).
    assert report.total_kwh == pytest.approx(6.0 + POWER_KWH + 6.0)
    assert report.co2e_kg == pytest.approx(report.total_kwh * 0.38)
    assert report.previous_kwh == 0.0 and report.change_percent is None


def test_sub_hour_buckets_over_a_range_read_from_rollups_are_refused_with_a_reason(client, bob, pump):
    client.force_login(bob)
    response = client.get(
        "/api/v1/devices/hp-dst/energy",
        {"metric": "power", "start": DAY_START.isoformat(), "end": DAY_END.isoformat(), "interval": "15m"},
    )
    assert response.status_code == 400
    assert "hourly rollups" in response.json()["interval"]


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        ([{"from": "07:30", "to": "09:00", "price": 1}], "whole hour"),
        ([{"from": "09:00", "to": "07:00", "price": 1}], "before 'to'"),
        ([{"from": "00:00", "to": "06:00", "price": -1}], "between 0"),
        ([{"from": "00:00", "to": "06:00", "price": 1}, {"from": "05:00", "to": "08:00", "price": 2}], "overlap"),
        ([{"from": "00:00", "to": "06:00", "price": 1, "weekdays": [7]}], "weekdays"),
        ("cheap", "JSON list"),
    ],
)
def test_invalid_time_of_use_bands_are_refused_with_what_to_fix(site_a, bands, message):
    from django.core.exceptions import ValidationError

    site_a.tariff_flat_price = "0.3"
    site_a.tariff_bands = bands
    with pytest.raises(ValidationError) as error:
        site_a.full_clean()
    assert message in str(error.value.message_dict["tariff_bands"])


def test_a_custom_range_of_one_local_day_is_the_25_hour_dst_day_and_totals_what_the_api_does(client, bob, pump):
    meter = MetricDefinition.objects.get(device_type=pump.device_type, key="meter")
    series_id = Series.objects.get(device=pump, metric_key="meter").id
    day = datetime.date(2025, 10, 26)
    report = energy.energy_report(
        sources=[(series_id, meter)],
        span=energy.DayRange(first=day, last=day),
        tz="Europe/Berlin",
        emission_factor=0.38,
        tariff=None,
        now=DAY_END + datetime.timedelta(days=30),
        raw_retention_days=3650,
    )
    window = report.window
    assert (window.start, window.end, window.period, window.through) == (DAY_START, DAY_END, "hour", day)
    # The day before, 25 October, has 24 hours: the span one range earlier is counted in local days.
    assert (window.previous_start, window.previous_end) == (DAY_START - datetime.timedelta(hours=24), DAY_START)
    client.force_login(bob)
    api = _get(
        client,
        "/api/v1/devices/hp-dst/volume",
        metric="meter",
        start=DAY_START.isoformat(),
        end=DAY_END.isoformat(),
        interval="1d",
        tz="Europe/Berlin",
    )
    assert report.total_kwh == pytest.approx(api["series"][0]["total"]["volume"]) == pytest.approx(REGISTER_KWH)


def test_a_custom_range_ending_after_now_ends_now_and_one_starting_after_now_is_empty(pump):
    now = DAY_START + datetime.timedelta(hours=10)
    today = datetime.date(2025, 10, 26)
    window = energy.window_for(energy.DayRange(first=today, last=today), now=now, tz="Europe/Berlin")
    assert (window.start, window.end) == (DAY_START, now)
    later = energy.DayRange(first=datetime.date(2025, 11, 1), last=datetime.date(2025, 11, 3))
    meter = MetricDefinition.objects.get(device_type=pump.device_type, key="meter")
    series_id = Series.objects.get(device=pump, metric_key="meter").id
    report = energy.energy_report(
        sources=[(series_id, meter)], span=later, tz="Europe/Berlin", emission_factor=0.38, tariff=None, now=now
    )
    assert report.window.start == report.window.end and report.total_kwh == 0 and report.buckets == []


# A long range across the spring DST change (30 March 2025 in Berlin: a 23-hour day), from hourly rollups and from
# raw readings: weekly buckets, a time-of-use night band, a register reset and a 3-hour gap inside the range.
LONG_FIRST, LONG_LAST = datetime.date(2025, 3, 3), datetime.date(2025, 5, 11)  # 70 local days: weekly buckets


@pytest.fixture
def long_meter(site_a, settings):
    site_a.timezone = "Europe/Berlin"
    site_a.tariff_flat_price = "0.3000"
    site_a.tariff_bands = [{"from": "00:00", "to": "06:00", "price": 0.10}]
    site_a.full_clean()
    site_a.save()
    device_type = DeviceTypeFactory(organization=site_a.organization)
    meter = MetricDefinitionFactory(
        device_type=device_type, key="meter", unit="kWh", kind=MetricKind.TOTALIZER, min_value=None, max_value=None
    )
    device = DeviceFactory(uid="em-long", site=site_a, device_type=device_type)
    series = Series.objects.create(device=device, metric_key="meter")
    start = datetime.datetime(2025, 3, 1, tzinfo=UTC)
    reset_at = datetime.datetime(2025, 4, 9, 10, 15, tzinfo=UTC)
    gap = (datetime.datetime(2025, 4, 20, 1, tzinfo=UTC), datetime.datetime(2025, 4, 20, 4, tzinfo=UTC))
    readings, value, t = [], 500.0, start
    while t < datetime.datetime(2025, 5, 14, tzinfo=UTC):
        # Uneven use (more by day than by night) so that the night band's price matters.
        value = 0.25 if t == reset_at else value + (0.5 if 6 <= t.hour < 18 else 0.125)
        if not gap[0] < t < gap[1]:
            readings.append(Reading(series=series, ts=t, value=value))
        t += datetime.timedelta(minutes=15)
    Reading.objects.bulk_create(readings)
    RollupWatermark.objects.all().delete()
    rollups_advance(now=datetime.datetime(2025, 5, 20, tzinfo=UTC), time_budget=120)
    return series.id, meter


def test_a_long_range_from_hourly_rollups_equals_the_raw_computation_across_a_dst_change(long_meter, site_a):
    series_id, meter = long_meter
    reports = {
        resolution: energy.energy_report(
            sources=[(series_id, meter)],
            span=energy.DayRange(first=LONG_FIRST, last=LONG_LAST),
            tz="Europe/Berlin",
            emission_factor=0.38,
            tariff=site_tariff(site_a),
            now=datetime.datetime(2025, 5, 20, tzinfo=UTC),
            raw_retention_days=3650,
            resolution=resolution,
        )
        for resolution in ("raw", "1h")
    }
    raw, hourly = reports["raw"], reports["1h"]
    assert (raw.resolution, hourly.resolution, hourly.window.period) == ("raw", "1h", "week")
    assert len(hourly.buckets) == 10
    assert [bucket.start for bucket in hourly.buckets] == [bucket.start for bucket in raw.buckets]
    assert [bucket.kwh for bucket in hourly.buckets] == pytest.approx([bucket.kwh for bucket in raw.buckets])
    assert [bucket.cost for bucket in hourly.buckets] == pytest.approx([bucket.cost for bucket in raw.buckets])
    assert hourly.total_kwh == pytest.approx(raw.total_kwh) and hourly.cost == pytest.approx(raw.cost)
    # By hand: 70 local days of 24 h (one of 23) at 12 h x 2 kWh + 12 h x 0.5 kWh a day, the DST day's missing hour
    # is a night one (02:00 local = 00:00-01:00 UTC, 0.5 kWh); the reset step counts 0.25 instead of 0.5.
    assert hourly.total_kwh == pytest.approx(70 * 30 - 0.5 - 0.25)
