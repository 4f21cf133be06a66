"""A Sparkplug B edge node for tests: payloads built by pysparkplug (a maintained implementation, so they are not
our own protobuf module talking to itself), published through paho as the gateway's broker login, with its NDEATH as
the MQTT will and a subscription to its own NCMD, as a real edge node has."""

import time

import paho.mqtt.client as mqtt
import pysparkplug as spb

from tests.support.processes import wait_until

BD_SEQ = "bdSeq"


def metric(name: str | None, datatype: spb.DataType, value, *, alias: int | None = None, ts: int | None = None):
    return spb.Metric(
        timestamp=ts or spb.get_current_timestamp(), name=name, datatype=datatype, value=value, alias=alias
    )


class EdgeNode:
    """``group_id``/``edge_node_id`` logged in as the gateway ``edge_node_id``; ``seq`` counts as the spec says
    (NBIRTH starts at 0, every later message but NDEATH adds one, modulo 256)."""

    def __init__(self, port: int, group_id: str, edge_node_id: str, password: str, *, bd_seq: int = 0):
        self.group_id, self.edge_node_id = group_id, edge_node_id
        self.bd_seq = bd_seq
        self.seq = 0
        self.commands: list[spb.NCmd] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(edge_node_id, password)
        self.client.will_set(self.topic("NDEATH"), self._death(), qos=1)
        connected, subscribed = [], []
        self.client.on_connect = lambda client, userdata, flags, reason, properties: connected.append(reason)
        self.client.on_subscribe = lambda client, userdata, mid, reasons, properties: subscribed.extend(reasons)
        self.client.on_message = lambda client, userdata, message: self.commands.append(
            spb.NCmd.decode(message.payload)
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert wait_until(lambda: connected, timeout=5), "no CONNACK"
        assert not connected[0].is_failure, f"the broker refused {edge_node_id}: {connected[0]}"
        self.client.subscribe(self.topic("NCMD"), qos=1)
        assert wait_until(lambda: subscribed, timeout=5), "no SUBACK"

    def topic(self, kind: str, device_id: str = "") -> str:
        return f"spBv1.0/{self.group_id}/{kind}/{self.edge_node_id}" + (f"/{device_id}" if device_id else "")

    def _death(self) -> bytes:
        return spb.NDeath(timestamp=None, bd_seq_metric=metric(BD_SEQ, spb.DataType.INT64, self.bd_seq)).encode()

    def _publish(self, topic: str, payload: bytes) -> None:
        # QoS 1, where the spec has QoS 0 for all but deaths: the test must know the broker took each message.
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), f"not acknowledged: {topic}"

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def nbirth(self, *metrics) -> None:
        self.seq = 0
        bd_seq = metric(BD_SEQ, spb.DataType.INT64, self.bd_seq)
        rebirth = metric("Node Control/Rebirth", spb.DataType.BOOLEAN, False)
        payload = spb.NBirth(timestamp=spb.get_current_timestamp(), seq=0, metrics=(bd_seq, rebirth, *metrics))
        self._publish(self.topic("NBIRTH"), payload.encode())

    def dbirth(self, device_id: str, *metrics) -> None:
        payload = spb.DBirth(timestamp=spb.get_current_timestamp(), seq=self._next_seq(), metrics=metrics)
        self._publish(self.topic("DBIRTH", device_id), payload.encode())

    def ddata(self, device_id: str, *metrics) -> None:
        payload = spb.DData(timestamp=spb.get_current_timestamp(), seq=self._next_seq(), metrics=metrics)
        self._publish(self.topic("DDATA", device_id), payload.encode())

    def ndata(self, *metrics) -> None:
        payload = spb.NData(timestamp=spb.get_current_timestamp(), seq=self._next_seq(), metrics=metrics)
        self._publish(self.topic("NDATA"), payload.encode())

    def ddeath(self, device_id: str) -> None:
        payload = spb.DDeath(timestamp=spb.get_current_timestamp(), seq=self._next_seq())
        self._publish(self.topic("DDEATH", device_id), payload.encode())

    def rebirth_requested(self, timeout: float = 10) -> bool:
        def asked():
            return any(
                m.name == "Node Control/Rebirth" and m.value is True
                for command in self.commands
                for m in command.metrics
            )

        return wait_until(asked, timeout=timeout)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def vanish(self) -> None:
        """Drop the connection without DISCONNECT (a power cut): the broker publishes the will, our NDEATH."""
        self.client.loop_stop()
        self.client.socket().close()
        time.sleep(0.1)
