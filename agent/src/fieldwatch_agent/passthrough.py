"""Pass-through sources: local publishers (a PLC, a script, another gateway) hand readings to the agent, which
buffers and forwards them like polled ones, so they get the same store-and-forward without speaking Modbus.

Both acknowledge only after the readings are committed to the buffer: the MQTT one sends its PUBACK after the
commit (paho's manual acks), the HTTP one answers 202 after it. A crash in between makes the publisher resend.
"""

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from fieldwatch_agent.buffer import Buffer, now_millis
from fieldwatch_agent.config import HttpPassThroughConfig, MqttPassThroughConfig
from fieldwatch_agent.wire import PayloadError, readings_from_device_payload, readings_from_ingest_body

log = logging.getLogger(__name__)


class MqttPassThrough:
    """Subscribes to ``topic`` on a local broker with a persistent session, so the broker keeps QoS 1 messages
    while the agent restarts; the device uid is the topic's ``+`` level."""

    def __init__(self, config: MqttPassThroughConfig, buffer: Buffer):
        self.config = config
        self.buffer = buffer
        self.uid_level = config.topic.split("/").index("+")
        url = urlsplit(config.url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 1883
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
            manual_ack=True,
        )
        password = config.password
        if config.password_file:
            with open(config.password_file, encoding="utf-8") as handle:
                password = handle.read().strip()
        if config.username:
            self.client.username_pw_set(config.username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.received = 0
        self.invalid = 0

    def start(self) -> None:
        self.client.connect_async(self.host, self.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("pass-through %s: the local broker refused the login: %s", self.config.name, reason_code)
            return
        client.subscribe(self.config.topic, qos=1)

    def _on_message(self, client, userdata, message):
        uid = message.topic.split("/")[self.uid_level]
        try:
            readings = readings_from_device_payload(json.loads(message.payload), uid, now_millis())
        except (ValueError, PayloadError) as exc:
            # Acknowledged all the same: a resend of the same bytes cannot parse better.
            self.invalid += 1
            log.warning("pass-through %s: dropped a message on %s: %s", self.config.name, message.topic, exc)
            client.ack(message.mid, message.qos)
            return
        self.buffer.append(readings)  # raises on a disk error: no ack, the broker redelivers on reconnect
        self.received += len(readings)
        client.ack(message.mid, message.qos)


class HttpPassThrough:
    """``POST`` (any path) with a body ``/api/v1/ingest`` would take; 202 ``{"buffered": n}`` once committed."""

    def __init__(self, config: HttpPassThroughConfig, buffer: Buffer):
        self.config = config
        host, _, port = config.listen.rpartition(":")
        handler = _handler(buffer, config.max_body_bytes)
        self.server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"http-{config.name}", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(buffer: Buffer, max_body_bytes: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_body_bytes:
                return self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"detail": f"limit {max_body_bytes} bytes"})
            try:
                readings = readings_from_ingest_body(json.loads(self.rfile.read(length)), now_millis())
            except (ValueError, PayloadError) as exc:
                return self._answer(HTTPStatus.BAD_REQUEST, {"detail": str(exc)})
            buffer.append(readings)
            return self._answer(HTTPStatus.ACCEPTED, {"buffered": len(readings)})

        def _answer(self, status: HTTPStatus, document: dict):
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # the base class's signature
            log.debug("pass-through http: " + format, *args)

    return Handler
