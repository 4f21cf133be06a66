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
