"""Drill: Redis stopped for 30 s during an ingest stream over MQTT and HTTP (issue 12).

A redis-server of the test's own (tests/support/redis_server.py; never the machine's) is the cache, the rate
limiter's store and the Channels layer of a real listener process and a real uvicorn (both pointed at it through
REDIS_URL). A device streams over MQTT QoS 1 and a gateway over ``POST /api/v1/ingest``, each one reading every
50 ms, while a real websocket client of the dashboard's live endpoint watches the site. Redis is stopped for
OUTAGE_SECONDS and started again on the same port. Ingest must not depend on Redis: every reading the broker
acknowledged and every reading a 202 accepted is stored (counted in PostgreSQL), and the HTTP answers stay 202. Live
updates are best effort while Redis is down and must resume once it is back: the client (reconnecting as the page's
live.js does, should the socket close) receives a ``latest`` update after the restart.
"""

import contextlib
import json
import os
import threading
import time
import uuid

import pytest
import requests

from apps.devices.services import api_key_issue
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.drills.conftest import stored
from tests.support.live_client import LiveClient, session_cookie
from tests.support.mqtt import ListenerProcess, Publisher, broker_logins
from tests.support.processes import database_url, wait_until
from tests.support.redis_server import RedisServer
from tests.support.web_server import WebServer

pytestmark = pytest.mark.e2e

OUTAGE_SECONDS = 30
INTERVAL = 0.05  # each stream: one reading every 50 ms


class Stream(threading.Thread):
    """Sends one reading per INTERVAL with consecutive timestamps from ``first_ts`` until stopped."""

    def __init__(self, send, first_ts: int):
        super().__init__(daemon=True)
        self.send, self.ts = send, first_ts
        self.sent = 0
        self.answers: dict = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            answer = self.send(self.ts)
            self.answers[answer] = self.answers.get(answer, 0) + 1
            self.ts += 1
            self.sent += 1
            self.stop.wait(INTERVAL)


@pytest.fixture
def fleet(transactional_db, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=device_type, key="t", min_value=-1e9, max_value=1e9)
    gateway = GatewayFactory(site=site_a, uid="gw-redis-drill")
    mqtt_device = DeviceFactory(uid="hp-redis-mqtt", site=site_a, device_type=device_type)
    DeviceFactory(uid="hp-redis-http", site=site_a, device_type=device_type, gateway=gateway)
    return mqtt_device, api_key_issue(gateway=gateway, name="redis drill")[1]


def test_ingest_stores_everything_through_a_30_s_redis_outage_and_live_updates_resume(own_broker, fleet, bob, site_a):
    mqtt_device, api_key = fleet
    cleanup = contextlib.ExitStack()  # each resource closed even when closing another fails
    redis = RedisServer().start()
    cleanup.callback(redis.close)
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.support.settings_browser",  # local settings: the Redis channel layer
        "DJANGO_DEBUG": "0",
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis.url,
        "CHANNELS_PREFIX": f"fw-drill-{uuid.uuid4().hex[:8]}",
        "CACHE_KEY_PREFIX": f"fw-drill-{uuid.uuid4().hex[:8]}",
    }
    passwords = broker_logins(own_broker, own_broker.prefix, mqtt_device)
    listener = ListenerProcess(
        "mqtt_listen",
        "--client-id",
        f"drill-redis-{uuid.uuid4().hex[:8]}",
        "--flush-ms",
        "50",
        MQTT_URL=own_broker.url,
        MQTT_TOPIC_PREFIX=own_broker.prefix,
        **env,
    )
    web = WebServer({**os.environ, "PYTHONUNBUFFERED": "1", **env})
    cleanup.callback(listener.close)
    cleanup.callback(web.close)
    streams: list[Stream] = []
    with cleanup:
        listener.start()
        web.start()
        live = LiveClient(web.url, session_cookie(bob), [site_a.id])
        live.start()
        cleanup.callback(live.stop)
        assert live.subscribed.wait(15), live.closes

        publisher = Publisher(own_broker, mqtt_device.uid, passwords[mqtt_device.uid])
        cleanup.callback(publisher.close)
        topic = f"{own_broker.prefix}/devices/{mqtt_device.uid}/telemetry"

        def mqtt_send(ts):
            publisher.publish(topic, {"ts": ts, "values": {"t": float(ts % 1000)}})
            return "published"

        http = requests.Session()

        def http_send(ts):
            body = json.dumps({"hp-redis-http": [{"ts": ts, "values": {"t": float(ts % 1000)}}]})
            try:
                response = http.post(f"{web.url}/api/v1/ingest", data=body, headers={"X-API-Key": api_key}, timeout=30)
            except requests.RequestException as error:
                return type(error).__name__
            if response.status_code == 202 and response.json()["accepted"] == 1:
                return "accepted"
            return response.status_code

        first_ts = int(time.time() * 1000) - 3_600_000
        streams = [Stream(mqtt_send, first_ts), Stream(http_send, first_ts + 1_000_000)]
        for stream in streams:
            cleanup.callback(stream.stop.set)
            stream.start()
        last_ts = first_ts + 2_000_000
        before = time.monotonic()
        both = {"hp-redis-mqtt", "hp-redis-http"}
        assert wait_until(lambda: {m["device"] for m in live.latest_after(before)} >= both), live.messages[-5:]

        redis.stop()
        stopped_at = time.monotonic()
        rows_at_stop = stored(database_url(), first_ts, last_ts)
        time.sleep(OUTAGE_SECONDS)  # the outage itself: its length is the drill's condition, not a wait for a result
        rows_at_restart = stored(database_url(), first_ts, last_ts)
        live_during = len(live.latest_after(stopped_at + 2))
        redis.start()
        restarted_at = time.monotonic()
        resumed = wait_until(lambda: live.latest_after(restarted_at), timeout=30)
        resumed_after = time.monotonic() - restarted_at if resumed else None
        time.sleep(1)
        for stream in streams:
            stream.stop.set()
        for stream in streams:
            stream.join(30)
        publisher.flush()

        mqtt_stream, http_stream = streams
        expected = mqtt_stream.sent + http_stream.answers.get("accepted", 0)
        assert wait_until(lambda: stored(database_url(), first_ts, last_ts) >= expected, timeout=30)
        rows = stored(database_url(), first_ts, last_ts)
        reconnected = live.connections > 1
        print(
            f"\nredis down {restarted_at - stopped_at:.1f} s: MQTT sent {mqtt_stream.sent} (all acknowledged), HTTP "
            f"{http_stream.sent} answers {http_stream.answers}; stored {rows} of {expected}; stored during the outage "
            f"{rows_at_restart - rows_at_stop}; live updates during the outage {live_during}; first live update "
            f"{resumed_after if resumed_after is None else round(resumed_after, 2)} s after Redis was back, "
            f"{'after a reconnect' if reconnected else 'on the same socket'} (socket closes: {live.closes})"
        )
        assert http_stream.answers == {"accepted": http_stream.sent}, "HTTP ingest failed while Redis was down"
        assert rows == expected
        # Ingest went on during the outage (readings of 30 s at 2 x 20/s), not only after Redis came back.
        assert rows_at_restart - rows_at_stop > OUTAGE_SECONDS * 20
        assert resumed, f"no live update within 30 s of Redis returning; socket closes: {live.closes}"
        assert listener.process.poll() is None and web.process.poll() is None
