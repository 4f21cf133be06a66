"""Sinks: where buffered readings go, and what the platform's answer means for the buffer.

A sink's ``send`` takes a batch (oldest first) and says, per buffer row, what happened: *delivered* (PUBACK or
202: delete), *refused* (the platform will never take it as sent: move aside, count) or nothing (kept, sent again
later). Anything unclear - a timeout, a dropped connection, a 5xx - keeps the rows: sending twice is safe, losing is
not.
"""

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from fieldwatch_agent.buffer import BufferedReading
from fieldwatch_agent.config import HttpSinkConfig, MqttSinkConfig
from fieldwatch_agent.wire import encode, gateway_document, messages

log = logging.getLogger(__name__)


@dataclass
class SendOutcome:
    delivered: list[int] = field(default_factory=list)
    refused: list[tuple[BufferedReading, str]] = field(default_factory=list)
    refused_values: int = 0  # values refused inside accepted batches (counted only)
    retry_after: float | None = None  # the platform asked for a pause (429/503 Retry-After)
    error: str | None = None  # why the rest was not delivered: the forwarder backs off


class SinkError(Exception):
    pass


# --- MQTT ---------------------------------------------------------------------------------------------------------


class MqttSink:
    """QoS 1 publishes on the gateway's (or device's) topic; a row is delivered when its message's PUBACK came back
    with a success reason code (MQTT 5: an ACL refusal is a PUBACK with 0x87, not silence).

    The buffer is the only queue: paho's in-memory queue is never trusted across a disconnect. When the connection
    drops, the client is discarded with whatever paho still holds, and the next send starts a new one; rows whose
    PUBACK did not arrive are still in the buffer and go again.
    """

    def __init__(self, config: MqttSinkConfig):
        self.config = config
        url = urlsplit(config.url)
        self.host = url.hostname or "127.0.0.1"
        self.tls = url.scheme == "mqtts"
        self.port = url.port or (8883 if self.tls else 1883)
        self.gateway = config.identity == "gateway"
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._acks: dict[int, mqtt.ReasonCode | None] = {}
        self._acked = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._broken = False
        self._connect_result: str | None = None

    # connection ---------------------------------------------------------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        config = self.config
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=config.client_id or f"fieldwatch-agent-{config.uid}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(config.username or config.uid, config.resolved_password())
        if self.tls:
            client.tls_set(ca_certs=config.ca_file)
        client.max_inflight_messages_set(config.inflight_messages)
        # Beyond the in-flight window paho queues in memory (0: no limit of its own); one batch is all it ever holds.
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if client is not self._client:
            return  # a discarded client's late callback
        with self._lock:
            self._connect_result = None if not reason_code.is_failure else str(reason_code)
        if reason_code.is_failure:
            self._broken = True
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if client is not self._client:
            return
        with self._lock:
            self._broken = True
            self._acked.notify_all()
        self._connected.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        if client is not self._client:
            return  # a PUBACK for a discarded session: its rows are resent by the new one
        with self._lock:
            self._acks[mid] = reason_code
            self._acked.notify_all()

    def connect(self, timeout: float = 10) -> None:
        """A fresh session to the broker, or SinkError (refused login, nothing listening, timeout)."""
        self.close()
        self._broken = False
        self._connected.clear()
        self._connect_result = None
        client = self._new_client()
        self._client = client
        try:
            client.connect(self.host, self.port, keepalive=self.config.keepalive_s, clean_start=True)
        except (OSError, ssl.SSLError) as exc:
            self._client = None
            raise SinkError(f"cannot reach the broker at {self.host}:{self.port}: {exc}") from None
        client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise SinkError(f"no CONNACK from {self.host}:{self.port} within {timeout} s")
        if self._connect_result or self._broken:
            reason = self._connect_result or "disconnected"
            self.close()
            raise SinkError(f"the broker refused the login {self.config.username or self.config.uid}: {reason}")

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    # sending ------------------------------------------------------------------------------------------------------

    def send(self, batch: list[BufferedReading]) -> SendOutcome:
        outcome = SendOutcome()
        if self._client is None or self._broken:
            try:
                self.connect()
            except SinkError as exc:
                outcome.error = str(exc)
                return outcome
        config = self.config
        pending: dict[int, tuple[int, ...]] = {}
        for message in messages(
            batch, gateway=self.gateway, per_message=config.readings_per_message, max_bytes=config.max_payload_bytes
        ):
            info = self._client.publish(config.topic, message.payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                outcome.error = f"publish failed: {mqtt.error_string(info.rc)}"
                break
            pending[info.mid] = message.ids
        deadline = time.monotonic() + config.ack_timeout_s
        with self._lock:
            while pending and not self._broken:
                for mid in [mid for mid in pending if mid in self._acks]:
                    reason = self._acks.pop(mid)
                    ids = pending.pop(mid)
                    if reason is None or not reason.is_failure:
                        outcome.delivered.extend(ids)
                    else:
                        # Not taken (e.g. 0x87 not authorized: the ACL does not give this login the topic). Kept:
                        # a fixed ACL delivers them; the bound protects the disk meanwhile.
                        outcome.error = f"the broker refused a message: {reason}"
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0:
                    break
                self._acked.wait(min(remaining, 0.5))
            self._acks.clear()
        if pending:
            outcome.error = outcome.error or (
                "connection lost before the PUBACKs" if self._broken else f"no PUBACK within {config.ack_timeout_s} s"
            )
            self._broken = True  # start over with a new session: paho's copies of these are not ours to track
        return outcome

    def check(self) -> str:
        self.connect()
        self.close()
        return f"MQTT {self.host}:{self.port} accepted the login {self.config.username or self.config.uid}"


# --- HTTP ---------------------------------------------------------------------------------------------------------


class HttpSink:
    """``POST /api/v1/ingest`` with ``X-API-Key``, a gateway payload per request.

    202: every reading of the batch is settled (stored, a duplicate, or refused by validation - which a resend
    cannot change: those are counted). 413: halved and resent. 400 for one reading: refused, moved aside.
    401/403: the key is wrong or revoked: kept until a new key is configured. 429/503: kept, paused per Retry-After.
    """

    def __init__(self, config: HttpSinkConfig):
        self.config = config
        self.key = config.resolved_api_key()
        self.context = ssl.create_default_context(cafile=config.ca_file) if config.url.startswith("https") else None

    def close(self) -> None:
        pass

    def _post(self, body: bytes) -> tuple[int, dict, dict]:
        request = urllib.request.Request(
            self.config.url,
            data=body,
            method="POST",
            headers={"X-API-Key": self.key, "Content-Type": "application/json", "User-Agent": "fieldwatch-agent"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s, context=self.context) as response:
                return response.status, dict(response.headers), _json(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers or {}), _json(exc.read())

    def send(self, batch: list[BufferedReading]) -> SendOutcome:
        outcome = SendOutcome()
        for message in messages(
            batch,
            gateway=True,
            per_message=self.config.readings_per_request,
            max_bytes=self.config.max_body_bytes,
        ):
            if not self._send_chunk(list(message.readings), outcome):
                break
        return outcome

    def _send_chunk(self, chunk: list[BufferedReading], outcome: SendOutcome) -> bool:
        """Send one request's worth; False when the rest of the batch should wait (error or pause)."""
        try:
            status, headers, body = self._post(encode(gateway_document(chunk)))
        except (OSError, urllib.error.URLError) as exc:  # refused, reset, timeout, TLS, DNS
            outcome.error = f"POST {self.config.url}: {exc}"
            return False
        if status == 202:
            outcome.delivered.extend(item.id for item in chunk)
            rejected = int(body.get("rejected", 0) or 0)
            if rejected:
                outcome.refused_values += rejected
                first = (body.get("errors") or [{}])[0]
                log.warning(
                    "the platform refused %d of %d readings' values, e.g. %s: %s",
                    rejected,
                    len(chunk),
                    first.get("reason"),
                    first.get("detail"),
                )
            return True
        reason = f"{status} {body.get('reason', '')}: {body.get('detail', '')}".strip()
        if status in (400, 413) and len(chunk) > 1:
            # Split to isolate: for 413 it is the size; for 400 one reading spoils the body, the rest go through.
            half = len(chunk) // 2
            return self._send_chunk(chunk[:half], outcome) and self._send_chunk(chunk[half:], outcome)
        if status in (400, 413):
            outcome.refused.extend((item, reason) for item in chunk)
            return True
        if status in (429, 503):
            outcome.retry_after = _retry_after(headers, body)
        outcome.error = f"POST {self.config.url}: {reason}"
        return False

    def check(self) -> str:
        status, _, body = self._post(b"[]")  # an empty batch: proves the URL and the key, stores nothing
        if status != 202:
            raise SinkError(f"POST {self.config.url} answered {status}: {body.get('reason')} {body.get('detail')}")
        return f"HTTP {self.config.url} accepted the key"


def _json(data: bytes) -> dict:
    try:
        document = json.loads(data or b"{}")
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _retry_after(headers: dict, body: dict) -> float:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None) or body.get("retry_after")
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 5.0


def make_sink(config: MqttSinkConfig | HttpSinkConfig) -> MqttSink | HttpSink:
    return MqttSink(config) if isinstance(config, MqttSinkConfig) else HttpSink(config)
