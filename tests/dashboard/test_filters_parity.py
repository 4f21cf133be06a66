"""The dashboard's device and alert lists use the API's FilterSets: one query string, the same rows (issue 14)."""

import datetime
import re

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.alerts.models import Alert
from apps.devices.models import Device
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory
from tests.support.evaluation import Feed, evaluate, hot_rule


@pytest.fixture
def fleet(organization, site_a, site_b):
    now = timezone.now()
    device_type = DeviceTypeFactory(organization=organization, name="Heat pump")
    gateway = GatewayFactory(uid="gw-a", site=site_a)
    for n in range(12):
        site = site_a if n % 2 else site_b
        DeviceFactory(
            uid=f"hp-{n:02d}",
            name=f"Pump {n}",
            site=site,
            device_type=device_type,
            gateway=gateway if site == site_a and n % 3 else None,
            tags=["heating"] if n % 4 else ["cooling"],
            last_seen=None if n % 5 == 0 else now - datetime.timedelta(minutes=n),
        )
    return {"site_a": site_a, "site_b": site_b, "type": device_type}


def _api_uids(user, path, query, key):
    client = APIClient()
    client.force_login(user)
    response = client.get(path + "?" + query)
    assert response.status_code == 200, response.json()
    return {row[key] for row in response.json()["results"]}


def _page_uids(client, user, path, query, pattern):
    client.force_login(user)
    response = client.get(path + "?" + query)
    assert response.status_code == 200
    return set(re.findall(pattern, response.content.decode()))


QUERIES = [
    "status=online",
    "status=never_seen",
    "tag=cooling",
    "q=pump%201",
    "site={site_a}&status=offline",
    "gateway=gw-a",
    "device_type={type}&tag=heating",
    "last_seen_after={since}",
]


@pytest.mark.parametrize("query", QUERIES)
def test_devices_same_query_same_rows(client, alice, fleet, query):
    since = (timezone.now() - datetime.timedelta(minutes=6)).isoformat().replace("+00:00", "Z")
    query = query.format(site_a=fleet["site_a"].id, type=fleet["type"].id, since=since)
    api = _api_uids(alice, reverse("api:device-list"), query, "uid")
    page = _page_uids(client, alice, reverse("dashboard:device-list"), query, r'data-status="([^"]+)"')
    assert api == page
    assert api or query.startswith(("status=online", "last_seen"))


@pytest.mark.parametrize("query", ["status=open", "severity=critical", "site={site_b}", "status=resolved", ""])
def test_alerts_same_query_same_rows(client, alice, fleet, query):
    feed = Feed()
    for site in (fleet["site_a"], fleet["site_b"]):
        hot_rule(site)
    for device in Device.objects.all()[:6]:
        evaluate(feed.batch((device, "supply_temp", 0, 90)))
    query = query.format(site_b=fleet["site_b"].id)
    api = _api_uids(alice, reverse("api:alert-list"), query + "&limit=1000", "id")
    page = _page_uids(client, alice, reverse("dashboard:alert-list"), query, r'href="/alerts/(\d+)/"')
    assert api == {int(alert_id) for alert_id in page}
    if query in ("", "status=open"):
        assert api == set(Alert.objects.values_list("id", flat=True))
