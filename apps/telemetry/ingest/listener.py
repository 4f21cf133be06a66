"""The MQTT listener: subscribe, buffer, write in batches, acknowledge only what is committed.

Delivery is at-least-once end to end. Messages arrive with QoS 1 on a persistent session (clean_start=False,
a session expiry) through an MQTT 5 shared subscription, so several listeners split the stream. paho's
automatic PUBACK is off (manual_ack): a message is acknowledged only after the transaction holding its readings
committed. If this process dies before that, the broker redelivers the message to the session (or, with the
session gone, to another member of the group) and the (series, ts) primary key turns the repeat into a counted
duplicate instead of a second row. If the database is down, flushes are retried with backoff and nothing is
acknowledged; the broker stops sending once the receive window is full and keeps the rest queued.

Memory is bounded whatever senders do. A flush closes at ``flush_messages`` messages, ``flush_readings`` readings or
``flush_bytes`` payload bytes, whichever comes first (messages are parsed as they are taken, so the readings are
known). Messages received but not yet in a flush wait in the inbox, bounded by ``buffer_bytes``: when it is full,
paho's network thread waits in ``_on_message`` and stops reading the socket, so TCP pushes back on the broker,
which holds the rest in the session's queue. One batch commits (on the committer thread) while the main thread
prepares the next, so peak memory is about buffer_bytes + 2 x (flush_bytes + one flush's readings), plus one
message over each bound and the network thread's receive chunk (``StreamingClient.RECEIVE_BYTES``).
"""

import abc
import contextlib
import fcntl
import functools
import logging
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, InterfaceError, close_old_connections
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from apps.core.mqtt import StreamingClient, listener_broker_address, mqtt_client
from apps.telemetry.choices import Dialect, IngestSource
from apps.telemetry.ingest import metrics
from apps.telemetry.ingest.dialects import sparkplug
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.ingest.topics import parse_topic, private_share_group, subscriptions
from apps.telemetry.services import IngestBatch, IngestMessage, ingest_internal_error
from apps.telemetry.sparkplug import SparkplugNodes

logger = logging.getLogger("fieldwatch.listener")

SESSION_EXPIRY_SECONDS = 7 * 24 * 3600
# How many unacknowledged QoS 1 messages the broker may have in flight to us: the batch size ceiling.
RECEIVE_MAXIMUM = 65535


@dataclass(slots=True)
class Delivery:
    """A received message waiting for its flush: the mid to acknowledge and what to ingest."""

    mid: int
    qos: int
    message: IngestMessage
    arrived: float
    connection: int  # which connection of this process it came on (see MqttListener._on_connect)


class ListenerSession:
    """The listener's MQTT session: one persistent session (clean_start=False, a session expiry) subscribed with QoS 1
    and manual acknowledgements, reconnecting quickly. ``on_message(topic, payload, mid, qos)`` runs on paho's network
    thread for every PUBLISH; whoever owns the session acknowledges with ``ack_many`` once the messages committed."""

    def __init__(self, *, url: str, prefix: str, shared_group: str | None, client_id: str, on_message):
        self.broker = listener_broker_address(url)
        self.prefix = prefix
        # The configured name is public (settings, docs); the group actually joined is derived from our password.
        self.public_group = shared_group
        self.shared_group = private_share_group(shared_group, self.broker.password) if shared_group else None
        self.client_id = client_id
        self.connected = threading.Event()
        self.stopping = threading.Event()
        # Packet ids are only meaningful on the connection a message came on. After a reconnect the broker resends
        # every unacknowledged message (same ids, DUP set) and, once the resent copy is acknowledged, may reuse its
        # id for a new message; acknowledging the old delivery's id then would acknowledge that new message before
        # it is stored. So a delivery from an earlier connection is written (idempotently) but not acknowledged:
        # its resent copy is, when that copy's batch commits.
        self.connection = 0
        self.client = self._make_client(on_message)

    def _make_client(self, on_message) -> StreamingClient:
        client = mqtt_client(self.broker, client_class=StreamingClient, client_id=self.client_id, manual_ack=True)
        # Short and capped: after a broker restart, Mosquitto 2.0.11 routes nothing to the shared group until its
        # listeners subscribe again (docker/mosquitto/mosquitto.conf) and drops what arrives meanwhile. With 1 s
        # doubling to 30 s that window was ~2 s after a 1 s outage and up to 30 s after a long one
        # (tests/drills/test_broker_restart_shared_group.py); a few listeners retrying every second cost nothing.
        client.reconnect_delay_set(min_delay=0.25, max_delay=1)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish_received = on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.error("broker refused the connection: %s", reason_code)
            return
        self.connection += 1
        logger.info("connected to %s (session present: %s)", self.broker, flags.session_present)
        # Subscribing again on a resumed session is harmless and covers a broker that lost its state.
        client.subscribe([(topic, SubscribeOptions(qos=1)) for topic in subscriptions(self.prefix, self.shared_group)])
        if self.shared_group != self.public_group:
            # A session from before the private group existed is still in the public one, which anyone can join.
            client.unsubscribe(subscriptions(self.prefix, self.public_group))
        self.connected.set()
        metrics.LISTENER_CONNECTED.set(1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            logger.error("broker refused the subscriptions: %s", ", ".join(refused))
        else:
            logger.info("subscribed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        metrics.LISTENER_CONNECTED.set(0)
        if not self.stopping.is_set():
            logger.warning("disconnected from the broker (%s); reconnecting", reason_code)

    def open(self) -> None:
        connect_properties = Properties(PacketTypes.CONNECT)
        connect_properties.SessionExpiryInterval = SESSION_EXPIRY_SECONDS
        connect_properties.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(
            self.broker.host, self.broker.port, keepalive=30, clean_start=False, properties=connect_properties
        )
        self.client.loop_start()
        # The public form: the private group's name is as good as the password and stays out of logs.
        topics = ", ".join(subscriptions(self.prefix, self.public_group))
        logger.info("listening on %s as %s (user %s)", topics, self.client_id, self.broker.username or "anonymous")

    def close(self) -> None:
        self.stopping.set()
        self.client.disconnect()  # after the acknowledgements already queued: paho writes packets in order
        self.client.loop_stop()

    def ack_many(self, mids, connection: int) -> None:
        """Acknowledge QoS 1 message ids received on ``connection`` (see __init__); ids of an earlier one are not."""
        if connection == self.connection:
            self.client.ack_many(mids)


class BatchingListener(abc.ABC):
    """The flushing side of a listener: an inbox of received messages, batches prepared on the main thread and
    committed on the committer thread, acknowledgements after the commit. What feeds the inbox (``_on_message``) and
    what an acknowledgement is belongs to the subclass: the MQTT session itself (``MqttListener``) or the process
    that owns it (``WorkerListener``, under ``mqtt_listen --processes``)."""

    def __init__(
        self,
        *,
        prefix: str,
        flush_messages: int,
        flush_interval: float,
        flush_readings: int | None = None,
        flush_bytes: int | None = None,
        buffer_bytes: int | None = None,
    ):
        self.prefix = prefix
        self.flush_messages = max(1, flush_messages)
        self.flush_interval = flush_interval
        self.flush_readings = max(1, flush_readings or settings.INGEST_FLUSH_READINGS)
        self.flush_bytes = max(1, flush_bytes or settings.INGEST_FLUSH_BYTES)
        self.buffer_bytes = max(1, buffer_bytes or settings.INGEST_BUFFER_BYTES)
        self.inbox: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        # Payload bytes in the inbox; _on_message waits on `room` while they are at or above buffer_bytes.
        self.inbox_bytes = 0
        self.room = threading.Condition()
        self.stopping = threading.Event()
        self.directory = DeviceDirectory()
        # Sparkplug B edge nodes' births, as this process last committed them (apps.telemetry.sparkplug).
        self.sparkplug_nodes = SparkplugNodes()
        # The batch being committed (by the committer thread) while the main thread prepares the next; see _hand_over.
        self._committing: queue.Queue[tuple[IngestBatch, list[Delivery]] | None] = queue.Queue(maxsize=1)
        self._in_flight: IngestBatch | None = None
        self._commit_error: BaseException | None = None
        self._batch_lock = threading.Lock()
        self.last_progress = time.monotonic()
        metrics.LISTENER_LOOP_AGE.set_function(lambda: time.monotonic() - self.last_progress)
        metrics.LISTENER_BUFFER_BYTES.set_function(lambda: self.inbox_bytes)

    # --- what the subclass provides -----------------------------------------------------------------------------------
    connection = 0  # the connection a delivery came on, as _ack later compares it

    @abc.abstractmethod
    def _receiving_start(self) -> None:
        """Start feeding ``_on_message`` (the MQTT session, or the owner's pipe)."""

    @abc.abstractmethod
    def _receiving_stop(self) -> None:
        """Stop feeding it, after the last acknowledgements were handed over."""

    @abc.abstractmethod
    def _ack(self, batch: list["Delivery"]) -> None:
        """Acknowledge the deliveries of a committed batch."""

    @abc.abstractmethod
    def _ack_passing(self, mid: int, qos: int) -> None:
        """Acknowledge a message ingest does not store (Sparkplug commands and STATE)."""

    @abc.abstractmethod
    def _publish(self, topic: str, payload: bytes) -> None:
        """Publish a command with QoS 0 (a Sparkplug rebirth request)."""

    # --- receiving (the thread that feeds the inbox) ---------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int, received_at: float | None = None):
        received_at = received_at or time.time()
        if sparkplug.is_sparkplug(topic):
            if sparkplug.is_passing_traffic(topic):  # commands (ours too) and STATE: Sparkplug, but not telemetry
                if qos:
                    self._ack_passing(mid, qos)
                return
            ingest = _sparkplug_message(topic, payload, _utc(received_at))
        else:
            target = parse_topic(topic, self.prefix)
            ingest = IngestMessage(
                source=IngestSource.MQTT,
                payload=payload,
                received_at=_utc(received_at),
                origin=topic,
                device_uid=target.device_uid if target else None,
                gateway_uid=target.gateway_uid if target else None,
                attributes=target.attributes if target else False,
            )
        if not self._reserve(len(payload)):
            return  # stopping: left unacknowledged, so the broker delivers it again to the next session
        self.inbox.put(Delivery(mid, qos, ingest, received_at, self.connection))

    def _reserve(self, size: int) -> bool:
        """Wait until the inbox has room for ``size`` more bytes (it always takes one message when empty); False
        when a stop request ends the wait. Waiting here is the backpressure: this thread reads the socket."""
        with self.room:
            while self.inbox_bytes >= self.buffer_bytes:
                if self.stopping.is_set():
                    return False
                started = time.monotonic()
                self.room.wait(0.25)
                metrics.LISTENER_BACKPRESSURE_SECONDS.inc(time.monotonic() - started)  # visible while it lasts
            self.inbox_bytes += size
            return True

    def _take(self, timeout: float) -> Delivery:
        delivery = self.inbox.get(timeout=timeout)
        with self.room:
            self.inbox_bytes -= len(delivery.message.payload)
            self.room.notify()
        return delivery

    # --- flushing (the main thread prepares, the committer thread writes) ---------------------------------------------
    def run(self) -> None:
        self._receiving_start()
        committer = threading.Thread(target=self._commit_loop, name="ingest-commit", daemon=True)
        committer.start()
        try:
            while not self.stopping.is_set():
                batch, deliveries = self._collect()
                if deliveries:
                    self._hand_over(batch, deliveries)
                self.last_progress = time.monotonic()
            # Drain: whatever arrived before the stop is written and acknowledged, then we leave.
            batch, deliveries = self._collect(drain=True)
            if deliveries:
                self._hand_over(batch, deliveries)
            self._committing.join()
            if self._commit_error is not None:
                raise self._commit_error
        finally:
            self.stop()  # ends the committer's retries, should we leave on an error
            with contextlib.suppress(queue.Full):
                self._committing.put_nowait(None)
            committer.join(60)
            self._receiving_stop()
            logger.info("listener stopped")

    def _hand_over(self, batch: IngestBatch, deliveries: list[Delivery]) -> None:
        """Give a prepared batch to the committer thread once it finished the previous one: the main thread parses
        and validates the next batch while this one commits (psycopg releases the GIL while the server works), and
        at most two batches are held. Batches commit, and are acknowledged, in the order they were received."""
        self._committing.join()
        if self._commit_error is not None:
            raise self._commit_error
        self._in_flight = batch
        self._committing.put((batch, deliveries))

    def _commit_loop(self) -> None:
        while (item := self._committing.get()) is not None:
            try:
                self._flush(*item)
            except BaseException as error:  # a bug in the flush's own handling: stop rather than hang the listener
                logger.exception("flushing raised; stopping the listener (nothing unacknowledged is lost)")
                self._commit_error = error
                self.stop()
            finally:
                self._committing.task_done()
        self._committing.task_done()

    def stop(self, *_args) -> None:
        self.stopping.set()
        with self.room:
            self.room.notify_all()

    def _new_batch(self) -> IngestBatch | None:
        # The one step of a batch that may query (a stale device catalogue reloads): retried like a write, so a
        # database outage holds the message up instead of dropping it. None when a stop request ends the retries.
        # Both threads create batches (the committer when it splits one): the lock keeps the catalogue's reload
        # to one thread at a time.
        with self._batch_lock:
            return self._retrying(
                1, lambda: IngestBatch(self.directory, self.sparkplug_nodes), what="loading the device catalogue"
            )

    def _add(self, batch: IngestBatch, delivery: Delivery, *, logged: bool = False) -> None:
        try:
            batch.add(delivery.message)
        except Exception as error:
            # Not the sender's fault and not worth a retry: the same bytes fail the same way every time.
            if logged:  # prepared again after a failed write: said once already
                batch.add_internal_error(delivery.message, error)
                return
            logger.exception(
                "message on %s raised inside ingest; dead-lettered as internal_error", delivery.message.origin
            )
            batch.add_internal_error(delivery.message, error)

    def _collect(self, drain: bool = False) -> tuple[IngestBatch | None, list[Delivery]]:
        """Take and prepare messages until the batch is full (messages, readings or bytes) or the flush interval
        since its first message has passed."""
        batch = None
        deliveries: list[Delivery] = []
        deadline = None
        while batch is None or (
            len(deliveries) < self.flush_messages
            and len(batch.readings) < self.flush_readings
            and batch.payload_bytes < self.flush_bytes
        ):
            if drain:
                timeout = 0.2
            elif deadline is None:
                timeout = 0.25  # wake up regularly to notice a stop request
            else:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
            try:
                delivery = self._take(timeout)
            except queue.Empty:
                if deliveries or drain or self.stopping.is_set():
                    break
                self.last_progress = time.monotonic()  # idle, not stuck: the healthcheck's loop age stays low
                continue
            if batch is None:
                in_flight = self._in_flight
                if in_flight is not None and in_flight.sparkplug is not None and in_flight.sparkplug.changed:
                    # Sparkplug births and sequence numbers reach the edge nodes' state when their batch commits:
                    # the next batch is prepared against them.
                    self._committing.join()
                # Created with its first message, so its catalogue snapshot and clock are fresh.
                batch = self._new_batch()
                if batch is None:
                    return None, []  # stopping: the message stays unacknowledged and comes back
                deadline = time.monotonic() + self.flush_interval
            self._add(batch, delivery)
            deliveries.append(delivery)
        return batch, deliveries

    def _flush(self, batch: IngestBatch, deliveries: list[Delivery]) -> None:
        """Write the batch (database errors retried with backoff until it commits), then acknowledge it.

        A message that raised while being prepared is already an ``internal_error`` dead letter of the batch. Any
        other error of the write (a bug, a payload nobody anticipated) is not retried as it is: unacknowledged, the
        broker would redeliver the same batch to a listener that fails the same way, for ever. The batch is split in
        halves until the message that raises stands alone; that one is dead-lettered as ``internal_error`` (with
        the exception's class) and acknowledged, and every other message is stored and acknowledged as usual.
        """
        started = time.perf_counter()
        try:
            result = self._retrying(len(deliveries), batch.commit)
        except Exception as error:
            if len(deliveries) > 1:
                metrics.FLUSH_ISOLATIONS.inc()
                logger.warning(
                    "flush of %d messages raised %r; splitting it to isolate the cause", len(deliveries), error
                )
                middle = len(deliveries) // 2
                for half in (deliveries[:middle], deliveries[middle:]):
                    if (part := self._new_batch()) is None:
                        return  # stopping: the rest stays unacknowledged and comes back
                    for delivery in half:
                        self._add(part, delivery, logged=True)
                    self._flush(part, half)
                return
            poison = deliveries[0].message
            logger.exception("message on %s raised inside ingest; dead-lettered as internal_error", poison.origin)
            if self._retrying(1, functools.partial(ingest_internal_error, message=poison, error=error)):
                self._ack(deliveries)
            return
        if result is None:
            return
        self._ack(deliveries)
        self._send_commands(batch)
        metrics.FLUSH_SIZE.observe(result.inserted + result.duplicates)
        metrics.FLUSH_SECONDS.observe(time.perf_counter() - started)
        metrics.LISTENER_LAG.set(time.time() - deliveries[0].arrived)

    def _retrying(self, size: int, write, what: str = ""):
        """``write()``, retried with backoff while the database fails; None when a stop request ends the retries
        (nothing acknowledged, so nothing lost: the broker redelivers to the next listener)."""
        what = what or f"flush of {size} messages"
        delay = 0.5
        while True:
            try:
                return write()
            except (DatabaseError, InterfaceError) as error:
                metrics.FLUSH_FAILURES.inc()
                close_old_connections()
                _close_connection()
                if self.stopping.is_set():
                    logger.warning("stopping with %d unacknowledged messages (database: %s)", size, error)
                    return None
                logger.error("%s failed, retrying in %.1f s: %s", what, delay, error)
                self.stopping.wait(delay)  # a stop request cuts the wait short for one last attempt
                delay = min(delay * 2, 30)

    def _send_commands(self, batch: IngestBatch) -> None:
        """After the commit: the Sparkplug ``Node Control/Rebirth`` requests the batch called for (QoS 0, not
        retained, as the specification has commands). A lost one is asked again at the node's next bad message."""
        if batch.sparkplug is None:
            return
        for topic, payload in batch.sparkplug.rebirth_commands():
            self._publish(topic, payload)
            metrics.SPARKPLUG_REBIRTHS.inc()


class MqttListener(BatchingListener):
    """A listener that holds the MQTT session itself: one process, one core's worth of Python."""

    def __init__(self, *, url: str, prefix: str, shared_group: str | None, client_id: str, **flushing):
        super().__init__(prefix=prefix, **flushing)
        self.session = ListenerSession(
            url=url, prefix=prefix, shared_group=shared_group, client_id=client_id, on_message=self._on_message
        )
        self.client = self.session.client
        self.client_id = client_id

    @property
    def connection(self) -> int:
        return self.session.connection

    def _receiving_start(self) -> None:
        self.session.open()

    def _receiving_stop(self) -> None:
        self.session.close()

    def _ack_passing(self, mid: int, qos: int) -> None:
        self.client.ack(mid, qos)

    def _publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=0)

    def _ack(self, batch: list[Delivery]) -> None:
        # Grouped by connection: only the current one's are acknowledged (see ListenerSession).
        for connection in {delivery.connection for delivery in batch}:
            self.session.ack_many(
                (d.mid for d in batch if d.qos == 1 and d.connection == connection), connection=connection
            )


def _sparkplug_message(topic: str, payload: bytes, received_at) -> IngestMessage:
    """A message on ``spBv1.0/<group>/<type>/<edge node>[/<device>]``. The edge node id is the gateway whose broker
    login alone may publish there (the ACL), so ingest checks the devices against that gateway's site."""
    parts = topic.split("/", 4)
    return IngestMessage(
        source=IngestSource.MQTT,
        payload=payload,
        received_at=received_at,
        origin=topic,
        gateway_uid=parts[3] if len(parts) >= 4 and parts[3] else None,
        dialect=Dialect.SPARKPLUG,
        options={"topic": topic},
    )


def _utc(epoch: float):
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def _close_connection() -> None:
    from django.db import connection

    try:
        connection.close()
    except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is discarded either way
        logger.debug("closing the broken database connection failed", exc_info=True)


def default_client_id() -> str:
    """``MQTT_CLIENT_ID``, else ``fieldwatch-listener-<host>-<FIELDWATCH_LISTENER_INSTANCE or 0>``: stable across
    restarts on one host, so the broker keeps the session (and its queued messages) for it. A second listener on the
    same host needs its own instance number; ``client_id_claim`` refuses to start one that would share an id."""
    instance = os.environ.get("FIELDWATCH_LISTENER_INSTANCE", "0")
    return settings.MQTT_CLIENT_ID or f"fieldwatch-listener-{socket.gethostname()}-{instance}"


class ClientIdInUse(Exception):
    pass


def client_id_claim(client_id: str):
    """Hold a host-local lock on ``client_id`` for the life of the process, or raise ``ClientIdInUse``.

    Two processes under one client id take the session over from each other at every reconnect (the broker drops
    the older connection), so neither gets anywhere. The lock is an ``flock`` the kernel releases when the process
    ends, however it ends, so a listener restarted right after a crash is never refused. Returns the open lock file;
    keep a reference to it.
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in client_id)
    path = os.path.join(settings.LISTENER_LOCK_DIR, f"fieldwatch-mqtt-{safe}.lock")
    lock = open(path, "a+")  # noqa: SIM115 - held open for the life of the process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ClientIdInUse(
            f"another listener on this host is running as MQTT client {client_id!r}; give this one its own id "
            "(FIELDWATCH_LISTENER_INSTANCE=1, or --client-id)"
        ) from None
    return lock
