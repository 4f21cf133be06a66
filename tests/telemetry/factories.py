import factory
from factory.django import DjangoModelFactory

from apps.telemetry.models import Series
from tests.devices.factories import DeviceFactory


class SeriesFactory(DjangoModelFactory):
    class Meta:
        model = Series

    device = factory.SubFactory(DeviceFactory)
    metric_key = factory.Sequence(lambda n: f"metric_{n}")
