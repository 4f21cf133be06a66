"""Dead letters and discovered devices through the REST API: an admin sets a gateway's policy, sees what was
discovered, adopts it (its readings replayed), and replays other letters selected by the list's filters."""

import datetime
import json

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.devices.choices import DiscoveryPolicy
from apps.telemetry.choices import IngestSource
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.models import DeadLetter, Reading
from apps.telemetry.services import IngestMessage, telemetry_ingest
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory


@pytest.fixture
def api(alice):
    client = APIClient()
    client.force_login(alice)
    return client


@pytest.fixture
def meter_type(organization):
    meter = DeviceTypeFactory(organization=organization, name="Flow meter")
    MetricDefinitionFactory(device_type=meter, key="flow", unit="m3/h", min_value=0, max_value=100)
    return meter


def send(gateway, uid, value, seconds_ago):
    at = int((timezone.now() - datetime.timedelta(seconds=seconds_ago)).timestamp() * 1000)
    message = IngestMessage(
        source=IngestSource.MQTT,
        payload=json.dumps({uid: [{"ts": at, "values": {"flow": value}}]}).encode(),
        received_at=timezone.now(),
        origin=f"fieldwatch/gateways/{gateway.uid}/telemetry",
        gateway_uid=gateway.uid,
    )
    telemetry_ingest(messages=[message], directory=DeviceDirectory())


def test_an_admin_discovers_adopts_and_replays_through_the_api(api, site_a, meter_type, other_organization):
    gateway = GatewayFactory(site=site_a, uid="gw-api")
    foreign_type = DeviceTypeFactory(organization=other_organization)
    response = api.patch(f"/api/v1/gateways/{gateway.uid}", {"auto_register_type": foreign_type.pk}, format="json")
    assert response.status_code == 400 and "auto_register_type" in response.json()
    response = api.patch(f"/api/v1/gateways/{gateway.uid}", {"discovery_policy": "discover"}, format="json")
    assert response.status_code == 200 and response.json()["discovery_policy"] == DiscoveryPolicy.DISCOVER

    send(gateway, "fm-9", 12.5, 120)
    send(gateway, "fm-9", 13.5, 60)
    listed = api.get("/api/v1/discovered-devices").json()["results"]
    assert [(row["uid"], row["gateway"], row["message_count"], row["metric_keys"]) for row in listed] == [
        ("fm-9", "gw-api", 2, ["flow"])
    ]
    letters = api.get("/api/v1/dead-letters", {"device": "fm-9", "reason": "unknown_device"}).json()["results"]
    assert len(letters) == 2 and all(row["replay_result"] == "" for row in letters)

    adopted = api.post(
        f"/api/v1/discovered-devices/{listed[0]['id']}/adopt", {"device_type": meter_type.pk}, format="json"
    )
    assert adopted.status_code == 201
    assert adopted.json() == {
        "device": "fm-9",
        "replay": {"letters": 2, "messages": 2, "stored": 2, "partly": 0, "refused": 0, "not_replayable": 0},
    }
    assert sorted(Reading.objects.values_list("value", flat=True)) == [12.5, 13.5]
    again = api.post(f"/api/v1/discovered-devices/{listed[0]['id']}/adopt", {"device_type": meter_type.pk})
    assert again.status_code == 409


def test_replay_selects_letters_by_the_lists_filters(api, site_a, meter_type):
    gateway = GatewayFactory(site=site_a, uid="gw-range")
    device = DeviceFactory(uid="fm-range", site=site_a, device_type=meter_type, gateway=gateway)
    send(gateway, "fm-range", 150, 120)  # out of the plausible range 0..100
    send(gateway, "fm-range", 160, 60)
    assert DeadLetter.objects.filter(reason="out_of_range").count() == 2

    MetricDefinitionFactory._meta.model.objects.filter(device_type=meter_type, key="flow").update(max_value=200)
    meter_type.save()  # the catalogue changes (a QuerySet.update sends no signal)
    first = DeadLetter.objects.order_by("received_at").first()
    response = api.post(
        "/api/v1/dead-letters/replay",
        {"device": device.uid, "reason": ["out_of_range"], "received_before": first.received_at.isoformat()},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["letters"] == 0  # received_before is exclusive: the first letter is not before itself

    response = api.post(
        "/api/v1/dead-letters/replay", {"device": device.uid, "reason": ["out_of_range"]}, format="json"
    )
    assert response.json()["stored"] == 2
    assert sorted(Reading.objects.values_list("value", flat=True)) == [150.0, 160.0]
    assert api.get("/api/v1/dead-letters", {"replay_result": "none"}).json()["results"] == []
    bad = api.post("/api/v1/dead-letters/replay", {"reason": ["no_such_reason"]}, format="json")
    assert bad.status_code == 400 and "reason" in bad.json()
