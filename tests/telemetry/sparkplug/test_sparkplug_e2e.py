"""Sparkplug B end to end: a pysparkplug edge node publishing through paho as a gateway login, the project's Mosquitto
(config and ACL with auth), the real listener process, PostgreSQL, and the dashboard's live websocket over the same
Redis pub/sub channel layer the listener publishes to."""

import os
import time
import uuid

import pysparkplug as spb
import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import override_settings

from apps.devices.choices import DeviceStatus, UnknownMetricPolicy
from apps.telemetry.models import DeadLetter, Reading, SparkplugNode
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.mqtt import ListenerProcess, broker_logins
from tests.support.processes import database_url, wait_until
from tests.telemetry.sparkplug.edge_node import EdgeNode, metric

pytestmark = pytest.mark.e2e

DT = spb.DataType


@pytest.fixture
def fleet(transactional_db, site_a, site_b):
    """Gateway ``edge-7`` on site A is the edge node; its own metrics go to device ``edge-7``, its pump's to
    ``edge-7.pump-1``; ``edge-7.pump-b`` exists but is on site B."""
    pump = DeviceTypeFactory(organization=site_a.organization, unknown_metric_policy=UnknownMetricPolicy.STRICT)
    MetricDefinitionFactory(device_type=pump, key="inputs_temperature", min_value=-50, max_value=150)
    MetricDefinitionFactory(device_type=pump, key="running")
    MetricDefinitionFactory(device_type=pump, key="uptime")
    gateway = GatewayFactory(site=site_a, uid="edge-7")
    return {
        "gateway": gateway,
        "node": DeviceFactory(uid="edge-7", site=site_a, device_type=pump, gateway=gateway),
        "pump": DeviceFactory(uid="edge-7.pump-1", site=site_a, device_type=pump, gateway=gateway),
        "foreign": DeviceFactory(uid="edge-7.pump-b", site=site_b, device_type=pump),
    }


@pytest.fixture
def live_layer():
    """The channel layer of the listener process (settings_browser: Redis pub/sub), under a prefix of the test's."""
    prefix = f"fw-spb-{uuid.uuid4().hex[:8]}"
    layers = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL], "prefix": prefix},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        yield prefix


def start_listener(broker, prefix: str, client_id: str, channels_prefix: str) -> ListenerProcess:
    return ListenerProcess(
        "mqtt_listen",
        "--client-id",
        client_id,
        "--flush-ms",
        "50",
        database_url=database_url(),
        MQTT_URL=broker.url,
        MQTT_TOPIC_PREFIX=prefix,
        DJANGO_SETTINGS_MODULE="tests.support.settings_browser",
        CHANNELS_PREFIX=channels_prefix,
        CACHE_KEY_PREFIX=os.environ.get("CACHE_KEY_PREFIX", "fw-test"),
        SPARKPLUG_REBIRTH_INTERVAL_SECONDS="1",
    ).start()


def reasons() -> list[str]:
    return sorted(DeadLetter.objects.values_list("reason", flat=True))


def test_births_aliases_restart_rebirth_and_death(broker, fleet, bob, site_a, live_layer):
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    group = f"plant-{uuid.uuid4().hex[:6]}"
    client_id = f"test-listener-{uuid.uuid4().hex[:8]}"
    passwords = broker_logins(broker, prefix, fleet["gateway"])
    listener = start_listener(broker, prefix, client_id, live_layer)
    node = EdgeNode(broker.port, group, "edge-7", passwords["edge-7"], bd_seq=1)
    base = spb.get_current_timestamp() - 60_000
    try:
        # --- births and data by alias: stored exactly once -----------------------------------------------------
        node.nbirth(metric("Uptime", DT.UINT32, 10, alias=1, ts=base))
        node.dbirth(
            "pump-1",
            metric("Inputs/Temperature", DT.INT16, 21, alias=2, ts=base),
            metric("Running", DT.BOOLEAN, True, alias=3, ts=base),
            metric("Label", DT.STRING, "north wing", alias=4, ts=base),
        )
        node.ddata(
            "pump-1",
            metric(None, DT.INT16, -7, alias=2, ts=base + 1000),
            metric(None, DT.BOOLEAN, False, alias=3, ts=base + 1000),
        )
        node.dbirth("pump-b", metric("Inputs/Temperature", DT.INT16, 30, alias=10, ts=base))  # another site's device
        assert wait_until(lambda: Reading.objects.count() >= 5 and DeadLetter.objects.count() >= 2, timeout=20), (
            listener.output()
        )
        time.sleep(0.5)  # anything stored twice or late would show now
        assert Reading.objects.count() == 5
        values = sorted(Reading.objects.values_list("series__device__uid", "series__metric_key", "value"))
        assert values == [
            ("edge-7", "uptime", 10.0),
            ("edge-7.pump-1", "inputs_temperature", -7.0),
            ("edge-7.pump-1", "inputs_temperature", 21.0),
            ("edge-7.pump-1", "running", 0.0),
            ("edge-7.pump-1", "running", 1.0),
        ]
        assert reasons() == ["sparkplug_unsupported_type", "wrong_site"]
        assert DeadLetter.objects.get(reason="wrong_site").device_uid == "edge-7.pump-b"
        stored = SparkplugNode.objects.get(group_id=group, edge_node_id="edge-7")
        assert stored.online and stored.bd_seq == 1 and stored.seq == 3
        assert stored.definitions["aliases"]["2"] == ["pump-1", "Inputs/Temperature", DT.INT16]
        assert not node.commands  # nothing was ever unclear

        # The login speaks only as its own edge node: the broker drops a birth of another node id (were it to reach
        # the listener, it would be dead-lettered unknown_gateway).
        node._publish(f"spBv1.0/{group}/NBIRTH/edge-8", spb.NBirth(timestamp=base, seq=0, metrics=()).encode())
        time.sleep(0.5)
        assert reasons() == ["sparkplug_unsupported_type", "wrong_site"]

        # --- a restart that lost the alias map: data by alias is dead-lettered, the node asked to rebirth ------
        assert listener.terminate() == 0, listener.output()
        listener.close()
        SparkplugNode.objects.all().delete()
        listener = start_listener(broker, prefix, client_id, live_layer)
        node.ddata("pump-1", metric(None, DT.INT16, 33, alias=2, ts=base + 2000))
        assert node.rebirth_requested(timeout=10), listener.output()
        assert wait_until(lambda: DeadLetter.objects.filter(reason="sparkplug_unknown_alias").exists(), timeout=10)
        unresolved = DeadLetter.objects.get(reason="sparkplug_unknown_alias")
        assert unresolved.device_uid == "edge-7.pump-1" and "rebirth requested" in unresolved.detail
        assert Reading.objects.count() == 5

        # --- the node answers with its births; then a device death shows on the dashboard at once -------------
        node.nbirth(metric("Uptime", DT.UINT32, 11, alias=1, ts=base + 3000))
        node.dbirth("pump-1", metric("Inputs/Temperature", DT.INT16, 22, alias=2, ts=base + 3000))
        assert wait_until(lambda: Reading.objects.count() == 7, timeout=10), listener.output()
        fleet["pump"].refresh_from_db()
        assert fleet["pump"].status() == DeviceStatus.ONLINE

        async def death_seen_live():
            from tests.dashboard.test_live import connected

            socket = await connected(bob, sites=[site_a.id])
            started = time.monotonic()
            await _in_thread(node.ddeath, "pump-1")
            while True:
                frame = await socket.receive_json_from(timeout=2)
                messages = frame if isinstance(frame, list) else [frame]
                status = [m for m in messages if m.get("type") == "status" and m["device"] == "edge-7.pump-1"]
                if status:
                    break
            elapsed = time.monotonic() - started
            await socket.disconnect()
            return status[0], elapsed

        status, elapsed = async_to_sync(death_seen_live)()
        assert status["status"] == "offline" and elapsed < 2.0, (status, elapsed)
        fleet["pump"].refresh_from_db()
        assert fleet["pump"].offline_since is not None
        assert fleet["pump"].status() == DeviceStatus.OFFLINE  # long before the type's timeout
        fleet["node"].refresh_from_db()
        assert fleet["node"].status() == DeviceStatus.ONLINE

        # --- the node's connection drops: the broker publishes its will (NDEATH), the node goes offline too ----
        node.vanish()
        assert wait_until(lambda: _refreshed(fleet["node"]).offline_since is not None, timeout=60), listener.output()
        assert "Traceback" not in listener.output()
    finally:
        node.close()
        listener.terminate()
        listener.close()


def _refreshed(device):
    device.refresh_from_db()
    return device


async def _in_thread(function, *args):
    from asgiref.sync import sync_to_async

    await sync_to_async(function, thread_sensitive=False)(*args)
