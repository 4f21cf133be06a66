"""Drill: the broker restarts during a stream read by two listeners in one shared group (issue 12).

Two real listeners share the subscription (``MQTT_SHARED_GROUP``); one publisher (the drill's load-generator login)
streams QoS 1 readings, one message = one reading with a timestamp of its own, through the project's broker config;
the broker is stopped (SIGTERM: it saves its persistence) and started again mid-stream. Counted in PostgreSQL:
``lost = acknowledged - distinct stored``; a redelivered reading cannot make a second row (primary key (series, ts)),
it is counted by the listeners as a duplicate (their ``fieldwatch_ingest_readings_duplicate_total``).

Two phases, because Mosquitto 2.0.11 does not restore an offline session's ``$share`` subscriptions after a broker
restart (docker/mosquitto/mosquitto.conf): a message that reaches the restarted broker before a listener has
subscribed again is acknowledged to the publisher with reason 0x10 "no matching subscribers" and dropped.

1. *Through*: the publisher keeps publishing through the restart, as a fleet does. The platform's guarantee is that
   every message the broker took for the group is stored: the lost are exactly the ones the broker answered 0x10,
   and the drill prints how many that was.
2. *Gated*: the publisher stops before the broker does and resumes only once both listeners are subscribed again,
   while the listeners still hold what the broker had queued and in flight for them: nothing may be lost.
"""

import time
import uuid

import pytest

from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.drills.conftest import LOAD_GENERATOR
from tests.support.crash_drill import METRIC, CrashDrill, _Publisher
from tests.support.processes import database_url, wait_until
from tests.support.prometheus import metric_sum

pytestmark = pytest.mark.e2e

RATE = 1000  # messages (readings) per second
MESSAGES = 5000
RESTART_AT = 1500
DOWN_SECONDS = 1.0


@pytest.fixture
def devices(transactional_db, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=device_type, key=METRIC, min_value=-1e9, max_value=1e9)
    return [DeviceFactory(uid=f"drill-share-{n}", site=site_a, device_type=device_type).uid for n in range(6)]


def duplicates(drill: CrashDrill) -> float:
    return sum(metric_sum(lst.metrics_port, "fieldwatch_ingest_readings_duplicate_total") for lst in drill.listeners)


def stream(drill: CrashDrill, first_ts: int, *, gated: bool) -> dict:
    """Publish MESSAGES readings at RATE, restarting the broker at RESTART_AT; then settle and count."""
    publisher = _Publisher(drill.broker.port, LOAD_GENERATOR)
    duplicates_before = duplicates(drill)
    publisher.connect()
    assert wait_until(publisher.client.is_connected, timeout=10)
    started = time.monotonic()
    resubscribed_after = None
    try:
        for i in range(MESSAGES):
            if i == RESTART_AT:
                seen = [listener.subscriptions() for listener in drill.listeners]
                if gated:
                    publisher.flush(timeout=30)  # nothing of the publisher's in flight when the broker goes
                drill.broker.stop()
                stopped = time.monotonic()
                if gated:
                    time.sleep(DOWN_SECONDS)
                    drill.broker.start()
                    assert wait_until(
                        lambda seen=seen: all(
                            listener.subscriptions() > n for listener, n in zip(drill.listeners, seen, strict=True)
                        ),
                        timeout=40,
                    ), [listener.output()[-2000:] for listener in drill.listeners]
                    resubscribed_after = time.monotonic() - stopped
                    assert wait_until(publisher.client.is_connected, timeout=10)
                    started = time.monotonic() - i / RATE  # resume the pace from here
                else:
                    # Keep publishing while the broker is down (paho queues) and after it is back.
                    restart_at = stopped + DOWN_SECONDS
            if not gated and i > RESTART_AT and drill.broker.process is None and time.monotonic() >= restart_at:
                drill.broker.start()
            topic = f"{drill.prefix}/devices/{drill.devices[i % len(drill.devices)]}/telemetry"
            payload = f'{{"ts": {first_ts + i}, "values": {{"{METRIC}": {20 + (i % 500) / 10}}}}}'.encode()
            publisher.publish(topic, payload)
            delay = started + (i + 1) / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        if drill.broker.process is None:
            drill.broker.start()
        publisher.flush(timeout=60)
    finally:
        publisher.close()
    drill.messages = MESSAGES
    distinct, rows = drill._settle(first_ts, quiet_seconds=5)
    assert rows == distinct  # the primary key: never a second row
    return {
        "published": publisher.acknowledged,
        "unrouted": publisher.unrouted,
        "stored": distinct,
        "lost": publisher.acknowledged - distinct,
        "duplicates": duplicates(drill) - duplicates_before,
        "resubscribed_after_s": resubscribed_after,
    }


def test_broker_restart_under_a_shared_group_of_two_loses_only_what_the_broker_said_it_could_not_route(
    own_broker, devices
):
    drill = CrashDrill(
        broker=own_broker,
        database_url=database_url(),
        prefix=own_broker.prefix,
        devices=devices,
        publisher_login=LOAD_GENERATOR,
        env={"MQTT_SHARED_GROUP": f"drill-{uuid.uuid4().hex[:6]}"},
        messages=MESSAGES,
        metrics=True,
    )
    base = int(time.time() * 1000) - 86_400_000
    try:
        drill._ensure_listeners(2)
        through = stream(drill, base, gated=False)
        gated = stream(drill, base + 2 * MESSAGES, gated=True)
        alive = [listener.alive() for listener in drill.listeners]
    finally:
        exit_codes = drill.close()
    print(f"\nbroker restart, 2 listeners in a shared group, {MESSAGES} readings at {RATE}/s each phase:")
    print(f"  publishing through the restart: {through}")
    print(f"  publishing gated on the listeners' resubscription: {gated}")

    assert through["published"] == MESSAGES
    assert through["lost"] == through["unrouted"], "a message the broker routed to the group was not stored"
    assert gated["published"] == MESSAGES
    assert (gated["lost"], gated["unrouted"]) == (0, 0)
    assert alive == [True, True]  # the listeners rode out both restarts themselves
    assert exit_codes == [0, 0]
