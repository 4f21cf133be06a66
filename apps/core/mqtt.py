"""The broker as every Fieldwatch process reaches it: one reading of ``MQTT_URL``, one way to make a client.

``mqtt://user:password@host:port`` (plain, port 1883 by default) or ``mqtts://`` / ``ssl://`` (TLS with the
system's CA bundle, port 8883 by default). The listener, the simulator and the doctor's probe all connect through
``mqtt_client``, so a credential or TLS setting means the same thing to each of them. The broker admits no
anonymous client: the listener and the doctor log in as the listener (``listener_broker_address``), the simulator
as each device and gateway it plays.
"""

import dataclasses
import logging
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from django.conf import settings
from paho.mqtt.enums import MQTTErrorCode

logger = logging.getLogger(__name__)

TLS_SCHEMES = frozenset({"mqtts", "ssl"})


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:  # for logs and messages: never the password
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def broker_address(url: str | None = None) -> BrokerAddress:
    """``url`` (default ``settings.MQTT_URL``) as host, port, TLS flag and credentials (percent-decoded)."""
    parsed = urlparse(url if url is not None else settings.MQTT_URL)
    tls = parsed.scheme in TLS_SCHEMES
    return BrokerAddress(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password is not None else None,
    )


def listener_broker_address(url: str | None = None) -> BrokerAddress:
    """``broker_address(url)`` with the listener's login (``MQTT_LISTENER_USERNAME``/``_PASSWORD``) unless the URL
    carries credentials of its own."""
    address = broker_address(url)
    if address.username or not settings.MQTT_LISTENER_USERNAME:
        return address
    return dataclasses.replace(
        address, username=settings.MQTT_LISTENER_USERNAME, password=settings.MQTT_LISTENER_PASSWORD
    )


def mqtt_client(address: BrokerAddress, *, client_class: type[mqtt.Client] = mqtt.Client, **client_options):
    """A paho MQTT 5 client (callback API 2) with ``address``'s credentials and TLS applied; not yet connected.
    ``client_class``: paho's, or ``StreamingClient`` for a process that receives at ingest rates."""
    client = client_class(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, **client_options)
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    return client


# ---------------------------------------------------------------------------------------------------------------------
# Receiving at ingest rates
# ---------------------------------------------------------------------------------------------------------------------

# paho's PUBLISH and PUBACK packet types (the first byte's high nibble).
_PUBLISH = 0x30
_PUBACK = 0x40
_PUBACK_PACKET = struct.Struct("!BBH")


class StreamingClient(mqtt.Client):
    """paho's client with a receive path for thousands of messages a second, and acknowledgements in bulk.

    Profiled at ingest rates, paho spends most of its network thread per message: one ``select`` and three ``recv``
    calls per packet, an ``MQTTMessage``, an MQTT 5 ``Properties`` object parsed and cleared, the topic matcher,
    and a socket-pair write per acknowledgement. This client reads the socket in large chunks, splits out every
    complete packet, and hands each QoS 0/1 PUBLISH to ``on_publish_received(topic, payload, mid, qos)`` directly
    (its properties skipped: the listener uses none, and advertises no topic aliases). Every other packet goes
    through paho's own handling unchanged, so connecting, subscribing, keep-alive and reconnecting stay paho's.
    ``ack_many`` queues the PUBACKs of a batch as one write.

    It overrides paho's private ``_packet_read`` (paho-mqtt is pinned, and the listener's end-to-end tests run
    through this path), and the chunk it reads is at most ``RECEIVE_BYTES`` beyond what the caller has taken.
    """

    RECEIVE_BYTES = 256 * 1024

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.on_publish_received: Callable[[str, bytes, int, int], None] | None = None
        # Called after each chunk's packets were handled: where a receiver that buffers per message writes them out.
        self.on_packets_handled: Callable[[], None] | None = None
        self._received = bytearray()
        self._received_on = None  # the socket ``_received`` came from: a new connection starts empty

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK each QoS 1 message id, in order, written as one packet sequence (the MQTT stream is packets back to
        back, so the broker reads them as separate acknowledgements)."""
        packets = b"".join(_PUBACK_PACKET.pack(_PUBACK, 2, mid) for mid in mids)
        if packets:
            self._packet_queue(_PUBACK, packets, 0, 1)

    def _packet_read(self) -> MQTTErrorCode:
        sock = self._sock
        if sock is not self._received_on:
            self._received_on = sock
            self._received = bytearray()
        try:
            data = self._sock_recv(self.RECEIVE_BYTES)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as error:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", error)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        with self._msgtime_mutex:
            self._last_msg_in = mqtt.time_func()
        received = self._received
        received += data
        position, result = self._packets_handle(sock, received)
        del received[:position]
        if self.on_packets_handled is not None:
            self.on_packets_handled()
        return result

    def _packets_handle(self, sock, received: bytearray) -> tuple[int, MQTTErrorCode]:
        """Handle every complete packet in ``received``; return where the first incomplete one starts."""
        position, size = 0, len(received)
        while size - position >= 2:
            header = received[position]
            length, multiplier, cursor = 0, 1, position + 1
            while True:
                if cursor >= size:
                    return position, MQTTErrorCode.MQTT_ERR_SUCCESS
                byte = received[cursor]
                cursor += 1
                length += (byte & 127) * multiplier
                if not byte & 128:
                    break
                multiplier *= 128
                if cursor - position > 4:  # a remaining length has at most four bytes
                    return position, MQTTErrorCode.MQTT_ERR_PROTOCOL
            end = cursor + length
            if end > size:
                return position, MQTTErrorCode.MQTT_ERR_SUCCESS
            body = bytes(received[cursor:end])
            position = end
            if header & 0xF0 == _PUBLISH and (header >> 1) & 3 < 2 and self.on_publish_received is not None:
                result = self._publish_handle(header, body)
            else:
                result = self._paho_packet_handle(header, length, body)
            if result or self._sock is not sock:  # an error, or paho closed the connection: the rest is void
                return size, result
        return position, MQTTErrorCode.MQTT_ERR_SUCCESS

    def _publish_handle(self, header: int, body: bytes) -> MQTTErrorCode:
        try:
            topic, payload, mid = self._publish_parse(header, body)
        except IndexError:  # a packet shorter than its own fields say
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        with self._in_callback_mutex:
            try:
                self.on_publish_received(topic, payload, mid, (header >> 1) & 3)
            except Exception:
                logger.exception("the message callback raised on %s", topic)
                if not self.suppress_exceptions:
                    raise
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _publish_parse(self, header: int, body: bytes) -> tuple[str, bytes, int]:
        """A PUBLISH packet's topic, payload and packet id (0 for QoS 0)."""
        qos = (header >> 1) & 3
        if len(body) < 2:
            raise IndexError("no topic length")
        topic_end = 2 + int.from_bytes(body[:2], "big")
        if topic_end > len(body):
            raise IndexError("topic past the end of the packet")
        # Mosquitto refuses invalid UTF-8 topics; should one come anyway, it reaches ingest as an unknown topic.
        topic = body[2:topic_end].decode("utf-8", "replace")
        position = topic_end
        mid = 0
        if qos:
            if len(body) < position + 2:
                raise IndexError("no packet id")
            mid = int.from_bytes(body[position : position + 2], "big")
            position += 2
        if self._protocol == mqtt.MQTTv5:
            properties_length, multiplier = 0, 1
            while True:
                byte = body[position]
                position += 1
                properties_length += (byte & 127) * multiplier
                if not byte & 128:
                    break
                multiplier *= 128
            position += properties_length
        if position > len(body):
            raise IndexError("properties past the end of the packet")
        return topic, body[position:], mid

    def _paho_packet_handle(self, header: int, length: int, body: bytes) -> MQTTErrorCode:
        remaining = []
        rest = length
        while True:
            byte, rest = rest % 128, rest // 128
            remaining.append(byte | (128 if rest else 0))
            if not rest:
                break
        self._in_packet = {
            "command": header,
            "have_remaining": 1,
            "remaining_count": remaining,
            "remaining_mult": 128 ** len(remaining),
            "remaining_length": length,
            "packet": bytearray(body),
            "to_process": 0,
            "pos": 0,
        }
        try:
            return self._packet_handle()
        finally:
            self._in_packet = {
                "command": 0,
                "have_remaining": 0,
                "remaining_count": [],
                "remaining_mult": 1,
                "remaining_length": 0,
                "packet": bytearray(b""),
                "to_process": 0,
                "pos": 0,
            }
