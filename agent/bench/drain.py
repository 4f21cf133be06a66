"""Benchmark: buffer write throughput, bytes per reading, and the drain rate from the buffer over MQTT and HTTP.

    .venv/bin/python agent/bench/drain.py [--readings 50000]
        [--mqtt-url mqtt://host:1884 --uid GW --password PW --prefix fieldwatch]   # a real platform's broker
        [--http-url https://host/api/v1/ingest --api-key fwk_...]                  # a real platform's ingest

Without a platform it starts its own Mosquitto (logins required) and an ingest stub on free loopback ports: the
figures are then the agent's side (PUBACKs from the broker, 202s from a stub), the ceiling the platform's own
ingest rate sits under. The drain runs the real Forwarder with an unbounded drain rate.
"""

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from agent_servers import IngestStub, Mosquitto
from fieldwatch_agent.buffer import Buffer, Reading
from fieldwatch_agent.config import ForwardingConfig, HttpSinkConfig, MqttSinkConfig
from fieldwatch_agent.forwarder import Forwarder, batch_limit_for
from fieldwatch_agent.health import Health
from fieldwatch_agent.sinks import HttpSink, MqttSink

VALUES = {"flow_rate": 12.345678, "water_temp": 14.25, "volume_m3": 123456.789, "status": 1}


def readings(count: int, start: int = 0):
    base = int(time.time() * 1000) - 3_600_000
    return [Reading(f"fm-{i % 8}", base + i, dict(VALUES)) for i in range(start, start + count)]


def bench_writes(directory: Path, count: int) -> None:
    for synchronous in ("full", "normal"):
        for per_commit in (1, 100):
            buffer = Buffer(directory / f"w-{synchronous}-{per_commit}.sqlite3", synchronous=synchronous)
            total = count if per_commit > 1 else min(count, 2000)
            batch = readings(total)
            started = time.perf_counter()
            for i in range(0, total, per_commit):
                buffer.append(batch[i : i + per_commit])
            elapsed = time.perf_counter() - started
            stats = buffer.stats()
            print(
                f"write  synchronous={synchronous:6} {per_commit:3}/commit: {total / elapsed:10.0f} readings/s"
                f"   {stats.bytes_in_use / stats.depth:6.1f} bytes/reading in use"
            )
            buffer.close()


def bench_drain(directory: Path, name: str, sink, count: int) -> None:
    buffer = Buffer(directory / f"drain-{name}.sqlite3", synchronous="full")
    for i in range(0, count, 1000):
        buffer.append(readings(min(1000, count - i), start=i))
    stop = threading.Event()
    forwarder = Forwarder(
        buffer, sink, ForwardingConfig(drain_rate=1e9, linger_s=0), Health(), stop, batch_limit=batch_limit_for(sink)
    )
    started = time.perf_counter()
    forwarder.start()
    while buffer.stats().depth:
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    stop.set()
    forwarder.join(10)
    print(f"drain  {name:5} {count} readings in {elapsed:6.2f} s: {count / elapsed:10.0f} readings/s")
    buffer.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--mqtt-url")
    parser.add_argument("--uid", default="gw-bench")
    parser.add_argument("--password", default="bench-secret")
    parser.add_argument("--prefix", default="fieldwatch")
    parser.add_argument("--http-url")
    parser.add_argument("--api-key", default="fwk_test_secret")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="fwagent-bench-"))
    bench_writes(directory, args.readings)

    broker = None
    if not args.mqtt_url:
        broker = Mosquitto({args.uid: args.password}).start()
        args.mqtt_url = f"mqtt://127.0.0.1:{broker.port}"
    mqtt_sink = MqttSink(
        MqttSinkConfig(kind="mqtt", url=args.mqtt_url, uid=args.uid, password=args.password, topic_prefix=args.prefix)
    )
    bench_drain(directory, "mqtt", mqtt_sink, args.readings)
    if broker:
        broker.close()

    stub = None
    if not args.http_url:
        stub = IngestStub(args.api_key)
        args.http_url = stub.url
    http_sink = HttpSink(HttpSinkConfig(kind="http", url=args.http_url, api_key=args.api_key))
    bench_drain(directory, "http", http_sink, args.readings)
    if stub:
        stub.close()


if __name__ == "__main__":
    main()
