"""Device-domain models: constraints hold in the database even when validation is bypassed, ``full_clean`` says
what to fix, and a device's status follows from ``last_seen`` and its type's timeout."""

import datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.devices.choices import DeviceStatus
from apps.devices.models import Device, DeviceType, MetricDefinition, Site
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory

NOW = timezone.now()


def messages_for(error: ValidationError, field: str) -> list[str]:
    return error.message_dict.get(field, [])


# ---------------------------------------------------------------------------------------------------------------------
# Database constraints (validation bypassed)
# ---------------------------------------------------------------------------------------------------------------------
def test_database_refuses_a_duplicate_device_id(site_a):
    device = DeviceFactory(site=site_a)
    with pytest.raises(IntegrityError), transaction.atomic():
        Device.objects.create(uid=device.uid, name="Copy", site=site_a, device_type=device.device_type)


def test_database_refuses_a_metric_minimum_above_its_maximum(organization):
    device_type = DeviceTypeFactory(organization=organization)
    with pytest.raises(IntegrityError, match="metric_min_not_above_max"), transaction.atomic():
        MetricDefinition.objects.create(device_type=device_type, key="t", display_name="T", min_value=10, max_value=1)


def test_database_accepts_an_open_ended_metric_range(organization):
    device_type = DeviceTypeFactory(organization=organization)
    MetricDefinition.objects.create(device_type=device_type, key="t", display_name="T", min_value=10)
    MetricDefinition.objects.create(device_type=device_type, key="u", display_name="U", max_value=-10)


def test_database_refuses_a_negative_emission_factor(organization):
    with pytest.raises(IntegrityError, match="site_emission_factor_not_negative"), transaction.atomic():
        Site.objects.create(organization=organization, name="Negative", emission_factor_kg_per_kwh=-0.1)


def test_database_refuses_a_duplicate_metric_key_per_device_type(organization):
    metric = MetricDefinitionFactory(device_type=DeviceTypeFactory(organization=organization))
    with pytest.raises(IntegrityError), transaction.atomic():
        MetricDefinition.objects.create(device_type=metric.device_type, key=metric.key, display_name="Again")


def test_database_refuses_a_non_positive_offline_timeout(organization):
    with pytest.raises(IntegrityError, match="device_type_offline_after_positive"), transaction.atomic():
        DeviceType.objects.create(organization=organization, name="Never", offline_after=datetime.timedelta(0))


# ---------------------------------------------------------------------------------------------------------------------
# full_clean messages
# ---------------------------------------------------------------------------------------------------------------------
def test_full_clean_names_an_unknown_timezone(organization):
    site = Site(organization=organization, name="Mars base", timezone="Mars/Olympus_Mons")
    with pytest.raises(ValidationError) as error:
        site.full_clean()
    assert messages_for(error.value, "timezone") == [
        "'Mars/Olympus_Mons' is not a known IANA timezone (e.g. 'Europe/Berlin', 'America/New_York', 'UTC')."
    ]


def test_full_clean_reports_the_metric_range_constraint_message(organization):
    metric = MetricDefinition(
        device_type=DeviceTypeFactory(organization=organization), key="t", display_name="T", min_value=5, max_value=1
    )
    with pytest.raises(ValidationError) as error:
        metric.full_clean()
    assert error.value.messages == ["The plausible minimum cannot be greater than the maximum."]


def test_full_clean_reports_a_negative_emission_factor(organization):
    site = Site(organization=organization, name="Negative", emission_factor_kg_per_kwh=-1)
    with pytest.raises(ValidationError) as error:
        site.full_clean()
    assert error.value.messages == ["The emission factor cannot be negative."]


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": 12}, "Invalid JSON Schema at type: 12 is not valid under any of the given schemas"),
        (
            {"properties": {"t": {"minimum": "x"}}},
            "Invalid JSON Schema at properties/t/minimum: 'x' is not of type 'number'",
        ),
        ([1, 2], "The payload schema must be a JSON object (a JSON Schema document)."),
    ],
)
def test_full_clean_locates_the_error_in_an_invalid_json_schema(organization, schema, message):
    device_type = DeviceType(organization=organization, name="Bad schema", payload_schema=schema)
    with pytest.raises(ValidationError) as error:
        device_type.full_clean()
    assert messages_for(error.value, "payload_schema") == [message]


def test_full_clean_accepts_a_valid_json_schema(organization):
    schema = {"type": "object", "properties": {"t": {"type": "number", "minimum": -50}}}
    DeviceType(organization=organization, name="Good schema", payload_schema=schema).full_clean()


def test_full_clean_lists_each_invalid_tag(site_a):
    device = DeviceFactory.build(site=site_a, device_type=DeviceTypeFactory(organization=site_a.organization))
    device.tags = ["roof", "Bad Tag", "x" * 51]
    with pytest.raises(ValidationError) as error:
        device.full_clean()
    (message,) = messages_for(error.value, "tags")
    assert message.startswith(f"Invalid tags 'Bad Tag', '{'x' * 51}':")
    assert "'roof'" not in message


@pytest.mark.parametrize("uid", ["hp/1", "hp+1", "hp#1", "hp 1", "-leading-dash", ""])
def test_full_clean_refuses_external_ids_unfit_for_mqtt_topics(site_a, uid):
    device = DeviceFactory.build(site=site_a, device_type=DeviceTypeFactory(organization=site_a.organization), uid=uid)
    with pytest.raises(ValidationError) as error:
        device.full_clean()
    assert "uid" in error.value.message_dict


@pytest.mark.parametrize("uid", ["hp/1", "gw+2", "gw#3"])
def test_full_clean_refuses_gateway_ids_with_mqtt_wildcards(site_a, uid):
    gateway = GatewayFactory.build(site=site_a, uid=uid)
    with pytest.raises(ValidationError) as error:
        gateway.full_clean()
    (message,) = messages_for(error.value, "uid")
    assert "'/', '+', '#' and spaces are not allowed" in message


def test_full_clean_refuses_a_device_type_of_another_organization(site_a, other_organization):
    device = DeviceFactory.build(site=site_a, device_type=DeviceTypeFactory(organization=other_organization))
    with pytest.raises(ValidationError) as error:
        device.full_clean()
    assert messages_for(error.value, "device_type") == [
        "This device type belongs to another organization than the site."
    ]


def test_full_clean_refuses_a_gateway_on_another_site(site_a, site_b):
    device = DeviceFactory.build(
        site=site_a,
        device_type=DeviceTypeFactory(organization=site_a.organization),
        gateway=GatewayFactory(site=site_b),
    )
    with pytest.raises(ValidationError) as error:
        device.full_clean()
    assert messages_for(error.value, "gateway") == ["The gateway is on another site than the device."]


# ---------------------------------------------------------------------------------------------------------------------
# Device.status()
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def device(site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization, offline_after=datetime.timedelta(minutes=10))
    return DeviceFactory(site=site_a, device_type=device_type)


def test_device_that_never_reported_is_never_seen(device):
    assert device.status(now=NOW) == DeviceStatus.NEVER_SEEN


def test_device_is_online_until_its_types_offline_timeout_has_passed(device):
    device.last_seen = NOW - datetime.timedelta(minutes=10)
    assert device.status(now=NOW) == DeviceStatus.ONLINE


def test_device_is_offline_once_its_types_offline_timeout_has_passed(device):
    device.last_seen = NOW - datetime.timedelta(minutes=10, seconds=1)
    assert device.status(now=NOW) == DeviceStatus.OFFLINE


def test_offline_timeout_comes_from_the_device_type(device):
    device.last_seen = NOW - datetime.timedelta(minutes=7)
    assert device.status(now=NOW) == DeviceStatus.ONLINE
    device.device_type.offline_after = datetime.timedelta(minutes=5)
    assert device.status(now=NOW) == DeviceStatus.OFFLINE


@pytest.mark.parametrize("last_seen", [None, NOW, NOW - datetime.timedelta(days=1)])
def test_inactive_device_is_inactive_whatever_it_last_sent(device, last_seen):
    device.is_active = False
    device.last_seen = last_seen
    assert device.status(now=NOW) == DeviceStatus.INACTIVE


def test_status_defaults_to_the_current_time(device):
    device.last_seen = timezone.now() - datetime.timedelta(seconds=5)
    assert device.status() == DeviceStatus.ONLINE


# ---------------------------------------------------------------------------------------------------------------------
# Energy: tariffs and metric roles
# ---------------------------------------------------------------------------------------------------------------------


def test_time_of_use_bands_that_leave_hours_uncovered_need_a_flat_price(site_a):
    site_a.tariff_bands = [{"from": "00:00", "to": "06:00", "price": 0.1}]
    with pytest.raises(ValidationError) as error:
        site_a.full_clean()
    assert "need a flat price" in messages_for(error.value, "tariff_flat_price")[0]
    site_a.tariff_bands = [
        {"from": "00:00", "to": "06:00", "price": 0.1},
        {"from": "06:00", "to": "24:00", "price": 0.3},
    ]
    site_a.full_clean()  # every hour of every day covered: no flat price needed


def test_database_refuses_a_negative_flat_price(organization):
    with pytest.raises(IntegrityError), transaction.atomic():
        Site.objects.create(organization=organization, name="S", tariff_flat_price=-1)


@pytest.mark.parametrize(
    ("unit", "kind", "role", "valid"),
    [
        ("kW", "gauge", "heat_output", True),
        ("kWh", "totalizer", "electrical_input", True),
        ("MWh", "totalizer", "heat_output", True),
        ("°C", "gauge", "heat_output", False),
        ("kWh", "gauge", "electrical_input", False),
        ("m³", "totalizer", "heat_output", False),
        ("°C", "gauge", "outdoor_temperature", True),
        ("K", "gauge", "outdoor_temperature", False),
    ],
)
def test_a_metric_role_needs_a_metric_of_the_right_unit_and_kind(organization, unit, kind, role, valid):
    definition = MetricDefinition(
        device_type=DeviceTypeFactory(organization=organization), key="m", display_name="M", unit=unit, kind=kind
    )
    definition.role = role
    if valid:
        definition.full_clean()
    else:
        with pytest.raises(ValidationError) as error:
            definition.full_clean()
        assert messages_for(error.value, "role")


def test_a_device_type_has_at_most_one_metric_per_role(organization):
    device_type = DeviceTypeFactory(organization=organization)
    MetricDefinitionFactory(device_type=device_type, key="heat_a", unit="kWh", kind="totalizer", role="heat_output")
    second = MetricDefinition(
        device_type=device_type, key="heat_b", display_name="B", unit="kWh", kind="totalizer", role="heat_output"
    )
    with pytest.raises(ValidationError) as error:
        second.full_clean()
    assert messages_for(error.value, "role")
