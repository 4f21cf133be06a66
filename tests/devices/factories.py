import datetime

import factory
from factory.django import DjangoModelFactory

from apps.devices.choices import MetricKind
from apps.devices.models import Device, DeviceType, Gateway, MetricDefinition, Site
from tests.users.factories import OrganizationFactory


class SiteFactory(DjangoModelFactory):
    class Meta:
        model = Site

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Site {n}")
    timezone = "Europe/Berlin"


class DeviceTypeFactory(DjangoModelFactory):
    class Meta:
        model = DeviceType

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Heat pump model {n}")
    offline_after = datetime.timedelta(minutes=5)


class MetricDefinitionFactory(DjangoModelFactory):
    class Meta:
        model = MetricDefinition

    device_type = factory.SubFactory(DeviceTypeFactory)
    key = factory.Sequence(lambda n: f"metric_{n}")
    display_name = factory.LazyAttribute(lambda o: o.key.replace("_", " ").title())
    unit = "°C"
    kind = MetricKind.GAUGE
    min_value = -50.0
    max_value = 150.0


class GatewayFactory(DjangoModelFactory):
    class Meta:
        model = Gateway

    site = factory.SubFactory(SiteFactory)
    uid = factory.Sequence(lambda n: f"gw-{n:04d}")
    name = factory.Sequence(lambda n: f"Gateway {n}")


class DeviceFactory(DjangoModelFactory):
    class Meta:
        model = Device

    uid = factory.Sequence(lambda n: f"dev-{n:05d}")
    name = factory.Sequence(lambda n: f"Device {n}")
    site = factory.SubFactory(SiteFactory)
    device_type = factory.SubFactory(DeviceTypeFactory, organization=factory.SelfAttribute("..site.organization"))
