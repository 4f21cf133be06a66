"""The gateways page in a real browser, fed by the real edge agent: ``fieldwatch-agent run`` as its own process,
logged in to the project's Mosquitto with the gateway's broker login, its heartbeats stored by the real listener and
pushed to Chromium over the websocket by the real uvicorn.

What an operator relies on: the gateway shows online with its agent's figures; when the uplink (here the broker)
is down for a few seconds the agent buffers, and once it is back the page shows, by itself, the backlog the agent
came back with and then its drain to zero, while live heartbeats keep arriving. The page is screenshot at 1280 and
390 px without errors.
"""

import datetime
import os
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from apps.devices.choices import UnknownMetricPolicy
from apps.telemetry.models import LatestValue
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory
from tests.support.browser import SCREENSHOTS, WIDTHS, log_in, text_of, wait_js, wait_live
from tests.support.mqtt import ListenerProcess, broker_logins
from tests.support.processes import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GATEWAY, AGENT = "gw-a-edge", "gw-a-edge-agent"
OUTAGE_S = 4


@pytest.fixture
def edge(transactional_db, site_a, site_b, bob):
    agent_type = DeviceTypeFactory(
        organization=site_a.organization,
        name="Edge agent",
        unknown_metric_policy=UnknownMetricPolicy.LENIENT,
        offline_after=datetime.timedelta(seconds=30),
    )
    gateway = GatewayFactory(site=site_a, uid=GATEWAY, name="Pump station gateway")
    DeviceFactory(uid=AGENT, name="Pump station agent", site=site_a, device_type=agent_type, gateway=gateway)
    DeviceFactory(uid="fm-a-edge", name="Flow meter", site=site_a, device_type=agent_type, gateway=gateway)
    GatewayFactory(site=site_a, uid="gw-a-plain", name="Boiler room gateway")  # no agent: says so
    return gateway


@pytest.fixture
def agent(edge, broker, live_env, tmp_path):
    """The listener, and the agent sending a heartbeat a second through the broker as the gateway."""
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    password = broker_logins(broker, prefix, edge)[GATEWAY]
    env = {key: live_env[key] for key in ("DJANGO_SETTINGS_MODULE", "CHANNELS_PREFIX", "CACHE_KEY_PREFIX")}
    listener = ListenerProcess(
        "mqtt_listen",
        "--client-id",
        f"gateways-listener-{uuid.uuid4().hex[:8]}",
        "--flush-ms",
        "50",
        database_url=live_env["DATABASE_URL"],
        MQTT_URL=broker.url,
        MQTT_TOPIC_PREFIX=prefix,
        **env,
    ).start()
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "buffer": {"path": str(tmp_path / "buffer.sqlite3")},
                "sink": {"kind": "mqtt", "url": broker.url, "topic_prefix": prefix, "uid": GATEWAY}
                | {"password": password},
                # The backlog drains at a reading a second while live heartbeats go at once: each new heartbeat
                # reports what is left of the outage's, so the drain shows on the page step by step.
                "forwarding": {"live_window_s": 1, "drain_rate": 1, "retry_min_s": 0.2, "retry_max_s": 0.5},
                "heartbeat": {"device": AGENT, "interval_s": 1},
            }
        )
    )
    log = open(tmp_path / "agent.log", "ab")  # noqa: SIM115 - the agent's output for the whole test
    process = subprocess.Popen(
        [sys.executable, "-m", "fieldwatch_agent", "run", "--config", str(config)],
        stdout=log,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    heartbeat = LatestValue.objects.filter(series__device__uid=AGENT, series__metric_key="agent_buffer_depth")
    assert wait_until(heartbeat.exists, timeout=20), (tmp_path / "agent.log").read_text()
    yield process
    process.terminate()
    process.wait(20)
    log.close()
    listener.terminate()
    listener.close()


def heartbeats(page) -> list[dict]:
    return page.evaluate(
        "uid => window.fieldwatchLive.received.filter(m => m.type === 'latest' && m.device === uid).map(m => m.values)",
        AGENT,
    )


def test_the_gateway_page_shows_the_backlog_of_an_outage_and_its_drain_live(open_page, agent, broker):
    page = open_page()
    log_in(page, "bob")
    page.goto("/gateways/")
    wait_live(page)
    row = f'tr[data-gateway="{GATEWAY}"]'
    assert text_of(page, f'{row} [data-status="{AGENT}"]') == "Online"
    # The agent's own device is online; the meter behind the gateway has sent nothing.
    assert text_of(page, f"{row} td[data-label='Devices online']") == "1 of 2"
    assert "No agent" in text_of(page, 'tr[data-gateway="gw-a-plain"]')
    # Heartbeats arrive by themselves, once a second.
    wait_js(page, "() => window.fieldwatchLive.received.some(m => m.type === 'latest')", timeout=5)

    broker.stop()
    time.sleep(OUTAGE_S)  # the agent buffers a heartbeat a second meanwhile
    broker.start()

    # Back online, the live heartbeats go first and report the backlog of the outage's heartbeats ...
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if any(values.get("agent_buffer_depth", [0, 0])[1] >= 2 for values in heartbeats(page)):
            break
        time.sleep(0.1)
    backlog = [values for values in heartbeats(page) if values.get("agent_buffer_depth", [0, 0])[1] >= 2]
    assert backlog, [values["agent_buffer_depth"] for values in heartbeats(page)]
    assert backlog[0]["agent_buffer_oldest_age_s"][1] >= 1
    assert backlog[0]["agent_send_errors"][1] >= 1
    # ... and the next ones its drain, a reading a second: the page's cell goes back to zero without a reload.
    depth = f'{row} [data-latest="{AGENT}:agent_buffer_depth"]'
    wait_js(page, "s => document.querySelector(s).textContent.trim() === '0'", depth, timeout=15)
    assert text_of(page, f'{row} [data-status="{AGENT}"]') == "Online"


def test_the_gateway_page_renders_at_desktop_and_phone_width_without_errors(open_page, agent):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page = open_page(width=width, height=900 if width > 600 else 844)
        log_in(page, "bob")
        response = page.goto("/gateways/")
        assert response.ok, response.status
        wait_live(page)
        page.wait_for_load_state("networkidle")
        page.screenshot(path=str(SCREENSHOTS / f"gateways-{width}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"/gateways/ at {width} px scrolls sideways by {overflow} px"
        assert page.locator(f'tr[data-gateway="{GATEWAY}"]').is_visible()
