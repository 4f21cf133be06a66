"""Factories shared by every app's tests (kept in one module while the model is small)."""

import datetime

import factory
from factory.django import DjangoModelFactory

from apps.devices.choices import MetricKind
from apps.devices.models import Device, DeviceType, Gateway, MetricDefinition, Site
from apps.telemetry.models import Series
from apps.users.models import Organization, User


class OrganizationFactory(DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Organization {n}")
    slug = factory.Sequence(lambda n: f"org-{n}")


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    organization = factory.SubFactory(OrganizationFactory)
    password = factory.django.Password("correct horse battery staple")


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


class SeriesFactory(DjangoModelFactory):
    class Meta:
        model = Series

    device = factory.SubFactory(DeviceFactory)
    metric_key = factory.Sequence(lambda n: f"metric_{n}")
