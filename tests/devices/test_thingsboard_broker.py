"""ThingsBoard firmware against the real broker (project config, with the plugin) and the real listener: it logs in
with its access token as the username and no password, publishes to ``v1/devices/me/telemetry``, and its readings
are stored as its own device's - never as another's, whatever it tries."""

import json
import time
import uuid

import pytest

from apps.devices.models import Device
from apps.devices.services import access_token_issue, access_token_revoke
from apps.telemetry.models import Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.broker import Broker
from tests.support.mqtt import RecordingClient, listener
from tests.support.processes import database_url, wait_until

pytestmark = pytest.mark.e2e

NOT_AUTHORIZED = 0x87
NO_SUBSCRIBERS = 0x10
BAD_LOGIN = {0x86, 0x87}  # bad user name or password / not authorized


@pytest.fixture
def tb_broker():
    broker = Broker(prefix=f"fwtb{uuid.uuid4().hex[:6]}")
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def fleet(transactional_db, site_a, site_b):
    heat_pump = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", min_value=-50, max_value=150)
    gateway = GatewayFactory(site=site_a, uid="gw-tb")
    return {
        "a": DeviceFactory(uid="hp-tb-a", site=site_a, device_type=heat_pump),
        "b": DeviceFactory(uid="hp-tb-b", site=site_a, device_type=heat_pump),
        "elsewhere": DeviceFactory(uid="hp-tb-other-site", site=site_b, device_type=heat_pump),
        "gateway": gateway,
    }


@pytest.fixture
def running(tb_broker, fleet):
    """Tokens for device A and the gateway, rendered into the broker, and the listener on the broker's prefix."""
    tokens = {"a": access_token_issue(device=fleet["a"])[1], "gateway": access_token_issue(gateway=fleet["gateway"])[1]}
    tb_broker.sync()
    process = listener(tb_broker.url, tb_broker.prefix, database_url()).start()
    yield tokens
    process.terminate()
    process.close()


def stored(device: Device) -> list[float]:
    return sorted(Reading.objects.filter(series__device=device).values_list("value", flat=True))


def payload(value: float, ts_ms: int | None = None) -> bytes:
    return json.dumps({"ts": ts_ms or int(time.time() * 1000), "values": {"supply_temp": value}}).encode()


def test_firmware_with_its_token_as_username_writes_as_its_own_device_and_only_as_it(tb_broker, fleet, running):
    firmware = RecordingClient(tb_broker.port, running["a"], None)
    try:
        assert not firmware.reason.is_failure
        assert firmware.publish("v1/devices/me/telemetry", payload(41.5)) == 0
        assert wait_until(lambda: stored(fleet["a"]) == [41.5], timeout=10)

        # Everything else is refused: another device's topics, the gateway API, anything at all.
        for topic in (
            f"{tb_broker.prefix}/devices/{fleet['b'].uid}/telemetry",
            f"{tb_broker.prefix}/devices/{fleet['a'].uid}/telemetry",
            "v1/gateway/telemetry",
            "v1/devices/hp-tb-b/telemetry",
            "anything",
        ):
            assert firmware.publish(topic, payload(99)) == NOT_AUTHORIZED, topic
        # Subscribing to its RPC topics is granted (firmware gives up otherwise) but nothing arrives.
        assert firmware.subscribe("v1/devices/me/rpc/request/+") == [1]
        time.sleep(1)
        assert stored(fleet["a"]) == [41.5] and stored(fleet["b"]) == []
    finally:
        firmware.close()


def test_unknown_tokens_and_tokens_with_a_password_are_refused(tb_broker, fleet, running):
    for username, password in (("fwa_00000000_unknown", None), (running["a"], "a password"), ("me", None)):
        client = RecordingClient(tb_broker.port, username, password)
        try:
            assert client.reason.value in BAD_LOGIN, username
        finally:
            client.close()


def test_a_revoked_token_can_publish_nothing_after_the_next_sync(tb_broker, fleet, running):
    firmware = RecordingClient(tb_broker.port, running["a"], None)
    try:
        assert firmware.publish("v1/devices/me/telemetry", payload(1)) == 0
        access_token_revoke(token=fleet["a"].access_tokens.get())
        tb_broker.sync()

        # On reload Mosquitto re-checks connected clients (through the plugin too): the connection is closed.
        assert firmware.disconnected.wait(5)
        again = RecordingClient(tb_broker.port, running["a"], None)
        assert again.reason.value in BAD_LOGIN
        again.close()
        assert wait_until(lambda: stored(fleet["a"]) == [1.0], timeout=10)
    finally:
        firmware.close()


def test_a_gateway_token_speaks_thingsboard_s_gateway_api_for_the_devices_of_its_site(tb_broker, fleet, running):
    gateway = RecordingClient(tb_broker.port, running["gateway"], None)
    now = int(time.time() * 1000)
    try:
        body = {
            "hp-tb-a": [{"ts": now, "values": {"supply_temp": 10}}],
            "hp-tb-b": [{"ts": now, "values": {"supply_temp": 20}}],
            "hp-tb-other-site": [{"ts": now, "values": {"supply_temp": 30}}],
        }
        # Accepted (0x10: no subscriber has it, which is right: connect notices are not stored).
        assert gateway.publish("v1/gateway/connect", b'{"device": "hp-tb-a"}') == NO_SUBSCRIBERS
        assert gateway.publish("v1/gateway/telemetry", json.dumps(body).encode()) == 0
        assert gateway.publish("v1/gateway/attributes", b'{"hp-tb-b": {"firmware": "2.0"}}') == 0
        assert gateway.publish("v1/devices/me/telemetry", payload(5)) == NOT_AUTHORIZED  # a device topic

        assert wait_until(lambda: (stored(fleet["a"]), stored(fleet["b"])) == ([10.0], [20.0]), timeout=10)
        assert wait_until(
            lambda: Device.objects.get(pk=fleet["b"].pk).metadata.get("client_attributes") == {"firmware": "2.0"}
        )
        assert stored(fleet["elsewhere"]) == []  # another site's device: refused as wrong_site
    finally:
        gateway.close()


def test_device_attributes_are_kept_on_the_device(tb_broker, fleet, running):
    firmware = RecordingClient(tb_broker.port, running["a"], None)
    try:
        assert firmware.publish("v1/devices/me/attributes", b'{"firmware": "1.2.0", "model": "X"}') == 0
        assert wait_until(
            lambda: Device.objects.get(pk=fleet["a"].pk).metadata.get("client_attributes")
            == {"firmware": "1.2.0", "model": "X"},
            timeout=10,
        )
        assert stored(fleet["a"]) == []
    finally:
        firmware.close()
