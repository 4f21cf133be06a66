"""The MQTT side of end-to-end tests: the real listener process, broker logins, and a QoS 1 publisher logged in as
a device or gateway of the test (the test broker, like production, admits nobody else)."""

import json
import uuid

import paho.mqtt.client as mqtt

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
