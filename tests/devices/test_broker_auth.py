"""Broker auth: credentials rendered into Mosquitto's password and ACL files, checked against a real Mosquitto 2.0
started with the project config (tests/support/broker.py) and reloaded the way ``manage.py broker_sync`` does."""

import io
import os
import stat
import subprocess
import time
import uuid

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from apps.devices.broker_auth import (
    active_credentials,
    broker_auth_sync,
    broker_reload,
    mosquitto_password_hash,
    mosquitto_password_matches,
    mqtt_credential_issue,
    mqtt_credential_revoke,
    render_acl_file,
    render_broker_config,
    render_password_file,
)
from apps.devices.broker_plugin import plugin_build
from apps.devices.models import MqttCredential
from apps.telemetry.ingest.topics import private_share_group
from apps.telemetry.models import Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.broker import PLUGIN_DIR, PROJECT_CONFIG, Broker
from tests.support.mqtt import Publisher, RecordingClient, broker_logins, listener
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import database_url, wait_until

LISTENER = (settings.MQTT_LISTENER_USERNAME, settings.MQTT_LISTENER_PASSWORD)  # fixed by config.settings.test
MONITOR = {"MQTT_MONITOR_USERNAME": "fw-monitor", "MQTT_MONITOR_PASSWORD": "monitor-secret"}
NOT_AUTHORIZED = 0x87
NO_MATCHING_SUBSCRIBERS = 0x10
PREFIX = settings.MQTT_TOPIC_PREFIX
EPOCH_MS = int(time.time() * 1000) - 3_600_000


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


@override_settings(**MONITOR)
def test_no_device_can_take_the_listeners_or_the_monitors_name(site_a):
    """A tenant's admin naming a device like the listener would merge its file lines with the listener's: read
    access to every organization's telemetry."""
    for name in (settings.MQTT_LISTENER_USERNAME, "fw-monitor"):
        with pytest.raises(ValueError, match="platform itself"):
            mqtt_credential_issue(device=DeviceFactory(site=site_a, uid=name))
    # A row from before the check (or a uid renamed since) is not rendered either.
    MqttCredential.objects.create(
        device=DeviceFactory(site=site_a), username=settings.MQTT_LISTENER_USERNAME, password_hash="$7$101$x$y"
    )
    passwords = render_password_file(active_credentials())
    assert [line.split(":")[0] for line in passwords.splitlines()] == [settings.MQTT_LISTENER_USERNAME, "fw-monitor"]
    assert "$7$101$x$y" not in passwords


@override_settings(**MONITOR)
def test_files_bind_each_login_to_its_own_topic_and_leave_out_revoked_and_inactive(site_a):
    mqtt_credential_issue(device=DeviceFactory(site=site_a, uid="dev-1"))
    mqtt_credential_issue(gateway=GatewayFactory(site=site_a, uid="gw-1"))
    revoked, _ = mqtt_credential_issue(device=DeviceFactory(site=site_a, uid="dev-gone"))
    mqtt_credential_revoke(credential=revoked)
    mqtt_credential_issue(device=DeviceFactory(site=site_a, uid="dev-off", is_active=False))

    credentials = active_credentials()
    acl, passwords = render_acl_file(credentials), render_password_file(credentials)

    listener_block = "\n".join(
        [
            f"topic read {PREFIX}/{kind}/+/{leaf}"
            for kind in ("devices", "gateways")
            for leaf in ("telemetry", "attributes")
        ]
        + ["topic read spBv1.0/#", "topic write spBv1.0/+/NCMD/+"]  # Sparkplug B: all of it in, rebirth requests out
    )
    assert f"user {settings.MQTT_LISTENER_USERNAME}\n{listener_block}\n\n" in acl
    assert "user fw-monitor\ntopic read #\ntopic read $SYS/#\n" in acl
    assert f"user dev-1\ntopic write {PREFIX}/devices/dev-1/telemetry" in acl
    assert f"user gw-1\ntopic write {PREFIX}/gateways/gw-1/telemetry" in acl
    # The listener's five filters, the monitor's two, and the gateway's own Sparkplug commands (NCMD, DCMD, as the
    # edge node gw-1); no device reads anything.
    assert acl.count("topic read") == 9
    assert "topic read spBv1.0/+/NCMD/gw-1\ntopic read spBv1.0/+/DCMD/gw-1/+" in acl
    users = [line.split(":")[0] for line in passwords.splitlines()]
    assert users == ["dev-1", "gw-1", settings.MQTT_LISTENER_USERNAME, "fw-monitor"]
    assert "dev-gone" not in acl + passwords and "dev-off" not in acl + passwords
    assert render_password_file(credentials) == passwords  # deterministic: an idle sync changes nothing


def test_without_a_monitoring_login_nobody_may_read_everything(site_a):
    assert "topic read #" not in render_acl_file(active_credentials())


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


def test_a_stale_pid_file_signals_nobody(tmp_path):
    """After a broker crash its pid may belong to anyone: SIGHUP would end this very test process."""
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    assert broker_reload(pid_file=str(pid_file)) is False
    assert broker_reload(pid_file=str(tmp_path / "missing.pid")) is False


def test_the_config_template_keeps_every_line_the_renderer_replaces():
    paths = {"password_file": "/p", "acl_file": "/a", "plugin_path": "/tb.so", "tokens_file": "/t"}
    with pytest.raises(ValueError, match="exactly one `persistence_location` line"):
        render_broker_config("listener 1883\n", host="h", port=1, data_dir="d", **paths)
    config = render_broker_config(
        PROJECT_CONFIG.read_text(), host="127.0.0.1", port=1884, data_dir="/d", topic_prefix="fwx", **paths
    )
    assert "\nlistener 1884 127.0.0.1\n" in config and "\nallow_anonymous false\n" in config
    assert "\nplugin /tb.so\nplugin_opt_tokens_file /t\nplugin_opt_topic_prefix fwx\n" in config
    assert "\nmax_queued_messages 1000000\n" in config  # the rest of the project config is kept


# ---------------------------------------------------------------------------------------------------------------------
# End to end against a real Mosquitto
# ---------------------------------------------------------------------------------------------------------------------


def refused(port: int, username: str | None, password: str | None) -> bool:
    """Whether the broker on ``port`` refuses this login (the client is closed again)."""
    client = RecordingClient(port, username, password)
    client.close()
    return client.reason.is_failure


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
def secured_broker(fleet):
    broker = Broker()
    broker.start()
    broker.sync()
    clients = []

    def connect(username, password):
        client = RecordingClient(broker.port, username, password)
        clients.append(client)
        return client

    broker.connect = connect
    yield broker
    for client in clients:
        client.close()
    broker.close()


@pytest.fixture
def reader(secured_broker):
    """A client logged in as the listener, subscribed as the ingest listener subscribes (shared, in the group of
    the configured name: these tests are about publishing, the private group is tested below)."""
    client = secured_broker.connect(*LISTENER)
    assert not client.reason.is_failure
    group = settings.MQTT_SHARED_GROUP
    filters = [f"$share/{group}/{PREFIX}/devices/+/telemetry", f"$share/{group}/{PREFIX}/gateways/+/telemetry"]
    assert client.subscribe(*filters) == [1, 1]
    return client


def received(client, count: int) -> list[tuple[str, bytes]]:
    return [client.messages.get(timeout=5) for _ in range(count)]


def test_each_device_and_gateway_may_publish_only_to_its_own_topic(secured_broker, fleet, reader):
    dev1 = secured_broker.connect("dev-1", fleet["dev-1"])
    gateway = secured_broker.connect("gw-1", fleet["gw-1"])

    assert dev1.publish(f"{PREFIX}/devices/dev-1/telemetry", b"own") == 0
    assert dev1.publish(f"{PREFIX}/devices/dev-2/telemetry", b"forged") == NOT_AUTHORIZED
    assert dev1.publish(f"{PREFIX}/gateways/gw-1/telemetry", b"forged") == NOT_AUTHORIZED
    assert gateway.publish(f"{PREFIX}/devices/dev-1/telemetry", b"forged") == NOT_AUTHORIZED
    assert gateway.publish(f"{PREFIX}/gateways/gw-1/telemetry", b"gateway") == 0
    assert dev1.publish(f"{PREFIX}/devices/dev-1/telemetry", b"last") == 0

    assert received(reader, 3) == [
        (f"{PREFIX}/devices/dev-1/telemetry", b"own"),
        (f"{PREFIX}/gateways/gw-1/telemetry", b"gateway"),
        (f"{PREFIX}/devices/dev-1/telemetry", b"last"),
    ]
    time.sleep(0.5)
    assert reader.messages.empty()  # nothing forged ever arrived


def test_the_listener_may_not_publish(secured_broker, reader):
    assert reader.publish(f"{PREFIX}/devices/dev-1/telemetry", b"forged") == NOT_AUTHORIZED


def test_anonymous_and_wrong_passwords_are_refused(secured_broker, fleet):
    assert secured_broker.connect(None, None).reason.is_failure
    assert secured_broker.connect("dev-1", fleet["dev-2"]).reason.is_failure
    assert secured_broker.connect(LISTENER[0], "not-the-password").reason.is_failure


def test_no_device_reads_anything_whatever_it_subscribes_to(secured_broker, fleet, reader):
    snooper = secured_broker.connect("dev-1", fleet["dev-1"])
    # Mosquitto 2.0's ACL file grants every SUBSCRIBE and applies read rights to each message it would deliver.
    assert snooper.subscribe("#", "$SYS/#", f"{PREFIX}/devices/+/telemetry") == [1, 1, 1]

    assert secured_broker.connect("dev-2", fleet["dev-2"]).publish(f"{PREFIX}/devices/dev-2/telemetry", b"x") == 0

    assert received(reader, 1) == [(f"{PREFIX}/devices/dev-2/telemetry", b"x")]
    time.sleep(1)  # long enough for the retained $SYS messages a subscription to $SYS/# gets at once
    assert snooper.messages.empty()


@override_settings(**MONITOR)
def test_only_an_explicit_monitoring_login_reads_everything(fleet):
    broker = Broker()
    broker.start()
    try:
        broker.sync()
        monitor = RecordingClient(broker.port, "fw-monitor", "monitor-secret")
        assert monitor.subscribe("#", "$SYS/#") == [1, 1]
        device = RecordingClient(broker.port, "dev-1", fleet["dev-1"])
        assert device.publish(f"{PREFIX}/devices/dev-1/telemetry", b"x") == 0
        time.sleep(1)
        topics = {monitor.messages.get()[0] for _ in range(monitor.messages.qsize())}
        assert f"{PREFIX}/devices/dev-1/telemetry" in topics
        assert any(topic.startswith("$SYS/") for topic in topics)
        assert monitor.publish(f"{PREFIX}/devices/dev-1/telemetry", b"forged") == NOT_AUTHORIZED
        monitor.close()
        device.close()
    finally:
        broker.close()


def test_mosquitto_hands_a_share_to_a_group_member_that_may_not_read_it(secured_broker, fleet, reader):
    """Why the listener's group name is private: Mosquitto 2.0.11 lets a device join the listener's shared
    subscription (its ACL file never checks a SUBSCRIBE), then hands it its turn of messages it may not read, which
    are dropped. Should a Mosquitto upgrade fix this, this test fails and says so."""
    intruder = secured_broker.connect("dev-2", fleet["dev-2"])
    assert intruder.subscribe(f"$share/{settings.MQTT_SHARED_GROUP}/{PREFIX}/devices/+/telemetry") == [1]
    device = secured_broker.connect("dev-1", fleet["dev-1"])
    for i in range(20):
        assert device.publish(f"{PREFIX}/devices/dev-1/telemetry", str(i).encode()) == 0
    time.sleep(0.5)

    assert reader.messages.qsize() < 20  # the intruder's turns were lost
    assert intruder.messages.empty()


@pytest.fixture
def pump(transactional_db, site_a):
    heat_pump = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp")
    return DeviceFactory(uid="hp-1", site=site_a, device_type=heat_pump)


def test_a_credential_joining_the_ingest_group_or_reading_everything_takes_nothing_from_the_listener(pump, site_a):
    """The probe of issue 11: 9 of 20 readings went to an intruder in the listener's group and were never stored."""
    broker = Broker()
    broker.start()
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    passwords = broker_logins(broker, prefix, pump, snoop := DeviceFactory(site=site_a, uid="snoop"))
    process = listener(broker.url, prefix, database_url()).start()
    intruder = RecordingClient(broker.port, snoop.uid, passwords[snoop.uid])
    try:
        group = settings.MQTT_SHARED_GROUP
        ingest_filters = [f"{prefix}/devices/+/telemetry", f"{prefix}/gateways/+/telemetry"]
        shared = [f"$share/{group}/{topic}" for topic in ingest_filters]
        assert intruder.subscribe(*shared, *ingest_filters, "#", "$SYS/#") == [1] * 6  # granted: see broker_auth
        publisher = Publisher(broker, pump.uid, passwords[pump.uid])
        for i in range(20):
            publisher.publish(f"{prefix}/devices/hp-1/telemetry", {"ts": EPOCH_MS + i, "values": {"supply_temp": 40}})
        publisher.close()

        assert wait_until(lambda: Reading.objects.count() == 20, timeout=20), process.output()[-3000:]
        time.sleep(0.5)
        assert Reading.objects.count() == 20
        assert intruder.messages.empty()
        assert private_share_group(group, LISTENER[1]) not in process.output()  # as secret as the password
    finally:
        intruder.close()
        process.terminate()
        process.close()
        broker.close()


def test_a_forged_reading_is_never_stored(pump, site_a):
    broker = Broker()
    broker.start()
    prefix = f"fw{uuid.uuid4().hex[:6]}"
    passwords = broker_logins(broker, prefix, pump, DeviceFactory(site=site_a, uid="other"))
    process = listener(broker.url, prefix, database_url()).start()
    try:
        forger = Publisher(broker, "other", passwords["other"])
        forger.publish(f"{prefix}/devices/hp-1/telemetry", {"ts": EPOCH_MS, "values": {"supply_temp": 99}})
        forger.close()
        honest = Publisher(broker, "hp-1", passwords["hp-1"])
        honest.publish(f"{prefix}/devices/hp-1/telemetry", {"ts": EPOCH_MS + 1, "values": {"supply_temp": 40}})
        honest.close()

        assert wait_until(lambda: Reading.objects.exists(), timeout=20), process.output()[-3000:]
        time.sleep(0.5)
        assert list(Reading.objects.values_list("value", flat=True)) == [40]
    finally:
        process.terminate()
        process.close()
        broker.close()


def test_a_revoked_credential_is_refused_within_seconds_of_the_commit(
    secured_broker, fleet, reader, settings, django_capture_on_commit_callbacks
):
    """No manual sync: the credential's post_save enqueues the sync after commit (Celery runs eagerly in tests)."""
    settings.BROKER_AUTH_SYNC = True
    settings.BROKER_PASSWD_PATH = str(secured_broker.password_file)
    settings.BROKER_ACL_PATH = str(secured_broker.acl_file)
    settings.BROKER_PID_PATH = str(secured_broker.pid_file)
    connected_before = secured_broker.connect("dev-1", fleet["dev-1"])
    assert not connected_before.reason.is_failure

    with django_capture_on_commit_callbacks(execute=True):
        mqtt_credential_revoke(credential=MqttCredential.objects.get(username="dev-1", revoked_at__isnull=True))
    revoked_at = time.monotonic()

    while not (attempt := secured_broker.connect("dev-1", fleet["dev-1"])).reason.is_failure:
        assert time.monotonic() - revoked_at < 5, "the broker still accepts the revoked credential"
        time.sleep(0.1)
    assert attempt.reason.value in {0x86, 0x87}  # Bad user name or password / Not authorized
    # A connection made before the revocation does not survive it: on reload Mosquitto re-checks connected clients.
    assert connected_before.disconnected.wait(5)
    # Everyone else is unaffected.
    assert secured_broker.connect("dev-2", fleet["dev-2"]).publish(f"{PREFIX}/devices/dev-2/telemetry", b"ok") == 0
    assert received(reader, 1) == [(f"{PREFIX}/devices/dev-2/telemetry", b"ok")]


def test_a_deactivated_device_loses_the_broker_after_commit(
    secured_broker, fleet, settings, django_capture_on_commit_callbacks
):
    settings.BROKER_AUTH_SYNC = True
    settings.BROKER_PASSWD_PATH = str(secured_broker.password_file)
    settings.BROKER_ACL_PATH = str(secured_broker.acl_file)
    settings.BROKER_PID_PATH = str(secured_broker.pid_file)
    device = MqttCredential.objects.get(username="dev-2", revoked_at__isnull=True).device

    with django_capture_on_commit_callbacks(execute=True):
        device.is_active = False
        device.save()

    assert wait_until(lambda: refused(secured_broker.port, "dev-2", fleet["dev-2"]), timeout=5)


# ---------------------------------------------------------------------------------------------------------------------
# `make run`'s broker: broker_setup's config on a real Mosquitto
# ---------------------------------------------------------------------------------------------------------------------
def test_broker_setup_writes_a_config_mosquitto_runs_with_auth_on_and_a_private_listener_secret(
    fleet, settings, tmp_path
):
    port = free_port()
    settings.MQTT_URL = f"mqtt://127.0.0.1:{port}"
    settings.BROKER_DIR = tmp_path / "mosquitto"
    settings.LOCAL_SECRETS_DIR = tmp_path / "secrets"
    settings.BROKER_PASSWD_PATH = str(tmp_path / "mosquitto" / "passwd")
    settings.BROKER_ACL_PATH = str(tmp_path / "mosquitto" / "acl")
    settings.BROKER_PID_PATH = str(tmp_path / "mosquitto" / "mosquitto.pid")
    settings.MQTT_LISTENER_PASSWORD = ""

    call_command("broker_setup", stdout=io.StringIO())
    secret = tmp_path / "secrets" / "mqtt-listener-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = secret.read_text().strip()
    assert len(password) >= 40
    again = io.StringIO()
    call_command("broker_setup", stdout=again)  # a second run keeps the password and the config
    assert secret.read_text().strip() == password and "unchanged" in again.getvalue()

    settings.MQTT_LISTENER_PASSWORD = password  # as the next process reads it (config.env.env_secret)
    call_command("broker_sync", stdout=io.StringIO())
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(tmp_path / "mosquitto" / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        assert wait_until(lambda: (tmp_path / "mosquitto" / "mosquitto.pid").exists(), timeout=5)
        assert refused(port, None, None)
        assert not refused(port, settings.MQTT_LISTENER_USERNAME, password)
        device = RecordingClient(port, "dev-1", fleet["dev-1"])
        assert device.publish(f"{PREFIX}/devices/dev-1/telemetry", b"x") == NO_MATCHING_SUBSCRIBERS  # accepted
        device.close()
        # broker_sync finds make run's broker by its pid file: a revocation is refused at once.
        mqtt_credential_revoke(credential=MqttCredential.objects.get(username="dev-1", revoked_at__isnull=True))
        call_command("broker_sync", stdout=(output := io.StringIO()))
        assert "broker reloaded" in output.getvalue()
        assert wait_until(lambda: refused(port, "dev-1", fleet["dev-1"]), timeout=5)
    finally:
        broker.terminate()
        broker.wait(10)
    assert any((tmp_path / "mosquitto" / "data").iterdir())  # persistence under BROKER_DIR


# ---------------------------------------------------------------------------------------------------------------------
# The compose stack's broker: reloads itself when the worker rewrites the files (docker/mosquitto/reloading-broker.sh)
# ---------------------------------------------------------------------------------------------------------------------
def test_the_compose_broker_reloads_itself_when_the_files_change(fleet, tmp_path):
    auth_dir, port = tmp_path / "broker-auth", free_port()
    paths = {
        "password_file": str(auth_dir / "passwd"),
        "acl_file": str(auth_dir / "acl"),
        "tokens_file": str(auth_dir / "tokens"),
    }
    config = render_broker_config(
        PROJECT_CONFIG.read_text(),
        host="127.0.0.1",
        port=port,
        data_dir=tmp_path,
        plugin_path=str(plugin_build(PLUGIN_DIR)),
        **paths,
    )
    (tmp_path / "mosquitto.conf").write_text(config)
    script = PROJECT_CONFIG.parent / "reloading-broker.sh"
    wrapper = subprocess.Popen(
        ["sh", str(script), "mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
        env={**os.environ, "BROKER_AUTH_DIR": str(auth_dir), "FIELDWATCH_UID": str(os.getuid())},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        assert refused(port, "dev-1", fleet["dev-1"])  # empty files until the first sync
        broker_auth_sync(**paths)  # as the worker runs it in compose: files only, no signal
        assert wait_until(lambda: not refused(port, "dev-1", fleet["dev-1"]), timeout=5)
        mqtt_credential_revoke(credential=MqttCredential.objects.get(username="dev-1", revoked_at__isnull=True))
        broker_auth_sync(**paths)
        assert wait_until(lambda: refused(port, "dev-1", fleet["dev-1"]), timeout=5)
        assert not refused(port, "dev-2", fleet["dev-2"])
    finally:
        wrapper.terminate()
        assert wrapper.wait(10) == 0  # SIGTERM reaches Mosquitto, which stops cleanly
    with pytest.raises(RuntimeError):
        wait_for_port(port, timeout=0.5)
