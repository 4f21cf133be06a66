"""The live websocket and its fan-out: who may join what, what the messages look like, and how often they come.

Consumer tests run through ``config.asgi.application`` (session cookie, origin check) or the consumer itself with a
user in the scope, first on the in-memory channel layer, then on the real Redis pub/sub layer the platform uses.
Scenarios are ``async`` functions run with ``async_to_sync``: database_sync_to_async then runs on the test's thread
and sees the test's transaction.
"""

import datetime
import json
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone

from apps.alerts.models import Alert
from apps.alerts.services import alert_acknowledge
from apps.dashboard import fanout
from apps.dashboard.consumers import LiveConsumer
from apps.dashboard.fanout import Coalescer, LivePublisher, devices_offline_publish, merge_latest
from apps.telemetry.exports import export_create, export_run
from apps.telemetry.ingest.records import CommittedReading
from apps.telemetry.models import Reading, Series
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.evaluation import Feed, evaluate, hot_rule

ALLOWED_ORIGIN = (b"origin", b"http://localhost")
QUIET = 0.5  # how long "receives nothing" waits

# Transactional: channels' database_sync_to_async closes "obsolete" connections around each call, which would close
# the connection holding a test transaction; committed rows are also what a real consumer reads.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def heat_pump(organization):
    device_type = DeviceTypeFactory(organization=organization, offline_after=datetime.timedelta(minutes=5))
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", unit="°C")
    MetricDefinitionFactory(device_type=device_type, key="cop", unit="")
    return device_type


@pytest.fixture
def pump_a(heat_pump, site_a):
    return DeviceFactory(uid="hp-a-1", site=site_a, device_type=heat_pump)


@pytest.fixture
def pump_b(heat_pump, site_b):
    return DeviceFactory(uid="hp-b-1", site=site_b, device_type=heat_pump)


@pytest.fixture
def publisher(monkeypatch):
    """A fresh publisher driven by the test (no background thread), in place of the process-wide one."""
    instance = LivePublisher()
    instance.background = False
    monkeypatch.setattr(fanout, "publisher", instance)
    yield instance
    instance.close()


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}".encode()


def socket_for(user, path="/ws/live/") -> WebsocketCommunicator:
    """A websocket of ``user`` straight on the consumer (the scope carries the user, as AuthMiddleware would)."""
    communicator = WebsocketCommunicator(LiveConsumer.as_asgi(), path)
    communicator.scope["user"] = user
    return communicator


async def connected(user, sites=None, device=None) -> WebsocketCommunicator:
    communicator = socket_for(user)
    ok, _ = await communicator.connect()
    assert ok
    if sites is not None:
        await communicator.send_json_to({"type": "subscribe", "sites": sites})
        assert (await communicator.receive_json_from())["type"] == "subscribed"
    if device is not None:
        await communicator.send_json_to({"type": "subscribe_device", "device": device})
        await communicator.receive_json_from()
    return communicator


async def live_send(group: str, message: dict) -> None:
    await get_channel_layer().group_send(group, {"type": fanout.LIVE_EVENT, "text": json.dumps(message)})


async def messages_from(socket, count: int, timeout: float = 2) -> list[dict]:
    """The next ``count`` messages, whether they came one per frame or several in an array."""
    found: list[dict] = []
    while len(found) < count:
        frame = await socket.receive_json_from(timeout=timeout)
        found.extend(frame if isinstance(frame, list) else [frame])
    assert len(found) == count, found
    return found


def readings(device, *rows, base=None):
    """CommittedReadings of ``device``: (metric, seconds after base, value)."""
    base = base or timezone.now().replace(microsecond=0)
    return [
        CommittedReading(1, device.id, metric, base + datetime.timedelta(seconds=s), float(v)) for metric, s, v in rows
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Authentication and the origin check (through config.asgi: AllowedHostsOriginValidator + AuthMiddlewareStack)
# ---------------------------------------------------------------------------------------------------------------------


def test_anonymous_socket_is_closed_with_4401():
    from config.asgi import application

    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ALLOWED_ORIGIN])
        await communicator.connect()
        closed = await communicator.receive_output(timeout=2)
        assert closed == {"type": "websocket.close", "code": 4401}

    async_to_sync(scenario)()


def test_session_cookie_authenticates_and_a_foreign_origin_is_refused(bob, site_a):
    from config.asgi import application

    cookie = session_cookie(bob)

    async def scenario():
        communicator = WebsocketCommunicator(application, "/ws/live/", headers=[ALLOWED_ORIGIN, (b"cookie", cookie)])
        ok, _ = await communicator.connect()
        assert ok
        await communicator.send_json_to({"type": "subscribe", "sites": [site_a.id]})
        assert await communicator.receive_json_from() == {"type": "subscribed", "sites": [site_a.id]}
        await communicator.disconnect()

        foreign = WebsocketCommunicator(
            application, "/ws/live/", headers=[(b"origin", b"http://evil.example"), (b"cookie", cookie)]
        )
        ok, _ = await foreign.connect()
        assert not ok

    async_to_sync(scenario)()


# ---------------------------------------------------------------------------------------------------------------------
# Subscriptions: the server decides the groups
# ---------------------------------------------------------------------------------------------------------------------


def _assert_site_isolation(bob, carol, site_a, site_b):
    async def scenario():
        bob_socket = socket_for(bob)
        carol_socket = socket_for(carol)
        for communicator in (bob_socket, carol_socket):
            assert (await communicator.connect())[0]
        await bob_socket.send_json_to({"type": "subscribe", "sites": [site_a.id]})
        assert await bob_socket.receive_json_from() == {"type": "subscribed", "sites": [site_a.id]}
        # Carol asks for Site A too (and B, which she may see): she is joined to B only.
        await carol_socket.send_json_to({"type": "subscribe", "sites": [site_a.id, site_b.id, 99999]})
        assert await carol_socket.receive_json_from() == {"type": "subscribed", "sites": [site_b.id]}

        message = {"type": "latest", "device": "hp-a-1", "values": {"supply_temp": [1, 41.5]}}
        await live_send(f"site.{site_a.id}", message)
        assert await bob_socket.receive_json_from(timeout=2) == message
        assert await carol_socket.receive_nothing(timeout=QUIET)

        on_b = {"type": "latest", "device": "hp-b-1", "values": {"supply_temp": [1, 30.0]}}
        await live_send(f"site.{site_b.id}", on_b)
        assert await carol_socket.receive_json_from(timeout=2) == on_b
        assert await bob_socket.receive_nothing(timeout=QUIET)
        for communicator in (bob_socket, carol_socket):
            await communicator.disconnect()

    async_to_sync(scenario)()


def test_viewer_asking_for_another_site_gets_nothing_from_it(bob, carol, site_a, site_b):
    _assert_site_isolation(bob, carol, site_a, site_b)


def test_device_subscription_needs_the_device_to_be_visible(carol, bob, pump_a, pump_b):
    async def scenario():
        carol_socket = await connected(carol)
        await carol_socket.send_json_to({"type": "subscribe_device", "device": pump_a.uid})
        assert await carol_socket.receive_json_from() == {"type": "error", "error": "no such device"}
        await live_send(f"device.{pump_a.id}", {"type": "latest", "device": pump_a.uid, "values": {}})
        assert await carol_socket.receive_nothing(timeout=QUIET)

        bob_socket = await connected(bob)
        await bob_socket.send_json_to({"type": "subscribe_device", "device": pump_a.uid})
        assert await bob_socket.receive_json_from() == {"type": "subscribed_device", "device": pump_a.uid}
        await live_send(f"device.{pump_a.id}", {"type": "latest", "device": pump_a.uid, "values": {}})
        assert (await bob_socket.receive_json_from())["device"] == pump_a.uid
        await carol_socket.disconnect()
        await bob_socket.disconnect()

    async_to_sync(scenario)()


def test_a_new_subscribe_replaces_the_sites_and_malformed_requests_join_nothing(alice, site_a, site_b):
    async def scenario():
        socket = await connected(alice, sites=[site_a.id, site_b.id])
        for bad in ({"type": "subscribe", "sites": "1,2"}, {"type": "subscribe", "sites": [True]}, {"type": "x"}):
            await socket.send_json_to(bad)
            assert (await socket.receive_json_from())["type"] == "error"
        await socket.send_json_to({"type": "subscribe", "sites": [site_b.id]})
        assert await socket.receive_json_from() == {"type": "subscribed", "sites": [site_b.id]}
        await live_send(f"site.{site_a.id}", {"type": "latest", "device": "x", "values": {}})
        assert await socket.receive_nothing(timeout=QUIET)
        await socket.disconnect()

    async_to_sync(scenario)()


def test_a_frame_that_is_not_json_is_answered_and_the_socket_stays_open(bob, site_a):
    async def scenario():
        socket = await connected(bob, sites=[site_a.id])
        await socket.send_to(text_data="{not json")
        assert await socket.receive_json_from() == {"type": "error", "error": "frames must be JSON objects"}
        await live_send(f"site.{site_a.id}", {"type": "latest", "device": "x", "values": {}})
        assert (await socket.receive_json_from())["type"] == "latest"
        await socket.disconnect()

    async_to_sync(scenario)()


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param('{"type": "subscribe_device", "device": "hp-a-1\\u0000"}', id="nul-in-a-uid"),
        pytest.param('{"type": "subscribe_device", "device": "\\u0000"}', id="nul-uid"),
        pytest.param('{"type": "subscribe", "sites": [1e400]}', id="1e400-in-a-site-list"),
        pytest.param('{"type": "subscribe", "sites": [1.5]}', id="a-fraction-in-a-site-list"),
        pytest.param('{"type": "subscribe", "sites": ["99999999999999999999999"]}', id="a-huge-site-id-string"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="100k-deep-arrays"),
        pytest.param('{"a":' * 100_000 + "1" + "}" * 100_000, id="100k-deep-objects"),
        pytest.param('{"type": "subscribe", "sites": ' + "[" * 70 + "]" * 70 + "}", id="70-deep-site-list"),
        pytest.param(b"\x00\x01binary", id="a-binary-frame"),
    ],
)
def test_a_frame_that_fails_to_decode_or_validate_gets_an_error_and_the_socket_stays_open(bob, site_a, pump_a, frame):
    async def scenario():
        socket = await connected(bob, sites=[site_a.id])
        if isinstance(frame, bytes):
            await socket.send_to(bytes_data=frame)
        else:
            await socket.send_to(text_data=frame)
        assert (await socket.receive_json_from())["type"] == "error"
        # Still open and still subscribed: the site's next message arrives, and a valid request is answered.
        await live_send(f"site.{site_a.id}", {"type": "latest", "device": "x", "values": {}})
        assert (await socket.receive_json_from())["type"] == "latest"
        await socket.send_json_to({"type": "subscribe_device", "device": pump_a.uid})
        assert await socket.receive_json_from() == {"type": "subscribed_device", "device": pump_a.uid}
        await socket.disconnect()

    async_to_sync(scenario)()


def test_mallory_of_another_organization_is_joined_to_nothing(mallory, site_a, site_b):
    async def scenario():
        socket = await connected(mallory)
        await socket.send_json_to({"type": "subscribe", "sites": [site_a.id, site_b.id]})
        assert await socket.receive_json_from() == {"type": "subscribed", "sites": []}
        await socket.disconnect()

    async_to_sync(scenario)()


# ---------------------------------------------------------------------------------------------------------------------
# Fan-out: coalescing, shapes, status
# ---------------------------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_coalescer_releases_a_key_at_most_once_per_interval_with_the_newest_values():
    clock = FakeClock()
    coalescer = Coalescer(interval=1.0, clock=clock)
    groups = ("site.1",)
    coalescer.put("d", groups, {"type": "latest", "values": {"t": [1, 1.0]}}, merge_latest)
    due, wait = coalescer.take_due()
    assert [item.message["values"] for item in due] == [{"t": [1, 1.0]}] and wait is None

    for i in range(2, 50):  # 48 readings within the same second
        clock.now += 0.01
        coalescer.put(
            "d", groups, {"type": "latest", "values": {"t": [i, float(i)], f"m{i % 2}": [i, 0.0]}}, merge_latest
        )
        assert coalescer.take_due()[0] == []
    coalescer.put("d", groups, {"type": "latest", "values": {"t": [3, -1.0]}}, merge_latest)  # older: loses
    _, wait = coalescer.take_due()
    assert 0 < wait <= 1.0

    clock.now = 1001.0
    due, _ = coalescer.take_due()
    assert len(due) == 1
    assert due[0].message["values"] == {"t": [49, 49.0], "m0": [48, 0.0], "m1": [49, 0.0]}
    assert coalescer.take_due() == ([], None)


def test_many_readings_of_one_device_within_a_second_reach_the_browser_as_one_message(bob, site_a, pump_a, publisher):
    base = timezone.now().replace(microsecond=0)
    clock = FakeClock()
    publisher.coalescer.clock = clock

    async def scenario():
        # Joined to the site and to the device (a device page): each message still arrives once.
        socket = await connected(bob, sites=[site_a.id], device=pump_a.uid)
        layer = get_channel_layer()
        await database_sync_to_async(publisher.readings)(readings(pump_a, ("supply_temp", 0, 40), base=base))
        await publisher.send_due(layer)
        first, status = sorted(await messages_from(socket, 2), key=lambda m: m["type"])
        assert await socket.receive_nothing(timeout=0.2)
        assert first == {"type": "latest", "device": pump_a.uid, "values": {"supply_temp": [_ms(base), 40.0]}}
        assert (status["type"], status["device"], status["status"], status["previous"]) == (
            "status",
            pump_a.uid,
            "online",
            "never_seen",
        )

        for i in range(1, 30):  # 29 batches within the second, with both metrics
            clock.now += 0.02
            batch = readings(pump_a, ("supply_temp", i, 40 + i), ("cop", i, 3 + i / 100), base=base)
            await database_sync_to_async(publisher.readings)(batch)
            assert await publisher.send_due(layer) != 0
        assert await socket.receive_nothing(timeout=0.2)

        clock.now += 1.0
        assert await publisher.send_due(layer) == 0
        merged = await socket.receive_json_from()
        assert merged == {
            "type": "latest",
            "device": pump_a.uid,
            "values": {"supply_temp": [_ms(base) + 29_000, 69.0], "cop": [_ms(base) + 29_000, 3.29]},
        }
        assert await socket.receive_nothing(timeout=0.2)  # no second "online": the device never went silent
        await socket.disconnect()

    async_to_sync(scenario)()


def _ms(ts) -> int:
    return int(ts.timestamp() * 1000)


def test_alert_opened_and_acknowledged_are_pushed_to_the_site_with_the_protocol_shape(
    bob, carol, site_a, site_b, pump_a, publisher, django_capture_on_commit_callbacks
):
    hot_rule(site_a)
    feed = Feed()

    async def scenario():
        bob_socket = await connected(bob, sites=[site_a.id])
        carol_socket = await connected(carol, sites=[site_a.id, site_b.id])
        layer = get_channel_layer()

        def open_alert():
            with django_capture_on_commit_callbacks(execute=True):
                evaluate(feed.batch((pump_a, "supply_temp", 0, 91)))
            return Alert.objects.get(device=pump_a)

        alert = await database_sync_to_async(open_alert)()
        await publisher.send_due(layer)
        message = await bob_socket.receive_json_from()
        assert message == {
            "type": "alert",
            "alert": {
                "id": alert.id,
                "status": "active",
                "severity": alert.severity,
                "message": alert.message,
                "device": pump_a.uid,
                "site": site_a.id,
                "opened_at": alert.opened_at.isoformat(),
            },
        }
        assert await carol_socket.receive_nothing(timeout=QUIET)

        publisher.coalescer.last_sent.clear()  # as if a second had passed

        def acknowledge():
            with django_capture_on_commit_callbacks(execute=True):
                alert_acknowledge(alert=alert, user=bob)

        await database_sync_to_async(acknowledge)()
        await publisher.send_due(layer)
        acknowledged = await bob_socket.receive_json_from()
        assert (acknowledged["type"], acknowledged["alert"]["id"], acknowledged["alert"]["status"]) == (
            "alert",
            alert.id,
            "acknowledged",
        )
        await bob_socket.disconnect()
        await carol_socket.disconnect()

    async_to_sync(scenario)()


def test_devices_that_crossed_their_timeout_since_the_last_run_are_published_offline_once(heat_pump, site_a, publisher):
    from django.core.cache import cache

    cache.delete(fanout.OFFLINE_WATERMARK_KEY)
    now = timezone.now()
    crossed = DeviceFactory(uid="gone", site=site_a, device_type=heat_pump)
    fresh = DeviceFactory(uid="fresh", site=site_a, device_type=heat_pump)
    long_gone = DeviceFactory(uid="long-gone", site=site_a, device_type=heat_pump)
    type(crossed).objects.filter(pk=crossed.pk).update(last_seen=now - datetime.timedelta(minutes=5, seconds=5))
    type(fresh).objects.filter(pk=fresh.pk).update(last_seen=now - datetime.timedelta(minutes=1))
    type(long_gone).objects.filter(pk=long_gone.pk).update(last_seen=now - datetime.timedelta(days=1))

    assert devices_offline_publish(now=now) == 1
    pending = [item.message for item in publisher.coalescer.pending.values()]
    assert [(m["type"], m["device"], m["status"], m["previous"]) for m in pending] == [
        ("status", "gone", "offline", "online")
    ]
    assert devices_offline_publish(now=now + datetime.timedelta(seconds=15)) == 0  # not twice


# ---------------------------------------------------------------------------------------------------------------------
# The real Redis pub/sub layer, and the publisher's own thread
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def redis_layer():
    layers = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [settings.REDIS_URL], "prefix": f"fw-test-{uuid.uuid4().hex[:8]}"},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        yield


def test_site_isolation_holds_on_the_redis_layer(redis_layer, bob, carol, site_a, site_b):
    _assert_site_isolation(bob, carol, site_a, site_b)


def test_the_publisher_thread_delivers_within_a_second_over_redis_and_never_withholds_the_last_value(
    redis_layer, bob, site_a, pump_a, monkeypatch
):
    instance = LivePublisher()
    monkeypatch.setattr(fanout, "publisher", instance)
    base = timezone.now().replace(microsecond=0)

    async def scenario():
        socket = await connected(bob, sites=[site_a.id])
        started = time.monotonic()
        await database_sync_to_async(fanout.readings_fanout)(readings(pump_a, ("supply_temp", 0, 40), base=base))
        got = await messages_from(socket, 2)
        assert {m["type"] for m in got} == {"latest", "status"}
        assert time.monotonic() - started < 1.0

        # A second batch right after: coalesced, yet sent by the thread's own timer without a further batch.
        await database_sync_to_async(fanout.readings_fanout)(readings(pump_a, ("supply_temp", 1, 41), base=base))
        sent_at = time.monotonic()
        late = await socket.receive_json_from(timeout=3)
        assert late["values"] == {"supply_temp": [_ms(base) + 1000, 41.0]}
        assert time.monotonic() - sent_at < 1.5
        await socket.disconnect()

    try:
        async_to_sync(scenario)()
    finally:
        instance.close()
    assert instance.failed == 0


# ---------------------------------------------------------------------------------------------------------------------
# Export progress: pushed to the job's owner only
# ---------------------------------------------------------------------------------------------------------------------


def test_bobs_export_progress_reaches_bob_and_no_other_user_over_redis(
    redis_layer, alice, bob, carol, site_a, pump_a, settings, tmp_path, monkeypatch
):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    instance = LivePublisher()  # the process-wide publisher's shape: its own thread, over Redis
    monkeypatch.setattr(fanout, "publisher", instance)
    series = Series.objects.create(device=pump_a, metric_key="supply_temp")
    now = timezone.now()
    Reading.objects.bulk_create(
        Reading(series=series, ts=now - datetime.timedelta(seconds=10 * i), value=40.0 + i) for i in range(5)
    )
    job = export_create(
        user=bob,
        series=[{"id": series.id, "device": pump_a.uid, "metric": "supply_temp", "unit": "°C"}],
        start=now - datetime.timedelta(minutes=5),
        end=now + datetime.timedelta(seconds=1),
        interval="raw",
        aggregates=None,
        file_format="csv",
    )

    async def scenario():
        sockets = {}
        for user in (bob, alice, carol):
            socket = await connected(user, sites=[site_a.id])  # alice and bob see site A: not enough
            # Naming another user is not a thing the frame can do: each joins their own exports only.
            await socket.send_json_to({"type": "subscribe_exports", "user": bob.pk})
            assert await socket.receive_json_from() == {"type": "subscribed_exports"}
            sockets[user.username] = socket
        await database_sync_to_async(export_run)(export_id=job.id)
        pushed = []
        while not pushed or pushed[-1]["export"]["status"] != "done":
            pushed.extend(await messages_from(sockets["bob"], 1, timeout=3))
        assert {message["type"] for message in pushed} == {"export"}
        assert pushed[0]["export"]["status"] == "running" and pushed[0]["export"]["id"] == str(job.id)
        answer = await database_sync_to_async(lambda: _api_answer(bob, job.id))()
        assert pushed[-1]["export"] == answer  # the export API's shape and values
        assert answer["download_url"] and answer["rows"] == 5
        for name in ("alice", "carol"):
            assert await sockets[name].receive_nothing(timeout=QUIET), name
        for socket in sockets.values():
            await socket.disconnect()

    try:
        async_to_sync(scenario)()
    finally:
        instance.close()
    assert instance.failed == 0


def _api_answer(user, export_id) -> dict:
    client = Client()
    client.force_login(user)
    return client.get(f"/api/v1/exports/{export_id}").json()
