"""Drill: the listener SIGKILLed while the writer is slower than the stream (issue 12).

The writer is held (another session locks telemetry_reading, tests/support/pglock.py) while a device streams QoS 1
messages far larger in total than the listener's bounded buffer: the listener fills its buffer, stops reading from
the broker, and is SIGKILLed in that state, holding a batch it could not write and a buffer of messages it had not
acknowledged. The lock is released, the listener restarted under the same client id (same broker session), and every
reading the broker acknowledged to the publisher must be in PostgreSQL: counted rows, not a log line.
"""

import json
import time
import uuid

import pytest

from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.drills.conftest import stored
from tests.support.mqtt import ListenerProcess, Publisher, broker_logins
from tests.support.pglock import WriterHold
from tests.support.ports import free_port
from tests.support.processes import database_url, wait_until
from tests.support.prometheus import metric_sum

pytestmark = pytest.mark.e2e

KIB = 1024
BUFFER_BYTES = 256 * KIB
FLUSH_BYTES = 64 * KIB
MESSAGES = 200
RECORDS, METRICS = 20, 5  # 100 readings per message
PAYLOAD_BYTES = 16 * KIB  # padded: 200 x 16 KiB = 3.2 MiB streamed, over 12 times the buffer


def payload(first_ts: int) -> bytes:
    records = [{"ts": first_ts + i, "values": {f"m{k}": float(i + k) for k in range(METRICS)}} for i in range(RECORDS)]
    body = json.dumps(records).encode()
    return body[:-1] + b" " * (PAYLOAD_BYTES - len(body)) + b"]"


@pytest.fixture
def device(transactional_db, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    for k in range(METRICS):
        MetricDefinitionFactory(device_type=device_type, key=f"m{k}", min_value=-1e9, max_value=1e9)
    return DeviceFactory(uid="hp-kill-bp", site=site_a, device_type=device_type)


def test_listener_sigkilled_while_its_writer_is_held_and_its_buffer_full_loses_nothing(own_broker, device):
    metrics_port = free_port()
    client_id = f"drill-bp-{uuid.uuid4().hex[:8]}"

    def listener() -> ListenerProcess:
        return ListenerProcess(
            "mqtt_listen",
            "--client-id",
            client_id,
            "--flush-ms",
            "50",
            "--metrics-port",
            str(metrics_port),
            database_url=database_url(),
            MQTT_URL=own_broker.url,
            MQTT_TOPIC_PREFIX=own_broker.prefix,
            INGEST_BUFFER_BYTES=str(BUFFER_BYTES),
            INGEST_FLUSH_BYTES=str(FLUSH_BYTES),
        )

    passwords = broker_logins(own_broker, own_broker.prefix, device)
    first = listener().start()
    second = None
    publisher = Publisher(own_broker, device.uid, passwords[device.uid])
    topic = f"{own_broker.prefix}/devices/{device.uid}/telemetry"
    first_ts = int(time.time() * 1000) - 3_600_000
    last_ts = first_ts + MESSAGES * RECORDS - 1
    total = MESSAGES * RECORDS * METRICS
    hold = None
    try:
        publisher.publish(topic, payload(first_ts))  # warm-up: connected, catalogue loaded, one flush done
        publisher.flush()
        assert wait_until(lambda: stored(database_url(), first_ts, last_ts) == RECORDS * METRICS, timeout=20)

        hold = WriterHold(database_url())
        for i in range(1, MESSAGES):
            publisher.publish(topic, payload(first_ts + i * RECORDS))
        publisher.flush(timeout=60)  # the broker acknowledged every message: from here on, it is the platform's
        # The listener took what its buffer holds and stopped reading: backpressure seconds count up while it waits.
        assert wait_until(
            lambda: metric_sum(metrics_port, "fieldwatch_ingest_listener_backpressure_seconds_total") > 0.5, timeout=20
        ), first.output()[-3000:]
        buffered = metric_sum(metrics_port, "fieldwatch_ingest_listener_buffer_bytes")
        assert stored(database_url(), first_ts, last_ts) == RECORDS * METRICS  # the writer really is held

        first.kill()
        hold.release()
        second = listener().start()
        assert wait_until(lambda: stored(database_url(), first_ts, last_ts) == total, timeout=60), (
            f"stored {stored(database_url(), first_ts, last_ts)} of {total}\n{second.output()[-3000:]}"
        )
        rows = stored(database_url(), first_ts, last_ts)
        duplicates = metric_sum(metrics_port, "fieldwatch_ingest_readings_duplicate_total")
        print(
            f"\nlistener kill under backpressure: sent {total} readings in {MESSAGES} messages, stored {rows}, "
            f"duplicates after restart {duplicates:.0f}; buffer at kill {buffered / KIB:.0f} KiB "
            f"(bound {BUFFER_BYTES // KIB} KiB)"
        )
        assert rows == total
        assert buffered <= BUFFER_BYTES + PAYLOAD_BYTES
        assert second.terminate() == 0
    finally:
        if hold is not None:
            hold.release()
        publisher.close()
        first.close()
        if second is not None:
            second.close()
