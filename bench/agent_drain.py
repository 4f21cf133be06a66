"""The edge agent's drain into a real Fieldwatch: readings/s from its SQLite buffer to committed rows, over MQTT (the
project's broker config and the real ``mqtt_listen``) and over HTTP (the real ``/api/v1/ingest`` on uvicorn), each
beside a plain client sending the very same payloads without a buffer, in the same run; and buffer bytes per reading.

    python bench/agent_drain.py [--readings 20000] [--repeat 3] [--json-out agent-drain.json]

The agent side is the agent's own code, in this process: a ``Buffer`` filled with ``--readings`` polls of four values
(eight devices behind one gateway, as ``agent/bench/drain.py``), drained by its ``Forwarder`` with an unbounded drain
rate through its ``MqttSink`` (the gateway's broker login, QoS 1, 500 readings a message, 20 in flight: the
defaults) or ``HttpSink`` (the gateway's API key, 2,000 readings a request). The plain client publishes (paho, the
same login and in-flight window) or POSTs (``http.client``, one keep-alive connection) the same payloads, encoded
before the clock starts: what the platform takes when nothing stands between it and ready-made messages.

Every figure is timed to the platform's commit: the drain ends when every device's last reading is in
``telemetry_latestvalue`` (the sends go oldest first over one connection and the listener commits in arrival order),
then ``count(*)`` of ``telemetry_reading`` checks nothing is missing. The MQTT phases also report when the last
PUBACK came (the broker has it; for the agent, the buffer is empty). Scratch database ``fieldwatch_agent_drain``
(created, dropped), its own Mosquitto, listener and uvicorn; one JSON object on stdout.
"""

import http.client
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import _django  # before any import from the checkout: sys.path, DEBUG off
import paho.mqtt.client as mqtt
import psycopg
from _support import ScratchDatabase, argument_parser, catalogue_seed, log, machine_facts, result_print
from fieldwatch_agent.buffer import Buffer, BufferedReading, Reading
from fieldwatch_agent.config import ForwardingConfig, HttpSinkConfig, MqttSinkConfig
from fieldwatch_agent.forwarder import Forwarder, batch_limit_for
from fieldwatch_agent.health import Health
from fieldwatch_agent.sinks import HttpSink, MqttSink
from fieldwatch_agent.wire import messages

DATABASE = "fieldwatch_agent_drain"
PREFIX = "fwagentdrain"
GATEWAY = "bench-agent-gw"
DEVICES = [f"bench-fm-{n}" for n in range(8)]
VALUES = {"flow_rate": 12.345678, "water_temp": 14.25, "volume_m3": 123456.789, "status": 1}
HOUR_MS = 3_600_000
TIMEOUT_S = 600


def polls(count: int, base_ms: int) -> list[Reading]:
    """``count`` polls, round robin over the devices, a millisecond apart: every (device, ts) unique."""
    return [Reading(DEVICES[i % len(DEVICES)], base_ms + i, dict(VALUES)) for i in range(count)]


class Platform:
    """The scratch database, broker, listener and uvicorn, and the probes the phases time themselves with."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.scratch = ScratchDatabase(DATABASE)
        self.env = {
            **os.environ,
            "DATABASE_URL": self.scratch.url,
            "MQTT_TOPIC_PREFIX": PREFIX,
            "CACHE_KEY_PREFIX": f"fwagentdrain-{os.getpid()}",
            "CHANNELS_PREFIX": f"fwagentdrain-{os.getpid()}",
            "INGEST_HTTP_RATE_PER_MINUTE": "1000000000",
        }
        self.processes: list[subprocess.Popen] = []
        self.broker = None
        self.db = None

    def start(self) -> dict:
        from tests.support.broker import Broker  # renders its files with the product's code: after django.setup()
        from tests.support.ports import free_port, wait_for_port

        self.scratch.create(self.env)
        secrets = self._seed()
        self.broker = Broker(prefix=PREFIX)
        self.broker.start()
        self.broker.sync(PREFIX)  # in this process, whose database is the scratch one (and listener password)
        self.env["MQTT_URL"] = self.broker.url
        listener = ["manage.py", "mqtt_listen", "--client-id", f"agent-drain-{os.getpid()}"]
        self._spawn("listener", *listener, "--flush-ms", "100", "--flush-messages", "5000")  # as bench/ingest.py
        self.http_port = free_port()
        self._spawn(
            "uvicorn",
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.http_port),
            "--no-access-log",
            "--log-level",
            "warning",
        )
        wait_for_port(self.http_port, timeout=30)
        self.db = psycopg.connect(self.scratch.url, autocommit=True)
        time.sleep(3)  # the listener's subscription
        return secrets

    def _seed(self) -> dict:
        from django.db import connections

        from apps.devices.broker_auth import mqtt_credential_issue
        from apps.devices.models import Device, Gateway
        from apps.devices.services import api_key_issue

        self.scratch.use()
        site, device_type = catalogue_seed(list(VALUES))
        (gateway,) = Gateway.objects.bulk_create([Gateway(site=site, uid=GATEWAY, name="Bench agent gateway")])
        Device.objects.bulk_create(
            Device(uid=uid, name=uid, site=site, device_type=device_type, gateway=gateway) for uid in DEVICES
        )
        _, password = mqtt_credential_issue(gateway=gateway)
        _, api_key = api_key_issue(gateway=gateway, name="bench")
        connections.close_all()
        return {"password": password, "api_key": api_key}

    def _spawn(self, name: str, *args: str) -> None:
        log_file = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - for the process's lifetime
        self.processes.append(
            subprocess.Popen(
                [sys.executable, *args], cwd=_django.REPO_ROOT, env=self.env, stdout=log_file, stderr=log_file
            )
        )

    @property
    def mqtt_url(self) -> str:
        return self.broker.url

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/api/v1/ingest"

    def truncate(self) -> None:
        self.db.execute("TRUNCATE telemetry_reading, telemetry_deadletter")

    def wait_stored(self, last_ts: dict[str, int], started: float) -> float:
        """Seconds from ``started`` until every device's last reading is committed (polled every 20 ms)."""
        devices, stamps = list(last_ts), [last_ts[uid] for uid in last_ts]
        query = """
            SELECT count(*) FROM telemetry_latestvalue lv
            JOIN telemetry_series s ON s.id = lv.series_id JOIN devices_device d ON d.id = s.device_id
            JOIN unnest(%s::text[], %s::bigint[]) AS last(uid, ts_ms) ON last.uid = d.uid
            WHERE s.metric_key = 'flow_rate' AND lv.ts > to_timestamp(last.ts_ms / 1000.0) - interval '0.5 ms'
        """
        while time.monotonic() - started < TIMEOUT_S:
            if self.db.execute(query, (devices, stamps)).fetchone()[0] == len(devices):
                return time.monotonic() - started
            time.sleep(0.02)
        raise SystemExit(f"not stored within {TIMEOUT_S} s; logs in {self.workdir}")

    def stored(self) -> tuple[int, dict]:
        rows = self.db.execute("SELECT count(*) FROM telemetry_reading").fetchone()[0]
        refused = dict(self.db.execute("SELECT reason, count(*) FROM telemetry_deadletter GROUP BY reason").fetchall())
        return rows, refused

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.db is not None:
            self.db.close()
        if self.broker is not None:
            self.broker.close()
        self.scratch.drop()


# ---------------------------------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------------------------------


def last_ts_per_device(readings: list[Reading]) -> dict[str, int]:
    last: dict[str, int] = {}
    for reading in readings:
        last[reading.device] = max(reading.ts, last.get(reading.device, 0))
    return last


def figures(platform: Platform, count: int, seconds: float, **extra) -> dict:
    rows, refused = platform.stored()
    return {
        "readings": count,
        "values_stored": rows,
        "complete": rows == count * len(VALUES) and not refused,
        "dead_letters_by_reason": refused,
        "seconds_to_last_commit": round(seconds, 3),
        "readings_per_s": round(count / seconds),
        "values_per_s": round(rows / seconds),
        **extra,
    }


def agent_drain(platform: Platform, sink, batch: list[Reading], directory: Path, name: str) -> dict:
    """The agent's own buffer and forwarder: fill, then drain with an unbounded rate until the platform has it."""
    buffer = Buffer(directory / f"{name}.sqlite3", synchronous="full")
    for start in range(0, len(batch), 1000):
        buffer.append(batch[start : start + 1000])
    stats = buffer.stats()
    bytes_per_reading = stats.bytes_in_use / stats.depth
    platform.truncate()
    stop = threading.Event()
    forwarder = Forwarder(
        buffer, sink, ForwardingConfig(drain_rate=1e9, linger_s=0), Health(), stop, batch_limit=batch_limit_for(sink)
    )
    emptied: list[float] = []

    def watch_buffer():
        while not stop.is_set():
            if not buffer.stats().depth:
                emptied.append(time.monotonic() - started)
                return
            time.sleep(0.02)

    started = time.monotonic()
    forwarder.start()
    watcher = threading.Thread(target=watch_buffer, daemon=True)
    watcher.start()
    seconds = platform.wait_stored(last_ts_per_device(batch), started)
    watcher.join(TIMEOUT_S)
    stop.set()
    forwarder.join(30)
    buffer.close()
    return figures(
        platform,
        len(batch),
        seconds,
        seconds_to_buffer_empty=round(emptied[0], 3) if emptied else None,
        buffer_bytes_per_reading=round(bytes_per_reading, 1),
    )


def plain_mqtt(platform: Platform, config: MqttSinkConfig, batch: list[Reading]) -> dict:
    """The same payloads the sink would send, pre-encoded, published by a bare paho client with the same login and
    in-flight window: no buffer, no deletes, nothing kept for a resend."""
    payloads = [m.payload for m in _messages(batch, config.readings_per_message, config.max_payload_bytes)]
    platform.truncate()
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"plain-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.username_pw_set(config.uid, config.resolved_password())
    client.max_inflight_messages_set(config.inflight_messages)
    url = urlsplit(platform.mqtt_url)
    client.connect(url.hostname, url.port)
    client.loop_start()
    started = time.monotonic()
    infos = [client.publish(config.topic, payload, qos=1) for payload in payloads]
    for info in infos:
        info.wait_for_publish(TIMEOUT_S)
    acked = time.monotonic() - started
    seconds = platform.wait_stored(last_ts_per_device(batch), started)
    client.loop_stop()
    client.disconnect()
    return figures(platform, len(batch), seconds, seconds_to_last_puback=round(acked, 3), messages=len(payloads))


def plain_http(platform: Platform, config: HttpSinkConfig, batch: list[Reading]) -> dict:
    """The same request bodies the sink would POST, pre-encoded, over one keep-alive ``http.client`` connection."""
    bodies = [m.payload for m in _messages(batch, config.readings_per_request, config.max_body_bytes)]
    platform.truncate()
    connection = http.client.HTTPConnection("127.0.0.1", platform.http_port, timeout=120)
    headers = {"X-API-Key": config.resolved_api_key(), "Content-Type": "application/json"}
    started = time.monotonic()
    for body in bodies:
        connection.request("POST", "/api/v1/ingest", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 202:
            raise SystemExit(f"plain HTTP got {response.status}: {answer[:300]!r}")
    seconds = platform.wait_stored(last_ts_per_device(batch), started)
    connection.close()
    return figures(platform, len(batch), seconds, requests=len(bodies))


def _messages(batch: list[Reading], per_message: int, max_bytes: int):
    # The agent's wire module splits and encodes; ids are irrelevant to a client that keeps nothing.
    items = [BufferedReading(n, 0, reading) for n, reading in enumerate(batch)]
    return list(messages(items, gateway=True, per_message=per_message, max_bytes=max_bytes))


def warm_up(platform: Platform, mqtt_config: MqttSinkConfig, http_config: HttpSinkConfig, base_ms: int) -> None:
    """One reading per device over each path: series created, the listener's and the web process's caches full."""
    plain_mqtt(platform, mqtt_config, polls(len(DEVICES), base_ms))
    plain_http(platform, http_config, polls(len(DEVICES), base_ms + 100))


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--readings", type=int, default=20_000, help="Polls of four values per phase.")
    parser.add_argument("--repeat", type=int, default=3, help="Runs of the four phases, one after the other.")
    args = parser.parse_args()
    _django.setup()
    workdir = Path(tempfile.mkdtemp(prefix="fw-bench-agent-"))
    platform = Platform(workdir)
    try:
        secrets = platform.start()
        mqtt_config = MqttSinkConfig(
            kind="mqtt", url=platform.mqtt_url, uid=GATEWAY, password=secrets["password"], topic_prefix=PREFIX
        )
        http_config = HttpSinkConfig(kind="http", url=platform.ingest_url, api_key=secrets["api_key"])
        # Each phase its own hour of timestamps, within retention and in the past.
        hours = iter(range(1, 4 * args.repeat + 1))
        base = int(time.time() * 1000) - (4 * args.repeat + 2) * HOUR_MS
        warm_up(platform, mqtt_config, http_config, base)
        result: dict = {"readings_per_phase": args.readings, "values_per_reading": len(VALUES), "runs": []}
        for run in range(1, args.repeat + 1):
            phases = {}
            log(f"run {run}: MQTT, the agent's drain of {args.readings} buffered readings")
            batch = polls(args.readings, base + next(hours) * HOUR_MS)
            phases["mqtt_agent"] = agent_drain(platform, MqttSink(mqtt_config), batch, workdir, f"mqtt-{run}")
            log(f"run {run}: MQTT, the same payloads from a plain publisher")
            phases["mqtt_plain"] = plain_mqtt(platform, mqtt_config, polls(args.readings, base + next(hours) * HOUR_MS))
            log(f"run {run}: HTTP, the agent's drain of {args.readings} buffered readings")
            batch = polls(args.readings, base + next(hours) * HOUR_MS)
            phases["http_agent"] = agent_drain(platform, HttpSink(http_config), batch, workdir, f"http-{run}")
            log(f"run {run}: HTTP, the same bodies from a plain keep-alive client")
            phases["http_plain"] = plain_http(platform, http_config, polls(args.readings, base + next(hours) * HOUR_MS))
            for path in ("mqtt", "http"):
                ratio = phases[f"{path}_agent"]["readings_per_s"] / phases[f"{path}_plain"]["readings_per_s"]
                phases[f"ratio_{path}_agent_over_plain"] = round(ratio, 2)
            result["runs"].append(phases)
        runs = result["runs"]
        result["summary"] = {
            f"{name}_readings_per_s": [run[name]["readings_per_s"] for run in runs]
            for name in ("mqtt_agent", "mqtt_plain", "http_agent", "http_plain")
        } | {
            f"ratio_{path}_agent_over_plain": [run[f"ratio_{path}_agent_over_plain"] for run in runs]
            for path in ("mqtt", "http")
        }
        result["complete"] = all(phase["complete"] for run in runs for phase in run.values() if isinstance(phase, dict))
        result["buffer_bytes_per_reading"] = runs[0]["mqtt_agent"]["buffer_bytes_per_reading"]
        result["machine"] = machine_facts(platform.db, ("synchronous_commit", "fsync"))
        result["machine"]["load_average"] = os.getloadavg()
        result["logs"] = str(workdir)
        result_print(result, args.json_out)
    finally:
        platform.close()


if __name__ == "__main__":
    main()
