"""The listener's MQTT client (``apps.core.mqtt.StreamingClient``) against a real Mosquitto with the project config:
it splits the socket's byte stream into packets itself, so every message must arrive whole and in order whatever
its size or MQTT 5 properties, and its bulk acknowledgements must count as acknowledgements to the broker."""

import queue
import threading
import uuid

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from apps.core.mqtt import StreamingClient, listener_broker_address, mqtt_client
from tests.support.broker import Broker
from tests.support.mqtt import Publisher

pytestmark = pytest.mark.e2e

LOAD_GENERATOR = ("streaming-load", "streaming-load-password")


@pytest.fixture
def broker():
    broker = Broker(prefix=f"fws{uuid.uuid4().hex[:6]}", load_generators=dict([LOAD_GENERATOR]))
    broker.start()
    yield broker
    broker.close()


class Receiver:
    """A StreamingClient on a persistent session, subscribed to every device topic, recording what it is handed."""

    def __init__(self, broker: Broker, client_id: str, keepalive: int = 60):
        self.received: queue.Queue = queue.Queue()
        subscribed = threading.Event()
        self.client = mqtt_client(
            listener_broker_address(broker.url), client_class=StreamingClient, client_id=client_id, manual_ack=True
        )
        self.client.on_publish_received = lambda topic, payload, mid, qos: self.received.put((topic, payload, mid, qos))
        self.client.on_connect = lambda client, *args: client.subscribe(
            f"{broker.prefix}/devices/+/telemetry", options=SubscribeOptions(qos=1)
        )
        self.client.on_subscribe = lambda *args: subscribed.set()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 300
        self.client.connect("127.0.0.1", broker.port, keepalive=keepalive, clean_start=False, properties=properties)
        self.client.loop_start()
        assert subscribed.wait(10), "no SUBACK"

    def take(self, count: int) -> list[tuple[str, bytes, int, int]]:
        return [self.received.get(timeout=30) for _ in range(count)]

    def barrier(self) -> None:
        """Return once the broker has answered a SUBSCRIBE sent after everything queued before it."""
        answered = threading.Event()
        self.client.on_subscribe = lambda *args: answered.set()
        self.client.subscribe(f"barrier/{uuid.uuid4().hex}", qos=0)
        assert answered.wait(10), "no SUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_every_message_arrives_whole_and_in_order_whatever_its_size_and_properties(broker):
    receiver = Receiver(broker, "streaming-order")
    publisher = Publisher(broker, *LOAD_GENERATOR)
    # Empty, tiny, typical and near the 256 KiB limit (larger than one read of the socket), some with properties.
    sizes = [0, 1, 7, 127, 128, 16_383, 16_384, 200, 250_000, 3, 100_000, 64]
    sent = []
    try:
        for n in range(240):
            topic = f"{broker.prefix}/devices/dev-{n % 7}/telemetry"
            payload = bytes([n % 251]) * sizes[n % len(sizes)]
            properties = None
            if n % 3 == 0:
                properties = Properties(PacketTypes.PUBLISH)
                properties.UserProperty = [("origin", "x" * (n % 200))]
                properties.ContentType = "application/json"
            publisher.client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(30)
            sent.append((topic, payload))

        received = receiver.take(len(sent))

        assert [(topic, payload) for topic, payload, _, _ in received] == sent
        assert {qos for _, _, _, qos in received} == {1}
        assert receiver.received.empty()
    finally:
        publisher.client.loop_stop()
        publisher.client.disconnect()
        receiver.close()


def test_messages_acknowledged_in_bulk_are_not_delivered_again_the_rest_are(broker):
    receiver = Receiver(broker, "streaming-acks")
    publisher = Publisher(broker, *LOAD_GENERATOR)
    for n in range(50):
        publisher.publish(f"{broker.prefix}/devices/dev-1/telemetry", f"message {n}".encode())
    publisher.close()
    first = receiver.take(50)

    receiver.client.ack_many(mid for _, _, mid, _ in first[:30])
    # A broker handles a connection's packets in order, so once it answers a SUBSCRIBE sent after the acknowledgements
    # it has taken them. Without that barrier, disconnect() and loop_stop() could close the socket before paho's
    # network thread had written them all (paho promises no flush on loop_stop), and the broker redelivered
    # acknowledged messages: duplicates, which ingest absorbs, but not what this test is about.
    receiver.barrier()
    receiver.close()
    again = Receiver(broker, "streaming-acks")
    try:
        redelivered = again.take(20)

        assert [payload for _, payload, _, _ in redelivered] == [f"message {n}".encode() for n in range(30, 50)]
        with pytest.raises(queue.Empty):
            again.received.get(timeout=1.5)
    finally:
        again.close()


def test_paho_handles_everything_but_publish_packets(broker):
    """CONNACK, SUBACK, PINGRESP and PUBACK (of what the client itself publishes) still reach paho's own handling."""
    receiver = Receiver(broker, "streaming-control", keepalive=1)
    disconnected = threading.Event()
    receiver.client.on_disconnect = lambda *args: disconnected.set()
    published = threading.Event()
    receiver.client.on_publish = lambda *args: published.set()
    try:
        # Keep-alive: paho pings every second and drops the connection when no PINGRESP comes back in time.
        assert not disconnected.wait(4)
        assert receiver.client.is_connected()
        assert (
            receiver.client.publish(f"{broker.prefix}/devices/dev-1/telemetry", b"x", qos=1).rc == mqtt.MQTT_ERR_SUCCESS
        )
        # The listener's login may not publish there: the broker still answers PUBACK (0x87), which paho handles.
        assert published.wait(10)
        assert receiver.client.is_connected()
    finally:
        receiver.close()
