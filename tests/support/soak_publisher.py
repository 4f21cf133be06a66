"""``python -m tests.support.soak_publisher OPTIONS``: the device simulator (apps/telemetry/simulation.py, with its
bad-value mix and heat-pump spikes) publishing over one MQTT 5 QoS 1 connection, in a process of its own so its CPU
and GIL are not the test's. Pure Python, no Django: the devices come as JSON (``SimDevice`` fields).

``--rate 0 --ticks N``: the N ticks' messages are generated first, then published as fast as the broker takes them
(a calibration burst). ``--rate R --seconds S``: R ticks (one device reading each) per second for S seconds, as the
simulate command paces them. Prints one JSON line: ticks, messages, acknowledged, bad readings by kind, seconds.
"""

import argparse
import json
import threading
import time

import paho.mqtt.client as mqtt

from apps.telemetry.simulation import Metric, SimDevice, Simulation


def devices_load(path: str) -> list[SimDevice]:
    with open(path) as file:
        rows = json.load(file)
    return [SimDevice(**{**row, "metrics": tuple(Metric(**metric) for metric in row["metrics"])}) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--port", "--ticks", "--seed"):
        parser.add_argument(name, type=int, default=0)
    for name in ("--rate", "--seconds", "--bad-fraction", "--spike-probability"):
        parser.add_argument(name, type=float, default=0.0)
    for name in ("--prefix", "--username", "--password", "--devices"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()

    simulation = Simulation(
        devices_load(args.devices),
        prefix=args.prefix,
        seed=args.seed,
        bad_fraction=args.bad_fraction,
        spike_probability=args.spike_probability,
    )
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(args.username, args.password)
    client.max_inflight_messages_set(10_000)
    client.max_queued_messages_set(0)
    counts = {"acknowledged": 0, "refused": 0}
    lock = threading.Lock()

    def on_publish(client, userdata, mid, reason_code, properties):
        with lock:
            counts["acknowledged"] += 1
            counts["refused"] += reason_code.is_failure

    client.on_publish = on_publish
    client.connect("127.0.0.1", args.port)
    client.loop_start()
    published = 0
    ticks = 0
    if args.rate <= 0:
        start_ms = int(time.time() * 1000) - args.ticks
        messages = [m for tick in range(args.ticks) for m in simulation.tick(start_ms + tick)] + simulation.flush()
        ticks = args.ticks
        started = time.monotonic()
        for topic, payload in messages:
            client.publish(topic, payload, qos=1)
            published += 1
    else:
        started = time.monotonic()
        while (now := time.monotonic()) - started < args.seconds:
            due = started + ticks / args.rate
            if due > now:
                time.sleep(due - now)
            ticks += 1
            for topic, payload in simulation.tick(int(time.time() * 1000)):
                client.publish(topic, payload, qos=1)
                published += 1
        for topic, payload in simulation.flush():
            client.publish(topic, payload, qos=1)
            published += 1
    publish_seconds = time.monotonic() - started
    deadline = time.monotonic() + 120
    while counts["acknowledged"] < published and time.monotonic() < deadline:
        time.sleep(0.02)
    client.loop_stop()
    client.disconnect()
    result = {
        "ticks": ticks,
        "readings": simulation.readings,
        "messages": published,
        **counts,
        "bad": {str(kind): n for kind, n in simulation.bad.items()},
        "publish_seconds": round(publish_seconds, 3),
        "acknowledged_seconds": round(time.monotonic() - started, 3),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
