"""A message that makes ingest raise (a bug, injected by tests/support/instrumented_listener.py) costs nothing but
itself: the listener isolates it by splitting the batch, dead-letters it as internal_error, stores and acknowledges
every other message, stays alive, and does not see the same batch again."""

import time
import uuid

import pytest

from apps.telemetry.choices import RejectReason
from apps.telemetry.models import DeadLetter, Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.mqtt import ListenerProcess, Publisher, broker_logins
from tests.support.processes import database_url, wait_until

pytestmark = pytest.mark.e2e


class PoisonListener(ListenerProcess):
    entry = ("-m", "tests.support.instrumented_listener")


@pytest.fixture
def device(transactional_db, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=device_type, key="t", min_value=-1e9, max_value=1e9)
    return DeviceFactory(uid="hp-poison", site=site_a, device_type=device_type)


def test_one_poison_message_among_a_thousand_costs_only_itself(broker, device):
    prefix = f"fwpoison{uuid.uuid4().hex[:6]}"
    process = PoisonListener(
        "--client-id",
        f"poison-{uuid.uuid4().hex[:8]}",
        "--flush-ms",
        "200",
        database_url=database_url(),
        MQTT_URL=broker.url,
        MQTT_TOPIC_PREFIX=prefix,
        FIELDWATCH_TEST_POISON="1",
    )
    passwords = broker_logins(broker, prefix, device)
    process.start()
    publisher = Publisher(broker, device.uid, passwords[device.uid])
    first_ts = int(time.time() * 1000) - 600_000
    try:
        topic = f"{prefix}/devices/hp-poison/telemetry"
        for i in range(1001):
            values = {"poison": 1} if i == 500 else {"t": float(i)}
            publisher.publish(topic, {"ts": first_ts + i, "values": values})
        publisher.flush()

        assert wait_until(lambda: Reading.objects.count() == 1000, timeout=30), process.output()[-3000:]
        assert wait_until(lambda: DeadLetter.objects.count() == 1, timeout=10)
        letter = DeadLetter.objects.get()
        assert letter.reason == RejectReason.INTERNAL_ERROR
        assert "PoisonError: a record the pipeline cannot handle" in letter.detail  # the exception, by class
        assert b'"poison"' in bytes(letter.payload)

        time.sleep(3)  # acknowledged: nothing comes back, nothing is written twice
        assert (Reading.objects.count(), DeadLetter.objects.count()) == (1000, 1)
        assert process.process.poll() is None, "the listener must stay alive"
        assert process.output().count("dead-lettered as internal_error") == 1
        assert process.terminate() == 0
    finally:
        publisher.close()
        process.close()
