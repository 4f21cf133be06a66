"""Probes of the services the platform needs: PostgreSQL, Redis and the MQTT broker.

Each probe answers within a couple of seconds with (ok, detail) and never raises, so start-up scripts and the
doctor command can report every missing service at once, with the command that starts it. Before `make run` the
broker is not expected to answer (make run starts its own); the preflight checks that it can be started instead.
"""

import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass

import psycopg
import redis
from django.conf import settings
from django.db import connection

from apps.core.mqtt import broker_address, listener_broker_address, mqtt_client

START_HINTS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    "   (or: docker compose -f docker/compose.yml up -d db)",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
    "   (or: docker compose -f docker/compose.yml up -d redis)",
    "MQTT broker": "make run (Procfile process `broker`)   (or: docker compose -f docker/compose.yml up -d mosquitto)",
    "Mosquitto": "apt-get install mosquitto; stop whatever listens on MQTT_URL's port, or point MQTT_URL at a free one",
}


@dataclass
class ProbeResult:
    service: str
    ok: bool
    detail: str

    @property
    def hint(self) -> str:
        return START_HINTS[self.service]


def _server_dsn() -> str:
    """A DSN for the configured server's maintenance database, so the probe works before our database exists."""
    params = connection.get_connection_params()
    params["dbname"] = "postgres"
    params.pop("cursor_factory", None)
    params.pop("context", None)
    params.pop("prepare_threshold", None)
    params.pop("server_side_binding", None)
    return psycopg.conninfo.make_conninfo(
        **{key: value for key, value in params.items() if isinstance(value, str | int)}
    )


def probe_postgresql() -> ProbeResult:
    try:
        with psycopg.connect(_server_dsn(), connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as error:  # noqa: BLE001 - any failure is "not answering", reported with its reason
        return ProbeResult("PostgreSQL", False, str(error).strip().splitlines()[0])
    return ProbeResult("PostgreSQL", True, f"PostgreSQL {version}")


def probe_redis() -> ProbeResult:
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
        version = client.info("server")["redis_version"]
    except Exception as error:  # noqa: BLE001
        return ProbeResult("Redis", False, str(error))
    return ProbeResult("Redis", True, f"Redis {version} at {settings.REDIS_URL}")


def probe_mqtt(timeout: float = 3.0) -> ProbeResult:
    """Connect with MQTT 5 and log in as the listener, as the ingest listener will."""
    address = listener_broker_address()
    host, port = address.host, address.port
    connected = threading.Event()
    refusal: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            refusal.append(str(reason_code))
        connected.set()

    client = mqtt_client(address)
    client.on_connect = on_connect
    try:
        client.connect(host, port, keepalive=10)
    except (TimeoutError, OSError) as error:
        return ProbeResult("MQTT broker", False, f"{host}:{port}: {error}")
    client.loop_start()
    try:
        if not connected.wait(timeout):
            return ProbeResult("MQTT broker", False, f"{host}:{port}: no CONNACK within {timeout:.0f} s")
        if refusal:
            return ProbeResult("MQTT broker", False, f"{address}: refused {address.username}: {refusal[0]}")
    finally:
        client.loop_stop()
        client.disconnect()
    return ProbeResult("MQTT broker", True, f"{address}, logged in as {address.username or 'anonymous'}")


def probe_mosquitto_startable() -> ProbeResult:
    """Mosquitto is installed and nothing holds MQTT_URL's port yet, so `make run` can start its own broker there."""
    executable = shutil.which("mosquitto")
    if executable is None:
        return ProbeResult("Mosquitto", False, "no `mosquitto` executable on PATH")
    address = broker_address()
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex((address.host, address.port)) == 0:
            return ProbeResult("Mosquitto", False, f"{address.host}:{address.port} is taken (a broker still running?)")
    try:
        banner = subprocess.run([executable, "-h"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        return ProbeResult("Mosquitto", False, f"{executable}: {error}")
    version = banner.splitlines()[0] if banner else executable
    return ProbeResult("Mosquitto", True, f"{version}; {address.host}:{address.port} free for make run's broker")


def probe_all(*, preflight: bool = False) -> list[ProbeResult]:
    """Every service; for ``preflight`` (before `make run` starts its broker) whether the broker can be started."""
    return [probe_postgresql(), probe_redis(), probe_mosquitto_startable() if preflight else probe_mqtt()]
