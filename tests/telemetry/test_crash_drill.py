"""The crash drill in short: real listeners SIGKILLed at random points and restarted, the real broker restarted,
every reading the broker acknowledged counted in PostgreSQL (tests/support/crash_drill.py; the long series is
``python bench/crash_drill.py``)."""

import uuid

import pytest

from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.broker import Broker
from tests.support.crash_drill import KILL_POINTS, METRIC, CrashDrill
from tests.support.processes import database_url

pytestmark = pytest.mark.e2e


@pytest.fixture
def devices(transactional_db, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=device_type, key=METRIC, min_value=-1e9, max_value=1e9)
    return [DeviceFactory(uid=f"drill-hp-{n}", site=site_a, device_type=device_type).uid for n in range(6)]


PUBLISHER = ("drill-publisher", "drill-publisher-password")


@pytest.fixture
def broker():
    """A broker of this test's own: the drill restarts it. Its one extra login publishes for every device."""
    broker = Broker(prefix=f"drill{uuid.uuid4().hex[:6]}", load_generators=dict([PUBLISHER]))
    broker.start()
    yield broker
    broker.close()


def drill(broker, devices, seed, **env):
    return CrashDrill(
        broker=broker,
        database_url=database_url(),
        prefix=broker.prefix,
        devices=devices,
        publisher_login=PUBLISHER,
        env=env,
        seed=seed,
        messages=2000,
    )


def test_one_listener_loses_and_doubles_nothing_through_random_crashes_and_broker_restarts(broker, devices):
    runs = drill(broker, devices, seed=19)
    try:
        results = [runs.run(kills=(n % 3) + 1, broker_restart=n % 4 == 3) for n in range(12)]
    finally:
        exit_codes = runs.close()

    assert [(r.run, r.lost, r.doubled) for r in results if r.lost or r.doubled] == []
    assert sum(r.published for r in results) == 12 * 2000
    # The series covered what it claims: every kill point, and broker restarts.
    assert {point for r in results for point in r.kills} == set(KILL_POINTS)
    assert sum(r.broker_restarted for r in results) == 3
    assert exit_codes == [0]


def test_a_shared_group_of_two_loses_nothing_through_listener_crashes(broker, devices):
    runs = drill(broker, devices, seed=20, MQTT_SHARED_GROUP=f"drill-{uuid.uuid4().hex[:6]}")
    try:
        results = [runs.run(listeners=2, kills=2) for _ in range(3)]
    finally:
        exit_codes = runs.close()

    assert [(r.run, r.lost, r.doubled) for r in results if r.lost or r.doubled] == []
    assert sum(r.published for r in results) == 3 * 2000
    assert exit_codes == [0, 0]
