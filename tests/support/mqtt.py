"""The MQTT side of end-to-end tests: the real listener process, and a QoS 1 publisher to a test broker."""

import json
import uuid

import paho.mqtt.client as mqtt

from tests.support.broker import Broker
from tests.support.processes import ManagedProcess, wait_until


def listener(broker_url: str, prefix: str, database_url: str, client_id: str | None = None) -> ManagedProcess:
    """The listener as `make run` starts it; ``start()`` returns once it has subscribed."""
    return ListenerProcess(
        "mqtt_listen",
        "--client-id",
        client_id or f"test-listener-{uuid.uuid4().hex[:8]}",
        "--flush-ms",
        "50",
        database_url=database_url,
        MQTT_URL=broker_url,
        MQTT_TOPIC_PREFIX=prefix,
    )


class ListenerProcess(ManagedProcess):
    def start(self) -> "ListenerProcess":
        super().start()
        subscribed_before = self.output().count("subscribed")
        if not wait_until(lambda: self.output().count("subscribed") > subscribed_before, timeout=20):
            raise AssertionError(f"the listener did not subscribe:\n{self.output()}")
        return self


class Publisher:
    """A QoS 1 MQTT 5 publisher that waits until the broker has every message."""

    def __init__(self, broker: Broker):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.pending = []

    def publish(self, topic: str, payload) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.pending.append(self.client.publish(topic, data, qos=1))

    def flush(self, timeout: float = 30) -> None:
        for info in self.pending:
            info.wait_for_publish(timeout)
        self.pending.clear()

    def close(self) -> None:
        self.flush()
        self.client.loop_stop()
        self.client.disconnect()
