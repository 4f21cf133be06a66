"""Listener capacity without competing publishers: queue messages in the broker first, then time the drain.

``bench/ingest.py`` measures the whole path with publishers running on the same two cores, where the Python
publishers themselves top out near 5,500 messages/s. This isolates the listener (and the writer and PostgreSQL
behind it): the listener's persistent session is created, the listener stopped, N messages published into the
session's queue, and the listener(s) started again; the rate is measured from the first to the last commit.

    python bench/listener_drain.py [--messages 30000] [--readings-per-message 10] [--listeners 1] [--peer nodered]

Uses a scratch database ``fieldwatch_drain`` on the configured server (created and dropped) and a Mosquitto of
its own with the project config. Prints one JSON object.

``--peer nodered`` then runs the Node-RED peer's drain script (``--peer-script``; default: ``drain.py`` of the
``peers/nodered`` checkout beside this repository) with the same messages under the same method, and prints both
figures and their ratio: a speed claim is a ratio measured side by side in one run. The peer acknowledges on
receipt (at most once), so it promises less than the listener does.
"""

import argparse
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
from _support import ScratchDatabase

DATABASE = "fieldwatch_drain"
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

        def start_listeners():
            return [
                subprocess.Popen(
                    [
                        *manage,
                        "mqtt_listen",
                        "--client-id",
                        f"drain-{n}",
                        "--flush-ms",
                        "100",
                        "--flush-messages",
                        "5000",
                    ],
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
                if stored >= expected:
                    break
                time.sleep(0.05)
        finished = time.monotonic()
        seconds = finished - first[0]
        drained = stored - first[1]
        return {
            "listeners": args.listeners,
            "messages": args.messages,
            "readings_per_message": args.readings_per_message,
            "readings_stored": stored,
            "complete": stored == expected,
            "seconds_first_to_last_commit": round(seconds, 3),
            "readings_per_s": round(drained / seconds),
            "messages_per_s": round(drained / seconds / args.readings_per_message),
            "start_to_first_commit_s": round(first[0] - started, 3),
        }
    finally:
        for process in listeners:
            if process.poll() is None:
                process.kill()
        broker.close()
        scratch.drop()


if __name__ == "__main__":
    main()
