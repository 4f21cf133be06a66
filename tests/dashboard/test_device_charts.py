"""The device page's charts in a real browser (Debian's Chromium, Playwright) against a real uvicorn: they fetch the
columnar layout (application/vnd.fieldwatch.series.v2+msgpack), decode it with static/fieldwatch/series_client.js
and draw what the series API holds, raw readings for the last hour and rollups for longer ranges."""

import datetime
import re
import time

import pytest
from django.utils import timezone

from apps.telemetry.models import Reading, Series
from apps.telemetry.rollups import rollups_advance
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.browser import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

COLUMNS = "application/vnd.fieldwatch.series.v2+msgpack"


@pytest.fixture
def heat_pump(transactional_db, site_a):
    """hp-a-1 on site A with a supply temperature (0.1 °C resolution) every minute for the last three hours,
    rolled up as far as closed buckets go."""
    device_type = DeviceTypeFactory(organization=site_a.organization, name="Heat pump")
    MetricDefinitionFactory(
        device_type=device_type, key="supply_temp", display_name="Supply temp", unit="°C", precision=1
    )
    device = DeviceFactory(uid="hp-a-1", name="Heat pump A-1", site=site_a, device_type=device_type)
    series = Series.objects.create(device=device, metric_key="supply_temp")
    now = timezone.now().replace(second=0, microsecond=0)
    minutes = [now - datetime.timedelta(minutes=m) for m in range(1, 181)]
    Reading.objects.bulk_create(Reading(series=series, ts=ts, value=40 + (ts.minute % 7) / 10) for ts in minutes)
    rollups_advance(now=timezone.now(), time_budget=60)
    return device


def status_matching(page, pattern: str, timeout: float = 10.0) -> str:
    started = time.monotonic()
    while True:
        text = page.locator("[data-chart-status]").first.inner_text().strip()
        if re.fullmatch(pattern, text):
            return text
        if time.monotonic() - started > timeout:
            raise AssertionError(f"chart status {text!r} never matched {pattern!r}")
        time.sleep(0.05)


def test_device_charts_draw_the_columnar_layout_raw_and_rolled_up(open_page, bob, heat_pump):
    page = open_page()
    log_in(page, bob.username)
    with page.expect_response(lambda response: "/api/v1/series" in response.url) as answered:
        page.goto("/devices/hp-a-1/")
    response = answered.value
    assert response.request.headers["accept"] == COLUMNS
    assert response.status == 200 and response.headers["content-type"] == COLUMNS
    # The live hour: every reading of the last 60 minutes, raw.
    status_matching(page, r"(59|60) points, raw readings\.")
    assert page.locator("[data-chart] canvas").count() >= 1

    with page.expect_response(lambda response: "/api/v1/series" in response.url) as answered:
        page.click("[data-range='7d']")
    assert answered.value.headers["content-type"] == COLUMNS
    # Seven days at auto: hourly rollups, only the closed hours of the three that hold readings.
    status_matching(page, r"[1-3] points, averages per 1h with the min\u2013max band\.")


@pytest.fixture
def chatty_pump(transactional_db, site_a):
    """hp-a-2 reporting every 3 s for the last 65 minutes (more readings in the live hour than auto's max_points,
    so the live preset draws 1m buckets), rolled up as far as closed buckets go."""
    device_type = DeviceTypeFactory(organization=site_a.organization, name="Heat pump")
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", display_name="Supply temp", unit="°C")
    device = DeviceFactory(uid="hp-a-2", name="Heat pump A-2", site=site_a, device_type=device_type)
    series = Series.objects.create(device=device, metric_key="supply_temp")
    now = timezone.now().replace(microsecond=0)
    Reading.objects.bulk_create(
        Reading(series=series, ts=now - datetime.timedelta(seconds=3 * n), value=40.0) for n in range(1, 1301)
    )
    rollups_advance(now=timezone.now(), time_budget=60)
    return device


def test_the_live_hour_on_minute_buckets_folds_pushed_readings_into_the_open_minute(open_page, bob, chatty_pump):
    while time.time() % 60 < 5 or time.time() % 60 > 50:  # both readings inside one minute, after the page loads
        time.sleep(1)
    page = open_page()
    log_in(page, bob.username)
    page.goto("/devices/hp-a-2/")
    status_matching(page, r"\d+ points, averages per 1m with the min\u2013max band\.")
    chart = "window.fieldwatchCharts.charts.get('hp-a-2:supply_temp')"
    before = page.evaluate(f"Array.from({chart}.data[0])")
    now = int(time.time() * 1000)
    minute = now - now % 60_000
    assert before and before[-1] * 1000 < minute  # the server returns closed minutes only
    page.evaluate(
        """([now, closed]) => {
            window.fieldwatchCharts.append("hp-a-2", "supply_temp", now - 2000, 10);
            window.fieldwatchCharts.append("hp-a-2", "supply_temp", now - 1000, 20);
            window.fieldwatchCharts.append("hp-a-2", "supply_temp", closed, 99);  // the server's minute has it
        }""",
        [now, int(before[-1] * 1000) + 1000],
    )
    after = page.evaluate(f"{chart}.data.map(column => Array.from(column))")
    assert after[0][-1] == minute / 1000 and [column[-1] for column in after[1:]] == [15, 10, 20]
    assert len(after[0]) == len([x for x in before if x >= after[0][0]]) + 1  # one bucket, not two points
    assert 99 not in after[1] and 99 not in after[3]
    assert page.evaluate(f"{chart}.liveFolds") == 2
    status_matching(page, r"\d+ points, averages per 1m with the min\u2013max band\. Current minute: live, partial\.")
