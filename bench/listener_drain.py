"""Listener capacity without competing publishers: queue messages in the broker first, then time the drain.

``bench/ingest.py`` measures the whole path with publishers running on the same two cores, where the Python
publishers themselves top out near 5,500 messages/s. This isolates the listener (and the writer and PostgreSQL
behind it): the listener's persistent session is created, the listener stopped, N messages published into the
session's queue, and the listener(s) started again; the rate is measured from the first to the last commit.

    python bench/listener_drain.py [--messages 30000] [--readings-per-message 10] [--listeners 1] [--processes N]
                                   [--peer nodered]

The listeners run ``manage.py mqtt_listen`` with its defaults. After the drain, the same readings are stored again
by the writer alone (``readings_write``, COPY + the one statement, in flushes of the listener's default size) and
COPYed plainly (binary, one transaction) into a like table, so the distance to the storage floor is printed beside
the listener's figure.

Uses a scratch database ``fieldwatch_drain_<pid>`` on the configured server (created and dropped) and a Mosquitto of
its own with the project config. Prints one JSON object.

``--peer nodered`` then runs the Node-RED peer's drain script (``--peer-script``; default: ``drain.py`` of the
``peers/nodered`` checkout beside this repository) with the same messages under the same method, and prints both
figures and their ratio: a speed claim is a ratio measured side by side in one run. The peer acknowledges on
receipt (at most once), so it promises less than the listener does.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _django  # before any import from the checkout: sys.path, DEBUG off
import paho.mqtt.client as mqtt
import psycopg
from _support import ScratchDatabase, log, plain_copy_baseline

DATABASE = f"fieldwatch_drain_{os.getpid()}"  # per run: two engineers' drains on one server never meet
DEVICES = 200
SETUP = f"""
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory, SiteFactory
site = SiteFactory()
device_type = DeviceTypeFactory(organization=site.organization)
for i in range(10):
    MetricDefinitionFactory(device_type=device_type, key=f"m{{i}}", min_value=-1e9, max_value=1e9)
for i in range({DEVICES}):
    DeviceFactory(uid=f"drain-{{i}}", site=site, device_type=device_type)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--readings-per-message", type=int, default=10, choices=range(1, 11))
    parser.add_argument("--listeners", type=int, default=1)
    parser.add_argument(
        "--processes", type=int, default=None, help="mqtt_listen --processes (default: its own, the cores)"
    )
    parser.add_argument("--peer", choices=["nodered"], default=None, help="Also drain the same messages with a peer.")
    parser.add_argument("--peer-script", default=str(DEFAULT_PEER_SCRIPT))
    args = parser.parse_args()
    result = fieldwatch_drain(args)
    if args.peer:
        peer = peer_drain(args)
        result = {
            "fieldwatch": result,
            "peer": peer,
            "ratio_readings_per_s": round(result["readings_per_s"] / peer["readings_per_s"], 2),
        }
    print(json.dumps(result, indent=2))


DEFAULT_PEER_SCRIPT = Path(_django.REPO_ROOT).parent / "shared" / "peers" / "nodered" / "drain.py"


def peer_drain(args) -> dict:
    """The peer's own drain script, from a directory holding the project's broker config as the peer reads it
    (``docker/mosquitto/mosquitto.conf``, with the plugin lines left out: the peer's broker runs without our auth)."""
    script = Path(args.peer_script)
    if not script.exists():
        raise SystemExit(f"no peer drain script at {script} (--peer-script)")
    workdir = Path(tempfile.mkdtemp(prefix="fw-peer-"))
    config = (Path(_django.REPO_ROOT) / "docker" / "mosquitto" / "mosquitto.conf").read_text()
    (workdir / "docker" / "mosquitto").mkdir(parents=True)
    (workdir / "docker" / "mosquitto" / "mosquitto.conf").write_text(re.sub(r"(?m)^plugin.*\n", "", config))
    command = [
        sys.executable,
        str(script),
        "--messages",
        str(args.messages),
        "--readings-per-message",
        str(args.readings_per_message),
    ]
    output = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=1800, check=True).stdout
    return json.loads(output[output.index("{") :])


def fieldwatch_drain(args) -> dict:
    _django.setup()
    from django.conf import settings

    from tests.support.broker import Broker  # renders its files with the product's code: after django.setup()

    scratch = ScratchDatabase(DATABASE)
    env = {
        **os.environ,
        "DATABASE_URL": scratch.url,
        "MQTT_TOPIC_PREFIX": "fwdrain",
        "CACHE_KEY_PREFIX": f"fwdrain-{os.getpid()}",
    }
    manage = [sys.executable, "manage.py"]
    broker = Broker(prefix="fwdrain", load_generators=dict([_django.LOAD_GENERATOR]))
    listeners = []
    try:
        scratch.create(env)
        # Its banner goes to stderr: stdout is the one JSON object.
        subprocess.run([*manage, "shell", "-c", SETUP], cwd=_django.REPO_ROOT, env=env, check=True, stdout=sys.stderr)
        broker.start()
        env["MQTT_URL"] = broker.url

        processes = ["--processes", str(args.processes)] if args.processes else []

        def start_listeners():
            return [
                subprocess.Popen(
                    # Otherwise its defaults.
                    [*manage, "mqtt_listen", "--client-id", f"drain-{n}", *processes],
                    cwd=_django.REPO_ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for n in range(args.listeners)
            ]

        # Create the persistent sessions (and their shared subscriptions), then leave them to queue.
        listeners = start_listeners()
        time.sleep(4)
        for process in listeners:
            process.terminate()
            process.wait(30)

        publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        publisher.username_pw_set(*_django.LOAD_GENERATOR)
        publisher.max_inflight_messages_set(20_000)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        first_ts = int(time.time() * 1000) - 3_000_000
        pending = []
        for i in range(args.messages):
            values = {f"m{k}": i * 0.5 + k for k in range(args.readings_per_message)}
            payload = json.dumps({"ts": first_ts + i, "values": values}).encode()
            pending.append(publisher.publish(f"fwdrain/devices/drain-{i % DEVICES}/telemetry", payload, qos=1))
        for info in pending:
            info.wait_for_publish(120)
        publisher.loop_stop()
        publisher.disconnect()

        expected = args.messages * args.readings_per_message
        started = time.monotonic()
        listeners = start_listeners()
        first = None
        with psycopg.connect(scratch.url, autocommit=True) as conn:
            while time.monotonic() - started < 300:
                stored = conn.execute("SELECT count(*) FROM telemetry_reading").fetchone()[0]
                if stored and first is None:
                    first = (time.monotonic(), stored)
                    cpu_at_first = cpu_seconds(listeners)
                if stored >= expected:
                    break
                time.sleep(0.05)
        finished = time.monotonic()
        cpu = cpu_seconds(listeners) - cpu_at_first
        seconds = finished - first[0]
        drained = stored - first[1]
        for process in listeners:
            process.terminate()
            process.wait(30)
        writer = writer_alone(scratch, args.readings_per_message)
        with psycopg.connect(scratch.url, autocommit=True) as db:
            log("plain COPY of the same rows")
            copy = plain_copy_baseline(db)
        return {
            "listeners": args.listeners,
            "processes_per_listener": args.processes or settings.INGEST_PROCESSES,
            "messages": args.messages,
            "readings_per_message": args.readings_per_message,
            "readings_stored": stored,
            "complete": stored == expected,
            "seconds_first_to_last_commit": round(seconds, 3),
            "readings_per_s": round(drained / seconds),
            "messages_per_s": round(drained / seconds / args.readings_per_message),
            "start_to_first_commit_s": round(first[0] - started, 3),
            # CPU the listener processes used from the first to the last commit: on a machine others are using,
            # readings per CPU second compare two versions better than readings per second do.
            "listener_cpu_s": round(cpu, 2),
            "readings_per_listener_cpu_s": round(drained / cpu) if cpu else None,
            "writer_alone": writer,
            "plain_copy": copy,
            "ratio_listener_to_writer": round(drained / seconds / writer["readings_per_s"], 2),
            "ratio_writer_to_plain_copy": round(writer["readings_per_s"] / copy["readings_per_s"], 2),
        }
    finally:
        for process in listeners:
            if process.poll() is None:
                process.kill()
        broker.close()
        scratch.drop()


def cpu_seconds(processes: list[subprocess.Popen]) -> float:
    """User + system CPU time so far of running processes and their running descendants (``mqtt_listen
    --processes`` workers), from Linux ``/proc``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    pids = [process.pid for process in processes]
    while pids:
        pid = pids.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            for task in Path(f"/proc/{pid}/task").iterdir():
                pids.extend(int(child) for child in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    return total / ticks


def writer_alone(scratch: ScratchDatabase, readings_per_message: int) -> dict:
    """The drained readings stored again by the writer alone (COPY + the one statement, as a listener flush calls
    it, in flushes of the listener's default size), into the emptied tables: what the listener costs beyond it."""
    from django.conf import settings

    from apps.telemetry.ingest.records import ValidReading
    from apps.telemetry.ingest.writer import readings_write

    log("the writer alone on the same readings")
    scratch.use()
    with psycopg.connect(scratch.url, autocommit=True) as db:
        rows = db.execute(
            "SELECT s.device_id, s.metric_key, r.ts, r.value FROM telemetry_reading r "
            "JOIN telemetry_series s ON s.id = r.series_id ORDER BY r.ts, s.device_id, s.metric_key"
        ).fetchall()
        db.execute("TRUNCATE telemetry_reading, telemetry_latestvalue, telemetry_rollupdirtybucket")
    readings = [ValidReading(*row) for row in rows]
    flush = min(settings.INGEST_FLUSH_MESSAGES * readings_per_message, settings.INGEST_FLUSH_READINGS)
    received_at = datetime.datetime.now(datetime.UTC)
    started = time.perf_counter()
    inserted = sum(
        readings_write(readings[offset : offset + flush], received_at=received_at).inserted
        for offset in range(0, len(readings), flush)
    )
    elapsed = time.perf_counter() - started
    return {
        "readings": inserted,
        "flush_readings": flush,
        "seconds": round(elapsed, 3),
        "readings_per_s": round(inserted / elapsed),
    }


if __name__ == "__main__":
    main()
