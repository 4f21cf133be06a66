"""The listener's container healthcheck (docker/healthcheck.py listener) on the real listener process: healthy while
connected and flushing, unhealthy when cut off from the broker or stuck retrying a flush, healthy again after."""

import subprocess
import sys
import time
import uuid

import pytest

from tests.support.broker import Broker
from tests.support.mqtt import ListenerProcess, Publisher
from tests.support.pgcluster import TestCluster
from tests.support.ports import free_port
from tests.support.processes import REPO_ROOT, database_url, manage, wait_until

pytestmark = pytest.mark.e2e

SETUP = """
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory, SiteFactory
site = SiteFactory()
device_type = DeviceTypeFactory(organization=site.organization)
MetricDefinitionFactory(device_type=device_type, key="t", min_value=-1e9, max_value=1e9)
from apps.devices.broker_auth import mqtt_credential_issue
device = DeviceFactory(uid="hp-health", site=site, device_type=device_type)
print("PASSWORD", mqtt_credential_issue(device=device)[1])
"""


def healthcheck(port: int) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "docker/healthcheck.py", "listener"],
        cwd=REPO_ROOT,
        env={"LISTENER_METRICS_PORT": str(port), "LISTENER_MAX_STALL_SECONDS": "2", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    return result.returncode, result.stderr


def start_listener(broker: Broker, database: str, port: int) -> ListenerProcess:
    process = ListenerProcess(
        "mqtt_listen",
        "--client-id",
        f"health-{uuid.uuid4().hex[:8]}",
        "--flush-ms",
        "50",
        "--metrics-port",
        str(port),
        database_url=database,
        MQTT_URL=broker.url,
        MQTT_TOPIC_PREFIX="fwhealth",
    )
    return process.start()


def test_unhealthy_while_cut_off_from_the_broker_then_healthy_again(transactional_db):
    broker, port = Broker(prefix="fwhealth"), free_port()
    broker.start()
    process = start_listener(broker, database_url(), port)
    try:
        assert wait_until(lambda: healthcheck(port)[0] == 0, timeout=10), healthcheck(port)

        broker.stop()
        assert wait_until(lambda: healthcheck(port)[0] == 1, timeout=10)
        assert "not connected to the broker" in healthcheck(port)[1]

        broker.start()
        assert wait_until(lambda: healthcheck(port)[0] == 0, timeout=40), process.output()[-2000:]
    finally:
        process.close()
        broker.close()


def test_a_listener_with_nothing_to_do_stays_healthy(transactional_db):
    broker, port = Broker(prefix="fwhealth"), free_port()
    broker.start()
    process = start_listener(broker, database_url(), port)
    try:
        assert wait_until(lambda: healthcheck(port)[0] == 0, timeout=10), healthcheck(port)
        time.sleep(4)  # twice the healthcheck's stall limit without a single message

        assert healthcheck(port) == (0, "")
    finally:
        process.close()
        broker.close()


def test_unhealthy_while_a_flush_is_stuck_on_the_database_then_healthy_again():
    broker, port, cluster = Broker(prefix="fwhealth"), free_port(), TestCluster()
    broker.start()
    cluster.start()
    cluster.create_database()
    process = publisher = None
    try:
        manage("migrate", "--noinput", database_url=cluster.url)
        password = manage("shell", "-c", SETUP, database_url=cluster.url).stdout.split("PASSWORD ", 1)[1].strip()
        broker.sync(database_url=cluster.url)
        process = start_listener(broker, cluster.url, port)
        assert wait_until(lambda: healthcheck(port)[0] == 0, timeout=10)

        cluster.stop()
        publisher = Publisher(broker, "hp-health", password)
        publisher.publish("fwhealth/devices/hp-health/telemetry", {"ts": int(time.time() * 1000), "values": {"t": 1}})
        publisher.flush()
        assert wait_until(lambda: healthcheck(port)[0] == 1, timeout=20)
        assert "no progress" in healthcheck(port)[1]

        cluster.start()
        assert wait_until(lambda: healthcheck(port)[0] == 0, timeout=60), process.output()[-2000:]
    finally:
        if publisher:
            publisher.close()
        if process:
            process.close()
        broker.close()
        cluster.close()
