"""The sites' stored heat-pump days (``SiteHeatPumpDay``, kept by ``site_energy_refresh``): each day's heat output and
electrical input kWh and outdoor degree days equal the live computation (``energy.kwh`` in 1d buckets of the site's
zone, ``heating_degree_days`` over the day) over Berlin days with the spring DST change (a 23-hour day), a 3-hour gap
and a register reset, for energy registers and power gauges, and over Sydney's autumn change (a 25-hour day); the
heat-pump page gives the same SPF, COP by day, degree days and ranking with and without them; late data recomputed by
the rollup engine makes the days recomputed; a changed source or site timezone falls back to the live path until the
refresh rebuilds the days."""

import datetime
import itertools
import zoneinfo

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.devices.choices import MetricKind, MetricRole
from apps.devices.models import Device
from apps.telemetry import energy, site_energy
from apps.telemetry.derived import DerivedPlan
from apps.telemetry.models import Reading, RollupDirtyBucket, RollupWatermark, Series, SiteEnergyState, SiteHeatPumpDay
from apps.telemetry.rollups import rollups_advance
from apps.telemetry.selectors import site_heat_pumps_for_user
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory

pytestmark = pytest.mark.django_db

UTC = datetime.UTC
HOUR = datetime.timedelta(hours=1)
STEP = datetime.timedelta(minutes=10)
# Readings every 10 minutes at :05, :15 ... :55, so that a power segment (:55 -> :05) crosses every hour boundary,
# and every local midnight.
DATA_START = datetime.datetime(2025, 3, 27, 0, 5, tzinfo=UTC)
DATA_END = datetime.datetime(2025, 4, 2, 0, 0, tzinfo=UTC)
GAP = (datetime.datetime(2025, 3, 29, 10, tzinfo=UTC), datetime.datetime(2025, 3, 29, 13, tzinfo=UTC))  # > 900 s
RESET_AT = datetime.datetime(2025, 3, 31, 12, 5, tzinfo=UTC)  # the first reading of its hour: the reset is a step
# Local days 28 March to 1 April in Berlin: across the spring DST change (30 March, 23 hours).
FIRST, LAST = datetime.date(2025, 3, 28), datetime.date(2025, 4, 1)
SPAN = energy.DayRange(first=FIRST, last=LAST)
AFTER_DATA = datetime.datetime(2025, 4, 2, 2, tzinfo=UTC)  # every reading rolled up
MID_DATA = datetime.datetime(2025, 4, 1, 12, 3, tzinfo=UTC)  # hourly watermark 12:00, raw readings after it
# 30 March in Berlin: from 29 March 23:00 UTC (CET) to 30 March 22:00 UTC (CEST).
DST_DAY = datetime.datetime(2025, 3, 29, 23, tzinfo=UTC)


def _times():
    t = DATA_START
    while t < DATA_END:
        if not GAP[0] < t < GAP[1]:
            yield t
        t += STEP


def register_readings(scale: float):
    """kWh, +scale per 10 minutes by day (06-18 UTC), a quarter of it by night, reset to 0.25 at RESET_AT."""
    readings, value = [], 5000.0
    for t in _times():
        value = 0.25 if t == RESET_AT else value + scale * (1.0 if 6 <= t.hour < 18 else 0.25)
        readings.append((t, value))
    return readings


def power_readings(scale: float):
    """Uneven steps: 1.5 to 3.5 (W or kW) times scale."""
    return [(t, scale * (1500.0 + 500.0 * (i % 5))) for i, t in enumerate(_times())]


def temperature_readings(offset: float):
    """°C between about 2 and 20: some hours above the 15.5 °C base (no degree days), most below."""
    return [(t, offset + 2.0 + 0.5 * (i % 37)) for i, t in enumerate(_times())]


@pytest.fixture
def berlin_site(site_a, settings):
    settings.ENERGY_MAX_GAP_SECONDS = 900
    site_a.timezone = "Europe/Berlin"
    site_a.full_clean()
    site_a.save()
    return site_a


def _definition(device_type, key, unit, kind, role):
    MetricDefinitionFactory(device_type=device_type, key=key, unit=unit, kind=kind, role=role, min_value=None,
                            max_value=None)  # fmt: skip


@pytest.fixture
def pump_types(berlin_site):
    """Two kinds of heat pump: a heat meter register with a power gauge for electricity, and a heat power gauge with
    an electricity register; both with an outdoor temperature."""
    organization = berlin_site.organization
    register_heat, power_heat = (
        DeviceTypeFactory(organization=organization),
        DeviceTypeFactory(organization=organization),
    )
    _definition(register_heat, "heat", "kWh", MetricKind.TOTALIZER, MetricRole.HEAT_OUTPUT)
    _definition(register_heat, "electricity", "W", MetricKind.GAUGE, MetricRole.ELECTRICAL_INPUT)
    _definition(power_heat, "heat", "W", MetricKind.GAUGE, MetricRole.HEAT_OUTPUT)
    _definition(power_heat, "electricity", "Wh", MetricKind.TOTALIZER, MetricRole.ELECTRICAL_INPUT)
    for device_type in (register_heat, power_heat):
        _definition(device_type, "outdoor", "°C", MetricKind.GAUGE, MetricRole.OUTDOOR_TEMPERATURE)
    return {
        "register-heat": (register_heat, lambda s: register_readings(3.0 * s), lambda s: power_readings(s)),
        "power-heat": (power_heat, lambda s: power_readings(3.0 * s), lambda s: register_readings(1000.0 * s)),
    }


def add_pump(site, pump_types, kind: str, uid: str, scale: float = 1.0, shift=datetime.timedelta(0)):
    """A heat pump of ``kind`` with the readings above, ``shift`` later."""
    device_type, heat, electricity = pump_types[kind]
    device = DeviceFactory(uid=uid, name=f"Pump {uid}", site=site, device_type=device_type)
    for key, readings in (("heat", heat(scale)), ("electricity", electricity(scale)), ("outdoor", None)):
        series = Series.objects.create(device=device, metric_key=key)
        readings = temperature_readings(scale) if readings is None else readings
        Reading.objects.bulk_create(Reading(series=series, ts=ts + shift, value=value) for ts, value in readings)
    return device


def roll_up(now: datetime.datetime) -> None:
    """Roll everything up from scratch to ``now`` (rows already there are upserted identical)."""
    RollupWatermark.objects.all().delete()
    rollups_advance(now=now, time_budget=120)


@pytest.fixture
def make_site(berlin_site, pump_types):
    def make(now: datetime.datetime):
        add_pump(berlin_site, pump_types, "register-heat", uid="hp-1")
        add_pump(berlin_site, pump_types, "register-heat", uid="hp-2", scale=1.5)
        add_pump(berlin_site, pump_types, "power-heat", uid="hp-3", scale=0.8)
        roll_up(now)
        return berlin_site

    return make


def page_figures(user, site, now, span=SPAN):
    _, _, figures, plan, stored_until = site_heat_pumps_for_user(user=user, site_id=site.id, span=span, now=now)
    return figures, plan, stored_until


def live_figures(site, now, span=SPAN):
    """The page's figures computed from rollups and raw readings only, for the same pumps and zone."""
    window = energy.window_for(span, now=now, tz=site.timezone)
    pumps = energy.heat_pump_sources(Device.objects.filter(site=site, is_active=True))
    figures, plan, stored_until = energy.heat_pump_figures(
        pumps=pumps, start=window.start, end=window.end, tz=site.timezone, now=now
    )
    assert stored_until is None
    return figures, plan


def assert_same_figures(actual, expected):
    assert [item.device.uid for item in actual] == [item.device.uid for item in expected]  # the ranking
    for a, e in zip(actual, expected, strict=True):
        for name in ("heat_kwh", "electricity_kwh", "degree_days", "spf", "kwh_per_degree_day"):
            assert getattr(a, name) == pytest.approx(getattr(e, name), abs=1e-9), (a.device.uid, name)
        assert [day for day, _ in a.cop_days] == [day for day, _ in e.cop_days], a.device.uid
        assert [cop for _, cop in a.cop_days] == pytest.approx([cop for _, cop in e.cop_days], abs=1e-9)


def stored_days(site) -> dict:
    rows = SiteHeatPumpDay.objects.filter(site=site).order_by("series_id", "day")
    return {(series_id, day): value for series_id, day, value in rows.values_list("series_id", "day", "value")}


def assert_running_sums(site):
    """Each stored row's ``through`` is its series' sum of the stored values up to and including it."""
    running: dict[int, float] = {}
    rows = SiteHeatPumpDay.objects.filter(site=site).order_by("series_id", "day")
    for series_id, value, through in rows.values_list("series_id", "value", "through"):
        running[series_id] = running.get(series_id, 0.0) + value
        assert through == pytest.approx(running[series_id], abs=1e-9), series_id
    assert running


def local_midnights(tz: str = "Europe/Berlin", first=datetime.date(2025, 3, 27)) -> list[datetime.datetime]:
    """The starts (UTC) of the local days ``first`` to 2 April and the end of 2 April: from 27 March in Berlin, 26
    March in New York, every day the data touches."""
    span = energy.DayRange(first=first, last=datetime.date(2025, 4, 2))
    window = energy.window_for(span, now=AFTER_DATA + datetime.timedelta(days=9), tz=tz)
    days, day = [], window.start
    while day < window.end:
        days.append(day)
        day = energy.local_day_floor(day + datetime.timedelta(hours=26), tz)
    return [*days, window.end]


def live_days(site, start, end) -> dict:
    """Each pump series' figure per local day over ``[start, end)`` as the page computes it: ``energy.kwh`` in 1d
    buckets of the site's zone per series, and ``heating_degree_days`` over each day."""
    pumps = site_energy.heat_pump_sources(site.id)
    sources = [source for _, heat, electrical, _ in pumps for source in (heat, electrical)]
    plan = DerivedPlan(resolution="1h", start=start, end=end, split=None)
    computed = energy.kwh(sources, plan=plan, interval="1d", tz=site.timezone, combine=False)
    days = {(series_id, day): value for series_id, buckets in computed.items() for day, value in buckets.points}
    outdoor = [outdoor_id for *_, outdoor_id in pumps]
    midnights = [start]
    while midnights[-1] < end:
        midnights.append(energy.local_day_floor(midnights[-1] + datetime.timedelta(hours=26), site.timezone))
    for day, next_day in itertools.pairwise(midnights):
        figures = energy.heating_degree_days(series_ids=outdoor, start=day, end=next_day)
        days.update({(series_id, day): value for series_id, value in figures.items() if value})
    return days


def assert_same_days(actual: dict, expected: dict):
    # A day of degree days 0 (all hours above the base) has a stored row of 0 and no live figure to compare: same.
    actual = {key: value for key, value in actual.items() if value or key in expected}
    assert sorted(actual) == sorted(expected)
    assert [actual[key] for key in sorted(actual)] == pytest.approx([expected[key] for key in sorted(actual)], abs=1e-9)


# --- the claim the table rests on ------------------------------------------------------------------------------------


def test_a_days_figures_do_not_depend_on_where_a_range_of_whole_local_days_is_cut(make_site):
    site = make_site(AFTER_DATA)
    midnights = local_midnights()
    whole = live_days(site, midnights[0], midnights[-1])
    assert DST_DAY in {day for _, day in whole} and DST_DAY + 23 * HOUR in {day for _, day in whole}
    for cut in midnights[1:-1]:
        pieces = live_days(site, midnights[0], cut) | live_days(site, cut, midnights[-1])
        assert_same_days(pieces, whole)


# --- computing the rows ----------------------------------------------------------------------------------------------


def test_stored_days_equal_the_live_figures_across_the_dst_change_a_gap_and_a_reset(make_site):
    site = make_site(AFTER_DATA)

    done = site_energy.site_energy_refresh(site_id=site.id)

    assert done["days_mode"] == "rebuild" and done["days_rows"] > 0
    midnights = local_midnights()
    watermark = RollupWatermark.objects.get(resolution="1h").rolled_until
    # Final days: those ending before the final hour (an hour before the watermark), at a local midnight.
    assert done["days_until"] == energy.local_day_floor(watermark - HOUR, "Europe/Berlin") == midnights[-2]
    assert SiteEnergyState.objects.get(site=site).days_until == done["days_until"]
    rows = stored_days(site)
    assert {day for _, day in rows} == set(midnights[:-2])  # 27 March (data from 01:05 local) through 1 April
    assert_same_days(rows, live_days(site, midnights[0], done["days_until"]))
    # Per series and day: 9 series (3 pumps x heat, electricity, outdoor) x 6 days.
    assert len(rows) == 9 * 6


def test_a_refresh_writes_the_days_in_a_constant_number_of_statements(make_site):
    site = make_site(datetime.datetime(2025, 3, 29, 0, 30, tzinfo=UTC))
    with CaptureQueriesContext(connection) as short:
        few = site_energy.site_energy_refresh(site_id=site.id)
    rollups_advance(now=AFTER_DATA, time_budget=120)
    SiteEnergyState.objects.filter(site=site).delete()
    with CaptureQueriesContext(connection) as long:
        many = site_energy.site_energy_refresh(site_id=site.id)
    assert many["days_rows"] > 2 * few["days_rows"] > 0
    assert len(long.captured_queries) == len(short.captured_queries)
    # Registers and power gauges (heat and electricity together), degree days.
    assert sum("INSERT INTO telemetry_siteheatpumpday" in query["sql"] for query in long.captured_queries) == 3


def test_extending_the_days_after_new_rollups_gives_what_a_rebuild_gives(make_site):
    site = make_site(datetime.datetime(2025, 3, 30, 6, 30, tzinfo=UTC))
    first = site_energy.site_energy_refresh(site_id=site.id)
    assert first["days_mode"] == "rebuild" and first["days_until"] == DST_DAY
    rollups_advance(now=AFTER_DATA, time_budget=120)

    extended = site_energy.site_energy_refresh(site_id=site.id)

    assert extended["days_mode"] == "extend" and extended["days_start"] == DST_DAY and extended["days_rows"] > 0
    assert_running_sums(site)  # continued from the days stored before
    rows = stored_days(site)
    SiteEnergyState.objects.filter(site=site).delete()
    assert site_energy.site_energy_refresh(site_id=site.id)["days_mode"] == "rebuild"
    assert_same_days(rows, stored_days(site))
    assert site_energy.site_energy_refresh(site_id=site.id)["days_rows"] == 0  # nothing new: nothing computed


# --- the page ---------------------------------------------------------------------------------------------------------


def test_the_heat_pump_page_gives_the_same_figures_with_and_without_stored_days(client, bob, make_site):
    site = make_site(AFTER_DATA)
    client.force_login(bob)  # an operator of this site
    path = reverse("dashboard:heat-pumps", args=[site.id])
    params = {"from": FIRST.isoformat(), "to": LAST.isoformat()}

    live = client.get(path, params)
    site_energy.site_energy_refresh(site_id=site.id)
    stored = client.get(path, params)

    assert live.status_code == stored.status_code == 200
    assert live.context["stored_until"] is None
    # The whole range is final: every day of it read from the table, and the page says so.
    assert stored.context["stored_until"] == stored.context["window"].end
    assert "stored daily figures" in stored.content.decode() and "stored daily figures" not in live.content.decode()
    assert_same_figures(stored.context["figures"], live.context["figures"])
    assert all(item.spf and item.degree_days and len(item.cop_days) == 5 for item in stored.context["figures"])
    spf = [cell.split(">")[1].split("<")[0] for cell in stored.content.decode().split('data-figure="spf"')[1:]]
    assert spf == [cell.split(">")[1].split("<")[0] for cell in live.content.decode().split('data-figure="spf"')[1:]]


def test_the_page_with_raw_readings_after_the_watermark_reads_the_final_days_and_computes_the_rest(bob, make_site):
    site = make_site(MID_DATA)
    site_energy.site_energy_refresh(site_id=site.id)

    figures, plan, stored_until = page_figures(bob, site, MID_DATA)

    # Final hour 11:00 UTC on 1 April (13:00 local): the days before 1 April are stored, 1 April is computed.
    assert stored_until == datetime.datetime(2025, 3, 31, 22, tzinfo=UTC)
    assert plan.split == datetime.datetime(2025, 4, 1, 12, tzinfo=UTC)  # and raw readings after the watermark
    live, live_plan = live_figures(site, MID_DATA)
    assert plan == live_plan
    assert_same_figures(figures, live)


def test_the_page_reads_the_stored_days_rather_than_computing_them(bob, make_site):
    site = make_site(AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    before = {item.device.uid: item for item in page_figures(bob, site, AFTER_DATA)[0]}
    heat_id = Series.objects.get(device__uid="hp-1", metric_key="heat").id
    outdoor_id = Series.objects.get(device__uid="hp-1", metric_key="outdoor").id
    day = DST_DAY
    # A day's value raised, and the running sums from that day on with it, as a refresh would have stored them.
    for series_id, extra in ((heat_id, 1000.0), (outdoor_id, 7.0)):
        rows = SiteHeatPumpDay.objects.filter(site=site, series_id=series_id)
        assert rows.filter(day=day).update(value=F("value") + extra) == 1
        assert rows.filter(day__gte=day).update(through=F("through") + extra) > 1

    after = {item.device.uid: item for item in page_figures(bob, site, AFTER_DATA)[0]}

    assert after["hp-1"].heat_kwh == pytest.approx(before["hp-1"].heat_kwh + 1000.0)
    assert after["hp-1"].degree_days == pytest.approx(before["hp-1"].degree_days + 7.0)
    assert after["hp-2"].heat_kwh == before["hp-2"].heat_kwh


# --- keeping it up to date --------------------------------------------------------------------------------------------

# A late reading at 08:01 UTC on 30 March, just after the hour starts (the first reading of that hour was 08:05).
LATE_AT = datetime.datetime(2025, 3, 30, 8, 1, tzinfo=UTC)


@pytest.mark.parametrize("key", ["heat", "electricity", "outdoor"])
def test_a_late_reading_recomputed_by_the_rollup_engine_makes_the_days_recomputed(bob, make_site, key):
    site = make_site(AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    before, _, _ = page_figures(bob, site, AFTER_DATA)
    series = Series.objects.get(device__uid="hp-1", metric_key=key)
    # What the ingest writer does for a reading behind the 1-minute watermark: store it and mark its minute dirty.
    Reading.objects.create(
        series=series, ts=LATE_AT, value={"heat": 10.0, "electricity": 9000.0, "outdoor": -20.0}[key]
    )
    RollupDirtyBucket.objects.create(series=series, bucket=LATE_AT.replace(second=0))

    assert rollups_advance(now=AFTER_DATA)["dirty"] == 1

    state = SiteEnergyState.objects.get(site=site)
    assert state.dirty_from == datetime.datetime(2025, 3, 30, 7, tzinfo=UTC)  # floor(08:00 - 900 s)
    marked, _, marked_until = page_figures(bob, site, AFTER_DATA)
    assert marked_until == DST_DAY  # the day of the late reading and after are computed live until the refresh
    live, _ = live_figures(site, AFTER_DATA)
    assert_same_figures(marked, live)
    changed = "degree_days" if key == "outdoor" else f"{key}_kwh"
    hp1 = {item.device.uid: item for item in marked}["hp-1"]
    assert getattr(hp1, changed) != pytest.approx(getattr({i.device.uid: i for i in before}["hp-1"], changed), abs=1e-6)

    done = site_energy.site_energy_refresh(site_id=site.id)

    assert done["days_mode"] == "extend" and done["days_start"] == DST_DAY
    assert SiteEnergyState.objects.get(site=site).dirty_from is None
    refreshed, _, refreshed_until = page_figures(bob, site, AFTER_DATA)
    assert refreshed_until == energy.window_for(SPAN, now=AFTER_DATA, tz=site.timezone).end
    assert_same_figures(refreshed, live)
    midnights = local_midnights()
    assert_same_days(stored_days(site), live_days(site, midnights[0], done["days_until"]))
    assert_running_sums(site)


def test_the_cop_shown_is_of_the_ranges_last_days_on_both_paths(bob, make_site, monkeypatch):
    monkeypatch.setattr(energy, "RECENT_COP_DAYS", 3)
    site = make_site(AFTER_DATA)
    live, _ = live_figures(site, AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    stored, _, stored_until = page_figures(bob, site, AFTER_DATA)

    assert stored_until is not None
    assert_same_figures(stored, live)
    # Berlin's 30 and 31 March and 1 April (the range is 28 March to 1 April), the first before the clocks moved.
    last_days = [datetime.datetime(2025, 3, 29, 23, tzinfo=UTC), datetime.datetime(2025, 3, 30, 22, tzinfo=UTC),
                 datetime.datetime(2025, 3, 31, 22, tzinfo=UTC)]  # fmt: skip
    assert all([day for day, _ in item.cop_days] == last_days for item in stored)


def test_a_new_heat_pump_falls_back_to_the_live_path_until_the_refresh_computes_its_days(
    bob, make_site, berlin_site, pump_types
):
    site = make_site(AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    assert page_figures(bob, site, AFTER_DATA)[2] is not None
    kept = SiteHeatPumpDay.objects.filter(
        site=site, series_id=Series.objects.get(device__uid="hp-1", metric_key="heat").id
    )
    assert kept.update(value=F("value") + 1.0) > 0  # not what the computation gives: shows whether it is recomputed
    tampered = sorted(kept.values_list("day", "value"))

    add_pump(berlin_site, pump_types, "power-heat", uid="hp-new", scale=2.0)
    roll_up(AFTER_DATA)

    fallback, _, fallback_until = page_figures(bob, site, AFTER_DATA)
    assert fallback_until is None and len(fallback) == 4
    live, _ = live_figures(site, AFTER_DATA)
    assert_same_figures(fallback, live)

    done = site_energy.site_energy_refresh(site_id=site.id)
    # Only the new pump's series computed (all of its days), the hours only its electricity added.
    assert done["days_mode"] == "sources" and done["mode"] == "add"
    new_series = set(Series.objects.filter(device__uid="hp-new").values_list("id", flat=True))
    assert done["days_rows"] == SiteHeatPumpDay.objects.filter(site=site, series_id__in=new_series).count() > 0
    assert sorted(kept.values_list("day", "value")) == tampered  # the other pumps' rows left as they were
    kept.update(value=F("value") - 1.0)
    computed, _, computed_until = page_figures(bob, site, AFTER_DATA)
    assert computed_until is not None
    assert_same_figures(computed, live)
    assert_running_sums(site)


def test_a_removed_heat_pump_loses_its_rows_only(bob, make_site):
    site = make_site(AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    rows = stored_days(site)
    gone = set(Series.objects.filter(device__uid="hp-2").values_list("id", flat=True))
    Device.objects.filter(uid="hp-2").update(is_active=False)

    done = site_energy.site_energy_refresh(site_id=site.id)

    assert done["days_mode"] == "sources" and done["days_rows"] == 0
    assert stored_days(site) == {key: value for key, value in rows.items() if key[0] not in gone}
    figures, _, stored_until = page_figures(bob, site, AFTER_DATA)
    assert stored_until is not None and [item.device.uid for item in figures if item.device.uid == "hp-2"] == []
    assert_same_figures(figures, live_figures(site, AFTER_DATA)[0])


def test_a_changed_site_timezone_falls_back_to_the_live_path_and_rebuilds_the_days_in_the_new_zone(bob, make_site):
    site = make_site(AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    berlin = stored_days(site)
    site.timezone = "America/New_York"  # its DST change (9 March) is outside the data: 24-hour days, 5-6 h apart
    site.save()

    fallback, _, fallback_until = page_figures(bob, site, AFTER_DATA)
    assert fallback_until is None
    live, _ = live_figures(site, AFTER_DATA)
    assert_same_figures(fallback, live)

    done = site_energy.site_energy_refresh(site_id=site.id)

    assert done["days_mode"] == "rebuild" and done["mode"] == "extend"  # the UTC hours do not depend on the zone
    rows = stored_days(site)
    assert {day.hour for _, day in rows} == {4}  # New York midnight (EDT) in UTC
    assert set(rows).isdisjoint(berlin)
    midnights = local_midnights("America/New_York", first=datetime.date(2025, 3, 26))
    assert_same_days(rows, live_days(site, midnights[0], done["days_until"]))
    stored, _, stored_until = page_figures(bob, site, AFTER_DATA)
    assert stored_until is not None
    assert_same_figures(stored, live)


WEEK = datetime.timedelta(days=7)


def test_an_autumn_day_of_25_hours_is_stored_as_the_live_figure(bob, berlin_site, pump_types):
    site = berlin_site
    site.timezone = "Australia/Sydney"  # DST ends on 6 April 2025 at 03:00 local: a day of 25 hours
    site.save()
    add_pump(site, pump_types, "register-heat", uid="hp-1", shift=WEEK)  # 3 to 9 April, a gap, a reset
    add_pump(site, pump_types, "power-heat", uid="hp-3", scale=0.8, shift=WEEK)
    now = AFTER_DATA + WEEK
    roll_up(now)

    done = site_energy.site_energy_refresh(site_id=site.id)

    long_day = datetime.datetime(2025, 4, 5, 13, tzinfo=UTC)  # 6 April 00:00 AEDT
    assert energy.local_day_floor(long_day + 26 * HOUR, site.timezone) == long_day + 25 * HOUR  # 00:00 AEST
    rows = stored_days(site)
    assert {long_day, long_day + 25 * HOUR} <= {day for _, day in rows}
    first = min(day for _, day in rows)
    assert_same_days(rows, live_days(site, first, done["days_until"]))
    span = energy.DayRange(first=datetime.date(2025, 4, 4), last=datetime.date(2025, 4, 8))
    figures, _, stored_until = page_figures(bob, site, now, span)
    assert stored_until is not None and stored_until > long_day + 25 * HOUR
    assert_same_figures(figures, live_figures(site, now, span)[0])


# Santiago de Chile moves its clocks at local midnight. On 6 April 2025 00:00 (UTC-3) they go back to 5 April 23:00
# (UTC-4): 5 April has 25 hours. On 7 September 2025 00:00 (UTC-4) they go forward to 01:00 (UTC-3): that day's
# midnight does not exist, the day starts at 01:00 and has 23 hours. The local day's start, written out in UTC:
# Python (zoneinfo) and PostgreSQL must agree on it for the stored days to line up with the live ones.
@pytest.mark.parametrize(
    "shift_days, day_start, next_day_start",
    [
        (7, datetime.datetime(2025, 4, 5, 3, tzinfo=UTC), datetime.datetime(2025, 4, 6, 4, tzinfo=UTC)),
        (161, datetime.datetime(2025, 9, 7, 4, tzinfo=UTC), datetime.datetime(2025, 9, 8, 3, tzinfo=UTC)),
    ],
    ids=["clocks-back-at-midnight", "midnight-skipped"],
)
def test_a_dst_change_at_local_midnight_is_stored_as_the_live_figure(
    bob, berlin_site, pump_types, shift_days, day_start, next_day_start
):
    site = berlin_site
    site.timezone = "America/Santiago"
    site.save()
    shift = datetime.timedelta(days=shift_days)
    add_pump(site, pump_types, "register-heat", uid="hp-1", shift=shift)  # a gap and a reset in the week
    add_pump(site, pump_types, "power-heat", uid="hp-3", scale=0.8, shift=shift)
    now = AFTER_DATA + shift
    roll_up(now)

    done = site_energy.site_energy_refresh(site_id=site.id)

    assert energy.local_day_floor(day_start + 12 * HOUR, site.timezone) == day_start
    assert energy.local_day_floor(next_day_start + HOUR, site.timezone) == next_day_start
    rows = stored_days(site)
    assert {day_start, next_day_start} <= {day for _, day in rows}
    assert_same_days(rows, live_days(site, min(day for _, day in rows), done["days_until"]))
    local_date = day_start.astimezone(zoneinfo.ZoneInfo(site.timezone)).date()
    span = energy.DayRange(first=local_date - datetime.timedelta(days=2), last=local_date + datetime.timedelta(days=2))
    figures, _, stored_until = page_figures(bob, site, now, span)
    assert stored_until is not None and stored_until > next_day_start
    assert_same_figures(figures, live_figures(site, now, span)[0])
    assert all(len(item.cop_days) == 5 for item in figures)


@pytest.mark.parametrize("tz, midnight_utc", [("Asia/Kolkata", (18, 30)), ("Asia/Kathmandu", (18, 15))])
def test_a_zone_whose_midnight_is_not_on_a_utc_hour_reads_the_stored_days(
    bob, berlin_site, pump_types, tz, midnight_utc
):
    site = berlin_site
    site.timezone = tz  # UTC+5:30, UTC+5:45: the page's range starts at the hour before the local midnight
    site.save()
    add_pump(site, pump_types, "register-heat", uid="hp-1")
    add_pump(site, pump_types, "power-heat", uid="hp-3", scale=0.8)
    roll_up(AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    assert {(day.hour, day.minute) for _, day in stored_days(site)} == {midnight_utc}

    figures, plan, stored_until = page_figures(bob, site, AFTER_DATA)

    window = energy.window_for(SPAN, now=AFTER_DATA, tz=tz)
    assert (window.start.hour, window.start.minute) == midnight_utc and plan.start == window.start.replace(minute=0)
    assert stored_until is not None and stored_until > window.start + 3 * 24 * HOUR  # most days read, not computed
    live, live_plan = live_figures(site, AFTER_DATA)
    assert plan == live_plan
    assert_same_figures(figures, live)
