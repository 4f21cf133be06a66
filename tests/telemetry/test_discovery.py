"""Readings for devices nobody registered: the gateway's (or its site's) policy decides between today's refusal,
discovery (refused, and listed under Discovered devices for an admin to adopt) and auto-registration (the device
is created with the gateway's type and its readings stored from the first message, behind a per-organization
flag). Then replay: dead letters re-ingested once the cause is fixed, each letter's result recorded, idempotent."""

import datetime
import json

import pytest
from django.utils import timezone
from waffle.models import Flag

from apps.core.audit import AuditAction
from apps.core.flags import DIALECT_LINE_PROTOCOL, DISCOVERY_AUTO_REGISTER, flags_forget
from apps.devices.choices import DiscoveryPolicy, UnknownMetricPolicy
from apps.devices.models import Device, DiscoveredDevice
from apps.devices.services import api_key_issue, discovered_device_adopt
from apps.telemetry.choices import IngestSource, RejectReason, ReplayResult
from apps.telemetry.ingest.directory import DeviceDirectory
from apps.telemetry.models import DeadLetter, LatestValue, Reading
from apps.telemetry.replay import dead_letters_replay
from apps.telemetry.services import IngestMessage, telemetry_ingest
from apps.users.models import FlagOrganization
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory


@pytest.fixture(autouse=True)
def fresh_flags():
    flags_forget()
    yield
    flags_forget()


@pytest.fixture
def meter_type(organization):
    meter = DeviceTypeFactory(
        organization=organization, name="Flow meter", unknown_metric_policy=UnknownMetricPolicy.STRICT
    )
    MetricDefinitionFactory(device_type=meter, key="flow", unit="m3/h", min_value=0, max_value=500)
    return meter


@pytest.fixture
def gateway(site_a, meter_type):
    return GatewayFactory(site=site_a, uid="gw-field")


def auto_register_on(organization):
    FlagOrganization.objects.create(flag=Flag.objects.get(name=DISCOVERY_AUTO_REGISTER), organization=organization)
    flags_forget()


def ts(seconds_ago: float = 60) -> int:
    return int((timezone.now() - datetime.timedelta(seconds=seconds_ago)).timestamp() * 1000)


def from_gateway(gateway, records, *, received_at=None):
    """A gateway topic's message (``{"<uid>": [{"ts": ..., "values": ...}]}``) carrying ``records``."""
    document = {}
    for record in records:
        document.setdefault(record["device"], []).append({"ts": record["ts"], "values": record["values"]})
    return IngestMessage(
        source=IngestSource.MQTT,
        payload=json.dumps(document).encode(),
        received_at=received_at or timezone.now(),
        origin=f"fieldwatch/gateways/{gateway.uid}/telemetry",
        gateway_uid=gateway.uid,
    )


def ingest(*messages):
    return telemetry_ingest(messages=list(messages), directory=DeviceDirectory())


def test_reject_is_the_default_and_records_nothing_but_the_dead_letter(gateway):
    outcome = ingest(from_gateway(gateway, [{"device": "fm-new", "ts": ts(), "values": {"flow": 1.5}}])).outcomes[0]
    assert [e.reason for e in outcome.errors] == [RejectReason.UNKNOWN_DEVICE]
    letter = DeadLetter.objects.get()
    assert (letter.device_uid, letter.site_id, letter.context) == ("fm-new", gateway.site_id, {"gateway": "gw-field"})
    assert not DiscoveredDevice.objects.exists()


def test_discover_lists_the_device_with_what_it_sent_from_the_sites_default(gateway, site_a):
    site_a.discovery_policy = DiscoveryPolicy.DISCOVER
    site_a.save()
    first = timezone.now() - datetime.timedelta(minutes=2)
    ingest(
        from_gateway(gateway, [{"device": "fm-new", "ts": ts(120), "values": {"flow": 1.5}}], received_at=first),
        from_gateway(gateway, [{"device": "fm-new", "ts": ts(60), "values": {"flow": 2.5, "temp_c": 9}}]),
        from_gateway(gateway, [{"device": "bad/uid", "ts": ts(), "values": {"flow": 1}}]),  # could never register
    )
    ingest(from_gateway(gateway, [{"device": "fm-new", "ts": ts(30), "values": {"pressure": 3}}]))

    found = DiscoveredDevice.objects.get()
    assert (found.uid, found.site, found.gateway, found.message_count) == ("fm-new", site_a, gateway, 3)
    assert found.metric_keys == ["flow", "pressure", "temp_c"]
    assert found.first_seen == first
    assert json.loads(bytes(found.sample_payload))["fm-new"][0]["values"] == {"pressure": 3}
    assert DeadLetter.objects.filter(reason=RejectReason.UNKNOWN_DEVICE).count() == 4  # still refused, as before
    assert not Reading.objects.exists()


def test_the_gateways_policy_overrides_its_sites(gateway, site_a):
    site_a.discovery_policy = DiscoveryPolicy.DISCOVER
    site_a.save()
    gateway.discovery_policy = DiscoveryPolicy.REJECT
    gateway.save()
    ingest(from_gateway(gateway, [{"device": "fm-new", "ts": ts(), "values": {"flow": 1}}]))
    assert not DiscoveredDevice.objects.exists()


def test_adopting_creates_the_device_and_replay_stores_its_dead_lettered_readings_once(gateway, alice, meter_type):
    gateway.discovery_policy = DiscoveryPolicy.DISCOVER
    gateway.save()
    ingest(
        from_gateway(gateway, [{"device": "fm-new", "ts": ts(90), "values": {"flow": 1.5}}]),
        from_gateway(gateway, [{"device": "fm-new", "ts": ts(60), "values": {"flow": 2.5, "junk": 1}}]),
    )
    found = DiscoveredDevice.objects.get()

    device = discovered_device_adopt(user=alice, discovered=found, device_type=meter_type, name="Boiler room meter")
    found.refresh_from_db()
    assert (device.uid, device.name, device.site, device.gateway) == (
        "fm-new",
        "Boiler room meter",
        gateway.site,
        gateway,
    )
    assert found.adopted_device == device

    letters = DeadLetter.objects.filter(site=gateway.site, device_uid="fm-new")
    summary = dead_letters_replay(letters=letters)
    assert summary.as_dict() | {} == {
        "letters": 2,
        "messages": 2,
        "stored": 1,
        "partly": 1,  # "junk" is undefined for the strict meter type: still refused, recorded on the letter
        "refused": 0,
        "not_replayable": 0,
    }
    assert sorted(Reading.objects.values_list("value", flat=True)) == [1.5, 2.5]
    partly = DeadLetter.objects.get(replay_result=ReplayResult.PARTLY)
    assert "unknown_metric" in partly.replay_detail and partly.replayed_at is not None
    assert DeadLetter.objects.count() == 2  # the refusal of "junk" again made no new letter

    again = dead_letters_replay(letters=letters)  # idempotent: nothing new stored, same results
    assert again.results == summary.results
    assert Reading.objects.count() == 2 and DeadLetter.objects.count() == 2


def test_auto_register_creates_the_device_from_its_first_message_behind_the_flag(gateway, meter_type, organization):
    gateway.discovery_policy = DiscoveryPolicy.AUTO_REGISTER
    gateway.auto_register_type = meter_type
    gateway.save()
    records = [{"device": "fm-auto", "ts": ts(), "values": {"flow": 4.0, "junk": 1}}]

    # The flag is off: the policy acts as discover.
    ingest(from_gateway(gateway, records))
    assert not Device.objects.filter(uid="fm-auto").exists()
    assert DiscoveredDevice.objects.filter(uid="fm-auto", adopted_device=None).exists()

    auto_register_on(organization)
    outcome = ingest(from_gateway(gateway, [{**records[0], "ts": ts(30)}])).outcomes[0]
    device = Device.objects.get(uid="fm-auto")
    assert (device.site, device.device_type, device.gateway, device.is_active) == (
        gateway.site,
        meter_type,
        gateway,
        True,
    )
    assert outcome.accepted == 1
    assert [(e.reason, e.metric) for e in outcome.errors] == [(RejectReason.UNKNOWN_METRIC, "junk")]  # strict type
    assert list(Reading.objects.values_list("value", flat=True)) == [4.0]
    assert LatestValue.objects.get().value == 4.0
    assert DiscoveredDevice.objects.get(uid="fm-auto").adopted_device == device
    from apps.audit.models import AuditEvent

    assert AuditEvent.objects.filter(action=AuditAction.DEVICE_AUTO_REGISTER, target_id=str(device.pk)).exists()

    # Next messages (the same stale catalogue included) find the device instead of registering it again.
    ingest(from_gateway(gateway, [{"device": "fm-auto", "ts": ts(10), "values": {"flow": 5.0}}]))
    assert Device.objects.filter(uid="fm-auto").count() == 1
    assert Reading.objects.count() == 2


def test_auto_register_never_takes_a_uid_registered_on_another_site(gateway, meter_type, organization, site_b):
    gateway.discovery_policy = DiscoveryPolicy.AUTO_REGISTER
    gateway.auto_register_type = meter_type
    gateway.save()
    auto_register_on(organization)
    directory = DeviceDirectory(check_interval=3600, max_age=3600)
    directory.rules()  # loaded before the uid is taken elsewhere
    DeviceFactory(uid="fm-taken", site=site_b, device_type=meter_type)

    message = from_gateway(gateway, [{"device": "fm-taken", "ts": ts(), "values": {"flow": 1}}])
    outcome = telemetry_ingest(messages=[message], directory=directory).outcomes[0]
    assert [e.reason for e in outcome.errors] == [RejectReason.UNKNOWN_DEVICE]
    assert "registered on another site" in outcome.errors[0].detail
    assert Device.objects.get(uid="fm-taken").site == site_b
    assert not Reading.objects.exists()


def test_a_dialect_switched_off_for_an_organization_is_refused_with_its_reason(client, gateway, organization):
    device = DeviceFactory(uid="fm-lp", site=gateway.site, device_type=DeviceTypeFactory(organization=organization))
    MetricDefinitionFactory(device_type=device.device_type, key="flow", min_value=0, max_value=500)
    _, key = api_key_issue(gateway=gateway)
    line = f"meter,device=fm-lp flow=3.5 {ts() * 1_000_000}".encode()
    headers = {"HTTP_AUTHORIZATION": f"Token {key}", "content_type": "text/plain"}

    assert client.post("/api/v2/write?precision=ns", line, **headers).status_code == 204
    Flag.objects.filter(name=DIALECT_LINE_PROTOCOL).update(everyone=None)  # on for the organizations listed: none
    Flag.objects.get(name=DIALECT_LINE_PROTOCOL).flush()
    flags_forget()
    later = f"meter,device=fm-lp flow=4.5 {ts(30) * 1_000_000}".encode()
    response = client.post("/api/v2/write?precision=ns", later, **headers)
    assert response.status_code == 403
    assert "dialect_disabled" in response.json()["message"]
    assert list(Reading.objects.values_list("value", flat=True)) == [3.5]
    letter = DeadLetter.objects.get(reason=RejectReason.DIALECT_DISABLED)
    assert letter.context["gateway"] == gateway.uid

    # Switched on again for this organization: the refused line replays.
    FlagOrganization.objects.create(flag=Flag.objects.get(name=DIALECT_LINE_PROTOCOL), organization=organization)
    flags_forget()
    summary = dead_letters_replay(letters=DeadLetter.objects.all())
    assert summary.results == {ReplayResult.STORED: 1}
    assert sorted(Reading.objects.values_list("value", flat=True)) == [3.5, 4.5]


def test_letters_that_cannot_be_replayed_say_why(gateway, settings):
    settings.INGEST_DEAD_LETTER_PAYLOAD_BYTES = 40
    big = from_gateway(gateway, [{"device": "fm-x", "ts": ts(), "values": {"flow": 1}}] * 3)
    ingest(big)
    old_sparkplug = DeadLetter.objects.create(
        source="mqtt", origin="spBv1.0/g/NDATA/gw-field", reason="unknown_device", payload=b"\x00", payload_size=1
    )
    summary = dead_letters_replay(letters=DeadLetter.objects.all())
    assert summary.results == {ReplayResult.NOT_REPLAYABLE: 4}
    assert "truncated" in DeadLetter.objects.exclude(pk=old_sparkplug.pk).first().replay_detail
    old_sparkplug.refresh_from_db()
    assert "Sparkplug" in old_sparkplug.replay_detail


def test_a_letter_from_before_contexts_were_kept_replays_from_its_topic(gateway, meter_type):
    DeviceFactory(uid="fm-old", site=gateway.site, device_type=meter_type, gateway=gateway)
    payload = json.dumps({"fm-old": [{"ts": ts(), "values": {"flow": 7}}]}).encode()
    DeadLetter.objects.create(
        source="mqtt",
        origin=f"fieldwatch/gateways/{gateway.uid}/telemetry",
        device_uid="fm-old",
        reason="unknown_device",
        payload=payload,
        payload_size=len(payload),
    )
    summary = dead_letters_replay(letters=DeadLetter.objects.all())
    assert summary.results == {ReplayResult.STORED: 1}
    assert list(Reading.objects.values_list("value", flat=True)) == [7.0]


def test_the_admin_adopts_with_a_type_and_replays_then_replays_other_letters(client, alice, gateway, meter_type):
    gateway.discovery_policy = DiscoveryPolicy.DISCOVER
    gateway.save()
    ingest(from_gateway(gateway, [{"device": "fm-adm", "ts": ts(), "values": {"flow": 8.0}}]))
    found = DiscoveredDevice.objects.get()
    client.force_login(alice)
    changelist = "/admin/devices/discovereddevice/"

    form = client.post(changelist, {"action": "adopt", "_selected_action": [found.pk]})
    assert form.status_code == 200 and b"Adopt" in form.content  # the intermediate page: choose the type
    done = client.post(
        changelist,
        {"action": "adopt", "_selected_action": [found.pk], "apply": "1", "device_type": meter_type.pk, "replay": "on"},
        follow=True,
    )
    assert b"Adopted 1 device. Replayed 1 dead letters: 1 stored." in done.content
    assert Device.objects.get(uid="fm-adm").device_type == meter_type
    assert list(Reading.objects.values_list("value", flat=True)) == [8.0]

    replayed = client.post(
        "/admin/telemetry/deadletter/",
        {"action": "replay", "_selected_action": list(DeadLetter.objects.values_list("pk", flat=True))},
        follow=True,
    )
    assert b"Replayed 1 letters as 1 messages: 1 stored." in replayed.content
