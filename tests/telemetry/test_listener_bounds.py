"""The listener's own bounds, on the real MqttListener (no broker needed: deliveries are handed to it the way paho's
network thread hands them): a flush closes at its reading or byte budget, not only at its message count, and a full
buffer makes the network thread wait until the writer takes messages out."""

import datetime
import json
import threading
import time

import pytest

from apps.telemetry.choices import IngestSource
from apps.telemetry.ingest.listener import Delivery, MqttListener
from apps.telemetry.services import IngestMessage
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory

NOW_MS = int(time.time() * 1000) - 60_000


@pytest.fixture
def device(db, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=device_type, key="t", min_value=-1e9, max_value=1e9)
    return DeviceFactory(uid="hp-bounds", site=site_a, device_type=device_type)


def make_listener(**bounds) -> MqttListener:
    options = {"flush_messages": 2000, "flush_interval": 5.0, **bounds}
    return MqttListener(url="mqtt://127.0.0.1:1", prefix="fw", shared_group=None, client_id="bounds", **options)


def hand_over(listener: MqttListener, readings: int, first_ts: int, padding: int = 0) -> None:
    payload = json.dumps([{"ts": first_ts + i, "values": {"t": float(i)}} for i in range(readings)]).encode()
    payload += b" " * padding
    message = IngestMessage(
        IngestSource.MQTT,
        payload,
        datetime.datetime.now(datetime.UTC),
        origin="fw/devices/hp-bounds/telemetry",
        device_uid="hp-bounds",
    )
    assert listener._reserve(len(payload))
    listener.inbox.put(Delivery(1, 1, message, time.time(), 0))


def test_a_flush_closes_at_its_reading_budget_whatever_the_message_count(device):
    listener = make_listener(flush_readings=1000)
    for n in range(10):
        hand_over(listener, 300, NOW_MS + n * 300)

    batch, deliveries = listener._collect()

    assert len(deliveries) == 4  # 1,200 readings: the fourth message crossed the budget, the fifth waits
    assert len(batch.readings) == 1200
    assert listener.inbox.qsize() == 6


def test_a_flush_closes_at_its_byte_budget(device):
    listener = make_listener(flush_bytes=100_000)
    for n in range(10):
        hand_over(listener, 1, NOW_MS + n, padding=30_000)

    batch, deliveries = listener._collect()

    assert len(deliveries) == 4
    assert batch.payload_bytes >= 100_000
    assert listener.inbox.qsize() == 6
    assert listener.inbox_bytes == 6 * len(deliveries[0].message.payload)  # what is left is still accounted for


def test_a_full_buffer_holds_the_network_thread_until_the_writer_takes_a_message(device):
    listener = make_listener(buffer_bytes=50_000)
    hand_over(listener, 1, NOW_MS, padding=60_000)  # an empty buffer always takes one message, even a large one
    waited = threading.Event()

    def network_thread():
        hand_over(listener, 1, NOW_MS + 1)
        waited.set()

    thread = threading.Thread(target=network_thread)
    thread.start()
    assert not waited.wait(0.6), "the second message must wait: the buffer is full"

    listener._take(timeout=1)  # the flushing thread takes the first message out

    assert waited.wait(2)
    thread.join(2)
    assert listener.inbox.qsize() == 1


def test_a_stop_request_releases_a_waiting_network_thread_without_queueing(device):
    listener = make_listener(buffer_bytes=10)
    hand_over(listener, 1, NOW_MS)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(listener._reserve(100)))
    thread.start()
    time.sleep(0.3)

    listener.stop()

    thread.join(2)
    assert outcome == [False]  # not queued: left unacknowledged, so the broker sends it again to the next session
