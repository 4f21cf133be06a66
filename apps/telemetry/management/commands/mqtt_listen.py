"""``manage.py mqtt_listen``: the MQTT ingest listener (a thin command over apps.telemetry.ingest.listener)."""

import os
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client import start_http_server

from apps.telemetry.ingest.listener import ClientIdInUse, MqttListener, client_id_claim, default_client_id


class Command(BaseCommand):
    # URL and admin checks say nothing about ingest and cost start-up time; `migrate` and the web process run them.
    requires_system_checks = []
    help = "Subscribe to device and gateway telemetry topics and store readings (at-least-once, batched)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--client-id", default=None, help="MQTT client id; stable so the session survives restarts."
        )
        parser.add_argument(
            "--group", default=settings.MQTT_SHARED_GROUP, help="Shared subscription group ('' for none)."
        )
        parser.add_argument("--flush-messages", type=int, default=settings.INGEST_FLUSH_MESSAGES)
        parser.add_argument("--flush-readings", type=int, default=settings.INGEST_FLUSH_READINGS)
        parser.add_argument("--flush-bytes", type=int, default=settings.INGEST_FLUSH_BYTES)
        parser.add_argument("--flush-ms", type=int, default=settings.INGEST_FLUSH_MILLISECONDS)
        parser.add_argument(
            "--buffer-bytes",
            type=int,
            default=settings.INGEST_BUFFER_BYTES,
            help="Payload bytes held beyond the batch being written before reading from the broker pauses.",
        )
        parser.add_argument(
            "--metrics-port", type=int, default=None, help="Serve Prometheus metrics on this port (0 or unset: off)."
        )

    def handle(self, *args, client_id=None, group=None, flush_ms=None, metrics_port=None, **opts):
        client_id = client_id or default_client_id()
        try:
            self.client_id_lock = client_id_claim(client_id)
        except ClientIdInUse as error:
            raise CommandError(str(error)) from None
        if metrics_port:
            start_http_server(metrics_port, addr="127.0.0.1")
        listener = MqttListener(
            url=settings.MQTT_URL,
            prefix=settings.MQTT_TOPIC_PREFIX,
            shared_group=group or None,
            client_id=client_id,
            flush_messages=opts["flush_messages"],
            flush_readings=opts["flush_readings"],
            flush_bytes=opts["flush_bytes"],
            buffer_bytes=opts["buffer_bytes"],
            flush_interval=flush_ms / 1000,
        )

        # A handler runs on the main thread between any two bytecodes, possibly while that thread holds a lock the
        # stop needs (the stop event's, or threading's own when starting a thread): so the handler only writes a
        # byte to a pipe, and a thread waiting on the pipe asks the listener to stop.
        stop_read, stop_write = os.pipe()

        def wait_for_stop_request():
            os.read(stop_read, 1)
            listener.stop()

        threading.Thread(target=wait_for_stop_request, name="stop-request", daemon=True).start()

        def request_stop(signum, frame):
            os.write(stop_write, b"s")

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        listener.run()
