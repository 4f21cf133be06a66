"""Stand-ins for the outside world that notifications reach: a real SMTP server (aiosmtpd) and a real HTTP server
for webhooks, both on free local ports. The notification code talks to them over sockets exactly as in production.
"""

import email
import email.policy
import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from tests.support.ports import free_port


class SmtpSink:
    """An SMTP server that keeps every message it accepts (``messages``: parsed ``EmailMessage`` + envelope)."""

    def __init__(self):
        self.port = free_port()
        self.messages: list[dict] = []
        self._lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self._lock:
            self.messages.append(
                {"at": time.time(), "from": envelope.mail_from, "to": list(envelope.rcpt_tos), "message": message}
            )
        return "250 Message accepted for delivery"

    def start(self) -> "SmtpSink":
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @staticmethod
    def text_of(message) -> str:
        return message.get_body(preferencelist=("plain",)).get_content()


class WebhookReceiver:
    """An HTTP server that verifies Fieldwatch's signature with its own copy of the secret and records each call.

    ``statuses`` scripts the answers (e.g. ``[500, 200]``); once exhausted it answers ``default_status``.
    ``fail_first`` answers 503 to the first that many calls of each delivery (by the payload's ``delivery``).
    """

    def __init__(self, secret: str, statuses: list[int] | None = None, default_status: int = 200, fail_first: int = 0):
        self.secret = secret
        self.statuses = list(statuses or [])
        self.default_status = default_status
        self.fail_first = fail_first
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers.get("X-Fieldwatch-Timestamp", "")
                signature = self.headers.get("X-Fieldwatch-Signature", "")
                expected = hmac.new(receiver.secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
                payload = json.loads(body)
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else receiver.default_status
                    earlier = sum(
                        1 for call in receiver.calls if call["payload"].get("delivery") == payload["delivery"]
                    )
                    if earlier < receiver.fail_first:
                        status = 503
                    receiver.calls.append(
                        {
                            "at": time.time(),
                            "path": self.path,
                            "timestamp": timestamp,
                            "signature_ok": hmac.compare_digest(f"sha256={expected.hexdigest()}", signature),
                            "content_type": self.headers.get("Content-Type"),
                            "payload": payload,
                            "status": status,
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/fieldwatch"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "WebhookReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
