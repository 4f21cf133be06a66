"""Readings of a device deleted between validation and the write (the catalogue a process validates against is up
to a second old) are refused as ``unknown_device``: in the HTTP response, as dead letters and in the counters,
never counted as duplicates and never stored under the deleted device's series."""

import datetime
import json
import time

import pytest
from prometheus_client import REGISTRY

from apps.devices.services import api_key_issue, device_purge
from apps.telemetry.api import views
from apps.telemetry.choices import IngestSource
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.models import DeadLetter, Reading, Series
from apps.telemetry.services import IngestMessage, telemetry_ingest
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory

NOW_MS = int(time.time() * 1000) - 60_000


def counter(name: str, source: str, reason: str | None = None) -> float:
    labels = {"source": source} if reason is None else {"source": source, "reason": reason}
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def fleet(site_a):
    heat_pump = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=heat_pump, key="t", min_value=-50, max_value=150)
    gateway = GatewayFactory(site=site_a, uid="gw-del")
    kept = DeviceFactory(uid="hp-kept", site=site_a, device_type=heat_pump, gateway=gateway)
    doomed = DeviceFactory(uid="hp-doomed", site=site_a, device_type=heat_pump, gateway=gateway)
    return gateway, kept, doomed


@pytest.fixture
def stale_directory():
    """A catalogue loaded now and not re-checked: it still knows a device deleted after this point."""
    directory = DeviceDirectory(check_interval=3600, max_age=3600)
    directory.rules()
    return directory


def test_http_answers_unknown_device_for_the_records_of_a_device_deleted_meanwhile(
    client, fleet, stale_directory, monkeypatch
):
    gateway, _, doomed = fleet
    _, key = api_key_issue(gateway=gateway, name="test")
    monkeypatch.setattr(views, "ingest_directory", lambda: stale_directory)
    device_purge(device=doomed)
    rejected_before = counter("fieldwatch_ingest_rejected_total", "http", "unknown_device")
    duplicates_before = counter("fieldwatch_ingest_readings_duplicate_total", "http")

    body = [
        {"device": "hp-kept", "ts": NOW_MS, "values": {"t": 1}},
        {"device": "hp-doomed", "ts": NOW_MS, "values": {"t": 2}},
        {"device": "hp-doomed", "ts": NOW_MS + 1000, "values": {"t": 3}},
    ]
    response = client.post("/api/v1/ingest", json.dumps(body), content_type="application/json", HTTP_X_API_KEY=key)

    assert response.status_code == 202, response.content
    answer = response.json()
    assert (answer["accepted"], answer["rejected"], answer["duplicates"]) == (1, 2, 0)
    assert [(e["index"], e["device"], e["reason"]) for e in answer["errors"]] == [
        (1, "hp-doomed", "unknown_device"),
        (2, "hp-doomed", "unknown_device"),
    ]
    assert sorted(DeadLetter.objects.values_list("device_uid", "reason")) == [("hp-doomed", "unknown_device")] * 2
    assert Reading.objects.count() == 1
    assert not Series.objects.filter(device_id=doomed.id).exists()
    assert counter("fieldwatch_ingest_rejected_total", "http", "unknown_device") - rejected_before == 2
    assert counter("fieldwatch_ingest_readings_duplicate_total", "http") == duplicates_before


def test_a_device_topic_message_of_a_device_deleted_meanwhile_is_refused_whole(fleet, stale_directory):
    """The MQTT path (one message per device topic) ends in the same service the listener commits through."""
    _, _, doomed = fleet
    device_purge(device=doomed)
    now = datetime.datetime.now(datetime.UTC)

    def message(uid, value):
        payload = json.dumps({"ts": NOW_MS, "values": {"t": value}}).encode()
        return IngestMessage(IngestSource.MQTT, payload, now, origin=f"fw/devices/{uid}/telemetry", device_uid=uid)

    result = telemetry_ingest(messages=[message("hp-doomed", 5), message("hp-kept", 6)], directory=stale_directory)

    doomed_outcome, kept_outcome = result.outcomes
    assert (doomed_outcome.accepted, doomed_outcome.rejected) == (0, 1)
    assert [(e.index, e.reason) for e in doomed_outcome.errors] == [(0, "unknown_device")]
    assert (kept_outcome.accepted, kept_outcome.rejected) == (1, 0)
    assert (result.inserted, result.duplicates) == (1, 0)
    letter = DeadLetter.objects.get()
    assert (letter.device_uid, letter.origin, letter.reason) == (
        "hp-doomed",
        "fw/devices/hp-doomed/telemetry",
        "unknown_device",
    )
