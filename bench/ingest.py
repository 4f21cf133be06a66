"""End-to-end ingest benchmark over MQTT and HTTP on a scratch database; prints one JSON object (see bench/README.md).

    python bench/ingest.py [--seconds 10] [--devices 200] [--json-out bench.json] [--database-url postgres://…/empty_db]

Everything runs against processes this script starts and stops itself: a scratch PostgreSQL database
(``fieldwatch_bench``, created and dropped unless ``--database-url`` names one), a Mosquitto on a free port with the
project's broker config, the real ``mqtt_listen`` command and a uvicorn serving the real ASGI application.
"""

import bisect
import http.client
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _django  # before any import from the checkout: sys.path, DEBUG off
import psycopg
from _support import (
    ScratchDatabase,
    argument_parser,
    catalogue_seed,
    log,
    machine_facts,
    plain_copy_baseline,
    result_print,
)

from tests.support.ports import free_port, wait_for_port

SCRATCH_DB = "fieldwatch_bench"
PREFIX = "fwbench"
METRICS = [f"m{i}" for i in range(10)]
PUBLISHERS = 2
HTTP_CLIENTS = 2
HTTP_BATCH = 500
INFLIGHT = 10_000
FLUSH_MS = 100
FLUSH_MESSAGES = 5000
POLL_SECONDS = 0.02
HOUR_MS = 3600 * 1000


# ---------------------------------------------------------------------------------------------------------------------
# Child processes (spawned: module-level functions, no Django needed)
# ---------------------------------------------------------------------------------------------------------------------


def _payload(ts: int, width: int, dialect: str = "native") -> bytes:
    """One device-topic message of ``width`` readings at ``ts`` (epoch ms), in ``dialect``: the same readings in
    every dialect, so the phases differ only in what the listener parses."""
    if dialect == "line_protocol":  # nanosecond timestamps, the protocol's default precision
        fields = ",".join(f"m{i}={i + 0.5}" for i in range(width))
        return b"heating %s %d" % (fields.encode(), ts * 1_000_000)
    if dialect in ("senml_json", "senml_cbor"):
        pack = [{"bt": ts / 1000, "n": "m0", "v": 0.5}] + [{"n": f"m{i}", "v": i + 0.5} for i in range(1, width)]
        if dialect == "senml_json":
            return json.dumps(pack).encode()
        import cbor2

        labels = {"bt": -3, "n": 0, "v": 2}  # RFC 8428 section 6
        return cbor2.dumps([{labels[key]: value for key, value in record.items()} for record in pack])
    if width == 1:
        return b'{"ts": %d, "values": {"m0": 1.5}}' % ts
    values = ", ".join(f'"m{i}": {i + 0.5}' for i in range(width))
    return b'{"ts": %d, "values": {%s}}' % (ts, values.encode())


DIALECTS = ("line_protocol", "senml_json", "senml_cbor")


def _publisher(port, uids, width, seconds, rate, ts_base, dialect, ready, go, results):
    """Publish QoS 1 as fast as the in-flight window allows (rate None) or at ``rate`` messages/s (paced)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.username_pw_set(*_django.LOAD_GENERATOR)
    client.max_inflight_messages_set(INFLIGHT)
    acked = [0]
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    client.on_publish = lambda *args: acked.__setitem__(0, acked[0] + 1)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    connected.wait(10)
    topics = [f"{PREFIX}/devices/{uid}/telemetry" for uid in uids]
    count = len(uids)
    last_ts = [0] * count

    def encode(start: int, size: int) -> list[tuple[str, bytes]]:  # message j goes to device j % count
        return [(topics[j % count], _payload(ts_base + j // count, width, dialect)) for j in range(start, start + size)]

    size = 200_000 if width == 1 else 60_000
    chunk = encode(0, size) if rate is None else []
    ready.put(os.getpid())
    go.wait()
    sent = 0
    first = time.time()
    started = time.monotonic()
    deadline = started + seconds
    try:
        while time.monotonic() < deadline:
            if rate is None:  # as fast as the in-flight window allows, pre-encoded
                if sent and sent % size == 0:
                    chunk = encode(sent, size)
                while sent - acked[0] >= INFLIGHT:
                    time.sleep(0.0002)
                topic, payload = chunk[sent % size]
                client.publish(topic, payload, qos=1)
                sent += 1
                continue
            target = int((time.monotonic() - started) * rate)
            if sent >= target:
                time.sleep(0.001)
                continue
            while sent < target:  # paced: ts is the publish time in epoch ms, unique per device
                device = sent % count
                ts = max(int(time.time() * 1000), last_ts[device] + 1)
                last_ts[device] = ts
                client.publish(topics[device], _payload(ts, width), qos=1)
                sent += 1
        last_publish = time.time()
        ack_deadline = time.monotonic() + 300
        while acked[0] < sent and time.monotonic() < ack_deadline:
            time.sleep(0.005)
        results.put(
            {
                "sent": sent,
                "acked": acked[0],
                "first_publish": first,
                "last_publish": last_publish,
                "all_acked": time.time(),
                "last_ts": _last_ts(uids, last_ts, rate, ts_base, sent),
            }
        )
    finally:
        client.disconnect()
        client.loop_stop()


def _last_ts(uids, last_ts, rate, ts_base, sent) -> dict[str, int]:
    """Each device's last ts (fast mode: message j went to device j % count with ts ts_base + j // count)."""
    if rate is not None:
        return {uid: ts for uid, ts in zip(uids, last_ts, strict=True) if ts}
    count = len(uids)
    return {uid: ts_base + (sent - 1 - i) // count for i, uid in enumerate(uids) if i < sent}


def _http_client(port, api_key, uids, seconds, ts_base, ready, go, results):
    """POST 500-record, 10-value batches on one keep-alive connection until the time is up."""
    count = len(uids)
    values = {metric: i + 0.5 for i, metric in enumerate(METRICS)}
    serial = [0]

    def body() -> bytes:
        records = []
        for _ in range(HTTP_BATCH):
            j = serial[0]
            serial[0] += 1
            records.append({"device": uids[j % count], "ts": ts_base + j // count, "values": values})
        return json.dumps(records).encode()

    bodies = [body() for _ in range(100)]
    headers = {"X-API-Key": api_key, "Content-Type": "application/json", "Connection": "keep-alive"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    ready.put(os.getpid())
    go.wait()
    first = time.time()
    deadline = time.monotonic() + seconds
    requests = accepted = failures = 0
    statuses: dict[str, int] = {}
    while time.monotonic() < deadline:
        payload = bodies[requests] if requests < len(bodies) else body()
        connection.request("POST", "/api/v1/ingest", body=payload, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        requests += 1
        statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
        if response.status == 202:
            accepted += json.loads(answer)["accepted"]
        else:
            failures += 1
    connection.close()
    results.put(
        {
            "requests": requests,
            "accepted": accepted,
            "failures": failures,
            "statuses": statuses,
            "first": first,
            "last": time.time(),
        }
    )


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


class Phase:
    """Spawned worker processes with a ready/go handshake; every one is terminated in ``close``."""

    def __init__(self):
        self.context = multiprocessing.get_context("spawn")
        self.ready = self.context.Queue()
        self.results = self.context.Queue()
        self.go = self.context.Event()
        self.processes = []

    def start(self, target, argument_sets) -> None:
        for arguments in argument_sets:
            process = self.context.Process(target=target, args=(*arguments, self.ready, self.go, self.results))
            process.start()
            self.processes.append(process)
        for _ in self.processes:
            self.ready.get(timeout=120)

    def run(self, timeout: float) -> list[dict]:
        self.go.set()
        results = [self.results.get(timeout=timeout) for _ in self.processes]
        for process in self.processes:
            process.join(10)
        return results

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(5)


# ---------------------------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------------------------


class IngestBenchmark:
    def __init__(self, database_url: str | None):
        self.scratch = ScratchDatabase(SCRATCH_DB, database_url)
        self.url = self.scratch.url
        self.processes: list[subprocess.Popen] = []
        self.phases: list[Phase] = []
        self.broker = None
        self.db = None
        self.logs = Path(tempfile.mkdtemp(prefix="fw-bench-"))
        self.ts_base = int(time.time() * 1000) - 12 * HOUR_MS  # each phase gets its own hour of timestamps

    def run(self, seconds: float, devices: int) -> dict:
        self.seconds = seconds
        result: dict = {}
        try:
            self.scratch.create(self._env())
            self.db = psycopg.connect(self.url, autocommit=True)
            api_key, uids = self._seed(devices)
            result["machine"] = self._machine()
            self._start_broker()
            self._start_listener()
            self._warm_up(uids)
            one = self._mqtt_throughput(uids, width=1, hour=1)
            result["a_mqtt_1_reading"] = one
            ten = self._mqtt_throughput(uids, width=10, hour=2)
            result["b_mqtt_10_readings"] = ten
            copy = self._copy_baseline()
            copy["ratio_b_over_e"] = round(ten["readings_per_s"] / copy["readings_per_s"], 3)
            result["e_plain_copy"] = copy
            # Before the latency phase: its readings carry the wall clock, later than every hour-offset phase's,
            # and phase completion is detected by the latest value reaching the phase's last timestamp.
            result["f_dialects"] = self._dialects(uids, native=ten, first_hour=5)
            result["c_latency_half_load"] = self._latency(uids, rate=one["messages_per_s"] / 2)
            result["d_http"] = self._http(api_key, uids, hour=4)
            result["settings"] = {
                "seconds": seconds,
                "devices": devices,
                "metrics_per_device": len(METRICS),
                "database": self.url,
                "scratch_database_dropped": self.scratch.dropped,
                "mqtt": {
                    "publishers": PUBLISHERS,
                    "qos": 1,
                    "protocol": "MQTT 5",
                    "publisher_max_inflight": INFLIGHT,
                    "broker_config": "docker/mosquitto/mosquitto.conf (listener/persistence/log rewritten)",
                    "listener": f"manage.py mqtt_listen --flush-ms {FLUSH_MS} --flush-messages {FLUSH_MESSAGES}",
                    "listener_processes": 1,
                },
                "http": {
                    "clients": HTTP_CLIENTS,
                    "records_per_request": HTTP_BATCH,
                    "values_per_record": 10,
                    "server": "uvicorn config.asgi:application (1 worker)",
                },
                "django_settings": f"{os.environ['DJANGO_SETTINGS_MODULE']} (DEBUG=False)",
                "latency_poll_interval_ms": POLL_SECONDS * 1000,
            }
        except KeyboardInterrupt:
            log("interrupted; stopping everything")
            raise
        finally:
            self._cleanup()
        return result

    # --- infrastructure ---------------------------------------------------------------------------------------------
    def _env(self, **extra) -> dict:
        tag = f"fw-bench-{os.getpid()}"
        return {
            **os.environ,
            "DATABASE_URL": self.url,
            "MQTT_URL": self.broker.url if self.broker else "mqtt://127.0.0.1:1",
            "MQTT_TOPIC_PREFIX": PREFIX,
            "CACHE_KEY_PREFIX": tag,  # keep the bench's cache keys (catalogue version, rate limits) apart
            "CHANNELS_PREFIX": tag,
            "DJANGO_LOG_LEVEL": "INFO",
            **extra,
        }

    def _spawn(self, name: str, command: list[str], **env) -> subprocess.Popen:
        output = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process's life
        process = subprocess.Popen(
            command,
            cwd=_django.REPO_ROOT,
            env=self._env(**env),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def _cleanup(self) -> None:
        for phase in self.phases:
            phase.close()
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        if self.broker is not None:
            self.broker.close()
        if self.db is not None:
            self.db.close()
        self.scratch.drop()
        log(f"logs of the processes: {self.logs}")

    def _start_broker(self) -> None:
        from tests.support.broker import Broker  # renders its files with the product's code: after django.setup()

        self.broker = Broker(prefix=PREFIX, load_generators=dict([_django.LOAD_GENERATOR]))
        self.broker.start()
        log(f"mosquitto on {self.broker.url}")

    def _start_listener(self) -> None:
        self.listener = self._spawn(
            "listener",
            [
                sys.executable,
                "manage.py",
                "mqtt_listen",
                "--client-id",
                f"bench-{os.getpid()}",
                "--flush-ms",
                str(FLUSH_MS),
                "--flush-messages",
                str(FLUSH_MESSAGES),
            ],
        )
        deadline = time.monotonic() + 60
        while b"subscribed" not in (self.logs / "listener.log").read_bytes():
            if self.listener.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the listener did not subscribe; see {self.logs / 'listener.log'}")
            time.sleep(0.05)

    def _machine(self) -> dict:
        facts = machine_facts(self.db, ("shared_buffers", "synchronous_commit", "fsync", "max_wal_size"))
        mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True)
        facts["mosquitto"] = (mosquitto.stdout or mosquitto.stderr).splitlines()[0].strip()
        return facts

    # --- data -------------------------------------------------------------------------------------------------------
    def _seed(self, count: int) -> tuple[str, list[str]]:
        """The bench catalogue with gauges m0..m9, a gateway with an API key and ``count`` devices behind it."""
        from django.db import connections

        from apps.devices.models import Device, Gateway
        from apps.devices.services import api_key_issue

        self.scratch.use()
        site, device_type = catalogue_seed(METRICS)
        (gateway,) = Gateway.objects.bulk_create([Gateway(site=site, uid="bench-gw", name="Bench gateway")])
        uids = [f"bench-{i:05d}" for i in range(count)]
        Device.objects.bulk_create(
            Device(uid=uid, name=uid, site=site, device_type=device_type, gateway=gateway) for uid in uids
        )
        _, plaintext = api_key_issue(gateway=gateway, name="bench")
        connections.close_all()
        return plaintext, uids

    def _count(self) -> int:
        return self.db.execute("SELECT count(*) FROM telemetry_reading").fetchone()[0]

    def _truncate(self) -> None:
        self.db.execute("TRUNCATE telemetry_reading, telemetry_deadletter")

    def _refusals(self) -> dict[str, int]:
        """Dead letters of the phase by reason: a complete phase has none."""
        rows = self.db.execute("SELECT reason, count(*) FROM telemetry_deadletter GROUP BY reason").fetchall()
        return dict(rows)

    def _wait_committed(self, last_ts: dict[str, int], timeout: float = 300.0) -> float | None:
        """Poll (every 20 ms, cheaply: LatestValue of m0) until each device's last message is committed.

        Per device the messages come from one publisher over one connection, in order, and the listener commits
        in arrival order, so the last one committed means all of them are. Returns the server time (epoch s) of
        the first poll that saw it: the last commit happened before that snapshot, at most one interval earlier.
        """
        uids = list(last_ts)
        marks = [last_ts[uid] for uid in uids]
        query = """
            SELECT count(*), extract(epoch FROM now())::float8
              FROM unnest(%s::text[], %s::bigint[]) AS e(uid, last_ms)
              JOIN devices_device d ON d.uid = e.uid
              JOIN telemetry_series s ON s.device_id = d.id AND s.metric_key = 'm0'
              JOIN telemetry_latestvalue lv ON lv.series_id = s.id
             WHERE lv.ts >= to_timestamp(e.last_ms / 1000.0) - interval '0.5 ms'
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, observed = self.db.execute(query, (uids, marks)).fetchone()
            if done >= len(uids):
                return observed
            time.sleep(POLL_SECONDS)
        return None

    # --- phases -----------------------------------------------------------------------------------------------------
    def _publish(self, uids, *, width, seconds, rate=None, hour=0, dialect="native") -> list[dict]:
        phase = Phase()
        self.phases.append(phase)
        halves = [uids[i::PUBLISHERS] for i in range(PUBLISHERS)]
        per_process = rate / PUBLISHERS if rate else None
        base = self.ts_base + hour * HOUR_MS
        arguments = [(self.broker.port, half, width, seconds, per_process, base, dialect) for half in halves]
        phase.start(_publisher, arguments)
        results = phase.run(timeout=seconds + 400)
        phase.close()
        return results

    def _warm_up(self, uids) -> None:
        """One 10-value message per device: creates the series and loads caches outside any timed phase."""
        log("warm-up")
        results = self._publish(uids, width=10, seconds=0.3, hour=0)
        last_ts = {uid: ts for result in results for uid, ts in result["last_ts"].items()}
        if self._wait_committed(last_ts, timeout=60) is None:
            raise SystemExit(f"warm-up readings never committed; see {self.logs / 'listener.log'}")
        self._truncate()

    def _dialects(self, uids, *, native: dict, first_hour: int) -> dict:
        """Phase (b) again in each other dialect: readings/s beside the native JSON figure of the same run."""
        figures = {}
        for offset, dialect in enumerate(DIALECTS):
            phase = self._mqtt_throughput(uids, width=10, hour=first_hour + offset, dialect=dialect)
            phase["ratio_to_native_json"] = round(phase["readings_per_s"] / native["readings_per_s"], 3)
            figures[dialect] = phase
        return figures

    def _mqtt_throughput(self, uids, *, width: int, hour: int, dialect: str = "native") -> dict:
        log(f"MQTT throughput, {width}-reading messages ({dialect}), {self.seconds} s")
        self._truncate()
        results = self._publish(uids, width=width, seconds=self.seconds, hour=hour, dialect=dialect)
        last_ts = {uid: ts for result in results for uid, ts in result["last_ts"].items()}
        last_commit = self._wait_committed(last_ts)
        committed = self._count()
        first = min(result["first_publish"] for result in results)
        last_publish = max(result["last_publish"] for result in results)
        sent = sum(result["sent"] for result in results)
        elapsed = (last_commit or time.time()) - first
        return {
            "messages_published": sent,
            "messages_acked_by_broker": sum(result["acked"] for result in results),
            "readings_committed": committed,
            "readings_expected": sent * width,
            "complete": last_commit is not None and committed == sent * width,
            "dead_letters_by_reason": self._refusals(),
            "publish_seconds": round(last_publish - first, 3),
            "first_publish_to_last_commit_s": round(elapsed, 3),
            "drain_after_last_publish_s": round((last_commit or time.time()) - last_publish, 3),
            "publish_rate_messages_per_s": round(sent / (last_publish - first)),
            "messages_per_s": round(committed / width / elapsed),
            "readings_per_s": round(committed / elapsed),
        }

    def _copy_baseline(self) -> dict:
        """The rows phase (b) committed, COPYed (binary, one transaction) into a like table: the floor of the cost."""
        log("plain COPY baseline")
        copy = plain_copy_baseline(self.db)
        copy["rows_in_b"] = copy["rows"]
        copy["note"] += " (the rows of (b))"
        return copy

    def _latency(self, uids, *, rate: float) -> dict:
        log(f"latency at {rate:.0f} messages/s")
        self._truncate()
        samples: list[tuple[float, float]] = []  # (max committed ts ms, server now ms)
        stop = threading.Event()

        def poll():
            with psycopg.connect(self.url, autocommit=True) as poller:
                query = (
                    "SELECT coalesce(extract(epoch FROM max(ts)) * 1000, 0)::float8,"
                    " (extract(epoch FROM now()) * 1000)::float8 FROM telemetry_latestvalue"
                )
                while not stop.is_set():
                    samples.append(poller.execute(query).fetchone())
                    time.sleep(POLL_SECONDS)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            results = self._publish(uids, width=1, seconds=self.seconds, rate=rate)
            last_ts = {uid: ts for result in results for uid, ts in result["last_ts"].items()}
            complete = self._wait_committed(last_ts, timeout=120) is not None
            time.sleep(3 * POLL_SECONDS)
        finally:
            stop.set()
            poller.join(5)
        stamps = [
            row[0] for row in self.db.execute("SELECT (extract(epoch FROM ts) * 1000)::float8 FROM telemetry_reading")
        ]
        high, seen = [], []
        running = 0.0
        for max_ts, observed in samples:
            running = max(running, max_ts)
            high.append(running)
            seen.append(observed)
        latencies = []
        for ts in stamps:
            index = bisect.bisect_left(high, ts - 0.5)
            if index < len(high):
                latencies.append(seen[index] - ts)
        latencies.sort()
        first = min(result["first_publish"] for result in results)
        last = max(result["last_publish"] for result in results)
        sent = sum(result["sent"] for result in results)
        gaps = [b[1] - a[1] for a, b in itertools.pairwise(samples)]
        return {
            "target_messages_per_s": round(rate),
            "achieved_publish_messages_per_s": round(sent / (last - first)),
            "messages_published": sent,
            "readings_committed": len(stamps),
            "complete": complete and len(stamps) == sent,
            "latency_ms": {
                "p50": round(_percentile(latencies, 0.50), 1) if latencies else None,
                "p95": round(_percentile(latencies, 0.95), 1) if latencies else None,
                "p99": round(_percentile(latencies, 0.99), 1) if latencies else None,
                "max": round(latencies[-1], 1) if latencies else None,
                "readings_measured": len(latencies),
            },
            "poll_interval_ms_median": round(sorted(gaps)[len(gaps) // 2], 1) if gaps else None,
        }

    def _http(self, api_key: str, uids, *, hour: int) -> dict:
        log(f"HTTP ingest, {HTTP_CLIENTS} clients x {HTTP_BATCH}-record batches, {self.seconds} s")
        port = free_port()
        self._spawn(
            "uvicorn",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            INGEST_HTTP_RATE_PER_MINUTE="1000000000",
        )
        wait_for_port(port, timeout=30)
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        warm.request(
            "POST",
            "/api/v1/ingest",
            body=json.dumps(
                [{"device": uid, "ts": self.ts_base + hour * HOUR_MS - 1, "values": {"m0": 1.0}} for uid in uids]
            ),
            headers={"X-API-Key": api_key},
        )
        answer = warm.getresponse()
        warm_body = answer.read()
        warm.close()
        if answer.status != 202:
            raise SystemExit(f"HTTP warm-up answered {answer.status}: {warm_body[:300]!r}")
        self._truncate()
        phase = Phase()
        self.phases.append(phase)
        halves = [uids[i::HTTP_CLIENTS] for i in range(HTTP_CLIENTS)]
        base = self.ts_base + hour * HOUR_MS
        phase.start(_http_client, [(port, api_key, half, self.seconds, base) for half in halves])
        results = phase.run(timeout=self.seconds + 300)
        phase.close()
        committed = self._count()
        first = min(result["first"] for result in results)
        last = max(result["last"] for result in results)
        statuses: dict[str, int] = {}
        for result in results:
            for code, number in result["statuses"].items():
                statuses[code] = statuses.get(code, 0) + number
        requests = sum(result["requests"] for result in results)
        return {
            "requests": requests,
            "statuses": statuses,
            "readings_accepted": sum(result["accepted"] for result in results),
            "readings_committed": committed,
            "seconds": round(last - first, 3),
            "requests_per_s": round(requests / (last - first), 1),
            "readings_per_s": round(committed / (last - first)),
        }


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each timed phase.")
    parser.add_argument("--devices", type=int, default=200)
    args = parser.parse_args()
    _django.setup()
    result_print(IngestBenchmark(args.database_url).run(args.seconds, args.devices), args.json_out)


if __name__ == "__main__":
    main()
