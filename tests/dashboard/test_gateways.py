"""The gateways page: each gateway of the user's sites with its edge agent's health, from heartbeats sent the way the
agent sends them (its own ``heartbeat_reading``, encoded by its wire module, POSTed to ``/api/v1/ingest`` with the
gateway's key), scoped by site, in a constant number of queries."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from fieldwatch_agent.buffer import Buffer, BufferedReading, Reading
from fieldwatch_agent.config import HeartbeatConfig
from fieldwatch_agent.health import Health, heartbeat_reading
from fieldwatch_agent.wire import encode, gateway_document

from apps.dashboard.selectors import AGENT_HEALTH_METRICS
from apps.devices.choices import UnknownMetricPolicy
from apps.devices.models import Device
from apps.devices.services import api_key_issue
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory

pytestmark = pytest.mark.django_db

URL = reverse("dashboard:gateway-list")


@pytest.fixture
def agent_type(organization):
    # What the agent README asks for: a lenient type (its per-device poll error metrics need no definitions).
    return DeviceTypeFactory(
        organization=organization,
        name="Edge agent",
        unknown_metric_policy=UnknownMetricPolicy.LENIENT,
        offline_after=datetime.timedelta(minutes=3),
    )


def _gateway(site, uid, agent_type):
    gateway = GatewayFactory(site=site, uid=uid, name=f"Gateway {uid}")
    agent = DeviceFactory(uid=f"{uid}-agent", name=f"{uid} agent", site=site, device_type=agent_type, gateway=gateway)
    return gateway, agent


def _send_heartbeat(client, tmp_path, gateway, agent, *, backlog: int = 0, polls_failed: int = 0, ts=None):
    """A heartbeat as the agent builds it (a real buffer holding ``backlog`` readings), sent over the HTTP ingest."""
    buffer = Buffer(tmp_path / f"{agent.uid}.sqlite3")
    buffer.append(Reading("fm-1", 1_700_000_000_000 + n, {"flow_rate": 1.0}) for n in range(backlog))
    health = Health()
    health.register_device("fm-1")
    if polls_failed:
        health.record_poll("fm-1", polls_failed, "timeout")
    beat = heartbeat_reading(buffer, health, HeartbeatConfig(device=agent.uid, interval_s=60))
    buffer.close()
    if ts is not None:
        beat = Reading(beat.device, ts, beat.values)
    key = api_key_issue(gateway=gateway, name=f"agent-{agent.uid}")[1]
    body = encode(gateway_document([BufferedReading(1, 0, beat)]))
    response = client.post("/api/v1/ingest", body, content_type="application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 202 and response.json()["rejected"] == 0, response.content
    return beat


def test_heartbeat_of_the_agent_carries_every_metric_the_page_shows(tmp_path):
    buffer = Buffer(tmp_path / "buffer.sqlite3")
    beat = heartbeat_reading(buffer, Health(), HeartbeatConfig(device="gw-agent", interval_s=60))
    buffer.close()
    assert {key for key, _, _ in AGENT_HEALTH_METRICS} <= set(beat.values)


def test_operator_sees_the_gateway_online_with_its_backlog_and_poll_errors(client, bob, site_a, agent_type, tmp_path):
    gateway, agent = _gateway(site_a, "gw-a-edge", agent_type)
    DeviceFactory(uid="fm-a-edge", site=site_a, device_type=agent_type, gateway=gateway)  # never seen
    _send_heartbeat(client, tmp_path, gateway, agent, backlog=37, polls_failed=4)

    client.force_login(bob)
    response = client.get(URL, {"site": "all"})
    assert response.status_code == 200
    html = response.content.decode()
    row = html[html.index('data-gateway="gw-a-edge"') :]
    assert f'data-status="{agent.uid}">Online<' in row
    assert f'data-latest="{agent.uid}:agent_buffer_depth" data-health="agent_buffer_depth">37<' in row
    assert f'data-latest="{agent.uid}:agent_poll_errors" data-health="agent_poll_errors">4<' in row
    assert f'data-latest="{agent.uid}:agent_devices_failing" data-health="agent_devices_failing">1<' in row
    assert "1 of 2" in row  # the agent's device online, the meter never seen
    assert f'data-last-seen="{agent.uid}"' in row
    assert reverse("dashboard:device-detail", args=[agent.uid]) in row


def test_a_gateway_whose_heartbeats_stopped_is_offline(client, bob, site_a, agent_type, tmp_path):
    gateway, agent = _gateway(site_a, "gw-a-quiet", agent_type)
    _send_heartbeat(client, tmp_path, gateway, agent, backlog=5)
    Device.objects.filter(pk=agent.pk).update(last_seen=timezone.now() - datetime.timedelta(minutes=10))

    client.force_login(bob)
    html = client.get(URL).content.decode()
    assert f'data-status="{agent.uid}">Offline<' in html
    assert f'data-latest="{agent.uid}:agent_buffer_depth" data-health="agent_buffer_depth">5<' in html


def test_the_latest_heartbeat_wins_over_one_replayed_from_an_outage(client, bob, site_a, agent_type, tmp_path):
    gateway, agent = _gateway(site_a, "gw-a-replay", agent_type)
    now_ms = int(timezone.now().timestamp() * 1000)
    _send_heartbeat(client, tmp_path, gateway, agent, backlog=0, ts=now_ms)
    _send_heartbeat(client, tmp_path, gateway, agent, backlog=900, ts=now_ms - 60_000)  # drained late

    client.force_login(bob)
    html = client.get(URL).content.decode()
    assert f'data-latest="{agent.uid}:agent_buffer_depth" data-health="agent_buffer_depth">0<' in html


def test_a_gateway_without_an_agent_says_so(client, bob, site_a, agent_type):
    gateway = GatewayFactory(site=site_a, uid="gw-a-plain", name="Plain gateway")
    DeviceFactory(uid="fm-a-plain", site=site_a, device_type=agent_type, gateway=gateway, last_seen=timezone.now())

    client.force_login(bob)
    html = client.get(URL).content.decode()
    row = html[html.index('data-gateway="gw-a-plain"') :]
    assert "No agent" in row and "No heartbeat" in row
    assert "1 of 1" in row
    assert "data-latest=" not in row.split("</tr>")[0]


def test_viewer_sees_only_the_gateways_of_her_site(client, carol, site_a, site_b, agent_type, tmp_path):
    gateway_a, agent_a = _gateway(site_a, "gw-a-hidden", agent_type)
    gateway_b, agent_b = _gateway(site_b, "gw-b-edge", agent_type)
    _send_heartbeat(client, tmp_path, gateway_a, agent_a, backlog=3)
    _send_heartbeat(client, tmp_path, gateway_b, agent_b, backlog=2)

    client.force_login(carol)
    for params in ({}, {"site": "all"}, {"site": site_a.id}):  # asking for site A is ignored, never revealed
        html = client.get(URL, params).content.decode()
        assert "gw-b-edge" in html
        assert "gw-a-hidden" not in html and agent_a.uid not in html


def test_the_page_makes_as_many_queries_for_twenty_gateways_as_for_one(
    client, alice, site_a, site_b, agent_type, tmp_path
):
    # All registered before the first ingest loads its catalogue: one gateway on site A, nineteen on site B.
    gateways = [_gateway(site_a if n == 0 else site_b, f"gw-perf-{n}", agent_type) for n in range(20)]
    for n, (gateway, agent) in enumerate(gateways):
        _send_heartbeat(client, tmp_path, gateway, agent, backlog=n)
    client.force_login(alice)

    def queries(site) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = client.get(URL, {"site": site})
        assert response.status_code == 200
        assert response.content.count(b"data-gateway=") == (1 if site == site_a.id else 20)
        return len(captured)

    one = queries(site_a.id)
    assert queries("all") == one
    assert one <= 20  # session, user, site scope and the page's own statements, as for the device list
