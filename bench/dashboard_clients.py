"""Live-dashboard benchmark: N websocket clients on a real uvicorn while ingest runs at a high rate.

    PATH=/tmp/venvtest/bin:$PATH DATABASE_URL=postgres:///some_db python bench/dashboard_clients.py \
        [--clients 100] [--devices 1000] [--sites 10] [--rate 10000] [--seconds 20] [--mode mqtt|direct]

Sets up (in the database of DATABASE_URL, migrated if needed; its own organization ``bench-live``): ``--sites``
sites with ``--devices`` devices spread over them, and a superuser whose session (made with Django's SessionStore)
authenticates every client. Starts ``uvicorn config.asgi:application`` (one process, config.settings.local, the
Redis pub/sub channel layer under a private prefix), then ``--clients`` websocket clients in a separate process,
each subscribed to one site (clients spread evenly over the sites), as a dashboard page does.

Ingest, ``--mode mqtt`` (default): two publisher processes send ``--rate`` messages/s (one reading each, every
device at the same rate) over MQTT QoS 1 to a Mosquitto with the project config, read by the real ``mqtt_listen``
process whose ingest hook feeds the fan-out. ``--mode direct``: the bench process calls the fan-out's ingest hook
itself with batches of ``CommittedReading`` every 50 ms (no broker, listener or database writes): the fan-out,
Redis and the web process alone.

Per-client update latency = arrival at the client - the reading's timestamp (set at publish time). It includes
the intended coalescing (a device's values are pushed at most once a second, so a value can wait up to ~1 s).
After the load, every device publishes one final value; "current" means every client then holds the final value
of every device of its site. One JSON object is printed to stdout; progress goes to stderr.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _django  # before any import from the checkout: sys.path, DEBUG off

FINAL = -1.0
METRIC = "v"


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Clients (own process: their JSON decoding must not share a GIL with the fan-out being measured)
# ---------------------------------------------------------------------------------------------------------------------


def clients_main(url, origin, cookie, assignments, devices_by_site, ready, stop, results):
    asyncio.run(_clients(url, origin, cookie, assignments, devices_by_site, ready, stop, results))


async def _clients(url, origin, cookie, assignments, devices_by_site, ready, stop, results):
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    last: list[dict] = [{} for _ in assignments]
    received = [0] * len(assignments)

    async def client(index: int, site_id: int, subscribed: asyncio.Event):
        async with connect(url, origin=origin, additional_headers={"Cookie": cookie}, max_queue=None) as socket:
            await socket.send(json.dumps({"type": "subscribe", "sites": [site_id]}))
            async for raw in socket:
                now_ms = time.time() * 1000
                frame = json.loads(raw)
                for message in frame if isinstance(frame, list) else (frame,):
                    kind = message.get("type")
                    if kind == "subscribed":
                        subscribed.set()
                    elif kind == "latest":
                        received[index] += 1
                        for ts_ms, value in message["values"].values():
                            latencies.append(now_ms - ts_ms)
                            last[index][message["device"]] = value

    events = [asyncio.Event() for _ in assignments]
    tasks = [asyncio.create_task(client(i, site, events[i])) for i, site in enumerate(assignments)]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout=60)
    ready.set()

    def current(index: int) -> bool:
        mine = last[index]
        return all(mine.get(uid) == FINAL for uid in devices_by_site[assignments[index]])

    while not stop.is_set():
        await asyncio.sleep(0.05)
    final_sent = time.time()  # the bench sets ``stop`` right after the final values were published
    deadline = time.time() + 10
    while time.time() < deadline and not all(current(i) for i in range(len(assignments))):
        await asyncio.sleep(0.02)
    time_to_current = time.time() - final_sent
    for task in tasks:
        task.cancel()
    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else None

    results.put(
        {
            "updates_received": sum(received),
            "updates_per_client": {"min": min(received), "max": max(received)},
            "latency_ms": {
                "p50": pct(0.50),
                "p95": pct(0.95),
                "p99": pct(0.99),
                "max": round(latencies[-1], 1) if latencies else None,
                "mean": round(statistics.fmean(latencies), 1) if latencies else None,
            },
            "clients_current": sum(current(i) for i in range(len(assignments))),
            "seconds_to_current_after_final_publish": round(time_to_current, 3),
        }
    )


# ---------------------------------------------------------------------------------------------------------------------
# MQTT publishers (own processes)
# ---------------------------------------------------------------------------------------------------------------------


def publisher_main(port, prefix, uids, rate, seconds, start_at, done):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(*_django.LOAD_GENERATOR)
    client.max_inflight_messages_set(10000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    topics = [f"{prefix}/devices/{uid}/telemetry" for uid in uids]
    while time.time() < start_at:
        time.sleep(0.001)
    sent, seq, started = 0, 0, time.time()
    last_info = None
    while time.time() - started < seconds:
        seq += 1
        for topic in topics:  # one round: every device once
            payload = json.dumps({"ts": int(time.time() * 1000), "values": {METRIC: float(seq)}})
            last_info = client.publish(topic, payload, qos=1)
            sent += 1
            target = started + sent / rate
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
    if last_info is not None:
        last_info.wait_for_publish(60)
    finals = [
        client.publish(t, json.dumps({"ts": int(time.time() * 1000) + 1, "values": {METRIC: FINAL}}), qos=1)
        for t in topics
    ]
    for info in finals:
        info.wait_for_publish(60)
    done.put({"sent": sent, "seconds": time.time() - started})
    client.loop_stop()
    client.disconnect()


# ---------------------------------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------------------------------


def seed(devices: int, sites: int):
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from apps.devices.models import Device, DeviceType, MetricDefinition, Site
    from apps.users.models import Organization, User

    organization, _ = Organization.objects.get_or_create(slug="bench-live", defaults={"name": "Bench live"})
    site_objs = [Site.objects.get_or_create(organization=organization, name=f"Bench site {i}")[0] for i in range(sites)]
    device_type, _ = DeviceType.objects.get_or_create(organization=organization, name="Bench gauge")
    MetricDefinition.objects.get_or_create(
        device_type=device_type, key=METRIC, defaults={"min_value": -1e12, "max_value": 1e12}
    )
    existing = set(Device.objects.filter(site__organization=organization).values_list("uid", flat=True))
    Device.objects.bulk_create(
        Device(uid=f"bl-{i:05d}", name=f"Bench {i}", site=site_objs[i % sites], device_type=device_type)
        for i in range(devices)
        if f"bl-{i:05d}" not in existing
    )
    rows = Device.objects.filter(site__organization=organization, uid__in=[f"bl-{i:05d}" for i in range(devices)])
    devices_by_site: dict[int, list[str]] = {}
    ids = {}
    for device_id, uid, site_id in rows.values_list("id", "uid", "site_id"):
        devices_by_site.setdefault(site_id, []).append(uid)
        ids[uid] = (device_id, site_id)
    user, created = User.objects.get_or_create(username="bench-live", defaults={"is_superuser": True, "is_staff": True})
    if created:
        user.set_unusable_password()
        user.save()
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}", devices_by_site, ids


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--rate", type=int, default=10_000, help="readings (messages) per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--mode", choices=("mqtt", "direct"), default="mqtt")
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    os.environ["CHANNELS_PREFIX"] = f"fw-benchlive-{tag}"
    os.environ["CACHE_KEY_PREFIX"] = f"fw-benchlive-{tag}"
    _django.setup()
    from tests.support.broker import Broker
    from tests.support.ports import free_port, wait_for_port

    log("seeding ...")
    cookie, devices_by_site, ids = seed(args.devices, args.sites)
    logs = Path(tempfile.mkdtemp(prefix="fw-benchlive-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    processes = []
    broker = None
    try:
        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port), "--log-level", "warning"],
            cwd=_django.REPO_ROOT,
            env=env,
            stdout=open(logs / "uvicorn.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        processes.append(web)
        wait_for_port(port, timeout=30)
        prefix = f"fwbl{tag}"
        if args.mode == "mqtt":
            broker = Broker(prefix=prefix, load_generators=dict([_django.LOAD_GENERATOR]))
            broker.start()
            listener = subprocess.Popen(
                [sys.executable, "manage.py", "mqtt_listen", "--client-id", f"benchlive-{tag}", "--flush-ms", "50"],
                cwd=_django.REPO_ROOT,
                env={**env, "MQTT_URL": broker.url, "MQTT_TOPIC_PREFIX": prefix},
                stdout=open(logs / "listener.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
            )
            processes.append(listener)
            deadline = time.time() + 30
            while "subscribed" not in (logs / "listener.log").read_text() and time.time() < deadline:
                time.sleep(0.1)

        site_ids = sorted(devices_by_site)
        assignments = [site_ids[i % len(site_ids)] for i in range(args.clients)]
        ctx = multiprocessing.get_context("spawn")
        ready, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
        clients = ctx.Process(
            target=clients_main,
            args=(
                f"ws://127.0.0.1:{port}/ws/live/",
                f"http://127.0.0.1:{port}",
                cookie,
                assignments,
                devices_by_site,
                ready,
                stop,
                results,
            ),
        )
        clients.start()
        if not ready.wait(90):
            raise SystemExit("clients did not connect")
        log(f"{args.clients} clients connected; ingest at {args.rate}/s for {args.seconds} s ({args.mode}) ...")

        uids = sorted(ids)
        started = time.time()
        if args.mode == "mqtt":
            done = ctx.Queue()
            halves = [uids[0::2], uids[1::2]]
            publishers = [
                ctx.Process(
                    target=publisher_main,
                    args=(broker.port, prefix, half, args.rate / 2, args.seconds, started + 0.5, done),
                )
                for half in halves
            ]
            for p in publishers:
                p.start()
            reports = [done.get(timeout=args.seconds + 120) for _ in publishers]
            for p in publishers:
                p.join(10)
            sent = sum(r["sent"] for r in reports)
            publish_seconds = max(r["seconds"] for r in reports)
        else:
            import datetime

            from apps.dashboard import fanout
            from apps.telemetry.ingest.records import CommittedReading

            tick = 0.05
            per_tick = max(1, int(args.rate * tick))
            sent, cursor, seq = 0, 0, 0
            while time.time() - started < args.seconds:
                now = datetime.datetime.now(datetime.UTC)
                batch = []
                for _ in range(per_tick):
                    uid = uids[cursor]
                    cursor = (cursor + 1) % len(uids)
                    if cursor == 0:
                        seq += 1
                    batch.append(CommittedReading(0, ids[uid][0], METRIC, now, float(seq)))
                fanout.readings_fanout(batch)
                sent += len(batch)
                delay = started + sent / args.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            publish_seconds = time.time() - started
            final_ts = datetime.datetime.now(datetime.UTC) + datetime.timedelta(milliseconds=1)
            fanout.readings_fanout([CommittedReading(0, ids[uid][0], METRIC, final_ts, FINAL) for uid in uids])
        stop.set()
        report = results.get(timeout=60)
        clients.join(10)
        result = {
            "mode": args.mode,
            "ingest": "MQTT QoS 1 -> Mosquitto (project config) -> mqtt_listen -> fan-out"
            if args.mode == "mqtt"
            else "fan-out ingest hook called directly in the bench process (no broker, listener or DB writes)",
            "clients": args.clients,
            "devices": len(uids),
            "sites": len(site_ids),
            "target_rate_per_s": args.rate,
            "achieved_rate_per_s": round(sent / publish_seconds),
            "seconds": round(publish_seconds, 1),
            **report,
            "all_clients_current": report["clients_current"] == args.clients,
            "logs": str(logs),
        }
        print(json.dumps(result, indent=2))
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if broker is not None:
            broker.close()


if __name__ == "__main__":
    main()
