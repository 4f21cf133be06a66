"""The listener's memory is bounded whatever the senders do: with the writer held up, a flood of maximum-size
messages fills a bounded buffer, the listener stops reading from the broker (the broker keeps the rest queued), and
once the writer moves again every reading is stored. Measured on the real listener process's RSS."""

import json
import time
import urllib.request
import uuid

import pytest
from django.conf import settings

from apps.telemetry.models import DeadLetter, Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.memory import RssSampler, rss_bytes
from tests.support.mqtt import ListenerProcess, Publisher, broker_logins
from tests.support.pglock import writer_held
from tests.support.ports import free_port
from tests.support.processes import database_url, wait_until

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
BUFFER_BYTES = 4 * MIB
FLUSH_BYTES = 1 * MIB
FLOOD_MESSAGES = 300  # 75 MiB of payload: far more than the listener may hold
RECORDS, METRICS = 50, 10
# What the listener may grow by while flooded: the buffer, one flush's payloads and their parsed readings, a message
# over each bound, and the allocator's slack. Without the bound it grows by the whole flood (measured: see the note
# in the test).
RSS_GROWTH_BOUND = 32 * MIB


def flood_payload(first_ts: int) -> bytes:
    """A device payload of RECORDS x METRICS readings, padded with JSON whitespace to the maximum MQTT size."""
    records = [
        {"ts": first_ts + i, "values": {f"m{k}": float(i * METRICS + k) for k in range(METRICS)}}
        for i in range(RECORDS)
    ]
    body = json.dumps(records).encode()
    return body[:-1] + b" " * (settings.INGEST_MQTT_MAX_BYTES - len(body)) + b"]"


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.fixture
def device(transactional_db, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    for k in range(METRICS):
        MetricDefinitionFactory(device_type=device_type, key=f"m{k}", min_value=-1e9, max_value=1e9)
    return DeviceFactory(uid="hp-flood", site=site_a, device_type=device_type)


def test_a_flood_of_maximum_size_messages_behind_a_stalled_writer_keeps_memory_bounded_and_loses_nothing(
    broker, device
):
    prefix = f"fwflood{uuid.uuid4().hex[:6]}"
    metrics_port = free_port()
    process = ListenerProcess(
        "mqtt_listen",
        "--client-id",
        f"flood-{uuid.uuid4().hex[:8]}",
        "--metrics-port",
        str(metrics_port),
        database_url=database_url(),
        MQTT_URL=broker.url,
        MQTT_TOPIC_PREFIX=prefix,
        INGEST_BUFFER_BYTES=str(BUFFER_BYTES),
        INGEST_FLUSH_BYTES=str(FLUSH_BYTES),
    )
    passwords = broker_logins(broker, prefix, device)
    process.start()
    publisher = Publisher(broker, device.uid, passwords[device.uid])
    topic = f"{prefix}/devices/{device.uid}/telemetry"
    first_ts = int(time.time() * 1000) - 3_600_000
    per_message = RECORDS * METRICS
    try:
        # Warm up (imports, catalogue, staging table, allocator) with the same messages, then take the baseline.
        for i in range(8):
            publisher.publish(topic, flood_payload(first_ts + i * RECORDS))
        publisher.flush()
        assert wait_until(lambda: Reading.objects.count() == 8 * per_message, timeout=30), process.output()[-3000:]
        baseline = rss_bytes(process.process.pid)

        with RssSampler(process.process.pid) as sampler:
            with writer_held(database_url()):
                for i in range(8, 8 + FLOOD_MESSAGES):
                    publisher.publish(topic, flood_payload(first_ts + i * RECORDS))
                publisher.flush(timeout=120)  # the broker has them all (queued for the listener's session)
                time.sleep(3)  # time for the listener to take in whatever it would
                stalled = Reading.objects.count()
                paused = metric(metrics_port, "fieldwatch_ingest_listener_backpressure_seconds_total")
            total = (8 + FLOOD_MESSAGES) * per_message
            assert wait_until(lambda: Reading.objects.count() == total, timeout=180), process.output()[-3000:]

        growth = sampler.peak - baseline
        print(
            f"flood of {FLOOD_MESSAGES} x {settings.INGEST_MQTT_MAX_BYTES} B: RSS baseline {baseline / MIB:.0f} MiB, "
            f"peak {sampler.peak / MIB:.0f} MiB (+{growth / MIB:.1f} MiB); backpressure {paused:.1f} s"
        )
        assert stalled == 8 * per_message  # the writer really was held
        assert paused > 1, "the listener never stopped reading although its buffer was full"
        assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth / MIB:.1f} MiB"
        assert not DeadLetter.objects.exists()
        assert process.process.poll() is None
        assert process.terminate() == 0
    finally:
        publisher.close()
        process.close()
