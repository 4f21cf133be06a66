"""Saved charts, dashboards, exports and alert rules in a real browser (Debian's Chromium via Playwright) against
the real uvicorn, listener, Mosquitto, a real Celery worker (exports), PostgreSQL and Redis.

bob builds a chart across two devices, saves it, adds it to a dashboard, reloads and sees a published reading
arrive on it; on a 24 h chart of hourly averages published readings are folded into the open hour (their mean, at
the hour's start, marked partial) while a raw chart beside it appends each one; carol sees neither bob's private
chart nor a shared one with a Site A series; bob exports from a device page and downloads the file after its
progress was pushed over the websocket (no poll; without a websocket the page polls); bob backtests a rule, saves
it, a published reading opens an alert, and he deletes the rule (with its alert) after confirming. Every new page
is screenshot at 1280 and 390 px; no page logs an error.
"""

import time
import uuid

import pytest

from apps.alerts.models import Alert, AlertRule
from apps.dashboard.chart_services import chart_save, dashboard_chart_add, dashboard_save
from apps.dashboard.models import Dashboard, SavedChart
from apps.telemetry.models import ExportJob, Reading
from tests.dashboard.conftest import BROWSER_SETTINGS
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.browser import WIDTHS, log_in, screenshot, wait_js, wait_live
from tests.support.celery_worker import CeleryWorker
from tests.support.mqtt import ListenerProcess, Publisher, broker_logins
from tests.support.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The web process enqueues on Celery's default queue, on this test run's own Redis database (REDIS_URL).
QUEUE = "celery"


@pytest.fixture
def web_server_env():
    return {"CELERY_TASK_DEFAULT_QUEUE": QUEUE}


@pytest.fixture
def fleet(transactional_db, site_a, site_b, bob, carol, alice):
    heat_pump = DeviceTypeFactory(organization=site_a.organization, name="Heat pump")
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", display_name="Supply temp", unit="°C")
    MetricDefinitionFactory(device_type=heat_pump, key="cop", display_name="COP", unit="")
    return {
        "a1": DeviceFactory(uid="hp-a-1", name="Heat pump A-1", site=site_a, device_type=heat_pump),
        "a2": DeviceFactory(uid="hp-a-2", name="Heat pump A-2", site=site_a, device_type=heat_pump),
        "b1": DeviceFactory(uid="hp-b-1", name="Heat pump B-1", site=site_b, device_type=heat_pump),
    }


@pytest.fixture
def mqtt(fleet, broker, live_env):
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    passwords = broker_logins(broker, prefix, *fleet.values())
    env = {key: live_env[key] for key in ("DJANGO_SETTINGS_MODULE", "CHANNELS_PREFIX", "CACHE_KEY_PREFIX")}
    process = ListenerProcess(
        "mqtt_listen",
        "--client-id",
        f"charts-listener-{uuid.uuid4().hex[:8]}",
        "--flush-ms",
        "50",
        database_url=live_env["DATABASE_URL"],
        MQTT_URL=broker.url,
        MQTT_TOPIC_PREFIX=prefix,
        **env,
    ).start()
    publishers = {uid: Publisher(broker, uid, password) for uid, password in passwords.items()}

    def publish(uid: str, values: dict, ts_ms: int | None = None) -> None:
        ts = ts_ms or int(time.time() * 1000)
        publishers[uid].publish(f"{prefix}/devices/{uid}/telemetry", {"ts": ts, "values": values})
        publishers[uid].flush()

    yield publish
    for publisher in publishers.values():
        publisher.close()
    process.terminate()
    process.close()


@pytest.fixture
def worker(live_env, tmp_path):
    started = CeleryWorker(
        "exports",
        {**live_env, "DJANGO_SETTINGS_MODULE": BROWSER_SETTINGS, "CELERY_TASK_DEFAULT_QUEUE": QUEUE},
        tmp_path,
    ).start()
    started.wait_ready()
    yield started
    started.stop()


def test_bob_builds_a_chart_across_two_devices_saves_it_adds_it_to_a_dashboard_and_sees_it_live(open_page, fleet, mqtt):
    mqtt("hp-a-1", {"supply_temp": 41.0}, int(time.time() * 1000) - 60_000)
    mqtt("hp-a-2", {"supply_temp": 44.0}, int(time.time() * 1000) - 60_000)
    page = open_page()
    log_in(page, "bob")
    page.goto("/charts/new")
    page.fill("#id_title", "Supply across A")
    page.select_option("#id_range", "1h")
    for uid in ("hp-a-1", "hp-a-2"):
        page.select_option("[data-series-device]", uid)
        page.select_option("[data-series-metric]", "supply_temp")
        page.click("[data-add-series]")
    wait_js(page, "document.querySelector('[data-chart-footer]').textContent.includes('MessagePack')")
    page.click("#chart-form button[type=submit]")
    page.wait_for_url("**/charts/*/")
    chart = SavedChart.objects.get(title="Supply across A")
    assert [s.device.uid for s in chart.series.all()] == ["hp-a-1", "hp-a-2"]

    page.goto("/dashboards/")
    page.fill("#id_title", "Bob's board")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/dashboards/*/")
    page.select_option("#add-chart", str(chart.pk))
    page.click("button[value=add_chart]")
    page.select_option("[data-stat-picker] [data-series-device]", "hp-a-2")
    page.select_option("[data-stat-picker] [data-series-metric]", "supply_temp")
    page.click("button[value=add_stat]")
    board = Dashboard.objects.get(title="Bob's board")
    assert board.items.count() == 2

    page.reload()
    wait_live(page)
    wait_js(page, "window.fieldwatchSavedCharts.charts.length === 1 && window.fieldwatchSavedCharts.charts[0].data")
    series_loaded = page.evaluate("window.fieldwatchSavedCharts.charts[0].data.length")
    assert series_loaded == 3  # time + the two series
    mqtt("hp-a-2", {"supply_temp": 47.5})
    wait_js(page, "(window.fieldwatchSavedCharts.charts[0].lastLive || {}).value === 47.5", timeout=5)
    wait_js(page, "document.querySelector('[data-latest=\"hp-a-2:supply_temp\"]').textContent.trim() === '47.5'")
    footer = page.inner_text("[data-chart-footer]")
    assert "MessagePack" in footer and ("kB" in footer or " B " in footer)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        for path, name in (
            (f"/dashboards/{board.pk}/", "dashboard"),
            (f"/charts/{chart.pk}/", "chart"),
            ("/charts/", "chart-list"),
            ("/charts/new", "chart-builder"),
            ("/dashboards/", "dashboard-list"),
        ):
            page.goto(path)
            page.wait_for_load_state("networkidle")
            screenshot(page, name, width)


HOUR_MS = 3600 * 1000


def test_live_readings_fold_into_the_open_hour_of_an_hourly_chart_and_append_to_a_raw_one(open_page, fleet, mqtt, bob):
    hourly = chart_save(
        user=bob,
        title="Hourly supply",
        shared=False,
        series=[(fleet["a1"], "supply_temp")],
        range="24h",
        resolution="1h",
        aggregate="avg",
    )
    raw = chart_save(
        user=bob, title="Raw supply", shared=False, series=[(fleet["a1"], "supply_temp")], range="1h", resolution="raw"
    )
    board = dashboard_save(user=bob, title="Live folding", shared=False)
    dashboard_chart_add(user=bob, dashboard=board, chart=hourly)
    dashboard_chart_add(user=bob, dashboard=board, chart=raw)
    # Three readings a second apart, all inside one hour (wait out the first seconds of an hour).
    while int(time.time() * 1000) % HOUR_MS < 5000 or int(time.time() * 1000) % HOUR_MS > HOUR_MS - 60_000:
        time.sleep(1)
    page = open_page()
    log_in(page, "bob")
    page.goto(f"/dashboards/{board.pk}/")
    wait_live(page)
    charts = "window.fieldwatchSavedCharts.charts"
    wait_js(page, f"{charts}.length === 2 && {charts}.every(c => c.data && c.interval)")
    assert page.evaluate(f"{charts}.map(c => c.interval)") == ["1h", "raw"]
    now = int(time.time() * 1000)
    hour = now - now % HOUR_MS
    for n, value in enumerate((40.0, 43.0, 47.5)):
        mqtt("hp-a-1", {"supply_temp": value}, now - (3 - n) * 1000)
        # One at a time: the fan-out coalesces a device's readings within a second into its newest.
        wait_js(page, f"{charts}[0].liveFolds === {n + 1} && {charts}[1].liveAppends === {n + 1}")

    hourly_state = page.evaluate(
        f"""(() => {{ const c = {charts}[0]; return {{
            xs: Array.from(c.data[0]), ys: Array.from(c.data[1]), appends: c.liveAppends, buckets: c.liveBuckets,
            dueAt: c.buckets.dueAt, settle: window.fieldwatchSeries.SETTLE_MS }}; }})()"""
    )
    assert hourly_state["xs"] == [hour / 1000] and hourly_state["ys"] == [43.5], hourly_state
    assert hourly_state["appends"] == 0
    assert [(b["start"], b["count"], b["partial"]) for b in hourly_state["buckets"]] == [(hour, 3, True)]
    # One reload for the chart, once the hour has closed and been rolled up; not one per reading.
    assert hourly_state["dueAt"] == hour + HOUR_MS + hourly_state["settle"]
    footers = page.locator("[data-chart-footer]").all_inner_texts()
    assert "avg per 1h" in footers[0] and "current hour: live, partial" in footers[0], footers
    assert "partial" not in footers[1], footers
    raw_state = page.evaluate(
        f"(() => {{ const c = {charts}[1]; return [Array.from(c.data[0]), Array.from(c.data[1])]; }})()"
    )
    assert raw_state[0][-3:] == [(now - 3000) / 1000, (now - 2000) / 1000, (now - 1000) / 1000]
    assert raw_state[1][-3:] == [40.0, 43.0, 47.5]

    # A reload before the rollup has the hour keeps the open bucket over the server's (closed) buckets.
    page.evaluate(f"{charts}[0].load()")
    wait_js(page, f"{charts}[0].loads === 2")
    assert page.evaluate(f"[Array.from({charts}[0].data[0]), Array.from({charts}[0].data[1])]") == [
        [hour / 1000],
        [43.5],
    ]

    # The fold itself: every aggregate as the server defines it, and a bucket the server returned is left to it.
    folded = page.evaluate(
        """(hour) => {
            const s = window.fieldwatchSeries;
            let b = null;
            for (const [ts, v] of [[hour + 3000, 4], [hour + 1000, 2], [hour + 2000, 9]]) {
                b = s.foldReading(b, "1h", ts, v);
            }
            const open = new s.OpenBuckets("5m", {k: hour - 300000});
            return {
                figures: ["avg", "min", "max", "first", "last", "sum", "count", "stddev"].map(a => s.bucketValue(b, a)),
                single: s.bucketValue(s.foldReading(null, "1h", hour, 1), "stddev"),
                starts: [s.bucketStart("1m", hour + 61500), s.bucketStart("1d", hour), s.bucketStart("raw", hour)],
                closed: open.take("k", hour - 1, 5), next: open.take("k", hour + 299999, 5).start,
            };
        }""",
        hour,
    )
    assert folded["figures"][:7] == [5, 2, 9, 2, 4, 15, 3]
    assert abs(folded["figures"][7] - 3.605551275463989) < 1e-9  # sample stddev of 4, 2, 9
    assert folded["single"] is None
    assert folded["starts"] == [hour + 60000, hour - hour % (24 * HOUR_MS), None]
    assert folded["closed"] is None and folded["next"] == hour


def test_carol_sees_neither_bobs_private_chart_nor_a_shared_chart_with_a_site_a_series(open_page, fleet, bob, alice):
    private = chart_save(
        user=bob, title="Bob private", shared=False, series=[(fleet["a1"], "supply_temp")], range="24h"
    )
    chart_save(
        user=alice,
        title="Mixed shared",
        shared=True,
        series=[(fleet["a1"], "supply_temp"), (fleet["b1"], "supply_temp")],
        range="24h",
    )
    chart_save(user=alice, title="Site B shared", shared=True, series=[(fleet["b1"], "supply_temp")], range="24h")
    page = open_page(allow=(f"/charts/{private.pk}/", "favicon.ico"))  # the 404 page has no icon link
    log_in(page, "carol")
    page.goto("/charts/")
    listing = page.inner_text("[data-chart-list]")
    assert "Site B shared" in listing and "Bob private" not in listing and "Mixed shared" not in listing
    response = page.goto(f"/charts/{private.pk}/")
    assert response.status == 404


def test_bob_exports_from_a_device_page_and_downloads_after_live_progress(open_page, fleet, mqtt, worker):
    now = int(time.time() * 1000)
    for n in range(5):
        mqtt("hp-a-1", {"supply_temp": 40 + n}, now - (5 - n) * 1000)
    # Published is not yet committed: the export reads what is stored when it runs.
    assert wait_until(lambda: Reading.objects.filter(series__device__uid="hp-a-1").count() == 5)
    page = open_page()
    log_in(page, "bob")
    polls = []  # reads of a job's state: with the websocket up, none is needed
    page.on("request", lambda r: r.method == "GET" and "/api/v1/exports/" in r.url and polls.append(r.url))
    page.goto("/devices/hp-a-1/")
    wait_live(page)
    wait_js(page, "window.fieldwatchLive.exportsSubscribed")
    page.select_option("#export-format-device", "json")
    page.click("[data-export-form] button[type=submit]")
    wait_js(page, "!document.querySelector('[data-export-download]').hidden", timeout=30)
    assert "done" in page.inner_text("[data-export-status]")
    assert "expires" in page.inner_text("[data-export-expiry]")
    job = ExportJob.objects.get(user__username="bob")
    pushed = page.evaluate("window.fieldwatchLive.received.filter(m => m.type === 'export').map(m => m.export)")
    assert [state["id"] for state in pushed] == [str(job.id)] * len(pushed)
    assert pushed[0]["status"] == "running" and pushed[-1]["status"] == "done", pushed
    assert polls == [], "the page polled the export although its progress was pushed"
    with page.expect_download() as download_info:
        page.click("[data-export-download]")
    path = download_info.value.path()
    content = path.read_text()
    assert '"hp-a-1"' in content and "44.0" in content
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto("/exports/")
        assert "Download" in page.inner_text("table")
        screenshot(page, "exports", width)


def test_without_the_websocket_the_export_page_falls_back_to_polling(open_page, fleet, mqtt, worker):
    mqtt("hp-a-1", {"supply_temp": 40.0}, int(time.time() * 1000) - 1000)
    assert wait_until(lambda: Reading.objects.filter(series__device__uid="hp-a-1").exists())
    page = open_page()
    page.add_init_script("window.WebSocket = undefined;")  # a proxy that drops websockets, say
    log_in(page, "bob")
    polls = []
    page.on("request", lambda r: r.method == "GET" and "/api/v1/exports/" in r.url and polls.append(r.url))
    page.goto("/devices/hp-a-1/")
    page.click("[data-export-form] button[type=submit]")
    wait_js(page, "!document.querySelector('[data-export-download]').hidden", timeout=30)
    assert "done" in page.inner_text("[data-export-status]")
    assert polls and page.evaluate("window.fieldwatchLive.received.length") == 0


def test_bob_backtests_a_rule_saves_it_and_a_published_reading_opens_an_alert(open_page, fleet, mqtt, site_a):
    page = open_page()
    log_in(page, "bob")
    page.goto("/rules/new")
    page.fill("#id_name", "Supply too hot")
    page.select_option("#id_kind", "threshold")
    page.select_option("#id_site", str(site_a.pk))
    page.fill("#id_metric_key", "supply_temp")
    page.select_option("#id_operator", "gt")
    page.fill("#id_threshold", "80")
    page.fill("#id_clear_threshold", "75")
    page.click("[data-backtest]")
    wait_js(page, "document.querySelector('[data-backtest-result]').hasAttribute('data-count')")
    assert "Over the last 7 days this rule would have opened 0 alerts on 2 devices" in page.inner_text(
        "[data-backtest-result]"
    )
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        screenshot(page, "rule-form", width)
    page.click("form[data-rule-form] button[type=submit]")
    page.wait_for_url("**/rules/")
    rule = AlertRule.objects.get(name="Supply too hot")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        screenshot(page, "rule-list", width)
    time.sleep(1.5)  # the listener's rules index refreshes on the version bump within a second
    mqtt("hp-a-1", {"supply_temp": 88.0})
    deadline = time.monotonic() + 10
    while not Alert.objects.filter(rule=rule, device=fleet["a1"]).exists():
        assert time.monotonic() < deadline, "no alert opened"
        time.sleep(0.1)

    # bob deletes the rule he made, its open alert with it, after the confirmation step.
    page.goto(f"/rules/{rule.id}/")
    page.click("[data-rule-delete]")
    page.wait_for_url(f"**/rules/{rule.id}/delete")
    assert "1 of them still open" in page.inner_text("[data-rule-delete-form]")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        screenshot(page, "rule-delete", width)
    page.click("[data-rule-delete-form] button[type=submit]")
    page.wait_for_url("**/rules/")
    assert "Rule “Supply too hot” deleted." in page.inner_text(".messages")
    assert "Supply too hot" not in page.inner_text("table")
    assert not AlertRule.objects.filter(pk=rule.pk).exists() and not Alert.objects.filter(rule_id=rule.pk).exists()
