"""``mqtt_listen --processes``: one MQTT session, workers behind it (apps.telemetry.ingest.processes).

End to end on the real command, broker and database: every message stored once and acknowledged (a second listener
on the same session is redelivered nothing), a worker killed mid-stream is started again and loses nothing, the
owner's metrics are the sum of its workers', and SIGTERM stops every process. The arrival-order acknowledgement is
tested on the owner itself, with the session's PUBACKs recorded where they would leave for the broker.
"""

import os
import re
import time
import uuid

import pytest

from apps.telemetry.ingest.processes import ListenerProcesses
from apps.telemetry.ingest.topics import sender_key
from apps.telemetry.models import Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.mqtt import ListenerProcess, Publisher, broker_logins
from tests.support.ports import free_port
from tests.support.processes import database_url, wait_until
from tests.support.prometheus import metric_sum

DEVICES = 8
MESSAGES_PER_DEVICE = 250


@pytest.fixture
def devices(transactional_db, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=device_type, key="t", min_value=-1e9, max_value=1e9)
    return [DeviceFactory(uid=f"hp-proc-{i}", site=site_a, device_type=device_type) for i in range(DEVICES)]


def start(broker, prefix: str, client_id: str, metrics_port: int) -> ListenerProcess:
    return ListenerProcess(
        "mqtt_listen",
        "--client-id",
        client_id,
        "--processes",
        "2",
        "--flush-ms",
        "50",
        "--flush-messages",
        "100",  # many small batches: acknowledgements interleave between the workers
        "--metrics-port",
        str(metrics_port),
        database_url=database_url(),
        MQTT_URL=broker.url,
        MQTT_TOPIC_PREFIX=prefix,
    ).start()


def worker_pids(process: ListenerProcess) -> dict[int, int]:
    """Worker index -> pid of the latest start of each, from the owner's log."""
    return {int(i): int(pid) for i, pid in re.findall(r"ingest worker (\d+) started \(pid (\d+)\)", process.output())}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (the owner reaps its workers; a test runner may not reap the owner).
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.e2e
def test_two_workers_store_every_message_once_survive_a_killed_worker_and_acknowledge_everything(broker, devices):
    prefix = f"fwproc{uuid.uuid4().hex[:6]}"
    client_id = f"proc-{uuid.uuid4().hex[:8]}"
    passwords = broker_logins(broker, prefix, *devices)
    port = free_port()
    listener = start(broker, prefix, client_id, port)
    publishers = [Publisher(broker, device.uid, passwords[device.uid]) for device in devices]
    first_ts = int(time.time() * 1000) - 3_600_000
    expected = DEVICES * MESSAGES_PER_DEVICE
    try:
        pids = worker_pids(listener)
        assert sorted(pids) == [0, 1], listener.output()
        for i in range(MESSAGES_PER_DEVICE):
            for device, publisher in zip(devices, publishers, strict=True):
                publisher.publish(f"{prefix}/devices/{device.uid}/telemetry", {"ts": first_ts + i, "t": float(i)})
            if i == MESSAGES_PER_DEVICE // 2:
                os.kill(pids[0], 9)  # mid-stream, with messages of its senders in its pipe and inbox
        for publisher in publishers:
            publisher.flush()

        assert wait_until(lambda: Reading.objects.count() == expected, timeout=60), listener.output()[-3000:]
        assert "ingest worker 0 exited unexpectedly" in listener.output()
        restarted = worker_pids(listener)
        assert restarted[0] != pids[0] and alive(restarted[0]) and restarted[1] == pids[1]

        # The owner's metrics are the workers' together: every reading counted once, stored or duplicate (the killed
        # worker's unreported messages went to its successor again).
        def counted():
            return metric_sum(port, "fieldwatch_ingest_readings_accepted_total") + metric_sum(
                port, "fieldwatch_ingest_readings_duplicate_total"
            )

        assert wait_until(lambda: counted() >= expected, timeout=10), counted()
        assert metric_sum(port, "fieldwatch_ingest_listener_connected") == 1
        assert metric_sum(port, "fieldwatch_ingest_listener_loop_age_seconds") < 5

        assert listener.terminate() == 0
        assert wait_until(lambda: not any(alive(pid) for pid in worker_pids(listener).values()), timeout=10)

        # Everything was acknowledged: the same session, resumed by a new listener, is redelivered nothing.
        second_port = free_port()
        second = start(broker, prefix, client_id, second_port)
        try:
            time.sleep(3)
            assert metric_sum(second_port, "fieldwatch_ingest_messages_received_total") == 0, second.output()
            assert Reading.objects.count() == expected
            assert second.terminate() == 0
        finally:
            second.close()
    finally:
        for publisher in publishers:
            publisher.close()
        listener.close()


class RecordedAcks:
    """Where the owner's PUBACKs would leave for the broker: recorded instead, with the connection they were for."""

    def __init__(self):
        self.sent: list[tuple[int, int]] = []

    def __call__(self, mids, connection):
        self.sent.extend((connection, mid) for mid in mids)


def test_acknowledgements_leave_in_arrival_order_whichever_worker_stores_first():
    owner = ListenerProcesses(
        url="mqtt://127.0.0.1:1", prefix="fw", shared_group=None, client_id="order", processes=2, worker_command=[]
    )
    owner.session.ack_many = acks = RecordedAcks()
    owner.session.connection = 1
    routed = []
    for mid, uid in enumerate(["a", "b", "a", "c", "b", "d", "a", "e"], start=1):
        owner._route(f"fw/devices/{uid}/telemetry", b"{}", mid, 1)
        routed.append(mid)
    owner._route("fw/devices/a/telemetry", b"{}", 0, 0)  # QoS 0: in the order, never acknowledged
    sequences = {worker.index: list(worker.pending) for worker in owner.workers}
    assert all(sequences.values()), sequences  # the senders spread over both workers

    first = next(index for index, held in sequences.items() if 0 in held)  # holds the first message to arrive
    other = 1 - first
    owner.stored(sequences[other])
    assert acks.sent == []  # stored, but behind a message not stored yet

    owner.stored(sequences[first][:1])  # the first message: acknowledged with everything stored behind it
    gap = min(set(sequences[first][1:]) | {len(routed)})
    assert acks.sent == [(1, mid) for mid in routed[:gap]]

    owner.stored(sequences[first][1:])
    assert acks.sent == [(1, mid) for mid in routed]


def test_a_message_of_an_earlier_connection_is_stored_but_not_acknowledged():
    owner = ListenerProcesses(
        url="mqtt://127.0.0.1:1", prefix="fw", shared_group=None, client_id="reconnect", processes=1, worker_command=[]
    )
    owner.session.ack_many = acks = RecordedAcks()
    owner.session.connection = 1
    owner._route("fw/devices/a/telemetry", b"{}", 7, 1)
    owner.session.connection = 2  # reconnected: id 7 may now name another message; its resent copy is acked
    owner._route("fw/devices/a/telemetry", b"{}", 7, 1)
    owner.stored([0, 1])
    # The session filters by connection; the owner hands each id over with the connection it came on.
    assert acks.sent == [(1, 7), (2, 7)]


@pytest.mark.parametrize(
    ("topic", "sender"),
    [
        ("fw/devices/hp-1/telemetry", "hp-1"),
        ("acme/site/fw/gateways/gw-7/attributes", "gw-7"),
        ("spBv1.0/plant/DDATA/edge-3/pump-1", "edge-3"),
        ("spBv1.0/plant/NBIRTH/edge-3", "edge-3"),
        ("spBv1.0/STATE/host", "spBv1.0/STATE/host"),
    ],
)
def test_messages_are_routed_by_their_sender(topic, sender):
    assert sender_key(topic) == sender
