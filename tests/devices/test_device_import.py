"""Bulk import and export of devices (issue 14): validate every row, then all or nothing; round trip."""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.devices.models import Device
from apps.devices.receivers import broker_sync_enqueue
from apps.telemetry.ingest.directory import catalogue_changed
from tests.devices.factories import DeviceTypeFactory, GatewayFactory

HEADER = "uid,name,site,type,gateway,tags,metadata\n"


@pytest.fixture
def catalogue(organization, site_a, site_b):
    DeviceTypeFactory(organization=organization, name="Heat pump")
    GatewayFactory(uid="gw-a", site=site_a)


def fleet_csv(count: int, bad: dict[int, str] | None = None) -> str:
    """``count`` rows; ``bad`` replaces row N (1-based) with a broken one."""
    lines = [HEADER]
    for n in range(1, count + 1):
        line = f'hp-{n:05d},Heat pump {n},Site A,Heat pump,gw-a,"heating,zone-{n % 3}","{{""serial"": ""S{n}""}}"\n'
        lines.append((bad or {}).get(n, line))
    return "".join(lines)


def post(user, body, content_type="text/csv", **query):
    client = APIClient()
    client.force_login(user)
    url = reverse("api:device-import") + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
    return client.generic("POST", url, body, content_type=content_type)


def test_three_bad_rows_change_nothing_and_are_reported_then_the_fixed_file_imports_once(alice, catalogue):
    bad = {
        17: "hp-00017,Heat pump 17,Nowhere,Heat pump,gw-a,,\n",  # unknown site
        404: "hp 404,Heat pump 404,Site A,Heat pump,gw-a,,\n",  # invalid id (a space)
        999: "hp-00999,Heat pump 999,Site B,Heat pump,gw-a,,\n",  # gateway on another site
    }
    response = post(alice, fleet_csv(1000, bad))
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [(error["row"], error["field"]) for error in errors] == [(17, "site"), (404, "uid"), (999, "gateway")]
    assert Device.objects.count() == 0

    fixed = fleet_csv(1000)
    created = post(alice, fixed)
    assert created.status_code == 200, created.json()
    assert created.json()["created"] == 1000
    assert Device.objects.count() == 1000
    assert Device.objects.get(uid="hp-00007").metadata == {"serial": "S7"}
    assert AuditEvent.objects.filter(action="config.import").count() == 1000

    again = post(alice, fixed, mode="upsert")
    assert again.json() == {
        "mode": "upsert",
        "created": 0,
        "updated": 0,
        "unchanged": 1000,
        "errors": [],
        "dry_run": False,
    }
    assert AuditEvent.objects.filter(action="config.import").count() == 1000
    assert post(alice, fixed).json()["errors"][0]["field"] == "uid"  # mode=create: they exist now


def test_upsert_updates_changed_rows_and_audits_before_and_after(alice, catalogue):
    post(alice, fleet_csv(3))
    changed = fleet_csv(3).replace("Heat pump 2,", "Heat pump two,")
    body = post(alice, changed, mode="upsert").json()
    assert (body["created"], body["updated"], body["unchanged"]) == (0, 1, 2)
    event = AuditEvent.objects.filter(action="config.import", target_repr__contains="hp-00002").latest("id")
    assert (event.before, event.after) == ({"name": "Heat pump 2"}, {"name": "Heat pump two"})


def test_json_import_and_duplicates_in_the_file(alice, catalogue):
    rows = [
        {"uid": "m-1", "name": "One", "site": "Site B", "type": "Heat pump", "tags": ["x"]},
        {"uid": "m-1", "name": "Again", "site": "Site B", "type": "Heat pump"},
    ]
    client = APIClient()
    client.force_login(alice)
    response = client.post(reverse("api:device-import"), rows, format="json")
    assert response.json()["errors"] == [{"row": 2, "field": "uid", "reason": "Device id 'm-1' is already on row 1."}]
    response = client.post(reverse("api:device-import") + "?dry_run=true", rows[:1], format="json")
    assert response.json()["created"] == 1 and not Device.objects.exists()
    assert client.post(reverse("api:device-import"), rows[:1], format="json").json()["created"] == 1


def test_export_round_trips(alice, catalogue):
    source = fleet_csv(20)
    post(alice, source)
    client = APIClient()
    client.force_login(alice)
    response = client.get(reverse("api:device-list"), {"format": "csv"})
    assert response.status_code == 200
    exported = b"".join(response.streaming_content).decode()
    assert list(csv.DictReader(io.StringIO(exported))) == list(csv.DictReader(io.StringIO(source)))
    assert post(alice, exported, mode="upsert").json()["unchanged"] == 20


def test_a_viewer_may_not_import_and_a_broken_file_is_a_400(carol, alice, catalogue):
    assert post(carol, fleet_csv(1)).status_code == 403
    assert post(alice, "not,a,fleet\n1,2,3\n").status_code == 400
    assert post(alice, "\x00").status_code == 400


def test_the_admin_previews_then_imports_on_confirmation(client, alice, catalogue):
    alice.is_staff = True
    alice.save()
    client.force_login(alice)
    url = reverse("admin:devices_device_import")
    assert client.get(url).status_code == 200
    upload = SimpleUploadedFile("fleet.csv", fleet_csv(5).encode(), content_type="text/csv")
    preview = client.post(url, {"file": upload, "mode": "create"})
    assert preview.status_code == 200
    assert b"<strong>5</strong> to create" in preview.content
    assert not Device.objects.exists()
    done = client.post(url, {"confirm": "1", "mode": "create", "content": fleet_csv(5)})
    assert done.status_code == 302
    assert Device.objects.count() == 5

    broken = SimpleUploadedFile("fleet.csv", fleet_csv(2, {2: "x y,Z,Nowhere,Heat pump,,,\n"}).encode())
    refused = client.post(url, {"file": broken, "mode": "upsert"})
    assert b"nothing will be imported" in refused.content
    assert b'name="confirm"' not in refused.content


def test_an_import_tells_the_caches_as_a_save_would(alice, catalogue, django_capture_on_commit_callbacks):
    """bulk_create sends no post_save: rows_bulk_changed reaches the catalogue, rules and broker receivers."""
    with django_capture_on_commit_callbacks() as callbacks:
        post(alice, fleet_csv(2))
    assert catalogue_changed in callbacks  # the ingest directory reloads
    assert broker_sync_enqueue in callbacks
