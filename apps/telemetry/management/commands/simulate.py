"""``manage.py simulate``: publish realistic telemetry for the active devices over MQTT, until stopped.

A thin loop over ``apps.telemetry.simulation``: load the devices once, then tick at ``--rate`` readings per second
and publish what each tick returns (QoS 1). Like the real fleet, every device and gateway publishes over its own
connection with its own broker login (the broker admits nobody else), whose password ``seed_demo`` kept for us
(``apps.devices.demo_logins``); a device without a valid kept password is not simulated. paho's network threads
reconnect by themselves, so a broker outage or a refused login is logged and waited out, never fatal; while it
lasts paho queues up to ``MAX_QUEUED`` messages per connection and the rest are dropped and counted. A message no
login may publish (a reading of an unregistered device, injected on purpose) is counted as refused, not sent.
SIGINT and SIGTERM stop the loop; open gateway batches are sent and in-flight messages are given a few seconds to
be acknowledged before the command exits with status 0.
"""

import collections
import dataclasses
import logging
import os
import signal
import socket
import threading
import time

import paho.mqtt.client as mqtt
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core.mqtt import BrokerAddress, broker_address, mqtt_client
from apps.devices.demo_logins import demo_passwords_valid
from apps.devices.models import Device
from apps.telemetry.ingest.topics import parse_topic
from apps.telemetry.simulation import Metric, SimDevice, Simulation, devices_pick

logger = logging.getLogger(__name__)

SUMMARY_EVERY_SECONDS = 10.0
MAX_QUEUED = 10_000  # about eight minutes at the default rate; beyond that an outage drops readings
DRAIN_SECONDS = 5.0


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError(text)
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(text)
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError(text)
    return value


class Command(BaseCommand):
    help = "Publish realistic telemetry (with occasional bad readings) for the active devices over MQTT."

    def add_arguments(self, parser):
        parser.add_argument(
            "--rate", type=positive, default=20.0, help="Readings per second, all devices together (20)."
        )
        parser.add_argument("--devices", type=positive_int, default=None, help="Simulate only this many devices (all).")
        parser.add_argument("--duration", type=positive, default=None, help="Stop after SECONDS (never).")
        parser.add_argument(
            "--bad-fraction", type=fraction, default=0.02, help="Share of readings spoiled on purpose (0.02)."
        )
        parser.add_argument(
            "--gateway-fraction",
            type=fraction,
            default=0.3,
            help="Share of readings of devices behind a gateway sent in the gateway's batches (0.3).",
        )
        parser.add_argument(
            "--spike-probability",
            type=fraction,
            default=0.0005,
            help="Chance per heat pump reading that a 2-5 minute supply temperature spike above 80 °C starts.",
        )
        parser.add_argument(
            "--silence-every",
            type=float,
            default=600.0,
            help="Every SECONDS one heat pump goes silent for 6-8 minutes, then reports again (600; 0: never).",
        )
        parser.add_argument("--seed", type=int, default=None, help="Seed the randomness for a reproducible run.")

    def handle(self, *args, **options):
        loaded = self._devices_load()
        if not loaded:
            raise CommandError("No active devices to simulate: run `python manage.py seed_demo` first.")
        devices, passwords = self._with_broker_logins(loaded)
        devices = devices_pick(devices, options["devices"])
        if not devices:
            raise CommandError(
                "No broker password is known for any active device: run `python manage.py seed_demo`, which issues "
                "the demo fleet's logins and keeps their passwords for the simulator (DEMO_MQTT_PASSWORDS_PATH)."
            )
        prefix = settings.MQTT_TOPIC_PREFIX
        simulation = Simulation(
            devices,
            prefix=prefix,
            seed=options["seed"],
            bad_fraction=options["bad_fraction"],
            gateway_fraction=options["gateway_fraction"],
            spike_probability=options["spike_probability"],
            silence_every_s=max(options["silence_every"], 0.0),
        )
        broker = broker_address()
        logger.info(
            "Simulating %d devices at %g readings/s to %s under %s/ (bad %.1f %%, via gateways %.0f %%).",
            len(devices),
            options["rate"],
            broker,
            prefix,
            options["bad_fraction"] * 100,
            options["gateway_fraction"] * 100,
        )

        stop = threading.Event()
        previous_handlers = self._signals_catch(stop)
        logins = {device.uid for device in devices} | {device.gateway_uid for device in devices if device.gateway_uid}
        publisher = Publisher(broker, {username: passwords[username] for username in logins}, prefix)
        publisher.start()
        try:
            self._run(simulation, publisher, stop, rate=options["rate"], duration=options["duration"])
        finally:
            for message in simulation.flush():
                publisher.publish(*message)
            publisher.stop(DRAIN_SECONDS)
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        logger.info(
            "Stopped: %d readings, %d messages published, %d acknowledged, %d dropped, %d refused, %d bad injected.",
            simulation.readings,
            publisher.published,
            publisher.acknowledged,
            publisher.dropped,
            publisher.refused,
            sum(simulation.bad.values()),
        )

    def _with_broker_logins(self, devices: list[SimDevice]) -> tuple[list[SimDevice], dict[str, str]]:
        """The devices we can log in as (a gateway we cannot: its devices publish on their own topics only), and the
        passwords by username."""
        usernames = {device.uid for device in devices} | {
            device.gateway_uid for device in devices if device.gateway_uid
        }
        passwords = demo_passwords_valid(usernames)
        missing = sorted(usernames - set(passwords))
        if missing:
            logger.warning(
                "No valid broker password kept for %d of %d logins (%s%s): not simulated. `manage.py seed_demo` "
                "issues them.",
                len(missing),
                len(usernames),
                ", ".join(missing[:5]),
                ", ..." if len(missing) > 5 else "",
            )
        usable = []
        for device in devices:
            if device.uid not in passwords:
                continue
            if device.gateway_uid and device.gateway_uid not in passwords:
                device = dataclasses.replace(device, gateway_uid=None)
            usable.append(device)
        return usable, passwords

    def _devices_load(self) -> list[SimDevice]:
        """Every active device as plain data, in two queries whatever the fleet's size."""
        queryset = (
            Device.objects.filter(is_active=True)
            .select_related("site", "gateway")
            .prefetch_related("device_type__metrics")
            .order_by("uid")
        )
        return [
            SimDevice(
                uid=device.uid,
                metrics=tuple(
                    Metric(metric.key, metric.kind, metric.min_value, metric.max_value, metric.unit)
                    for metric in device.device_type.metrics.all()
                ),
                timezone=device.site.timezone,
                gateway_uid=device.gateway.uid if device.gateway else None,
            )
            for device in queryset
        ]

    def _signals_catch(self, stop: threading.Event) -> dict:
        """Make SIGINT/SIGTERM set ``stop``; only the main thread may install handlers (tests run us elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, lambda *_: stop.set())
        return previous

    def _run(self, simulation: Simulation, publisher: "Publisher", stop: threading.Event, *, rate, duration):
        """Tick on a fixed schedule; after a stall (a slow publish, a suspended laptop) restart it, never burst."""
        started = time.monotonic()
        schedule_start, ticks = started, 0
        next_summary = started + SUMMARY_EVERY_SECONDS
        last = {"readings": 0, "published": 0, "bad": 0}
        while not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            due = schedule_start + ticks / rate
            if due > now:
                if stop.wait(due - now):
                    break
            elif now - due > 1.0:
                schedule_start, ticks = now, 0
            ticks += 1
            for message in simulation.tick(int(time.time() * 1000)):
                publisher.publish(*message)
            if time.monotonic() >= next_summary:
                next_summary += SUMMARY_EVERY_SECONDS
                bad = sum(simulation.bad.values())
                logger.info(
                    "Last %.0f s: %d readings, %d messages published, %d bad injected (totals %d / %d / %d); "
                    "%d acknowledged, %d dropped, %d refused; %d of %d logins connected.",
                    SUMMARY_EVERY_SECONDS,
                    simulation.readings - last["readings"],
                    publisher.published - last["published"],
                    bad - last["bad"],
                    simulation.readings,
                    publisher.published,
                    bad,
                    publisher.acknowledged,
                    publisher.dropped,
                    publisher.refused,
                    len(publisher.connected),
                    len(publisher.clients),
                )
                last = {"readings": simulation.readings, "published": publisher.published, "bad": bad}


class Publisher:
    """One paho MQTT 5 client per login (device or gateway), each connecting and reconnecting in its own thread;
    a message goes out over the connection of the device or gateway its topic names. Counts what happens."""

    def __init__(self, broker: BrokerAddress, passwords: dict[str, str], prefix: str):
        self.broker = broker
        self.host, self.port = broker.host, broker.port
        self.prefix = prefix
        self.clients: dict[str, mqtt.Client] = {}
        for username, password in sorted(passwords.items()):
            login = dataclasses.replace(broker, username=username, password=password)
            client_id = f"fieldwatch-simulate-{username}-{socket.gethostname()}-{os.getpid()}"
            client = mqtt_client(login, client_id=client_id)
            client.reconnect_delay_set(min_delay=1, max_delay=30)
            client.max_queued_messages_set(MAX_QUEUED)
            client.user_data_set(username)
            client.on_connect = self._on_connect
            client.on_connect_fail = self._on_connect_fail
            client.on_disconnect = self._on_disconnect
            client.on_publish = self._on_publish
            self.clients[username] = client
        self.connected: set[str] = set()
        self.stopping = False
        self.published = self.acknowledged = self.dropped = self.refused = 0
        self.unacknowledged = collections.Counter()  # by login: what a stop waits for, on connected logins only
        self._lock = threading.Lock()  # the counters are written from every client's thread

    def start(self) -> None:
        # connect_async + loop_start: even the first connection is retried in the background, so a broker that
        # is down at start-up (or has not loaded our logins yet) is waited for like one that goes away later.
        for client in self.clients.values():
            client.connect_async(self.host, self.port, keepalive=30)
            client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        target = parse_topic(topic, self.prefix)
        client = self.clients.get((target.device_uid or target.gateway_uid) if target else None)
        if client is None:  # nobody may publish there (an unregistered device): the broker would refuse it
            with self._lock:
                self.refused += 1
            return
        info = client.publish(topic, payload, qos=1)
        with self._lock:
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self.dropped += 1
            else:  # sent now, or queued by paho until the connection is back
                self.published += 1
                self.unacknowledged[target.device_uid or target.gateway_uid] += 1

    def stop(self, drain_seconds: float) -> None:
        """Give in-flight messages ``drain_seconds`` to be acknowledged, then disconnect."""
        deadline = time.monotonic() + drain_seconds

        def in_flight() -> int:  # a refused or unreachable login's queue would only keep us waiting for nothing
            with self._lock:
                return sum(self.unacknowledged[username] for username in self.connected)

        while in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.acknowledged < self.published:
            logger.warning("%d messages were not acknowledged by the broker.", self.published - self.acknowledged)
        self.stopping = True
        for client in self.clients.values():
            client.disconnect()
        # In parallel: a network thread waiting to reconnect notices the stop only within a second, and one
        # login after another would outlast the process manager's grace period (honcho: 5 s, then SIGKILL).
        stoppers = [threading.Thread(target=client.loop_stop) for client in self.clients.values()]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()

    def _on_connect(self, client, username, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.error("MQTT broker %s:%d refused %s: %s", self.host, self.port, username, reason_code)
            return
        with self._lock:
            self.connected.add(username)
            if len(self.connected) == len(self.clients):
                logger.info(
                    "Connected to the MQTT broker at %s:%d as %d logins.", self.host, self.port, len(self.clients)
                )

    def _on_connect_fail(self, client, username):
        if username == min(self.clients):  # every login fails alike: one line per attempt, not one per login
            logger.warning("MQTT broker %s:%d not reachable; retrying.", self.host, self.port)

    def _on_disconnect(self, client, username, flags, reason_code, properties):
        with self._lock:
            was_connected = username in self.connected
            self.connected.discard(username)
        if was_connected and not self.stopping:
            logger.warning(
                "Lost the MQTT broker at %s:%d for %s (%s); reconnecting.", self.host, self.port, username, reason_code
            )

    def _on_publish(self, client, username, mid, reason_code, properties):
        with self._lock:
            self.acknowledged += 1
            self.unacknowledged[username] -= 1
            if reason_code.is_failure:  # e.g. 0x87: the ACL refused it (a login revoked meanwhile)
                self.refused += 1
