"""The ingest device directory: one load of the catalogue, kept in-process, reloaded when the catalogue changes."""

import datetime

import pytest
from django.core.cache import cache
from redis.exceptions import ConnectionError as RedisConnectionError

from apps.core import versioned
from apps.devices.choices import UnknownMetricPolicy
from apps.telemetry.ingest.directory import CATALOGUE_VERSION_KEY, DeviceDirectory, catalogue_changed
from apps.telemetry.ingest.records import MetricRule
from tests.devices.factories import (
    DeviceFactory,
    DeviceTypeFactory,
    GatewayFactory,
    MetricDefinitionFactory,
    SiteFactory,
)

SCHEMA = {
    "type": "object",
    "properties": {"mode": {"enum": ["heat", "cool", "off"]}},
    "required": ["mode"],
}


@pytest.fixture
def site(db):
    return SiteFactory()


@pytest.fixture
def heat_pump_type(site):
    device_type = DeviceTypeFactory(
        organization=site.organization, payload_schema=SCHEMA, raw_retention_days=30, name="Heat pump"
    )
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", min_value=-20, max_value=90)
    MetricDefinitionFactory(device_type=device_type, key="mode", min_value=None, max_value=None)
    return device_type


@pytest.fixture
def meter_type(site):
    return DeviceTypeFactory(organization=site.organization, unknown_metric_policy=UnknownMetricPolicy.LENIENT)


@pytest.fixture
def fresh_version():
    """Start from an unset catalogue version, and leave none behind."""
    cache.delete(CATALOGUE_VERSION_KEY)
    yield
    cache.delete(CATALOGUE_VERSION_KEY)


def test_every_device_rule_is_built_from_its_type(site, heat_pump_type, meter_type):
    hp = DeviceFactory(uid="hp-1", site=site, device_type=heat_pump_type)
    meter = DeviceFactory(uid="meter-1", site=site, device_type=meter_type, is_active=False)

    rules = DeviceDirectory().rules()

    rule = rules["hp-1"]
    assert (rule.device_id, rule.uid, rule.site_id, rule.is_active, rule.strict) == (hp.id, "hp-1", site.id, True, True)
    assert rule.metrics == {
        # The factory's unit "°C", in its canonical spelling (ingest.units): SenML's "Cel".
        "supply_temp": MetricRule("supply_temp", -20.0, 90.0, "Cel"),
        "mode": MetricRule("mode", None, None, "Cel"),
    }
    assert rule.raw_retention == datetime.timedelta(days=30)
    assert rule.check_schema is not None

    rule = rules["meter-1"]
    assert (rule.device_id, rule.is_active, rule.strict, rule.metrics) == (meter.id, False, False, {})
    assert rule.check_schema is None
    assert rule.raw_retention is None
    assert "nope" not in rules


def test_schema_check_returns_the_first_error_truncated_and_is_shared_by_the_type(site, heat_pump_type):
    DeviceFactory(uid="hp-1", site=site, device_type=heat_pump_type)
    DeviceFactory(uid="hp-2", site=site, device_type=heat_pump_type)
    rules = DeviceDirectory().rules()
    check = rules["hp-1"].check_schema

    assert rules["hp-2"].check_schema is check
    assert rules["hp-2"].metrics is rules["hp-1"].metrics
    assert check({"mode": "heat", "supply_temp": 40}) is None
    assert "'mode' is a required property" in check({"supply_temp": 40})
    assert len(check({"mode": "x" * 500})) == 200


def test_gateway_site_is_known_by_uid(site):
    GatewayFactory(uid="gw-a", site=site)
    directory = DeviceDirectory()
    assert directory.gateway_site_id("gw-a") == site.id
    assert directory.gateway_site_id("gw-unknown") is None


def test_loading_takes_a_constant_number_of_queries(site, heat_pump_type, meter_type, django_assert_num_queries):
    for n in range(30):
        DeviceFactory(site=site, device_type=heat_pump_type if n % 2 else meter_type)
        GatewayFactory(site=site)
    directory = DeviceDirectory()

    # Devices, device types, metric definitions (prefetch), sites, gateways.
    with django_assert_num_queries(5):
        directory.load()
    with django_assert_num_queries(0):
        directory.rules()
        directory.gateway_site_id("gw-a")


def test_a_deactivated_device_is_seen_by_a_running_directory(
    site, heat_pump_type, fresh_version, django_capture_on_commit_callbacks
):
    device = DeviceFactory(uid="hp-1", site=site, device_type=heat_pump_type)
    directory = DeviceDirectory(check_interval=0)
    assert directory.rules()["hp-1"].is_active

    with django_capture_on_commit_callbacks(execute=True):
        device.is_active = False
        device.save()

    assert not directory.rules()["hp-1"].is_active


def test_new_devices_metrics_and_gateways_are_seen_after_commit(
    site, heat_pump_type, fresh_version, django_capture_on_commit_callbacks
):
    directory = DeviceDirectory(check_interval=0)
    assert directory.rules() == {}

    with django_capture_on_commit_callbacks(execute=True):
        DeviceFactory(uid="hp-new", site=site, device_type=heat_pump_type)
        MetricDefinitionFactory(device_type=heat_pump_type, key="return_temp")
        GatewayFactory(uid="gw-new", site=site)

    assert "return_temp" in directory.rules()["hp-new"].metrics
    assert directory.gateway_site_id("gw-new") == site.id


def test_an_unchanged_catalogue_is_not_reloaded(site, heat_pump_type, fresh_version, django_assert_num_queries):
    DeviceFactory(site=site, device_type=heat_pump_type)
    directory = DeviceDirectory(check_interval=0)
    directory.rules()

    with django_assert_num_queries(0):
        assert directory.refresh_if_stale() is False


def test_a_save_of_last_seen_alone_does_not_invalidate_the_catalogue(
    site, heat_pump_type, fresh_version, django_capture_on_commit_callbacks
):
    device = DeviceFactory(site=site, device_type=heat_pump_type)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        device.last_seen = datetime.datetime.now(datetime.UTC)
        device.save(update_fields=["last_seen"])
    assert callbacks == []


def test_the_version_is_checked_at_most_every_check_interval(site, heat_pump_type, fresh_version):
    now = [100.0]
    directory = DeviceDirectory(check_interval=1.0, clock=lambda: now[0])
    directory.rules()
    catalogue_changed()

    now[0] += 0.5
    assert directory.refresh_if_stale() is False
    now[0] += 0.6
    assert directory.refresh_if_stale() is True
    assert directory.refresh_if_stale() is False


def test_a_full_reload_happens_after_max_age_even_without_a_version_change(site, heat_pump_type, fresh_version):
    now = [100.0]
    directory = DeviceDirectory(check_interval=1.0, max_age=60, clock=lambda: now[0])
    directory.rules()
    # A change the signals never announced (QuerySet.update(), or Redis down during the bump).
    DeviceFactory(uid="hp-quiet", site=site, device_type=heat_pump_type)

    now[0] += 30
    assert "hp-quiet" not in directory.rules()
    now[0] += 31
    assert "hp-quiet" in directory.rules()


def test_catalogue_changed_bumps_the_version_and_starts_it_when_missing(fresh_version):
    catalogue_changed()
    first = cache.get(CATALOGUE_VERSION_KEY)
    catalogue_changed()
    assert cache.get(CATALOGUE_VERSION_KEY) == first + 1
    client = cache._cache.get_client()
    assert client.ttl(cache.make_and_validate_key(CATALOGUE_VERSION_KEY)) == -1  # never expires


def test_a_cache_outage_neither_fails_a_change_nor_the_directory(
    site, heat_pump_type, fresh_version, monkeypatch, caplog
):
    DeviceFactory(uid="hp-1", site=site, device_type=heat_pump_type)
    directory = DeviceDirectory(check_interval=0)
    directory.rules()

    def down(*args, **kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(versioned.cache, "incr", down)
    monkeypatch.setattr(versioned.cache, "get", down)

    catalogue_changed()
    assert directory.rules()["hp-1"].is_active  # still served from memory
    assert "Could not bump the ingest catalogue version" in caplog.text
    assert "Could not read the ingest catalogue version" in caplog.text
