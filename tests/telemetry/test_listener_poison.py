"""A message that makes ingest raise (a bug, injected by tests/support/instrumented_listener.py) costs nothing but
itself: the listener dead-letters it as internal_error (at once when it raises while being prepared; by splitting
the batch until it stands alone when the write raises), stores and acknowledges every other message, stays alive,
and does not see the same batch again."""

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
    MetricDefinitionFactory(device_type=device_type, key="poison_write", min_value=-1e9, max_value=1e9)
    return DeviceFactory(uid="hp-poison", site=site_a, device_type=device_type)


def test_poison_messages_among_a_thousand_cost_only_themselves(broker, device):
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
        poison = {500: {"poison": 1}, 700: {"poison_write": 1.0}}
        for i in range(1002):
            publisher.publish(topic, {"ts": first_ts + i, "values": poison.get(i, {"t": float(i)})})
        publisher.flush()

        assert wait_until(lambda: Reading.objects.count() == 1000, timeout=30), process.output()[-3000:]
        assert wait_until(lambda: DeadLetter.objects.count() == 2, timeout=10)
        letters = {bytes(letter.payload): letter for letter in DeadLetter.objects.all()}
        prepared, written = (next(letters[p] for p in letters if key in p) for key in (b'"poison"', b'"poison_write"'))
        assert {prepared.reason, written.reason} == {RejectReason.INTERNAL_ERROR}
        assert "PoisonError: a record the pipeline cannot handle" in prepared.detail  # the exception, by class
        assert "PoisonError: a reading the writer cannot handle" in written.detail

        time.sleep(3)  # acknowledged: nothing comes back, nothing is written twice
        assert (Reading.objects.count(), DeadLetter.objects.count()) == (1000, 2)
        assert process.process.poll() is None, "the listener must stay alive"
        assert process.output().count("dead-lettered as internal_error") == 2
        assert "splitting it to isolate the cause" in process.output()
        assert process.terminate() == 0
    finally:
        publisher.close()
        process.close()
