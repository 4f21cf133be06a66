"""Energy page timings on a fleet of 1,000 devices with a year of hourly rollups; prints one JSON object.

    python bench/energy_pages.py [--devices 1000] [--heat-pumps 100] [--days 365] [--runs 15] [--json-out …]
                                 [--database-url URL [--reuse]]

On a scratch database (``fieldwatch_bench_energy``, created, migrated and dropped unless ``--database-url``) it
generates, in SQL: ``--devices`` devices each with an energy register (kWh), ``--heat-pumps`` of them with a heat
register and an outdoor temperature too; hourly rollup rows for ``--days`` days up to two hours ago (the hourly
watermark; the temperatures swing by 10 °C a day around 8-12 °C), and raw readings of the registers every 5 minutes
for the last 8 days. Then it times, through the Django test client as an
organization admin (DEBUG off): the site energy page for each preset, and the heat-pump page over 12 months, median
and p95 of ``--runs`` runs after a warm-up, beside the same year's site total hand-written as one SQL statement over
the hourly rollups (the step from each hour's last register value to the next, no resets, no tail), as the ratio
page / SQL.

The pages are timed twice in the same run: first on the live path (no stored hours or days: every hour computed
from the hourly rollups), then after building the site's stored hourly kWh and heat-pump days
(``site_energy.site_energy_refresh`` from nothing, timed as ``site_energy_build_s``; the heat-pump days alone
rebuilt once more, timed as ``heat_pump_days_build_s``) on the stored path; the ratio stored / live is printed per
page, and each preset's kWh, kWh before and cost, and each heat pump's 12-month heat, electricity, degree days and
daily COP, are checked to be the same on both paths at one instant. Last, one more heat pump is onboarded (a copy
of a pump with its rollups) and the refresh that takes it in is timed (``refresh_after_one_heat_pump_added_ms``:
only its hours and days computed); a database kept with ``--database-url`` keeps that pump.

Generating the year of rollups takes most of a run: with ``--database-url`` (kept) and ``--reuse``, a database seeded
by an earlier run is timed again as it is (its watermark and raw readings are those of that run), so two versions of
the code are compared on the same data.
"""

import datetime
import statistics
import time

import _django  # before any import from the checkout: sys.path, DEBUG off
import psycopg
from _support import ScratchDatabase, argument_parser, log, machine_facts, result_print

SCRATCH_DB = "fieldwatch_bench_energy"
PRESETS = ("24h", "7d", "8w", "12mo")

# Hourly rows of a register advancing ``rate`` kWh per hour, 12 readings an hour (5 minutes apart).
_ROLLUPS = """
    INSERT INTO telemetry_rollup_1h
        (series_id, bucket, count, sum, sum_sq, min, max, first_ts, first_value, last_ts, last_value)
    SELECT s.id, b, 12, 12 * (s.base + s.rate * h) + s.rate * 5.5, 0,
           s.base + s.rate * h, s.base + s.rate * (h + 11.0 / 12),
           b, s.base + s.rate * h, b + interval '55 minutes', s.base + s.rate * (h + 11.0 / 12)
    FROM (SELECT id, 1000.0 + id AS base, 2.0 + (id %% 7) AS rate FROM telemetry_series WHERE id = ANY(%(ids)s)) s
    CROSS JOIN generate_series(0, %(hours)s - 1) AS h
    CROSS JOIN LATERAL (SELECT %(start)s::timestamptz + h * interval '1 hour' AS b) bucket
"""
# Hourly rows of an outdoor temperature: a daily swing of +-10 °C around 8-12 °C (degree days on most days).
_TEMPERATURES = """
    INSERT INTO telemetry_rollup_1h
        (series_id, bucket, count, sum, sum_sq, min, max, first_ts, first_value, last_ts, last_value)
    SELECT s.id, b, 12, 12 * t, 12 * t * t, t - 1, t + 1, b, t, b + interval '55 minutes', t
    FROM unnest(%(ids)s::int4[]) AS s (id)
    CROSS JOIN generate_series(0, %(hours)s - 1) AS h
    CROSS JOIN LATERAL (
        SELECT %(start)s::timestamptz + h * interval '1 hour' AS b,
               8.0 + (s.id %% 5) + 10.0 * sin(2 * pi() * h / 24.0) AS t
    ) bucket
"""
_RAW = """
    INSERT INTO telemetry_reading (series_id, ts, value)
    SELECT s.id, %(start)s::timestamptz + g * interval '5 minutes',
           1000.0 + s.id + (2.0 + (s.id %% 7)) * (%(offset)s + g / 12.0)
    FROM telemetry_series s CROSS JOIN generate_series(0, %(points)s - 1) AS g
    WHERE s.id = ANY(%(ids)s)
"""
# A new series' hourly rollups copied from another's.
_ROLLUPS_COPY = """
    INSERT INTO telemetry_rollup_1h
        (series_id, bucket, count, sum, sum_sq, min, max, first_ts, first_value, last_ts, last_value)
    SELECT %s, bucket, count, sum, sum_sq, min, max, first_ts, first_value, last_ts, last_value
    FROM telemetry_rollup_1h WHERE series_id = %s
"""
# The year's site total by hand: each hour's advance plus the step from the hour before, registers only.
_HAND_SQL = """
    SELECT sum(advance) FROM (
        SELECT last_value - coalesce(lag(last_value) OVER (PARTITION BY series_id ORDER BY bucket), first_value)
               AS advance
        FROM telemetry_rollup_1h WHERE series_id = ANY(%s) AND bucket >= %s AND bucket < %s
    ) steps
"""


def _percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000, 1),
        "runs": len(ordered),
    }


def _seed(devices: int, heat_pumps: int, days: int, now: datetime.datetime):
    from apps.devices.choices import MetricKind, MetricRole
    from apps.devices.models import Device, DeviceType, MetricDefinition, Site
    from apps.telemetry.models import RollupWatermark, Series
    from apps.users.choices import Role
    from apps.users.models import Organization, User
    from apps.users.services import user_set_role

    organization = Organization.objects.create(name="Bench", slug="bench")
    site = Site.objects.create(
        organization=organization,
        name="Bench site",
        timezone="Europe/Berlin",
        tariff_flat_price="0.30",
        tariff_bands=[{"from": "00:00", "to": "06:00", "price": 0.12}],
    )
    meter = DeviceType.objects.create(organization=organization, name="Energy meter")
    pump = DeviceType.objects.create(organization=organization, name="Heat pump")
    register = {"unit": "kWh", "kind": MetricKind.TOTALIZER}
    MetricDefinition.objects.bulk_create(
        [
            MetricDefinition(device_type=meter, key="energy_kwh", display_name="Energy", **register),
            MetricDefinition(
                device_type=pump, key="energy_kwh", display_name="Energy", role=MetricRole.ELECTRICAL_INPUT, **register
            ),
            MetricDefinition(
                device_type=pump, key="heat_kwh", display_name="Heat", role=MetricRole.HEAT_OUTPUT, **register
            ),
            MetricDefinition(
                device_type=pump,
                key="outdoor_temp",
                display_name="Outdoor",
                unit="°C",
                role=MetricRole.OUTDOOR_TEMPERATURE,
            ),
        ]
    )
    fleet = Device.objects.bulk_create(
        Device(uid=f"dev-{n:05d}", name=f"Device {n}", site=site, device_type=pump if n < heat_pumps else meter)
        for n in range(devices)
    )
    keys = {pump.id: ("energy_kwh", "heat_kwh", "outdoor_temp"), meter.id: ("energy_kwh",)}
    series = Series.objects.bulk_create(
        Series(device=device, metric_key=key) for device in fleet for key in keys[device.device_type_id]
    )
    electrical = [s.id for s in series if s.metric_key == "energy_kwh"]
    ids = [s.id for s in series if s.metric_key != "outdoor_temp"]
    outdoor = [s.id for s in series if s.metric_key == "outdoor_temp"]
    watermark = now.replace(minute=0, second=0, microsecond=0) - datetime.timedelta(hours=2)
    start = watermark - datetime.timedelta(days=days)
    from django.db import connection

    with connection.cursor() as cursor:
        for chunk in range(0, len(ids), 100):
            cursor.execute(_ROLLUPS, {"ids": ids[chunk : chunk + 100], "hours": days * 24, "start": start})
            log(f"rollups: {min(chunk + 100, len(ids))}/{len(ids)} series")
        cursor.execute(_TEMPERATURES, {"ids": outdoor, "hours": days * 24, "start": start})
        raw_start = now - datetime.timedelta(days=8)
        offset = (raw_start - start).total_seconds() / 3600
        cursor.execute(_RAW, {"ids": ids, "start": raw_start, "points": 8 * 24 * 12, "offset": offset})
        cursor.execute("ANALYZE telemetry_rollup_1h; ANALYZE telemetry_reading")
    RollupWatermark.objects.update_or_create(resolution="1h", defaults={"rolled_until": watermark})
    admin = User.objects.create_user(username="bench-admin", password="x", organization=organization)
    user_set_role(user=admin, role=Role.ADMIN)
    return site, admin, electrical, watermark


def _seeded():
    """The site, admin, electrical series and hourly watermark of an earlier run's data, or None."""
    from apps.devices.models import Site
    from apps.telemetry.models import RollupWatermark, Series
    from apps.users.models import User

    site = Site.objects.filter(organization__slug="bench").first()
    if site is None:
        return None
    electrical = list(
        Series.objects.filter(device__site=site, metric_key="energy_kwh").order_by("id").values_list("id", flat=True)
    )
    watermark = RollupWatermark.objects.get(resolution="1h").rolled_until
    return site, User.objects.get(username="bench-admin"), electrical, watermark


def _pages_time(client, pages: dict[str, str], runs: int, label: str) -> dict:
    """Median and p95 of each page after a warm-up."""
    timings = {}
    for name, path in pages.items():
        response = client.get(path)  # warm-up
        assert response.status_code == 200, path
        if name.startswith("site_energy"):
            assert (b"stored hourly totals" in response.content) == (label == "stored"), name
        if name.startswith("heat_pumps"):
            assert (b"stored daily figures" in response.content) == (label == "stored"), name
        samples = []
        for _ in range(runs):
            tick = time.perf_counter()
            response = client.get(path)
            samples.append(time.perf_counter() - tick)
            assert response.status_code == 200
        timings[name] = _percentiles(samples)
        log(f"{label} {name}: {timings[name]}")
    return timings


def _figures(site, admin, now) -> dict[str, tuple[float, float, float]]:
    """kWh, kWh before and cost of each preset's site report at ``now``, as the page computes them."""
    from apps.telemetry.selectors import site_energy_report_for_user

    figures = {}
    for preset in PRESETS:
        _, report = site_energy_report_for_user(user=admin, site_id=site.id, span=preset, now=now)
        figures[preset] = (report.total_kwh, report.previous_kwh, report.cost)
    return figures


def _heat_pump_figures(site, admin, now) -> dict[str, tuple]:
    """Each heat pump's 12-month heat and electricity kWh, degree days and daily COP, as the page computes them."""
    from apps.telemetry.selectors import site_heat_pumps_for_user

    _, _, figures, _, _ = site_heat_pumps_for_user(user=admin, site_id=site.id, span="12mo", now=now)
    return {
        item.device.uid: (item.heat_kwh, item.electricity_kwh, item.degree_days, *(cop for _, cop in item.cop_days))
        for item in figures
    }


def _stored_forget(site) -> None:
    """No stored hours or heat-pump days for the site: its pages take the live path."""
    from apps.telemetry.models import SiteEnergyHour, SiteEnergyState, SiteHeatPumpDay

    SiteEnergyState.objects.filter(site=site).delete()
    SiteEnergyHour.objects.filter(site=site).delete()
    SiteHeatPumpDay.objects.filter(site=site).delete()


def _build_time(site) -> dict:
    """Build the site's stored hours from nothing (a rebuild over all its hourly rollups), then refresh again with
    nothing new (what the minute's beat job costs when no hour closed)."""
    from apps.telemetry.site_energy import site_energy_refresh

    tick = time.perf_counter()
    built = site_energy_refresh(site_id=site.id)
    build_s = time.perf_counter() - tick
    assert built["mode"] == "rebuild", built
    tick = time.perf_counter()
    again = site_energy_refresh(site_id=site.id)
    refresh_s = time.perf_counter() - tick
    log(
        f"built {built['rows']} hour rows and {built['days_rows']} day rows in {build_s:.1f} s; "
        f"refresh with nothing new {refresh_s * 1000:.0f} ms"
    )
    # The heat-pump days alone: a digest that no longer matches rebuilds them (the hours have nothing new).
    from apps.telemetry.models import SiteEnergyState

    SiteEnergyState.objects.filter(site=site).update(days_digest="", days_parts=None)
    tick = time.perf_counter()
    days = site_energy_refresh(site_id=site.id)
    days_s = time.perf_counter() - tick
    assert days["days_mode"] == "rebuild" and days["rows"] == 0, days
    log(f"rebuilt {days['days_rows']} heat-pump day rows alone in {days_s:.1f} s")
    return {
        "site_energy_build_s": round(build_s, 2),
        "site_energy_build_rows": built["rows"],
        "heat_pump_days_build_rows": built["days_rows"],
        "heat_pump_days_build_s": round(days_s, 2),
        "site_energy_refresh_nothing_new_ms": round(refresh_s * 1000, 1),
        "site_energy_refresh_nothing_new_rows": again["rows"],
        "site_energy_refresh_nothing_new_days_rows": again["days_rows"],
    }


def _onboarding_time(site) -> dict:
    """One more heat pump onboarded on the site (a copy of a pump's device with its series' hourly rollups), then
    the refresh timed: it computes only the new pump's hours and days (``site_energy``), where a changed site used to
    be rebuilt (``site_energy_build_s``). Run last: the site keeps the new pump."""
    from django.db import connection

    from apps.devices.models import Device
    from apps.telemetry.models import Series
    from apps.telemetry.site_energy import site_energy_refresh

    pump = Series.objects.filter(device__site=site, metric_key="heat_kwh").order_by("id").first().device
    new = Device.objects.create(
        uid=f"{pump.uid}-new-{Device.objects.count()}",
        name=f"{pump.name} (new)",
        site=site,
        device_type=pump.device_type,
    )
    with connection.cursor() as cursor:
        for series in Series.objects.filter(device=pump):
            copy = Series.objects.create(device=new, metric_key=series.metric_key)
            cursor.execute(_ROLLUPS_COPY, [copy.id, series.id])
    tick = time.perf_counter()
    done = site_energy_refresh(site_id=site.id)
    added_s = time.perf_counter() - tick
    assert done["mode"] == "add" and done["days_mode"] == "sources", done
    log(
        f"one heat pump onboarded: refresh {added_s * 1000:.0f} ms ({done['rows']} hour rows, {done['days_rows']} days)"
    )
    return {"refresh_after_one_heat_pump_added_ms": round(added_s * 1000, 1)}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--heat-pumps", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--reuse", action="store_true", help="With --database-url: time the data seeded before.")
    args = parser.parse_args()
    if args.reuse and not args.database_url:
        parser.error("--reuse needs --database-url (a kept database)")
    _django.setup()
    scratch = ScratchDatabase(SCRATCH_DB, args.database_url)
    scratch.create()
    try:
        scratch.use()
        from django.db import connection
        from django.test import Client
        from django.utils import timezone

        now = timezone.now()
        started = time.monotonic()
        seeded = _seeded() if args.reuse else None
        if seeded is None:
            seeded = _seed(args.devices, args.heat_pumps, args.days, now)
            log(f"seeded in {time.monotonic() - started:.0f} s")
        else:
            log("reusing the data seeded before")
        site, admin, electrical, watermark = seeded
        client = Client(HTTP_HOST="localhost")
        client.force_login(admin)
        pages = {f"site_energy_{preset}": f"/energy/sites/{site.id}/?preset={preset}" for preset in PRESETS}
        pages["heat_pumps_12mo"] = f"/energy/sites/{site.id}/heat-pumps/?preset=12mo"
        result = {"devices": args.devices, "heat_pumps": args.heat_pumps, "days": args.days}
        with open("/proc/loadavg") as loadavg:
            result["loadavg_before_timing"] = loadavg.read().split()[:3]
        _stored_forget(site)
        result["pages_live"] = _pages_time(client, pages, args.runs, "live")
        live_figures = _figures(site, admin, now)
        live_pumps = _heat_pump_figures(site, admin, now)
        result["heat_pumps_degree_days_mean"] = round(sum(f[2] for f in live_pumps.values()) / len(live_pumps), 1)
        result.update(_build_time(site))
        result["pages"] = _pages_time(client, pages, args.runs, "stored")
        stored_figures = _figures(site, admin, now)
        stored_pumps = _heat_pump_figures(site, admin, now)
        assert list(stored_pumps) == list(live_pumps)  # the same ranking
        for key, figures in [*live_figures.items(), *live_pumps.items()]:
            # The same figures on both paths at the same instant (the tests assert it to 1e-9 on hand-made data).
            stored_side = stored_figures[key] if key in stored_figures else stored_pumps[key]
            for live, stored in zip(figures, stored_side, strict=True):
                assert (live is None) == (stored is None), (key, live, stored)
                if live is not None:
                    assert abs(stored - live) <= 1e-9 * max(1.0, abs(live)), (key, live, stored)
        result["figures_equal_on_both_paths"] = True
        result["ratio_stored_over_live_median"] = {
            name: round(result["pages"][name]["median_ms"] / result["pages_live"][name]["median_ms"], 3)
            for name in pages
        }
        result.update(_onboarding_time(site))
        hand = []
        with psycopg.connect(scratch.url) as db:
            year_start = watermark - datetime.timedelta(days=365)
            for _ in range(args.runs):
                tick = time.perf_counter()
                db.execute(_HAND_SQL, [electrical, year_start, watermark]).fetchone()
                hand.append(time.perf_counter() - tick)
            result["hand_sql_year_total"] = _percentiles(hand)
            for path in ("pages", "pages_live"):
                result[f"ratio_site_energy_12mo_{path}_over_hand_sql_median"] = round(
                    result[path]["site_energy_12mo"]["median_ms"] / result["hand_sql_year_total"]["median_ms"], 3
                )
            result["machine"] = machine_facts(db, ("shared_buffers", "work_mem"))
        with open("/proc/loadavg") as loadavg:
            result["machine"]["loadavg"] = loadavg.read().split()[:3]
        connection.close()
        result_print(result, args.json_out)
    finally:
        scratch.drop()


if __name__ == "__main__":
    main()
