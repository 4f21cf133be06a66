"""Broker auth: credentials rendered into Mosquitto's password and ACL files, checked against a real Mosquitto 2.0
started with the project config (tests/support/broker.py, auth_dir) and reloaded by ``manage.py broker_sync``."""

import queue
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from paho.mqtt.subscribeoptions import SubscribeOptions

from apps.devices.broker_auth import (
    active_credentials,
    broker_auth_sync,
    mosquitto_password_hash,
    mosquitto_password_matches,
    mqtt_credential_issue,
    mqtt_credential_revoke,
    render_acl_file,
    render_password_file,
)
from apps.devices.models import MqttCredential
from tests.devices.factories import DeviceFactory, GatewayFactory
from tests.support.broker import Broker

LISTENER = {"MQTT_LISTENER_USERNAME": "fw-listener", "MQTT_LISTENER_PASSWORD": "listener-secret"}
NOT_AUTHORIZED = 0x87
PREFIX = settings.MQTT_TOPIC_PREFIX


# ---------------------------------------------------------------------------------------------------------------------
# Hash format and rendering
# ---------------------------------------------------------------------------------------------------------------------
def test_hash_matches_what_mosquitto_passwd_writes(tmp_path):
    password_file = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(password_file), "someone", "s3cret"], check=True)
    written = password_file.read_text().strip().split(":", 1)[1]

    assert written.startswith("$7$101$")
    assert mosquitto_password_matches("s3cret", written)
    assert not mosquitto_password_matches("other", written)
    ours = mosquitto_password_hash("s3cret")
    _, kind, iterations, salt, digest = ours.split("$")
    assert (kind, iterations, len(salt), len(digest)) == ("7", "101", 16, 88)  # 12-byte salt, 64-byte SHA-512


def test_issue_replaces_the_owners_previous_credential_and_stores_no_plaintext(site_a):
    device = DeviceFactory(site=site_a, uid="dev-1")
    first, _ = mqtt_credential_issue(device=device)
    second, password = mqtt_credential_issue(device=device)

    first.refresh_from_db()
    assert first.revoked_at is not None and second.revoked_at is None
    assert second.username == "dev-1" and mosquitto_password_matches(password, second.password_hash)
    assert all(password not in str(value) for row in MqttCredential.objects.values_list() for value in row)


def test_a_uid_used_by_a_device_and_a_gateway_cannot_both_log_in(site_a):
    mqtt_credential_issue(device=DeviceFactory(site=site_a, uid="box-1"))
    with pytest.raises(ValueError, match="already used"):
        mqtt_credential_issue(gateway=GatewayFactory(site=site_a, uid="box-1"))


@override_settings(**LISTENER)
def test_files_bind_each_login_to_its_own_topic_and_leave_out_revoked_and_inactive(site_a):
    mqtt_credential_issue(device=DeviceFactory(site=site_a, uid="dev-1"))
    mqtt_credential_issue(gateway=GatewayFactory(site=site_a, uid="gw-1"))
    revoked, _ = mqtt_credential_issue(device=DeviceFactory(site=site_a, uid="dev-gone"))
    mqtt_credential_revoke(credential=revoked)
    mqtt_credential_issue(device=DeviceFactory(site=site_a, uid="dev-off", is_active=False))

    credentials = active_credentials()
    acl, passwords = render_acl_file(credentials), render_password_file(credentials)

    assert f"user fw-listener\ntopic read {PREFIX}/#" in acl
    assert f"user dev-1\ntopic write {PREFIX}/devices/dev-1/telemetry" in acl
    assert f"user gw-1\ntopic write {PREFIX}/gateways/gw-1/telemetry" in acl
    assert [line.split(":")[0] for line in passwords.splitlines()] == ["dev-1", "gw-1", "fw-listener"]
    assert "dev-gone" not in acl + passwords and "dev-off" not in acl + passwords
    assert render_password_file(credentials) == passwords  # deterministic: an idle sync changes nothing


@override_settings(**LISTENER)
def test_sync_writes_and_reloads_only_when_something_changed(site_a, tmp_path):
    mqtt_credential_issue(device=DeviceFactory(site=site_a, uid="dev-1"))
    paths = {"password_file": str(tmp_path / "passwd"), "acl_file": str(tmp_path / "acl")}
    marker = tmp_path / "reloads"
    reload_command = f"sh -c 'echo x >> {marker}'"

    first = broker_auth_sync(**paths, reload_command=reload_command)
    second = broker_auth_sync(**paths, reload_command=reload_command)

    assert (first.changed, first.reloaded) == (True, True)
    assert (second.changed, second.reloaded) == (False, False)
    assert marker.read_text() == "x\n"
    assert oct((tmp_path / "passwd").stat().st_mode & 0o777) == "0o644"
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temp file left


# ---------------------------------------------------------------------------------------------------------------------
# End to end against a real Mosquitto
# ---------------------------------------------------------------------------------------------------------------------
class Client:
    """A paho MQTT 5 client that records CONNACK, PUBACK reason codes and received messages."""

    def __init__(self, port: int, username: str | None, password: str | None):
        self.connack = queue.Queue()
        self.pubacks: dict[int, mqtt.ReasonCode] = {}
        self.acked = threading.Condition()
        self.messages: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda client, userdata, flags, reason, properties: self.connack.put(reason)
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = lambda *args: self.disconnected.set()
        self.client.on_message = lambda client, userdata, message: self.messages.put((message.topic, message.payload))
        self.client.reconnect_delay_set(60, 60)  # a refused client must not retry during the test
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.reason = self.connack.get(timeout=5)

    def _on_publish(self, client, userdata, mid, reason, properties):
        with self.acked:
            self.pubacks[mid] = reason
            self.acked.notify_all()

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish with QoS 1 and return the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.pubacks, timeout=5), "no PUBACK"
            return self.pubacks[info.mid].value

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def auth_dir():
    directory = Path(tempfile.mkdtemp(prefix="fw-broker-auth-"))
    directory.chmod(0o755)  # Mosquitto, started as root, reads the files as its own user
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def fleet(site_a):
    """Two devices and a gateway with broker logins; passwords by username."""
    passwords = {}
    for owner in (
        {"device": DeviceFactory(site=site_a, uid="dev-1")},
        {"device": DeviceFactory(site=site_a, uid="dev-2")},
        {"gateway": GatewayFactory(site=site_a, uid="gw-1")},
    ):
        credential, password = mqtt_credential_issue(**owner)
        passwords[credential.username] = password
    return passwords


@pytest.fixture
def secured_broker(auth_dir, fleet, settings):
    for name, value in LISTENER.items():
        setattr(settings, name, value)
    call_command("broker_sync", password_file=str(auth_dir / "passwd"), acl_file=str(auth_dir / "acl"))
    broker = Broker(auth_dir=auth_dir)
    broker.start()
    (auth_dir / "mosquitto.pid").write_text(str(broker.process.pid))
    clients = []

    def connect(username, password):
        client = Client(broker.port, username, password)
        clients.append(client)
        return client

    broker.connect = connect
    yield broker
    for client in clients:
        client.close()
    broker.close()


@pytest.fixture
def listener(secured_broker):
    client = secured_broker.connect(LISTENER["MQTT_LISTENER_USERNAME"], LISTENER["MQTT_LISTENER_PASSWORD"])
    assert not client.reason.is_failure
    # Shared subscriptions, as the ingest listener makes them: Mosquitto checks the ACL without "$share/<group>/".
    subscribed = threading.Event()
    client.client.on_subscribe = lambda *args: subscribed.set()
    client.client.subscribe(
        [
            (f"$share/{settings.MQTT_SHARED_GROUP}/{PREFIX}/devices/+/telemetry", SubscribeOptions(qos=1)),
            (f"$share/{settings.MQTT_SHARED_GROUP}/{PREFIX}/gateways/+/telemetry", SubscribeOptions(qos=1)),
        ]
    )
    assert subscribed.wait(5)
    return client


def received(listener, count: int) -> list[tuple[str, bytes]]:
    return [listener.messages.get(timeout=5) for _ in range(count)]


def test_each_device_and_gateway_may_publish_only_to_its_own_topic(secured_broker, fleet, listener):
    dev1 = secured_broker.connect("dev-1", fleet["dev-1"])
    gateway = secured_broker.connect("gw-1", fleet["gw-1"])

    assert dev1.publish(f"{PREFIX}/devices/dev-1/telemetry", b"own") == 0
    assert dev1.publish(f"{PREFIX}/devices/dev-2/telemetry", b"forged") == NOT_AUTHORIZED
    assert dev1.publish(f"{PREFIX}/gateways/gw-1/telemetry", b"forged") == NOT_AUTHORIZED
    assert gateway.publish(f"{PREFIX}/devices/dev-1/telemetry", b"forged") == NOT_AUTHORIZED
    assert gateway.publish(f"{PREFIX}/gateways/gw-1/telemetry", b"gateway") == 0
    assert dev1.publish(f"{PREFIX}/devices/dev-1/telemetry", b"last") == 0

    assert received(listener, 3) == [
        (f"{PREFIX}/devices/dev-1/telemetry", b"own"),
        (f"{PREFIX}/gateways/gw-1/telemetry", b"gateway"),
        (f"{PREFIX}/devices/dev-1/telemetry", b"last"),
    ]
    time.sleep(0.5)
    assert listener.messages.empty()  # nothing forged ever arrived


def test_anonymous_and_wrong_passwords_are_refused(secured_broker, fleet):
    assert secured_broker.connect(None, None).reason.is_failure
    assert secured_broker.connect("dev-1", fleet["dev-2"]).reason.is_failure


def test_a_device_may_not_read_what_others_send(secured_broker, fleet, listener):
    snooper = secured_broker.connect("dev-1", fleet["dev-1"])
    subscribed = threading.Event()
    snooper.client.on_subscribe = lambda *args: subscribed.set()
    # Mosquitto 2.0 grants the subscription (SUBACK 1) and applies the read ACL to each message it would deliver.
    snooper.client.subscribe(f"{PREFIX}/devices/+/telemetry", qos=1)
    assert subscribed.wait(5)

    assert secured_broker.connect("dev-2", fleet["dev-2"]).publish(f"{PREFIX}/devices/dev-2/telemetry", b"x") == 0

    assert received(listener, 1) == [(f"{PREFIX}/devices/dev-2/telemetry", b"x")]
    time.sleep(0.5)
    assert snooper.messages.empty()


def test_revoked_credential_is_refused_after_the_next_sync(secured_broker, fleet, auth_dir, listener):
    connected_before = secured_broker.connect("dev-1", fleet["dev-1"])
    assert not connected_before.reason.is_failure
    mqtt_credential_revoke(credential=MqttCredential.objects.get(username="dev-1", revoked_at__isnull=True))
    assert not secured_broker.connect("dev-1", fleet["dev-1"]).reason.is_failure  # the broker has not been told yet

    call_command(
        "broker_sync",
        password_file=str(auth_dir / "passwd"),
        acl_file=str(auth_dir / "acl"),
        reload_pid_file=str(auth_dir / "mosquitto.pid"),
    )

    deadline = time.monotonic() + 5
    while not (refused := secured_broker.connect("dev-1", fleet["dev-1"])).reason.is_failure:
        assert time.monotonic() < deadline, "the broker still accepts the revoked credential"
        time.sleep(0.1)
    assert refused.reason.value in {0x86, 0x87}  # Bad user name or password / Not authorized
    # A connection made before the revocation does not survive it: on reload Mosquitto re-checks connected clients.
    assert connected_before.disconnected.wait(5)
    # Everyone else is unaffected.
    assert secured_broker.connect("dev-2", fleet["dev-2"]).publish(f"{PREFIX}/devices/dev-2/telemetry", b"ok") == 0
    assert received(listener, 1) == [(f"{PREFIX}/devices/dev-2/telemetry", b"ok")]
