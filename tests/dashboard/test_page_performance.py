"""The overview and the device list make the same number of queries for 10 devices as for 1,000 (server time is
measured separately, outside the test-suite: timing assertions would be flaky on shared machines)."""

import datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.alerts.choices import RuleKind, Severity
from apps.alerts.models import Alert, AlertRule
from apps.devices.models import Device
from apps.telemetry.models import LatestValue, Reading, Series
from tests.devices.factories import DeviceTypeFactory, MetricDefinitionFactory

pytestmark = pytest.mark.django_db

# Session, user, site scope (role group, guardian), the page's own statements: a constant, whatever the fleet.
MAX_QUERIES = {"dashboard:overview": 20, "dashboard:device-list": 20}


def _grow_fleet(*, site, device_type, metrics, upto: int) -> None:
    """Add devices on ``site`` until it has ``upto``, each with its series, latest values and a few readings; every
    tenth one silent (offline) and every twentieth with an open alert."""
    now = timezone.now()
    have = Device.objects.filter(site=site).count()
    devices = Device.objects.bulk_create(
        Device(
            uid=f"perf-{site.id}-{n:05d}",
            name=f"Device {n}",
            site=site,
            device_type=device_type,
            tags=["perf", f"group-{n % 5}"],
            last_seen=now - datetime.timedelta(hours=1 if n % 10 == 0 else 0),
        )
        for n in range(have, upto)
    )
    series = Series.objects.bulk_create(Series(device=d, metric_key=m) for d in devices for m in metrics)
    LatestValue.objects.bulk_create(LatestValue(series=s, ts=now, value=20.5) for s in series)
    Reading.objects.bulk_create(
        Reading(series=s, ts=now - datetime.timedelta(seconds=k * 10), value=20.0 + k) for s in series for k in range(3)
    )
    rule = AlertRule.objects.create(
        organization=site.organization, name=f"No data {site.id}-{upto}", kind=RuleKind.NO_DATA, site=site
    )
    Alert.objects.bulk_create(
        Alert(
            rule=rule,
            device=d,
            severity=Severity.MAJOR,
            message=f"{d.uid} silent",
            opened_at=now,
            last_triggered_at=now,
        )
        for n, d in enumerate(devices)
        if n % 20 == 0
    )


def _queries(client, url_name) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse(url_name), {"site": "all"})
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize("url_name", ["dashboard:overview", "dashboard:device-list"])
@pytest.mark.parametrize("username", ["alice", "bob"])
def test_page_query_count_is_flat_from_10_to_1000_devices(
    client, request, django_assert_max_num_queries, organization, site_a, url_name, username
):
    user = request.getfixturevalue(username)
    device_type = DeviceTypeFactory(organization=organization, name="Heat pump")
    metrics = [
        MetricDefinitionFactory(device_type=device_type, key=key).key
        for key in ("supply_temp", "return_temp", "outdoor_temp", "power_kw")
    ]
    client.force_login(user)

    _grow_fleet(site=site_a, device_type=device_type, metrics=metrics, upto=10)
    client.get(reverse(url_name))  # settle the session
    with django_assert_max_num_queries(MAX_QUERIES[url_name]):
        small = _queries(client, url_name)

    _grow_fleet(site=site_a, device_type=device_type, metrics=metrics, upto=1000)
    with django_assert_max_num_queries(MAX_QUERIES[url_name]):
        large = _queries(client, url_name)

    assert large == small
