"""``manage.py mqtt_listen``: the MQTT ingest listener (a thin command over apps.telemetry.ingest.listener)."""

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client import start_http_server

from apps.telemetry.ingest.listener import ClientIdInUse, MqttListener, client_id_claim, default_client_id
from apps.telemetry.ingest.processes import ListenerProcesses, WorkerListener

logger = logging.getLogger("fieldwatch.listener")


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
        parser.add_argument(
            "--processes",
            type=int,
            default=settings.INGEST_PROCESSES,
            help="Processes preparing and writing messages behind the one MQTT session (default: INGEST_PROCESSES, "
            "else the number of cores); 1 runs everything in this process.",
        )
        # How the owner starts its workers (apps.telemetry.ingest.processes); not for people.
        parser.add_argument("--worker-pipes", default=None, help=argparse.SUPPRESS)
        parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)

    def handle(self, *args, client_id=None, group=None, flush_ms=None, metrics_port=None, processes=1, **opts):
        flushing = {
            "prefix": settings.MQTT_TOPIC_PREFIX,
            "flush_messages": opts["flush_messages"],
            "flush_readings": opts["flush_readings"],
            "flush_bytes": opts["flush_bytes"],
            "buffer_bytes": opts["buffer_bytes"],
            "flush_interval": flush_ms / 1000,
        }
        if opts["worker_pipes"]:
            return self.work(opts["worker_pipes"], opts["worker_index"], flushing)
        client_id = client_id or default_client_id()
        try:
            self.client_id_lock = client_id_claim(client_id)
        except ClientIdInUse as error:
            raise CommandError(str(error)) from None
        session = {"url": settings.MQTT_URL, "shared_group": group or None, "client_id": client_id}
        if processes > 1:
            # The workers run this very command line (so what started it, test instruments included, starts them).
            listener = ListenerProcesses(
                **session,
                prefix=flushing["prefix"],
                processes=processes,
                worker_command=[sys.executable, *sys.orig_argv[1:]],
            )
            if metrics_port:
                listener.serve_metrics(metrics_port)
        else:
            if metrics_port:
                start_http_server(metrics_port, addr="127.0.0.1")
            listener = MqttListener(**session, **flushing)
        self.run_until_stopped(listener)

    def work(self, pipes: str, index: int, flushing: dict) -> None:
        """A worker of ``--processes``: fed by the owner's pipe, stopped by the owner (SIGTERM) or by its going."""
        messages_fd, reports_fd = (int(fd) for fd in pipes.split(","))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches us through the owner only
        listener = WorkerListener(messages_fd=messages_fd, reports_fd=reports_fd, **flushing)
        listener.serve_metrics()
        logger.info("ingest worker %d ready", index)
        self.run_until_stopped(listener, signals=(signal.SIGTERM,))

    def run_until_stopped(self, listener, signals=(signal.SIGTERM, signal.SIGINT)) -> None:
        # A handler runs on the main thread between any two bytecodes, possibly while that thread holds a lock the
        # stop needs (the stop event's, inside Event.wait while retrying a flush; threading's own, if it started a
        # thread): so the handler takes no lock at all. It writes one byte to a pipe; a thread waiting on the pipe
        # asks the listener to stop.
        wake_read, wake_write = os.pipe()

        def stop_when_asked():
            os.read(wake_read, 1)
            logger.info("stop requested")
            listener.stop()

        threading.Thread(target=stop_when_asked, name="stop-request", daemon=True).start()

        def request_stop(signum, frame):
            os.write(wake_write, b"s")

        for signum in signals:
            signal.signal(signum, request_stop)
        # `kill -USR1 <pid>` writes every thread's stack to stderr: what a listener that will not stop is doing.
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        listener.run()
