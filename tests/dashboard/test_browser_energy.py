"""The energy pages in a real browser (Debian's Chromium, a real uvicorn): the site's kWh and CO₂e equal what the
energy and volume API answer for the same range and devices; every energy page renders at 1280 and 390 px without
errors (screenshots in test-artifacts/screenshots/)."""

import datetime
import zoneinfo

import pytest
from django.utils import timezone

from apps.devices.choices import MetricKind, MetricRole
from apps.telemetry import energy
from apps.telemetry.models import Reading, Series
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.browser import SCREENSHOTS, WIDTHS, log_in, screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _metric(device_type, key, unit, kind=MetricKind.GAUGE, role=""):
    return MetricDefinitionFactory(
        device_type=device_type, key=key, unit=unit, kind=kind, role=role, min_value=None, max_value=None
    )


@pytest.fixture
def energy_fleet(transactional_db, site_a, site_b, bob, carol):
    site_a.timezone = "Europe/Berlin"
    site_a.emission_factor_kg_per_kwh = "0.3800"
    site_a.tariff_flat_price = "0.3000"
    site_a.tariff_bands = [{"from": "00:00", "to": "06:00", "price": 0.12}]
    site_a.save()
    heat_pump = DeviceTypeFactory(organization=site_a.organization, name="Heat pump")
    _metric(heat_pump, "power_kw", "kW", role=MetricRole.ELECTRICAL_INPUT)
    _metric(heat_pump, "heat_kwh", "kWh", MetricKind.TOTALIZER, role=MetricRole.HEAT_OUTPUT)
    _metric(heat_pump, "outdoor_temp", "°C", role=MetricRole.OUTDOOR_TEMPERATURE)
    meter = DeviceTypeFactory(organization=site_a.organization, name="Energy meter")
    _metric(meter, "energy_import_kwh", "kWh", MetricKind.TOTALIZER)
    pump = DeviceFactory(uid="hp-a-1", name="Heat pump A-1", site=site_a, device_type=heat_pump)
    em = DeviceFactory(uid="em-a-1", name="Energy meter A-1", site=site_a, device_type=meter)
    DeviceFactory(uid="hp-b-1", name="Heat pump B-1", site=site_b, device_type=heat_pump)
    now = timezone.now().replace(second=0, microsecond=0)
    start = now - datetime.timedelta(days=2)
    minutes = range(0, 2 * 24 * 60, 5)
    series = {
        key: Series.objects.create(device=device, metric_key=key)
        for device, key in ((pump, "power_kw"), (pump, "heat_kwh"), (em, "energy_import_kwh"))
    }
    readings = []
    for i, minute in enumerate(minutes):
        ts = start + datetime.timedelta(minutes=minute)
        power = 2.0 + (minute // 60) % 5 * 0.5
        readings += [
            Reading(series=series["power_kw"], ts=ts, value=power),
            Reading(series=series["heat_kwh"], ts=ts, value=5000 + i * 0.6),
            Reading(series=series["energy_import_kwh"], ts=ts, value=800_375 + i * 0.05),
        ]
    Reading.objects.bulk_create(readings)
    return {"site": site_a, "pump": pump, "meter": em, "now": now}


def _api_total(page, path: str, key: str) -> float:
    response = page.request.get(path)
    assert response.ok, response.text()
    return response.json()["series"][0]["total"][key]


def test_the_energy_page_shows_the_kwh_and_co2e_the_api_answers_for_the_same_range(open_page, energy_fleet):
    site = energy_fleet["site"]
    page = open_page(1280)
    log_in(page, "bob")
    page.goto(f"/energy/sites/{site.id}/?preset=7d")
    shown_kwh = float(page.get_attribute("[data-figure=kwh]", "data-value"))
    shown_co2e = float(page.get_attribute("[data-figure=co2e]", "data-value"))
    assert "raw readings" in page.text_content("[data-figure=source]")

    window = energy.window_for("7d", now=timezone.now(), tz=site.timezone)
    start, end = (moment.isoformat().replace("+00:00", "Z") for moment in (window.start, timezone.now()))
    span = f"start={start}&end={end}"
    power = _api_total(page, f"/api/v1/devices/hp-a-1/energy?metric=power_kw&interval=1d&{span}", "energy_kwh")
    register = _api_total(page, f"/api/v1/devices/em-a-1/volume?metric=energy_import_kwh&interval=1d&{span}", "volume")
    assert power > 0 and register > 0
    assert shown_kwh == pytest.approx(power + register, rel=1e-6)
    assert shown_co2e == pytest.approx((power + register) * 0.38, rel=1e-6)

    page.goto("/energy/devices/hp-a-1/?preset=24h")
    assert float(page.get_attribute("[data-figure=kwh]", "data-value")) > 0
    page.goto(f"/energy/sites/{site.id}/heat-pumps/?preset=7d")
    # Heat 0.6 kWh per 5 minutes against 2-4 kW electrical: an SPF between 1.8 and 3.6.
    assert 1.5 < float(page.text_content("[data-device=hp-a-1] [data-figure=spf]")) < 4.0


def test_a_custom_range_of_local_days_shows_the_figures_the_api_answers_for_those_days(open_page, energy_fleet):
    site = energy_fleet["site"]
    zone = zoneinfo.ZoneInfo(site.timezone)
    today = timezone.now().astimezone(zone).date()
    first, last = today - datetime.timedelta(days=3), today - datetime.timedelta(days=1)
    page = open_page(1280)
    log_in(page, "bob")
    page.goto(f"/energy/sites/{site.id}/")
    page.fill("[data-energy-range] input[name=from]", first.isoformat())
    page.fill("[data-energy-range] input[name=to]", last.isoformat())
    page.click("[data-energy-range] button[type=submit]")
    page.wait_for_url(f"**/energy/sites/{site.id}/?from={first.isoformat()}&to={last.isoformat()}")
    shown_kwh = float(page.get_attribute("[data-figure=kwh]", "data-value"))
    shown_co2e = float(page.get_attribute("[data-figure=co2e]", "data-value"))
    assert f"through {last.day} {last:%b %Y}" in page.text_content("[data-figure=source]")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        screenshot(page, "site-energy-range", width)

    start = datetime.datetime.combine(first, datetime.time(), zone).astimezone(datetime.UTC)
    end = datetime.datetime.combine(today, datetime.time(), zone).astimezone(datetime.UTC)
    span = "start={}&end={}".format(*(moment.isoformat().replace("+00:00", "Z") for moment in (start, end)))
    power = _api_total(page, f"/api/v1/devices/hp-a-1/energy?metric=power_kw&interval=1d&{span}", "energy_kwh")
    register = _api_total(page, f"/api/v1/devices/em-a-1/volume?metric=energy_import_kwh&interval=1d&{span}", "volume")
    assert power > 0 and register > 0
    assert shown_kwh == pytest.approx(power + register, rel=1e-6)
    assert shown_co2e == pytest.approx((power + register) * 0.38, rel=1e-6)


def test_a_bad_custom_range_says_why_on_the_page(open_page, energy_fleet):
    site = energy_fleet["site"]
    page = open_page(1280, allow=("from=",))  # the 400 of the refused range is the point
    log_in(page, "bob")
    page.goto(f"/energy/sites/{site.id}/heat-pumps/")
    page.fill("[data-energy-range] input[name=from]", "2025-03-05")
    page.fill("[data-energy-range] input[name=to]", "2025-03-01")
    with page.expect_response(lambda response: "from=" in response.url) as answer:
        page.click("[data-energy-range] button[type=submit]")
    assert answer.value.status == 400
    assert "The last day is before the first" in page.inner_text("[data-range-error]")
    assert page.locator("[data-figure=spf]").count() == 0
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        screenshot(page, "heat-pumps-range-refused", width)


def test_carol_cannot_open_site_a_energy_and_sees_no_site_a_device_on_hers(open_page, energy_fleet, site_b):
    forbidden = f"/energy/sites/{energy_fleet['site'].id}/"
    page = open_page(1280, allow=(forbidden, "favicon.ico"))  # the 404 below is the point
    log_in(page, "carol")
    response = page.goto(forbidden)
    assert response.status == 404
    page.goto(f"/energy/sites/{site_b.id}/heat-pumps/")
    assert "hp-a-1" not in page.content() and "Heat pump B-1" in page.content()


def test_every_energy_page_renders_at_desktop_and_phone_width_without_errors(open_page, energy_fleet):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    site = energy_fleet["site"]
    pages = {
        "site-energy": f"/energy/sites/{site.id}/?preset=7d",
        "site-energy-month": f"/energy/sites/{site.id}/?preset=12mo",
        "device-energy": "/energy/devices/em-a-1/?preset=24h",
        "heat-pumps": f"/energy/sites/{site.id}/heat-pumps/",
    }
    for width in WIDTHS:
        page = open_page(width)
        log_in(page, "bob")
        for name, path in pages.items():
            response = page.goto(path)
            assert response.status == 200, name
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"{name} scrolls sideways at {width} px"


def test_a_large_totalizer_chart_labels_its_y_ticks_distinctly(open_page, energy_fleet):
    """The energy meter's register stands at about 800,375 kWh and moves by a fraction of a kWh over the chart's
    hour: each y tick must still read differently (it showed "800,375" five times)."""
    series = Series.objects.get(device=energy_fleet["meter"], metric_key="energy_import_kwh")
    Reading.objects.filter(series=series).delete()
    now = timezone.now()
    Reading.objects.bulk_create(
        [
            Reading(series=series, ts=now - datetime.timedelta(minutes=60 - minute), value=800_375 + minute * 0.01)
            for minute in range(60)
        ]
    )
    page = open_page(1280)
    log_in(page, "bob")
    page.goto("/devices/em-a-1/")
    chart = page.locator('[data-chart][data-metric="energy_import_kwh"][data-y-ticks]')
    chart.wait_for(state="attached")
    labels = [label for label in chart.get_attribute("data-y-ticks").split("|") if label]
    assert len(labels) >= 3
    assert len(set(labels)) == len(labels), labels
    assert all(label.startswith("800,37") for label in labels), labels


def test_the_energy_page_takes_in_new_readings_without_a_reload(open_page, energy_fleet):
    site = energy_fleet["site"]
    page = open_page(1280)
    log_in(page, "bob")
    page.goto(f"/energy/sites/{site.id}/?preset=24h")
    before = float(page.get_attribute("[data-figure=kwh]", "data-value"))
    series = Series.objects.get(device=energy_fleet["meter"], metric_key="energy_import_kwh")
    last = Reading.objects.filter(series=series).order_by("-ts").first()
    Reading.objects.create(series=series, ts=last.ts + datetime.timedelta(seconds=30), value=last.value + 12.5)
    # What the page's minute timer calls (waiting a minute in a test proves nothing more).
    page.evaluate("window.fieldwatchEnergy.refresh()")
    page.locator("body[data-energy-refreshed]").wait_for(state="attached")
    after = float(page.get_attribute("[data-figure=kwh]", "data-value"))
    assert after == pytest.approx(before + 12.5)
