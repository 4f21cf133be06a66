"""End to end over the real listener process, a real Mosquitto (project config, logins only) and PostgreSQL."""

import time
import uuid

import pytest
from rest_framework.test import APIClient
from waffle.models import Flag

from apps.devices.choices import DiscoveryPolicy, UnknownMetricPolicy
from apps.devices.models import Device, DiscoveredDevice
from apps.telemetry.models import DeadLetter, Reading
from apps.users.models import FlagOrganization
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.broker import Broker
from tests.support.mqtt import Publisher, broker_logins, listener
from tests.support.pgcluster import TestCluster
from tests.support.processes import database_url, manage, wait_until

pytestmark = pytest.mark.e2e

EPOCH_MS = int(time.time() * 1000) - 3_600_000  # an hour ago: inside retention, never "in the future"


@pytest.fixture
def fleet(transactional_db, site_a, site_b):
    """A strict heat-pump type, two devices on site A behind a gateway, one device on site B."""
    heat_pump = DeviceTypeFactory(organization=site_a.organization, unknown_metric_policy=UnknownMetricPolicy.STRICT)
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", min_value=-50, max_value=150)
    MetricDefinitionFactory(device_type=heat_pump, key="cop", unit="", min_value=0.5, max_value=10)
    gateway = GatewayFactory(site=site_a, uid="gw-a")
    return {
        "hp1": DeviceFactory(uid="hp-1", site=site_a, device_type=heat_pump, gateway=gateway),
        "hp2": DeviceFactory(uid="hp-2", site=site_a, device_type=heat_pump, gateway=gateway),
        "hpb": DeviceFactory(uid="hp-b", site=site_b, device_type=heat_pump),
        "gateway": gateway,
    }


def test_mixed_stream_stores_exactly_the_valid_readings_and_dead_letters_the_rest(broker, fleet):
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    passwords = broker_logins(broker, prefix, fleet["hp1"], fleet["gateway"])
    process = listener(broker.url, prefix, database_url()).start()
    publisher = Publisher(broker, "hp-1", passwords["hp-1"])
    gateway = Publisher(broker, "gw-a", passwords["gw-a"])
    try:
        device_topic = f"{prefix}/devices/hp-1/telemetry"
        publisher.publish(device_topic, {"ts": EPOCH_MS, "values": {"supply_temp": 45.5, "cop": 3.9}})
        publisher.publish(device_topic, {"ts": EPOCH_MS, "values": {"supply_temp": 45.5, "cop": 3.9}})  # repeat
        publisher.publish(device_topic, {"ts": EPOCH_MS + 1000, "values": {"supply_temp": 46.0, "cop": 3.9e-35}})
        publisher.publish(device_topic, b"\x00not a payload")
        publisher.flush()
        gateway.publish(
            f"{prefix}/gateways/gw-a/telemetry",
            {
                "hp-2": [{"ts": EPOCH_MS + i * 1000, "values": {"supply_temp": 40 + i}} for i in range(3)],
                "hp-b": [{"ts": EPOCH_MS, "values": {"supply_temp": 40}}],  # not on the gateway's site
                # An unknown device reaches ingest only inside a gateway's batch: the broker admits no login for it.
                "nobody": [{"ts": EPOCH_MS, "values": {"supply_temp": 1}}],
            },
        )
        gateway.flush()

        expected_readings = 2 + 1 + 3  # hp-1 first message, hp-1 supply_temp of the third, hp-2 x3
        assert wait_until(lambda: Reading.objects.count() >= expected_readings and DeadLetter.objects.count() >= 4)
        time.sleep(0.5)  # anything wrongly stored late would show now
    finally:
        publisher.close()
        gateway.close()
        process.terminate()
        process.close()

    assert Reading.objects.count() == expected_readings
    reasons = sorted(DeadLetter.objects.values_list("reason", flat=True))
    assert reasons == ["out_of_range", "unknown_device", "unparseable", "wrong_site"]
    garbage = DeadLetter.objects.get(reason="out_of_range")
    assert garbage.device_uid == "hp-1" and "cop" in garbage.detail
    fleet["hp1"].refresh_from_db()
    assert fleet["hp1"].last_seen is not None


def test_listener_killed_mid_stream_loses_and_doubles_nothing(broker, fleet):
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    client_id = f"test-listener-{uuid.uuid4().hex[:8]}"
    passwords = broker_logins(broker, prefix, fleet["hp1"])
    first = listener(broker.url, prefix, database_url(), client_id).start()
    publisher = Publisher(broker, "hp-1", passwords["hp-1"])
    total = 3000
    try:
        for i in range(total):
            publisher.publish(f"{prefix}/devices/hp-1/telemetry", {"ts": EPOCH_MS + i, "values": {"supply_temp": 20}})
            if i == total // 3:
                publisher.flush()
                wait_until(lambda: Reading.objects.exists(), timeout=10)
                first.kill()
        publisher.flush()
        second = listener(broker.url, prefix, database_url(), client_id).start()
        try:
            assert wait_until(lambda: Reading.objects.count() >= total, timeout=60)
            time.sleep(0.5)
        finally:
            assert second.terminate() == 0, second.output()
            second.close()
    finally:
        publisher.close()
        first.close()

    assert Reading.objects.count() == total
    assert Reading.objects.values("ts").distinct().count() == total


def test_sigterm_flushes_acknowledges_and_exits_zero(broker, fleet):
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    passwords = broker_logins(broker, prefix, fleet["hp2"])
    process = listener(broker.url, prefix, database_url()).start()
    publisher = Publisher(broker, "hp-2", passwords["hp-2"])
    try:
        for i in range(200):
            publisher.publish(f"{prefix}/devices/hp-2/telemetry", {"ts": EPOCH_MS + i, "values": {"cop": 4}})
        publisher.flush()
        assert wait_until(lambda: Reading.objects.count() == 200, timeout=20)
        assert process.terminate() == 0, process.output()
    finally:
        publisher.close()
        process.close()


SETUP_FLEET = """
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory, SiteFactory
site = SiteFactory()
heat_pump = DeviceTypeFactory(organization=site.organization)
MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", min_value=-50, max_value=150)
device = DeviceFactory(uid="hp-outage", site=site, device_type=heat_pump)
from apps.devices.broker_auth import mqtt_credential_issue
print(mqtt_credential_issue(device=device)[1])
"""


def test_database_outage_loses_nothing(broker, tmp_path):
    cluster = TestCluster()
    cluster.start()
    cluster.create_database()
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    process = publisher = None
    total = 600

    def stored() -> int:
        import psycopg

        try:
            with psycopg.connect(cluster.url, connect_timeout=2) as conn:
                return conn.execute("SELECT count(*) FROM telemetry_reading").fetchone()[0]
        except psycopg.OperationalError:
            return -1

    try:
        manage("migrate", "--noinput", database_url=cluster.url)
        password = manage("shell", "-c", SETUP_FLEET, database_url=cluster.url).stdout.split()[-1]
        broker.sync(prefix, database_url=cluster.url)
        publisher = Publisher(broker, "hp-outage", password)
        process = listener(broker.url, prefix, cluster.url).start()
        topic = f"{prefix}/devices/hp-outage/telemetry"
        for i in range(total // 3):
            publisher.publish(topic, {"ts": EPOCH_MS + i, "values": {"supply_temp": 21}})
        publisher.flush()
        assert wait_until(lambda: stored() == total // 3, timeout=20)

        cluster.stop()
        for i in range(total // 3, total):
            publisher.publish(topic, {"ts": EPOCH_MS + i, "values": {"supply_temp": 22}})
        publisher.flush()
        time.sleep(2)  # the listener fails its flushes and retries meanwhile
        cluster.start()

        assert wait_until(lambda: stored() == total, timeout=60), process.output()[-3000:]
        assert process.process.poll() is None, "the listener must survive the outage"
    finally:
        if publisher:
            publisher.close()
        if process:
            process.terminate()
            process.close()
        cluster.close()


def test_listener_reconnects_by_itself_after_a_broker_restart(fleet):
    broker = Broker()
    broker.start()
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    password = broker_logins(broker, prefix, fleet["hp1"])["hp-1"]
    process = listener(broker.url, prefix, database_url()).start()
    try:
        publisher = Publisher(broker, "hp-1", password)
        publisher.publish(f"{prefix}/devices/hp-1/telemetry", {"ts": EPOCH_MS, "values": {"cop": 4}})
        publisher.close()
        assert wait_until(lambda: Reading.objects.count() == 1)

        broker.stop()
        time.sleep(1)
        broker.start()
        # The listener re-subscribes on reconnect (Mosquitto 2.0 does not restore shared subscriptions).
        assert wait_until(lambda: process.output().count("subscribed") >= 2, timeout=45), process.output()

        publisher = Publisher(broker, "hp-1", password)
        publisher.publish(f"{prefix}/devices/hp-1/telemetry", {"ts": EPOCH_MS + 1, "values": {"cop": 4}})
        publisher.close()
        assert wait_until(lambda: Reading.objects.count() == 2)
        assert process.process.poll() is None
    finally:
        process.terminate()
        process.close()
        broker.close()


def test_auto_register_stores_a_new_devices_readings_from_its_first_message_and_discover_lists_one_to_adopt(
    broker, fleet, alice
):
    gateway = fleet["gateway"]
    heat_pump = fleet["hp1"].device_type
    gateway.discovery_policy = DiscoveryPolicy.AUTO_REGISTER
    gateway.auto_register_type = heat_pump
    gateway.save()
    FlagOrganization.objects.create(
        flag=Flag.objects.get(name="discovery_auto_register"), organization=heat_pump.organization
    )
    other_gateway = GatewayFactory(site=fleet["hpb"].site, uid="gw-b", discovery_policy=DiscoveryPolicy.DISCOVER)
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    passwords = broker_logins(broker, prefix, gateway, other_gateway)
    process = listener(broker.url, prefix, database_url()).start()
    publishers = {uid: Publisher(broker, uid, passwords[uid]) for uid in ("gw-a", "gw-b")}
    try:
        for i in range(3):
            publishers["gw-a"].publish(
                f"{prefix}/gateways/gw-a/telemetry",
                {"hp-new": [{"ts": EPOCH_MS + i * 1000, "values": {"supply_temp": 50 + i, "undefined": 1}}]},
            )
        publishers["gw-b"].publish(
            f"{prefix}/gateways/gw-b/telemetry", {"hp-seen": [{"ts": EPOCH_MS, "values": {"supply_temp": 1}}]}
        )
        for publisher in publishers.values():
            publisher.flush()
        assert wait_until(lambda: Reading.objects.count() == 3 and DiscoveredDevice.objects.exists())
    finally:
        for publisher in publishers.values():
            publisher.close()
        process.terminate()
        process.close()

    device = Device.objects.get(uid="hp-new")
    assert (device.site, device.device_type, device.gateway) == (gateway.site, heat_pump, gateway)
    assert sorted(Reading.objects.values_list("value", flat=True)) == [50, 51, 52]
    # The strict type refused the undefined metric of each message; nothing else was refused.
    assert sorted(DeadLetter.objects.values_list("reason", "device_uid")) == [
        ("unknown_device", "hp-seen"),
        *[("unknown_metric", "hp-new")] * 3,
    ]
    discovered = DiscoveredDevice.objects.get()
    assert (discovered.uid, discovered.gateway, discovered.message_count) == ("hp-seen", other_gateway, 1)

    # An admin adopts it (the API's adopt replays its dead-lettered readings): stored exactly once, even replayed again.
    admin = APIClient()
    admin.force_login(alice)
    adopted = admin.post(
        f"/api/v1/discovered-devices/{discovered.pk}/adopt", {"device_type": heat_pump.pk}, format="json"
    )
    assert adopted.status_code == 201 and adopted.json()["replay"]["stored"] == 1
    replay = admin.post("/api/v1/dead-letters/replay", {"device": "hp-seen"}, format="json")
    assert replay.json()["stored"] == 1
    assert list(Reading.objects.filter(series__device__uid="hp-seen").values_list("value", flat=True)) == [1.0]
