"""Line protocol and SenML over MQTT, end to end: the real listener process, a real Mosquitto (project config,
logins only) and PostgreSQL. Detected by content on the ordinary device and gateway topics."""

import json
import time
import uuid

import cbor2
import pytest
from influxdb_client import Point, WritePrecision

from apps.devices.choices import UnknownMetricPolicy
from apps.telemetry.models import DeadLetter, Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.mqtt import Publisher, broker_logins, listener
from tests.support.processes import database_url, wait_until

pytestmark = pytest.mark.e2e

NOW_S = int(time.time()) - 600  # inside retention, never "in the future"


@pytest.fixture
def fleet(transactional_db, site_a):
    heat_pump = DeviceTypeFactory(organization=site_a.organization, unknown_metric_policy=UnknownMetricPolicy.STRICT)
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", unit="°C", min_value=-50, max_value=150)
    MetricDefinitionFactory(device_type=heat_pump, key="cop", unit="", min_value=0.5, max_value=10)
    gateway = GatewayFactory(site=site_a, uid="gw-lp", line_protocol_device_tag="unit")
    return {
        "hp1": DeviceFactory(uid="hp-1", site=site_a, device_type=heat_pump, gateway=gateway),
        "sensor": DeviceFactory(uid="urn:dev:mac:0024befffe804ff1", site=site_a, device_type=heat_pump),
        "gateway": gateway,
    }


def test_line_protocol_and_senml_on_device_and_gateway_topics(broker, fleet):
    prefix = f"fwd{uuid.uuid4().hex[:6]}"
    passwords = broker_logins(broker, prefix, fleet["hp1"], fleet["gateway"])
    process = listener(broker.url, prefix, database_url()).start()
    device = Publisher(broker, "hp-1", passwords["hp-1"])
    gateway = Publisher(broker, "gw-lp", passwords["gw-lp"])
    try:
        gateway_topic = f"{prefix}/gateways/gw-lp/telemetry"
        device_topic = f"{prefix}/devices/hp-1/telemetry"
        # Telegraf's outputs.mqtt with data_format = "influx": the gateway's device tag is "unit" (set above).
        points = [
            Point("heating").tag("unit", "hp-1").tag("host", "box").field("supply_temp", 40.0 + i) for i in range(3)
        ]
        lines = "\n".join(
            p.time((NOW_S + i) * 10**9, WritePrecision.NS).to_line_protocol() for i, p in enumerate(points)
        )
        gateway.publish(gateway_topic, lines.encode())
        gateway.publish(gateway_topic, lines.encode())  # again: duplicates
        gateway.publish(gateway_topic, b'heating,unit=hp-1 supply_temp="hot"\nheating,unit=hp-1 supply_temp')
        # SenML CBOR for the sensor, through the gateway.
        sensor = "urn:dev:mac:0024befffe804ff1:"
        pack = [{-2: sensor, -3: NOW_S, 0: "supply_temp", 1: "Cel", 2: 21.5}, {0: "cop", 2: 3.5}]
        gateway.publish(gateway_topic, cbor2.dumps(pack))
        gateway.publish(gateway_topic, cbor2.dumps([{-2: sensor, 0: "supply_temp", 1: "K", 2: 290}]))
        gateway.flush()
        # SenML JSON on the device's own topic: the topic names the device.
        device.publish(device_topic, json.dumps([{"bn": "hp-1:", "bt": NOW_S + 100, "n": "cop", "v": 4.0}]).encode())
        device.publish(device_topic, json.dumps([{"bn": "hp-1:", "n": "cop", "vs": "x"}]).encode())
        device.publish(device_topic, b"\x81\xa1\x00\xff garbage")
        device.flush()

        expected = 3 + 2 + 1
        assert wait_until(lambda: Reading.objects.count() >= expected and DeadLetter.objects.count() >= 5, timeout=20)
        time.sleep(0.5)  # anything wrongly stored late would show now
        assert process.process.poll() is None, "the listener must stay alive"
    finally:
        device.close()
        gateway.close()
        process.terminate()
        process.close()

    assert Reading.objects.count() == expected
    assert Reading.objects.filter(series__device__uid="hp-1", series__metric_key="supply_temp").count() == 3
    assert sorted(DeadLetter.objects.values_list("reason", flat=True)) == [
        "invalid_syntax",
        "unit_mismatch",
        "unparseable",
        "unsupported_value",
        "unsupported_value",
    ]
