"""The crash drill: a QoS 1 stream into the real listener(s), SIGKILLed at random points and restarted, counted.

One run publishes ``messages`` readings, each with a timestamp of its own in a window no other run uses, round-robin
over the drill's devices, through the project's broker config. While the stream runs, listeners are SIGKILLed at
chosen points and restarted after a random delay under the same client id, and now and then the broker restarts.
When the broker has acknowledged every message and the stored count has settled, the run is counted exactly: one
message is one reading, so ``lost = published - distinct stored timestamps`` and ``doubled = rows - distinct``.

Kill points (``KILL_POINTS``):

* ``startup``: 0-1.5 s after a (re)start, usually before the listener has connected or subscribed;
* ``subscribed``: as soon as the listener has logged its SUBACK, before its first flush;
* ``streaming``: at a random message of the publisher, wherever the listener is;
* ``committed``: right after a flush committed and before its acknowledgements went out. The drill's listener
  process (``tests.support.instrumented_listener``) connects one extra receiver to ``readings_committed`` that
  marks each commit in a file and holds the flushing thread 50 ms, and the drill kills inside that window.

Used by ``tests/telemetry/test_crash_drill.py`` (a short randomised series in ``make test``) and
``bench/crash_drill.py`` (hundreds of runs, figures for the record).
"""

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg

from tests.support.broker import Broker
from tests.support.ports import free_port
from tests.support.processes import REPO_ROOT, wait_until

KILL_POINTS = ("startup", "subscribed", "streaming", "committed")
METRIC = "return_temp"
NO_MATCHING_SUBSCRIBERS = 0x10  # MQTT 5 PUBACK reason: the broker took the message and had nobody to give it to


@dataclasses.dataclass
class RunResult:
    run: int
    published: int
    stored: int
    rows: int
    kills: list[str]
    broker_restarted: bool
    listeners: int
    seconds: float
    unrouted: int = 0

    @property
    def lost(self) -> int:
        return self.published - self.stored

    @property
    def doubled(self) -> int:
        return self.rows - self.stored


class DrillListener:
    """One listener process of the drill, with the commit marker; same client id across restarts."""

    def __init__(self, client_id: str, env: dict, workdir: Path, metrics_port: int | None = None):
        self.client_id = client_id
        self.metrics_port = metrics_port  # --metrics-port: its counters (duplicates) for a drill to read
        self.env = env
        self.marker = workdir / f"{client_id}.commits"
        self.log_path = workdir / f"{client_id}.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.marker.write_text("")
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed with it
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.instrumented_listener", "--client-id", self.client_id]
            + (["--metrics-port", str(self.metrics_port)] if self.metrics_port else []),
            cwd=REPO_ROOT,
            env={**self.env, "FIELDWATCH_DRILL_COMMIT_MARKER": str(self.marker)},
            stdout=log,
            stderr=log,
        )
        log.close()
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def commits(self) -> int:
        try:
            return self.marker.stat().st_size
        except FileNotFoundError:
            return 0

    def output(self) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def subscribed(self) -> bool:
        return "subscribed" in self.output()

    def ready(self) -> bool:
        """Subscribed and able to store: under ``--processes`` (the default on a multi-core machine) the session
        subscribes at once while each worker process still loads Django, which takes seconds on a loaded machine;
        messages received meanwhile wait in the listener, unacknowledged."""
        output = self.output()
        workers = re.search(r"starting (\d+) ingest worker processes", output)
        started = int(workers.group(1)) if workers else 0
        return "subscribed" in output and len(re.findall(r"ingest worker \d+ ready", output)) >= started

    def subscriptions(self) -> int:
        """SUBACKs logged since the last start: one more after each reconnect to the broker."""
        return self.output().count("subscribed")

    def stop(self) -> int | None:
        if not self.alive():
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        return self.process.wait(30)


class CrashDrill:
    """Runs on one broker and one database, which the caller provides and has seeded with ``devices``."""

    def __init__(
        self,
        *,
        broker: Broker,
        database_url: str,
        prefix: str,
        devices: list[str],
        publisher_login: tuple[str, str],
        env: dict | None = None,
        seed: int = 0,
        messages: int = 5000,
        window_ms: int = 1000,
        metrics: bool = False,
    ):
        self.broker = broker
        self.database_url = database_url
        self.prefix = prefix
        self.devices = devices
        self.publisher_login = publisher_login  # one login allowed to publish for every device (Broker load_generators)
        self.random = random.Random(seed)
        self.messages = messages
        self.window_ms = window_ms
        self.metrics = metrics  # each listener serves Prometheus metrics on a free port of its own
        self.workdir = Path(tempfile.mkdtemp(prefix="fw-drill-"))
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.test"),
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": database_url,
            "MQTT_URL": broker.url,
            "MQTT_TOPIC_PREFIX": prefix,
            **(env or {}),
        }
        # Each drill's timestamps start a day back and move back a window per run: no run sees another's readings.
        self.base_ms = int(time.time() * 1000) - 86_400_000
        self.listeners: list[DrillListener] = []
        self.runs = 0

    # --- one run ---------------------------------------------------------------------------------------------------
    def run(
        self, *, listeners: int = 1, kills: int = 2, broker_restart: bool = False, points: tuple[str, ...] = KILL_POINTS
    ) -> RunResult:
        started = time.monotonic()
        self.runs += 1
        self._ensure_listeners(listeners)
        first_ts = self.base_ms - self.runs * max(self.messages, 1) * 2
        points = [self.random.choice(points) for _ in range(kills)]
        kill_at = sorted(self.random.sample(range(1, self.messages), kills)) if kills else []
        restart_at = self.random.randrange(self.messages // 4, self.messages) if broker_restart else None
        publisher = _Publisher(self.broker.port, self.publisher_login)
        actions = threading.Thread(target=self._act, args=(publisher, points, kill_at, restart_at), daemon=True)
        try:
            publisher.connect()
            actions.start()
            for i in range(self.messages):
                device = self.devices[i % len(self.devices)]
                payload = json.dumps({"ts": first_ts + i, "values": {METRIC: 20 + (i % 500) / 10}}).encode()
                publisher.publish(f"{self.prefix}/devices/{device}/telemetry", payload)
            actions.join(120)
            publisher.flush(timeout=120)
        finally:
            publisher.close()
        self._ensure_listeners(listeners)  # a kill scheduled at the very end may have left one down
        stored, rows = self._settle(first_ts)
        return RunResult(
            run=self.runs,
            published=publisher.acknowledged,
            stored=stored,
            rows=rows,
            kills=points,
            broker_restarted=restart_at is not None,
            listeners=listeners,
            seconds=round(time.monotonic() - started, 2),
            unrouted=publisher.unrouted,
        )

    def _act(self, publisher: "_Publisher", points: list[str], kill_at: list[int], restart_at: int | None) -> None:
        """The run's kills (and broker restart), each when the publisher reaches its message."""
        schedule = sorted([(at, "kill", point) for at, point in zip(kill_at, points, strict=True)])
        if restart_at is not None:
            schedule.append((restart_at, "broker", ""))
            schedule.sort()
        for at, action, point in schedule:
            wait_until(lambda at=at: publisher.sent >= at, timeout=60, interval=0.002)
            if action == "broker":
                self.broker.stop()
                time.sleep(self.random.uniform(0.1, 1.0))
                self.broker.start()
                continue
            victim = self.random.choice(self.listeners)
            self._kill(victim, point)
            time.sleep(self.random.uniform(0.0, 1.0))
            victim.start()

    def _kill(self, listener: DrillListener, point: str) -> None:
        if point == "startup":
            listener.kill()
            listener.start()
            time.sleep(self.random.uniform(0.0, 1.5))
        elif point == "subscribed":
            wait_until(listener.subscribed, timeout=20, interval=0.005)
        elif point == "committed":
            seen = listener.commits()
            wait_until(lambda: listener.commits() > seen, timeout=10, interval=0.002)
        listener.kill()

    def _ensure_listeners(self, count: int) -> None:
        while len(self.listeners) < count:
            client_id = f"{self.prefix}-listener-{len(self.listeners) + 1}"
            port = free_port() if self.metrics else None
            self.listeners.append(DrillListener(client_id, self.env, self.workdir, metrics_port=port))
        if len(self.listeners) > count:
            # A listener leaving the group keeps its session, which Mosquitto goes on assigning messages to.
            raise ValueError("a drill's group of listeners may grow, never shrink")
        for listener in self.listeners:
            if not listener.alive():
                listener.start()
        for listener in self.listeners:
            if not wait_until(listener.ready, timeout=60):
                raise AssertionError(f"listener {listener.client_id} did not get ready:\n{listener.output()}")

    def _settle(self, first_ts: int, quiet_seconds: float = 10.0, timeout: float = 120.0) -> tuple[int, int]:
        """Distinct timestamps and rows stored for the run, once everything arrived or nothing moved for a while.
        Called with every listener ready, so a quiet spell means nothing more is coming; it is long because only a
        run that lost something waits it out."""
        query = (
            "SELECT count(DISTINCT ts), count(*) FROM telemetry_reading "
            "WHERE ts >= to_timestamp(%s / 1000.0) AND ts < to_timestamp(%s / 1000.0)"
        )
        deadline = time.monotonic() + timeout
        last, last_change = None, time.monotonic()
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            while time.monotonic() < deadline:
                counts = connection.execute(query, [first_ts, first_ts + self.messages]).fetchone()
                if counts[0] >= self.messages:
                    return counts
                if counts != last:
                    last, last_change = counts, time.monotonic()
                elif time.monotonic() - last_change > quiet_seconds:
                    return counts
                time.sleep(0.1)
        return last

    def close(self) -> list[int | None]:
        """Stop the listeners (SIGTERM): their exit codes."""
        codes = [listener.stop() for listener in self.listeners]
        return codes


class _Publisher:
    """A QoS 1 MQTT 5 publisher with a 1,000-message in-flight window that counts what the broker acknowledged and
    rides out a broker restart (paho resends unacknowledged messages on reconnect)."""

    def __init__(self, port: int, login: tuple[str, str]):
        self.port = port
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"drill-publisher-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        self.client.username_pw_set(*login)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=1)
        self.client.on_publish = self._on_publish
        self.sent = 0
        self.acknowledged = 0
        self.unrouted = 0
        self._lock = threading.Lock()

    def connect(self) -> None:
        properties = mqtt.Properties(mqtt.PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 3600  # a broker restart must not drop the publisher's in-flight messages
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=properties)
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            self.acknowledged += 1
            if reason_code.value == NO_MATCHING_SUBSCRIBERS:
                self.unrouted += 1  # accepted and dropped by the broker: counted as lost if it is not stored

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)
        self.sent += 1

    def flush(self, timeout: float) -> None:
        """Wait until the broker acknowledged every message sent. Counted from PUBACKs rather than per message: one
        published while the broker was restarting is kept by paho and sent on reconnect, but its ``MQTTMessageInfo``
        already says "not connected"."""
        deadline = time.monotonic() + timeout
        while self.acknowledged < self.sent and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
