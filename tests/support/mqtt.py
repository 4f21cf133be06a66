"""The MQTT side of end-to-end tests: the real listener process, broker logins, and a QoS 1 publisher logged in as
a device or gateway of the test (the test broker, like production, admits nobody else)."""

import json
import queue
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from apps.devices.broker_auth import mqtt_credential_issue
from apps.devices.models import Device
from tests.support.broker import Broker
from tests.support.processes import ManagedProcess, wait_until


def broker_logins(broker: Broker, prefix: str, *owners) -> dict[str, str]:
    """Issue a broker login for each device or gateway in ``owners``, then sync ``broker`` for topics under
    ``prefix``; the passwords by username (= uid)."""
    passwords = {}
    for owner in owners:
        credential, password = mqtt_credential_issue(**{"device" if isinstance(owner, Device) else "gateway": owner})
        passwords[credential.username] = password
    broker.sync(prefix)
    return passwords


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
    """A QoS 1 MQTT 5 publisher logged in as ``username``, that waits until the broker acknowledged every message
    (a message the ACL refuses is acknowledged too, with reason 0x87, and dropped)."""

    def __init__(self, broker: Broker, username: str, password: str):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        connected = []
        self.client.on_connect = lambda client, userdata, flags, reason, properties: connected.append(reason)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert wait_until(lambda: connected, timeout=5), "no CONNACK"
        assert not connected[0].is_failure, f"the broker refused {username}: {connected[0]}"
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


class RecordingClient:
    """A paho MQTT 5 client that records CONNACK, PUBACK and SUBACK reason codes and received messages."""

    def __init__(self, port: int, username: str | None, password: str | None):
        self.connack = queue.Queue()
        self.pubacks: dict[int, mqtt.ReasonCode] = {}
        self.acked = threading.Condition()
        self.messages: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda client, userdata, flags, reason, properties: self.connack.put(reason)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = lambda client, userdata, mid, reasons, properties: self.subacks.put(reasons)
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.client.on_message = lambda client, userdata, message: self.messages.put((message.topic, message.payload))
        self.client.reconnect_delay_set(60, 60)  # a refused client must not retry during the test
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.reason = self.connack.get(timeout=5)

    def _on_publish(self, client, userdata, mid, reason, properties):
        with self.acked:
            self.pubacks[mid] = reason
            self.acked.notify_all()

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish with QoS 1 and return the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.pubacks, timeout=5), "no PUBACK"
            return self.pubacks[info.mid].value

    def subscribe(self, *filters: str) -> list[int]:
        """Subscribe with QoS 1; the SUBACK reason codes."""
        self.client.subscribe([(topic, SubscribeOptions(qos=1)) for topic in filters])
        return [reason.value for reason in self.subacks.get(timeout=5)]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
