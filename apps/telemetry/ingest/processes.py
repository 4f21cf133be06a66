"""``mqtt_listen --processes N``: one MQTT session, N processes preparing and writing what it receives.

A listener is about one core of Python (the GIL). Several listeners in a shared group would use more cores, but on
Mosquitto 2.0.11 a ``$share`` subscription is not restored after a broker restart and a member that leaves keeps its
share of the stream queued (docs/delivery.md, limits). So the command keeps the one persistent session with a plain
subscription and splits the work behind it instead:

* the **owner** (this module, the process ``mqtt_listen`` starts) holds the session. paho's network thread hands it
  every PUBLISH's topic and payload (``StreamingClient``); it parses neither, picks a worker by the topic's sender
  (``sender_key``: one sender's messages, and a Sparkplug node's state, stay in one process) and appends a frame to
  that worker's pipe, written out after each chunk read from the socket;
* each **worker** is a child ``mqtt_listen`` run as a ``WorkerListener``: the same inbox, batches, committer thread
  and bounds as a single-process listener, fed from its pipe. After each commit it reports the sequence numbers of
  the messages it stored (or dead-lettered);
* the owner acknowledges to the broker **in the order the messages arrived** (MQTT requires PUBACKs in order) once
  each message, and every one before it, was reported: at-least-once exactly as with one process.

Failures. A worker that exits is started again and given every message it had not reported (the idempotent write
makes a repeat harmless). If the owner dies, even by SIGKILL, the workers' pipes close: they stop, writing what they
hold, and the broker redelivers everything unacknowledged to the restarted owner's session. SIGTERM or SIGINT of the
owner: it stops taking messages, asks each worker to stop (SIGTERM: a worker drains what it received), acknowledges
what they report, and disconnects. Workers ignore SIGINT, so a Ctrl-C reaches them only through the owner.

Backpressure: a worker's inbox is bounded as a listener's is; when it is full the worker stops reading its pipe, the
pipe fills, the owner's network thread waits to write, and it stops reading the socket, so TCP pushes back on the
broker. The owner holds a copy of each message until its worker reports it (to resend should the worker die):
bounded by what the worker may hold (its inbox, two batches) plus the pipe.

Metrics: the owner's ``--metrics-port`` serves the sum over the owner and its workers (each worker serves its own on
an ephemeral loopback port and says which in its health reports); the loop age is the oldest of theirs.
"""

import contextlib
import logging
import os
import select
import signal
import struct
import subprocess
import threading
import time
import urllib.request
import zlib

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from apps.telemetry.ingest import metrics
from apps.telemetry.ingest.listener import BatchingListener, Delivery, ListenerSession
from apps.telemetry.ingest.topics import sender_key

logger = logging.getLogger("fieldwatch.listener")

# Owner -> worker, one frame per message: sequence, received at (epoch s), QoS, topic bytes, payload bytes; then the
# topic (UTF-8) and the payload.
MESSAGE = struct.Struct("!QdBHI")
# Worker -> owner: a kind and the body's length, then the body.
REPORT = struct.Struct("!cI")
STORED = b"S"  # body: the sequence numbers (!Q each) of messages whose batch committed
PUBLISH = b"P"  # body: topic length (!H), topic, payload: a command to publish with QoS 0 (Sparkplug rebirth)
HEALTH = b"H"  # body: !dH, the worker's loop age in seconds and its metrics port
HEALTH_FRAME = struct.Struct("!dH")

HEALTH_SECONDS = 1.0
PIPE_BYTES = 1 << 20  # Linux's default ceiling for an unprivileged F_SETPIPE_SZ
RESTART_DELAY_SECONDS = 1.0  # after a worker that exits within STARTUP_SECONDS of starting: no restart storm
STARTUP_SECONDS = 5.0
STOP_SECONDS = 60.0


class ListenerProcesses:
    """The owner: the MQTT session, the workers, and acknowledgements in arrival order."""

    def __init__(
        self,
        *,
        url: str,
        prefix: str,
        shared_group: str | None,
        client_id: str,
        processes: int,
        worker_command: list[str],
    ):
        self.stopping = threading.Event()
        self.session = ListenerSession(
            url=url, prefix=prefix, shared_group=shared_group, client_id=client_id, on_message=self._route
        )
        self.session.client.on_packets_handled = self._write_frames
        self.workers = [WorkerProcess(index, worker_command, self) for index in range(max(1, processes))]
        # Every message routed and not yet acknowledged, in arrival order: [mid, qos, connection, stored]. A list with
        # a moving head (entry of sequence s at s - _base), because workers mark entries anywhere in it.
        self._order: list[list] = []
        self._head = 0
        self._base = 0
        self._order_lock = threading.Lock()
        self.started = time.monotonic()
        metrics.LISTENER_LOOP_AGE.set_function(self.loop_age)
        metrics.LISTENER_BUFFER_BYTES.set_function(lambda: 0)  # the workers' inboxes are the buffer; summed

    # --- paho's network thread --------------------------------------------------------------------------------------
    def _route(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        if self.stopping.is_set():
            return  # left unacknowledged: the broker delivers it again to the next session
        received_at = time.time()
        topic_bytes = topic.encode()
        with self._order_lock:
            sequence = self._base + len(self._order)
            self._order.append([mid, qos, self.session.connection, False])
        worker = self.workers[zlib.crc32(sender_key(topic).encode()) % len(self.workers)]
        worker.send(
            sequence, MESSAGE.pack(sequence, received_at, qos, len(topic_bytes), len(payload)) + topic_bytes + payload
        )

    def _write_frames(self) -> None:
        for worker in self.workers:
            worker.write()

    # --- the workers' report threads ------------------------------------------------------------------------------
    def stored(self, sequences) -> None:
        """Mark messages stored and acknowledge the stored prefix of the arrival order. Acknowledged under the lock,
        so two workers' reports can never put PUBACKs out of order."""
        with self._order_lock:
            order, base = self._order, self._base
            for sequence in sequences:
                index = sequence - base
                if index >= self._head:  # an earlier one is a repeat of a resent message
                    order[index][3] = True
            head = self._head
            ready: dict[int, list[int]] = {}
            while head < len(order) and order[head][3]:
                mid, qos, connection, _ = order[head]
                if qos == 1:
                    ready.setdefault(connection, []).append(mid)
                head += 1
            self._head = head
            for connection, mids in ready.items():
                self.session.ack_many(mids, connection=connection)
            if head > 4096 and head * 2 > len(order):
                del order[:head]
                self._base += head
                self._head = 0

    def publish(self, topic: str, payload: bytes) -> None:
        self.session.client.publish(topic, payload, qos=0)

    def loop_age(self) -> float:
        """The oldest of the workers' flushing loops, as last reported: a stuck or silent worker shows."""
        now = time.monotonic()
        return max(worker.loop_age(now) for worker in self.workers)

    # --- the main thread ------------------------------------------------------------------------------------------
    def serve_metrics(self, port: int) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_MergedMetrics(self))
        start_http_server(port, addr="127.0.0.1", registry=registry)

    def run(self) -> None:
        logger.info("starting %d ingest worker processes", len(self.workers))
        for worker in self.workers:
            worker.start()
        self.session.open()
        try:
            self.stopping.wait()
        finally:
            self.stopping.set()
            for worker in self.workers:
                worker.stop()
            deadline = time.monotonic() + STOP_SECONDS
            for worker in self.workers:
                worker.join(max(0.1, deadline - time.monotonic()))
            self.session.close()
            logger.info("listener stopped")

    def stop(self, *_args) -> None:
        self.stopping.set()


class WorkerProcess:
    """One worker as the owner sees it: its process, its pipes, the messages it has not reported yet."""

    def __init__(self, index: int, command: list[str], owner: ListenerProcesses):
        self.index = index
        self.command = command
        self.owner = owner
        self.pending: dict[int, bytes] = {}  # sequence -> frame, in sequence order (dicts keep insertion order)
        self.pending_lock = threading.Lock()
        self.write_lock = threading.Lock()  # the pipe and `outgoing`: the network thread, or a restart
        self.outgoing = bytearray()
        self.process: subprocess.Popen | None = None
        self.messages_fd: int | None = None
        self.reader: threading.Thread | None = None
        self.started = time.monotonic()
        self.reported_age = 0.0
        self.reported_at = time.monotonic()
        self.metrics_port: int | None = None

    def start(self) -> None:
        messages_read, messages_write = os.pipe()
        reports_read, reports_write = os.pipe()
        with contextlib.suppress(OSError):  # a smaller pipe works too, with more wake-ups
            import fcntl

            fcntl.fcntl(messages_write, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.process = subprocess.Popen(
            [*self.command, "--worker-pipes", f"{messages_read},{reports_write}", "--worker-index", str(self.index)],
            pass_fds=(messages_read, reports_write),
        )
        os.close(messages_read)
        os.close(reports_write)
        os.set_blocking(messages_write, False)  # a full pipe must not hold the network thread through a stop
        self.messages_fd = messages_write
        self.started = self.reported_at = time.monotonic()
        self.reported_age = 0.0
        self.reader = threading.Thread(
            target=self._read_reports,
            args=(reports_read, self.process),
            name=f"ingest-worker-{self.index}",
            daemon=True,
        )
        self.reader.start()
        logger.info("ingest worker %d started (pid %d)", self.index, self.process.pid)

    def send(self, sequence: int, frame: bytes) -> None:
        with self.pending_lock:
            self.pending[sequence] = frame
        with self.write_lock:
            self.outgoing += frame

    def write(self) -> None:
        with self.write_lock:
            self._write_outgoing()

    def _write_outgoing(self) -> None:
        """Write ``outgoing`` to the pipe, waiting while it is full (the backpressure); give up when stopping or when
        the worker is gone (what it had not reported is resent to its successor from ``pending``)."""
        outgoing = self.outgoing
        waited = None
        while outgoing:
            try:
                written = os.write(self.messages_fd, outgoing)
            except BlockingIOError:
                if self.owner.stopping.is_set():
                    outgoing.clear()  # unacknowledged: the broker redelivers it to the next session
                    break
                waited = waited or time.monotonic()
                select.select([], [self.messages_fd], [], 0.25)
                continue
            except OSError:  # the worker exited: its reader restarts it
                outgoing.clear()
                break
            del outgoing[:written]
        if waited is not None:
            metrics.LISTENER_BACKPRESSURE_SECONDS.inc(time.monotonic() - waited)

    def _read_reports(self, fd: int, process: subprocess.Popen) -> None:
        with os.fdopen(fd, "rb", buffering=1 << 16) as reports:
            while len(header := reports.read(REPORT.size)) == REPORT.size:
                kind, length = REPORT.unpack(header)
                body = reports.read(length)
                if kind == STORED:
                    sequences = struct.unpack(f"!{len(body) // 8}Q", body)
                    with self.pending_lock:
                        for sequence in sequences:
                            self.pending.pop(sequence, None)
                    self.owner.stored(sequences)
                elif kind == PUBLISH:
                    (topic_length,) = struct.unpack_from("!H", body)
                    self.owner.publish(body[2 : 2 + topic_length].decode(), body[2 + topic_length :])
                elif kind == HEALTH:
                    self.reported_age, self.metrics_port = HEALTH_FRAME.unpack(body)
                    self.reported_at = time.monotonic()
        code = process.wait()
        if self.owner.stopping.is_set():
            logger.info("ingest worker %d stopped (exit %s)", self.index, code)
            return
        logger.error("ingest worker %d exited unexpectedly (exit %s); starting it again", self.index, code)
        if time.monotonic() - self.started < STARTUP_SECONDS:
            time.sleep(RESTART_DELAY_SECONDS)
        self._restart()

    def _restart(self) -> None:
        with self.write_lock:
            with contextlib.suppress(OSError):
                os.close(self.messages_fd)
            self.outgoing.clear()
            if self.owner.stopping.is_set():
                return
            self.start()
            with self.pending_lock:
                unreported = list(self.pending.values())  # in sequence order
            self.outgoing += b"".join(unreported)
            self._write_outgoing()

    def loop_age(self, now: float) -> float:
        return self.reported_age + (now - self.reported_at)

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)

    def join(self, timeout: float) -> None:
        if self.reader is not None:
            self.reader.join(timeout)
        if self.process is not None and self.process.poll() is None:
            logger.error("ingest worker %d did not stop in time; killing it", self.index)
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError, TypeError):
            os.close(self.messages_fd)


class WorkerListener(BatchingListener):
    """A worker: a listener fed from the owner's pipe (see the module docstring), reporting instead of acknowledging.
    A delivery's ``mid`` is the owner's sequence number."""

    def __init__(self, *, messages_fd: int, reports_fd: int, **flushing):
        super().__init__(**flushing)
        self.messages = os.fdopen(messages_fd, "rb", buffering=1 << 20)
        self.reports_fd = reports_fd
        self.reports_lock = threading.Lock()
        self.metrics_port = 0

    def serve_metrics(self) -> None:
        server, _ = start_http_server(0, addr="127.0.0.1")
        self.metrics_port = server.server_port

    def _receiving_start(self) -> None:
        threading.Thread(target=self._read_messages, name="ingest-messages", daemon=True).start()
        threading.Thread(target=self._report_health, name="ingest-health", daemon=True).start()

    def _receiving_stop(self) -> None:
        pass

    def _read_messages(self) -> None:
        read = self.messages.read
        while not self.stopping.is_set():
            header = read(MESSAGE.size)
            if len(header) < MESSAGE.size:
                break
            sequence, received_at, qos, topic_length, payload_length = MESSAGE.unpack(header)
            topic = read(topic_length).decode()
            self._on_message(topic, read(payload_length), sequence, qos, received_at)
        if not self.stopping.is_set():
            logger.info("the owner closed the pipe; stopping")
            self.stop()

    def _report_health(self) -> None:
        while not self.stopping.wait(HEALTH_SECONDS):
            age = time.monotonic() - self.last_progress
            self._report(HEALTH, HEALTH_FRAME.pack(age, self.metrics_port))

    def _ack(self, batch: list[Delivery]) -> None:
        self._report(STORED, struct.pack(f"!{len(batch)}Q", *(delivery.mid for delivery in batch)))

    def _ack_passing(self, mid: int, qos: int) -> None:
        self._report(STORED, struct.pack("!Q", mid))

    def _publish(self, topic: str, payload: bytes) -> None:
        topic_bytes = topic.encode()
        self._report(PUBLISH, struct.pack("!H", len(topic_bytes)) + topic_bytes + payload)

    def _report(self, kind: bytes, body: bytes) -> None:
        frame = memoryview(REPORT.pack(kind, len(body)) + body)
        with self.reports_lock:
            try:
                while frame:
                    frame = frame[os.write(self.reports_fd, frame) :]
            except BrokenPipeError:
                pass  # the owner is gone: what was stored comes back from the broker and counts as duplicates


class _MergedMetrics:
    """The owner's and every worker's metrics as one process's: counters, histograms and most gauges summed."""

    HIGHEST = frozenset({"fieldwatch_ingest_listener_loop_age_seconds", "fieldwatch_ingest_listener_connected"})

    def __init__(self, owner: ListenerProcesses):
        self.owner = owner

    def collect(self):
        texts = [generate_latest(REGISTRY).decode()]
        for worker in self.owner.workers:
            if worker.metrics_port:
                with contextlib.suppress(OSError):  # a worker restarting: its figures are back at the next scrape
                    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        texts.append(response.read().decode())
        merged: dict[str, tuple[Metric, dict]] = {}
        for text in texts:
            for family in text_string_to_metric_families(text):
                metric, samples = merged.setdefault(
                    family.name, (Metric(family.name, family.documentation, family.type), {})
                )
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key not in samples:
                        samples[key] = sample.value
                    elif sample.name.endswith(("_created", "_start_time_seconds")):
                        samples[key] = min(samples[key], sample.value)
                    elif family.name in self.HIGHEST or sample.name.endswith("_info"):
                        samples[key] = max(samples[key], sample.value)
                    else:
                        samples[key] += sample.value
        for metric, samples in merged.values():
            for (name, labels), value in samples.items():
                metric.add_sample(name, dict(labels), value)
            yield metric
