"""The sites' stored hourly kWh (``site_energy``): the site energy report read from them gives the live report's
figures (kWh and cost, this window and the one before) over a Berlin range with the spring DST change, a 3-hour gap
and a register reset, for energy registers and power gauges; extending them after new rollups gives what a rebuild
gives; late data recomputed by the rollup engine reaches them (also while a refresh is running); a changed source set
falls back to the live path until the refresh rebuilds."""

import datetime
import threading

import psycopg
import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from apps.devices.choices import MetricKind
from apps.devices.energy import site_tariff
from apps.devices.models import Device
from apps.telemetry import energy, site_energy
from apps.telemetry.derived import DerivedPlan
from apps.telemetry.models import Reading, RollupDirtyBucket, RollupWatermark, Series, SiteEnergyHour, SiteEnergyState
from apps.telemetry.rollups import rollups_advance
from apps.telemetry.selectors import site_energy_report_for_user
from apps.telemetry.tasks import site_energy_refresh_task
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory

pytestmark = pytest.mark.django_db

UTC = datetime.UTC
HOUR = datetime.timedelta(hours=1)
STEP = datetime.timedelta(minutes=10)
# Readings every 10 minutes at :05, :15 ... :55, so that a power segment (:55 -> :05) crosses every hour boundary.
DATA_START = datetime.datetime(2025, 3, 27, 0, 5, tzinfo=UTC)
DATA_END = datetime.datetime(2025, 4, 2, 0, 0, tzinfo=UTC)
GAP = (datetime.datetime(2025, 3, 29, 10, tzinfo=UTC), datetime.datetime(2025, 3, 29, 13, tzinfo=UTC))  # > 900 s
RESET_AT = datetime.datetime(2025, 3, 31, 12, 5, tzinfo=UTC)  # the first reading of its hour: the reset is a step
# Local days 28 March to 1 April in Berlin: across the spring DST change (30 March, 23 hours).
SPAN = energy.DayRange(first=datetime.date(2025, 3, 28), last=datetime.date(2025, 4, 1))
AFTER_DATA = datetime.datetime(2025, 4, 2, 2, tzinfo=UTC)  # every reading rolled up
MID_DATA = datetime.datetime(2025, 4, 1, 12, 3, tzinfo=UTC)  # hourly watermark 12:00, raw readings after it
KINDS = ["register", "power", "both"]


def _times():
    t = DATA_START
    while t < DATA_END:
        if not GAP[0] < t < GAP[1]:
            yield t
        t += STEP


def register_readings():
    """kWh, +1 per 10 minutes by day (06-18 UTC), +0.25 by night, reset to 0.25 at RESET_AT."""
    readings, value = [], 5000.0
    for t in _times():
        value = 0.25 if t == RESET_AT else value + (1.0 if 6 <= t.hour < 18 else 0.25)
        readings.append((t, value))
    return readings


def power_readings():
    """W, uneven: 1.5 kW to 3.5 kW in steps."""
    return [(t, 1500.0 + 500.0 * (i % 5)) for i, t in enumerate(_times())]


@pytest.fixture
def berlin_site(site_a, settings):
    settings.ENERGY_MAX_GAP_SECONDS = 900
    site_a.timezone = "Europe/Berlin"
    site_a.emission_factor_kg_per_kwh = "0.3800"
    site_a.tariff_flat_price = "0.3000"
    site_a.tariff_bands = [{"from": "00:00", "to": "06:00", "price": 0.10}]
    site_a.full_clean()
    site_a.save()
    return site_a


@pytest.fixture
def device_types(berlin_site):
    organization = berlin_site.organization
    meter, gauge = DeviceTypeFactory(organization=organization), DeviceTypeFactory(organization=organization)
    MetricDefinitionFactory(
        device_type=meter, key="import", unit="kWh", kind=MetricKind.TOTALIZER, min_value=None, max_value=None
    )
    MetricDefinitionFactory(
        device_type=gauge, key="power", unit="W", kind=MetricKind.GAUGE, min_value=None, max_value=None
    )
    return {"register": (meter, "import", register_readings), "power": (gauge, "power", power_readings)}


def add_device(site, device_types, kind: str, uid: str, scale: float = 1.0) -> Series:
    device_type, key, readings = device_types[kind]
    device = DeviceFactory(uid=uid, site=site, device_type=device_type)
    series = Series.objects.create(device=device, metric_key=key)
    Reading.objects.bulk_create(Reading(series=series, ts=ts, value=value * scale) for ts, value in readings())
    return series


def roll_up(now: datetime.datetime) -> None:
    """Roll everything up from scratch to ``now`` (rows already there are upserted identical)."""
    RollupWatermark.objects.all().delete()
    rollups_advance(now=now, time_budget=120)


@pytest.fixture
def make_site(berlin_site, device_types):
    def make(kind: str, now: datetime.datetime):
        kinds = ["register", "power"] if kind == "both" else [kind]
        for number, each in enumerate(kinds):
            add_device(berlin_site, device_types, each, uid=f"{each}-1")
            add_device(berlin_site, device_types, each, uid=f"{each}-2", scale=1.5 + number)
        roll_up(now)
        return berlin_site

    return make


def report(user, site, now):
    _, result = site_energy_report_for_user(user=user, site_id=site.id, span=SPAN, now=now)
    return result


def live_report(site, now):
    """The report computed from rollups and raw readings only, for the same sources as the page."""
    return energy.energy_report(
        sources=site_energy.site_energy_sources(site.id),
        span=SPAN,
        tz=site.timezone,
        emission_factor=float(site.emission_factor_kg_per_kwh),
        tariff=site_tariff(site),
        now=now,
    )


def assert_same_figures(actual, expected):
    assert [bucket.start for bucket in actual.buckets] == [bucket.start for bucket in expected.buckets]
    assert [bucket.kwh for bucket in actual.buckets] == pytest.approx([b.kwh for b in expected.buckets], abs=1e-9)
    assert [bucket.cost for bucket in actual.buckets] == pytest.approx([b.cost for b in expected.buckets], abs=1e-9)
    assert actual.total_kwh == pytest.approx(expected.total_kwh, abs=1e-9)
    assert actual.previous_kwh == pytest.approx(expected.previous_kwh, abs=1e-9)
    assert actual.cost == pytest.approx(expected.cost, abs=1e-9)
    assert actual.previous_cost == pytest.approx(expected.previous_cost, abs=1e-9)
    assert (actual.resolution, actual.raw_from, actual.covered_start) == (
        expected.resolution,
        expected.raw_from,
        expected.covered_start,
    )


def stored_rows(site) -> dict:
    return dict(SiteEnergyHour.objects.filter(site=site).order_by("hour").values_list("hour", "kwh"))


# --- the claim the table rests on ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["register", "power"])
def test_an_hours_kwh_from_rollups_does_not_depend_on_where_a_range_of_whole_hours_is_cut(make_site, kind):
    site = make_site(kind, AFTER_DATA)
    sources = site_energy.site_energy_sources(site.id)

    def hourly(start, end):
        plan = DerivedPlan(resolution="1h", start=start, end=end, split=None)
        return dict(energy.kwh(sources, plan=plan, interval="1h", tz="Europe/Berlin", combine=True)[None].points)

    a, b = datetime.datetime(2025, 3, 29, tzinfo=UTC), datetime.datetime(2025, 4, 1, tzinfo=UTC)
    whole = hourly(a, b)
    assert len(whole) == 72 - 3  # the three hours of the gap have no figure
    cuts = [a + HOUR * n for n in range(1, 72)]
    assert RESET_AT.replace(minute=0) in cuts  # a register reset across the cut; power segments cross every cut
    for m in cuts:
        pieces = hourly(a, m) | hourly(m, b)
        assert list(pieces) == list(whole), m
        assert list(pieces.values()) == pytest.approx(list(whole.values()), abs=1e-9), m


# --- reading the table ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("now", [AFTER_DATA, MID_DATA], ids=["all-rolled-up", "raw-after-the-watermark"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_site_report_from_stored_hours_equals_the_live_report(alice, make_site, kind, now):
    site = make_site(kind, now)
    done = site_energy.site_energy_refresh(site_id=site.id)
    assert done["mode"] == "rebuild" and done["rows"] > 0

    stored = report(alice, site, now)

    # Final hours: up to the hourly watermark for registers only; an hour before it where a power gauge counts (the
    # segment into the hour after the watermark is still open).
    watermark = RollupWatermark.objects.get(resolution="1h").rolled_until
    final = watermark if kind == "register" else watermark - HOUR
    assert SiteEnergyState.objects.get(site=site).complete_until == final
    assert stored.stored_until == min(final, stored.window.end)
    if now == MID_DATA:
        # Registers: stored right up to the raw readings; else the hour before them from rollups.
        assert stored.raw_from == watermark and stored.stored_until == final <= stored.raw_from
    assert_same_figures(stored, live_report(site, now))
    assert stored.total_kwh > 0 and stored.previous_kwh > 0


def test_a_site_with_no_stored_hours_uses_the_live_path(alice, make_site):
    site = make_site("both", AFTER_DATA)
    assert site_energy.site_energy_stored(site_id=site.id, sources=site_energy.site_energy_sources(site.id)) is None
    result = report(alice, site, AFTER_DATA)
    assert result.stored_until is None
    assert_same_figures(result, live_report(site, AFTER_DATA))


def test_the_report_reads_only_the_stored_hours_of_the_range(alice, make_site):
    site = make_site("register", AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    # A stored row that the computation would not give (tampered) shows up in the page's figure: the hours are read
    # from the table, not recomputed.
    hour = datetime.datetime(2025, 3, 31, 9, tzinfo=UTC)
    before = report(alice, site, AFTER_DATA).total_kwh
    assert SiteEnergyHour.objects.filter(site=site, hour=hour).update(kwh=1000.0) == 1
    assert report(alice, site, AFTER_DATA).total_kwh == pytest.approx(before - live_hour(site, hour) + 1000.0)


def live_hour(site, hour) -> float:
    plan = DerivedPlan(resolution="1h", start=hour, end=hour + HOUR, split=None)
    sources = site_energy.site_energy_sources(site.id)
    return energy.kwh(sources, plan=plan, interval="1h", tz="UTC", combine=True)[None].total


# --- keeping it up to date --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_extending_after_new_hourly_rollups_gives_what_a_rebuild_gives(make_site, kind):
    site = make_site(kind, datetime.datetime(2025, 3, 30, 6, 30, tzinfo=UTC))
    first = site_energy.site_energy_refresh(site_id=site.id)
    assert first["mode"] == "rebuild"
    rollups_advance(now=AFTER_DATA, time_budget=120)

    extended = site_energy.site_energy_refresh(site_id=site.id)

    assert extended["mode"] == "extend" and extended["start"] == first["until"] and extended["rows"] > 0
    rows = stored_rows(site)
    SiteEnergyState.objects.filter(site=site).delete()
    assert site_energy.site_energy_refresh(site_id=site.id)["mode"] == "rebuild"
    rebuilt = stored_rows(site)
    assert list(rows) == list(rebuilt)
    assert list(rows.values()) == pytest.approx(list(rebuilt.values()), abs=1e-9)
    # And a refresh with nothing new computes nothing.
    assert site_energy.site_energy_refresh(site_id=site.id)["rows"] == 0
    assert stored_rows(site) == rebuilt


# A late reading at 08:01, just after the hour starts (the first reading of that hour was 08:05): it changes the hour
# before too (the power segment from 07:55) and, for the register, the step into the hours after it (a dip).
LATE_AT = datetime.datetime(2025, 3, 30, 8, 1, tzinfo=UTC)


@pytest.mark.parametrize("kind", ["register", "power"])
def test_a_late_reading_recomputed_by_the_rollup_engine_changes_the_stored_hours_as_the_live_path(
    alice, make_site, kind
):
    site = make_site(kind, AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    before = report(alice, site, AFTER_DATA)
    series = Series.objects.filter(device__site=site).order_by("id").first()
    # What the ingest writer does for a reading behind the 1-minute watermark: store it and mark its minute dirty.
    Reading.objects.create(series=series, ts=LATE_AT, value=9000.0 if kind == "power" else 10.0)
    RollupDirtyBucket.objects.create(series=series, bucket=LATE_AT.replace(second=0))

    assert rollups_advance(now=AFTER_DATA)["dirty"] == 1

    state = SiteEnergyState.objects.get(site=site)
    assert state.dirty_from == datetime.datetime(2025, 3, 30, 7, tzinfo=UTC)  # floor(08:00 - 900 s)
    marked = report(alice, site, AFTER_DATA)
    assert marked.stored_until == state.dirty_from  # hours from there are computed live until the refresh
    assert_same_figures(marked, live_report(site, AFTER_DATA))
    assert marked.total_kwh != pytest.approx(before.total_kwh, abs=1e-6)

    done = site_energy.site_energy_refresh(site_id=site.id)

    assert done["mode"] == "extend" and done["start"] == state.dirty_from
    assert SiteEnergyState.objects.get(site=site).dirty_from is None
    refreshed = report(alice, site, AFTER_DATA)
    assert refreshed.stored_until == refreshed.window.end  # the whole window stored again
    assert_same_figures(refreshed, live_report(site, AFTER_DATA))
    assert refreshed.total_kwh == pytest.approx(marked.total_kwh, abs=1e-9)


def test_a_new_device_on_the_site_falls_back_to_the_live_path_until_the_refresh_adds_its_hours(
    alice, make_site, berlin_site, device_types
):
    site = make_site("register", AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    before = report(alice, site, AFTER_DATA)
    assert before.stored_until is not None
    # A stored hour the computation would not give: kept by the refresh below, which adds the new device's kWh to
    # the stored hours rather than rebuilding them.
    hour = datetime.datetime(2025, 3, 31, 9, tzinfo=UTC)
    assert SiteEnergyHour.objects.filter(site=site, hour=hour).update(kwh=F("kwh") + 1000.0) == 1

    add_device(berlin_site, device_types, "power", uid="power-new")
    roll_up(AFTER_DATA)

    fallback = report(alice, site, AFTER_DATA)
    assert fallback.stored_until is None
    assert fallback.devices_counted == before.devices_counted + 1
    assert fallback.total_kwh > before.total_kwh
    assert_same_figures(fallback, live_report(site, AFTER_DATA))

    done = site_energy.site_energy_refresh(site_id=site.id)
    assert done["mode"] == "add"
    # A power gauge now counts: the hour before the watermark is no longer final.
    assert done["until"] == RollupWatermark.objects.get(resolution="1h").rolled_until - HOUR
    added = report(alice, site, AFTER_DATA)
    assert added.stored_until is not None
    assert added.total_kwh == pytest.approx(fallback.total_kwh + 1000.0, abs=1e-9)
    SiteEnergyHour.objects.filter(site=site, hour=hour).update(kwh=F("kwh") - 1000.0)
    assert_same_figures(report(alice, site, AFTER_DATA), fallback)
    # And what a rebuild gives.
    rows = stored_rows(site)
    SiteEnergyState.objects.filter(site=site).delete()
    assert site_energy.site_energy_refresh(site_id=site.id)["mode"] == "rebuild"
    assert list(stored_rows(site)) == list(rows)
    assert list(stored_rows(site).values()) == pytest.approx(list(rows.values()), abs=1e-9)


def test_a_deactivated_device_falls_back_to_the_live_path_and_is_left_out_after_the_rebuild(alice, make_site):
    site = make_site("both", AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    all_devices = report(alice, site, AFTER_DATA)
    Device.objects.filter(uid="power-2").update(is_active=False)

    assert report(alice, site, AFTER_DATA).stored_until is None
    site_energy.site_energy_refresh(site_id=site.id)
    fewer = report(alice, site, AFTER_DATA)
    assert fewer.stored_until is not None and fewer.total_kwh < all_devices.total_kwh
    assert_same_figures(fewer, live_report(site, AFTER_DATA))


# --- the task ------------------------------------------------------------------------------------------------------


def test_the_refresh_task_refreshes_every_site_with_a_source_and_running_it_again_changes_nothing(make_site, site_b):
    site = make_site("both", AFTER_DATA)

    first = site_energy_refresh_task()

    assert first["sites"] == 1 and first["rebuilt"] == 1 and first["caught_up"]
    assert not SiteEnergyState.objects.filter(site=site_b).exists()  # no series: nothing to store
    rows = stored_rows(site)
    again = site_energy_refresh_task()
    assert again["rebuilt"] == 0 and again["rows"] == 0
    assert stored_rows(site) == rows


def test_the_refresh_task_skips_while_another_run_holds_the_lock(make_site):
    make_site("register", AFTER_DATA)
    dsn = connection.get_connection_params()
    params = {key: dsn[key] for key in ("dbname", "host", "port", "user", "password") if dsn.get(key)}
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [site_energy.ADVISORY_LOCK_KEY])
        assert site_energy_refresh_task() == {"skipped": "another run holds the lock"}
        other.execute("SELECT pg_advisory_unlock(%s)", [site_energy.ADVISORY_LOCK_KEY])
    assert site_energy_refresh_task()["sites"] == 1


def test_a_refresh_is_a_constant_number_of_statements_whatever_the_hours(make_site):
    site = make_site("both", datetime.datetime(2025, 3, 28, 0, 30, tzinfo=UTC))
    with CaptureQueriesContext(connection) as short:
        few = site_energy.site_energy_refresh(site_id=site.id)
    rollups_advance(now=AFTER_DATA, time_budget=120)
    SiteEnergyState.objects.filter(site=site).delete()
    with CaptureQueriesContext(connection) as long:
        many = site_energy.site_energy_refresh(site_id=site.id)
    assert many["rows"] > 5 * few["rows"] > 0
    assert len(long.captured_queries) == len(short.captured_queries)
    assert sum("INSERT INTO telemetry_siteenergyhour" in query["sql"] for query in long.captured_queries) == 2


# --- concurrency ------------------------------------------------------------------------------------------------------


def test_a_late_hour_marked_while_a_refresh_holds_the_site_is_marked_after_it_not_lost(
    transactional_db, alice, make_site, monkeypatch
):
    site = make_site("register", AFTER_DATA)
    site_energy.site_energy_refresh(site_id=site.id)
    series = Series.objects.filter(device__site=site).order_by("id").first()
    Reading.objects.create(series=series, ts=LATE_AT, value=10.0)
    RollupDirtyBucket.objects.create(series=series, bucket=LATE_AT.replace(second=0))
    holding, release, engine_done = threading.Event(), threading.Event(), threading.Event()
    compute = site_energy._rows_compute

    def slow_compute(*args, **kwargs):  # the refresh, paused while it holds the site's state row
        holding.set()
        release.wait(10)
        return compute(*args, **kwargs)

    monkeypatch.setattr(site_energy, "_rows_compute", slow_compute)
    results = {}

    def run(name, function):
        try:
            results[name] = function()
        finally:
            connection.close()
            if name == "engine":
                engine_done.set()

    refresh = threading.Thread(target=run, args=("refresh", lambda: site_energy.site_energy_refresh(site_id=site.id)))
    refresh.start()
    assert holding.wait(10)
    engine = threading.Thread(target=run, args=("engine", lambda: rollups_advance(now=AFTER_DATA)))
    engine.start()
    try:
        assert not engine_done.wait(1.5)  # the engine's mark waits for the refresh to commit
    finally:
        release.set()
        refresh.join(20)
        engine.join(20)

    assert results["refresh"]["mode"] == "extend" and results["engine"]["dirty"] == 1
    assert SiteEnergyState.objects.get(site=site).dirty_from == datetime.datetime(2025, 3, 30, 7, tzinfo=UTC)
    monkeypatch.setattr(site_energy, "_rows_compute", compute)
    site_energy.site_energy_refresh(site_id=site.id)
    assert_same_figures(report(alice, site, AFTER_DATA), live_report(site, AFTER_DATA))
