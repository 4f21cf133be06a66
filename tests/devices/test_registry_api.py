"""The registry REST API: sites, device types with metrics, gateways and devices (issue 14)."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.devices.models import Device, DeviceType, Gateway
from apps.telemetry.models import LatestValue, Series
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory


def api(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def heat_pump(organization):
    device_type = DeviceTypeFactory(organization=organization, name="Heat pump")
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", unit="°C")
    return device_type


def test_another_organizations_device_is_404_for_every_verb(mallory, site_a, heat_pump):
    device = DeviceFactory(uid="hp-a-001", site=site_a, device_type=heat_pump)
    client = api(mallory)
    url = reverse("api:device-detail", kwargs={"uid": device.uid})
    for method in ("get", "patch", "delete", "put", "post"):
        response = getattr(client, method)(url, {"name": "mine"}, format="json")
        assert response.status_code in (404, 405), (method, response.status_code)
        if response.status_code == 405:  # a method the route does not have is refused before any lookup
            assert method in ("put", "post")
    for method in ("get", "patch", "delete"):
        assert getattr(client, method)(url, {"name": "mine"}, format="json").status_code == 404
    assert Device.objects.get(pk=device.pk).name != "mine"


def test_device_list_has_status_and_latest_values(alice, site_a, heat_pump):
    now = timezone.now()
    online = DeviceFactory(uid="hp-on", site=site_a, device_type=heat_pump, last_seen=now)
    DeviceFactory(uid="hp-off", site=site_a, device_type=heat_pump, last_seen=now - datetime.timedelta(hours=1))
    DeviceFactory(uid="hp-new", site=site_a, device_type=heat_pump)
    series = Series.objects.create(device=online, metric_key="supply_temp")
    LatestValue.objects.create(series=series, ts=now, value=41.5)

    body = api(alice).get(reverse("api:device-list")).json()

    by_uid = {row["uid"]: row for row in body["results"]}
    assert {uid: row["status"] for uid, row in by_uid.items()} == {
        "hp-on": "online",
        "hp-off": "offline",
        "hp-new": "never_seen",
    }
    assert by_uid["hp-on"]["latest"][0]["metric"] == "supply_temp"
    assert by_uid["hp-on"]["latest"][0]["value"] == 41.5
    assert by_uid["hp-on"]["latest"][0]["unit"] == "°C"
    assert by_uid["hp-new"]["latest"] == []


@pytest.mark.parametrize("fleet", [10, 1000])
def test_device_list_query_count_is_flat(alice, site_a, heat_pump, fleet, django_assert_num_queries):
    devices = Device.objects.bulk_create(
        Device(uid=f"d-{n:05d}", name=f"D {n}", site=site_a, device_type=heat_pump) for n in range(fleet)
    )
    series = Series.objects.bulk_create(Series(device=device, metric_key="supply_temp") for device in devices)
    LatestValue.objects.bulk_create(LatestValue(series=s, ts=timezone.now(), value=1.0) for s in series)
    client = api(alice)
    client.get(reverse("api:device-list"))  # the session and content types warm
    # user, admin-role check, the page, the page's latest values (the session is read from Redis)
    with django_assert_num_queries(4):
        response = client.get(reverse("api:device-list"), {"limit": 1000})
    assert len(response.json()["results"]) == fleet


def test_cursor_pagination_walks_every_device_once(alice, site_a, heat_pump):
    DeviceFactory.create_batch(25, site=site_a, device_type=heat_pump)
    client, seen, url = api(alice), [], reverse("api:device-list") + "?limit=10"
    while url:
        body = client.get(url).json()
        seen += [row["uid"] for row in body["results"]]
        url = body["next"]
    assert len(seen) == 25 == len(set(seen))
    assert client.get(reverse("api:device-list"), {"cursor": "garbage"}).status_code == 400


def test_writes_are_validated_as_in_the_admin_with_field_errors(alice, site_a, heat_pump):
    client = api(alice)
    DeviceFactory(uid="hp-a-001", site=site_a, device_type=heat_pump)
    duplicate = client.post(
        reverse("api:device-list"),
        {"uid": "hp-a-001", "name": "Again", "site": site_a.id, "device_type": heat_pump.id},
        format="json",
    )
    assert duplicate.status_code == 400
    assert "already exists" in duplicate.json()["uid"][0]

    bad_range = client.post(
        reverse("api:device-type-list"),
        {"name": "Meter", "metrics": [{"key": "flow", "display_name": "Flow", "min_value": 5, "max_value": 1}]},
        format="json",
    )
    assert bad_range.status_code == 400
    assert "minimum cannot be greater" in bad_range.json()["metrics"][0]["min_value"][0]
    assert not DeviceType.objects.filter(name="Meter").exists()  # all or nothing

    too_precise = client.post(
        reverse("api:device-type-list"),
        {"name": "Meter", "metrics": [{"key": "flow", "display_name": "Flow", "precision": 10}]},
        format="json",
    )
    assert too_precise.status_code == 400
    assert "9" in too_precise.json()["metrics"][0]["precision"][0]
    declared = client.post(
        reverse("api:device-type-list"),
        {"name": "Meter", "metrics": [{"key": "flow", "display_name": "Flow", "precision": 2}]},
        format="json",
    )
    assert declared.status_code == 201 and declared.json()["metrics"][0]["precision"] == 2

    bad_schema = client.post(
        reverse("api:device-type-list"), {"name": "Meter", "payload_schema": {"type": 12}}, format="json"
    )
    assert bad_schema.status_code == 400
    assert "Invalid JSON Schema" in bad_schema.json()["payload_schema"][0]

    bad_zone = client.post(reverse("api:site-list"), {"name": "Site Z", "timezone": "Europe"}, format="json")
    assert bad_zone.status_code == 400
    assert "timezone" in bad_zone.json()

    same_name = client.post(reverse("api:site-list"), {"name": "Site A"}, format="json")
    assert same_name.status_code == 400 and "name" in same_name.json()


def test_writes_are_audited_with_before_and_after(alice, site_a, heat_pump):
    client = api(alice)
    created = client.post(
        reverse("api:device-list"),
        {"uid": "hp-a-009", "name": "Nine", "site": site_a.id, "device_type": heat_pump.id, "tags": ["heating"]},
        format="json",
    )
    assert created.status_code == 201, created.json()
    changed = client.patch(reverse("api:device-detail", kwargs={"uid": "hp-a-009"}), {"name": "Nine!"}, format="json")
    assert changed.status_code == 200
    event = AuditEvent.objects.filter(action="config.change", target_repr__contains="hp-a-009").latest("id")
    assert (event.before, event.after, event.actor) == ({"name": "Nine"}, {"name": "Nine!"}, alice)


def test_operators_change_name_metadata_and_tags_only(bob, carol, site_a, site_b, heat_pump):
    device = DeviceFactory(uid="hp-a-001", site=site_a, device_type=heat_pump)
    url = reverse("api:device-detail", kwargs={"uid": device.uid})
    ok = api(bob).patch(url, {"name": "Renamed", "tags": ["cellar"], "metadata": {"serial": "1"}}, format="json")
    assert ok.status_code == 200, ok.json()
    assert api(bob).patch(url, {"is_active": False}, format="json").status_code == 403
    assert api(bob).delete(url).status_code == 403
    other = DeviceFactory(uid="hp-b-001", site=site_b, device_type=heat_pump)
    assert (
        api(carol)
        .patch(reverse("api:device-detail", kwargs={"uid": other.uid}), {"name": "x"}, format="json")
        .status_code
        == 403
    )


def test_a_device_with_history_is_deactivated_unless_purge_confirms(alice, site_a, heat_pump):
    device = DeviceFactory(uid="hp-a-001", site=site_a, device_type=heat_pump)
    Series.objects.create(device=device, metric_key="supply_temp")
    url = reverse("api:device-detail", kwargs={"uid": device.uid})
    client = api(alice)

    response = client.delete(url)
    assert response.status_code == 200
    assert response.json()["result"] == "deactivated"
    assert Device.objects.get(pk=device.pk).is_active is False

    assert client.delete(url + "?purge=true").status_code == 204
    assert not Device.objects.filter(pk=device.pk).exists()
    assert not Series.objects.filter(device_id=device.pk).exists()

    fresh = DeviceFactory(uid="hp-a-002", site=site_a, device_type=heat_pump)
    assert client.delete(reverse("api:device-detail", kwargs={"uid": fresh.uid})).status_code == 204


def test_things_in_use_are_not_deleted(alice, site_a, heat_pump):
    gateway = GatewayFactory(uid="gw-a", site=site_a)
    DeviceFactory(uid="hp-a-001", site=site_a, device_type=heat_pump, gateway=gateway)
    client = api(alice)
    assert client.delete(reverse("api:site-detail", kwargs={"pk": site_a.pk})).status_code == 409
    assert client.delete(reverse("api:device-type-detail", kwargs={"pk": heat_pump.pk})).status_code == 409
    assert client.delete(reverse("api:gateway-detail", kwargs={"uid": gateway.uid})).status_code == 409
    assert Gateway.objects.filter(pk=gateway.pk).exists()


def test_device_type_metrics_are_replaced_by_key(alice, heat_pump):
    url = reverse("api:device-type-detail", kwargs={"pk": heat_pump.pk})
    body = {"metrics": [{"key": "supply_temp", "display_name": "Supply", "unit": "K"}, {"key": "power"}]}
    body["metrics"][1]["display_name"] = "Power"
    response = api(alice).patch(url, body, format="json")
    assert response.status_code == 200, response.json()
    assert sorted((m["key"], m["unit"]) for m in response.json()["metrics"]) == [("power", ""), ("supply_temp", "K")]


# ---------------------------------------------------------------------------------------------------------------------
# Tariffs on the site: read by whoever sees the site, written by its organization's admins, validated as in the admin
# ---------------------------------------------------------------------------------------------------------------------
NIGHT = {"from": "00:00", "to": "06:00", "price": 0.12}


def test_the_sites_tariff_reads_for_everyone_who_sees_the_site(alice, bob, carol, site_a, site_b):
    site_a.tariff_currency, site_a.tariff_flat_price, site_a.tariff_bands = "GBP", "0.3000", [NIGHT]
    site_a.emission_factor_kg_per_kwh = "0.2100"
    site_a.save()
    for user in (alice, bob):
        body = api(user).get(reverse("api:site-detail", kwargs={"pk": site_a.pk})).json()
        assert {key: body[key] for key in ("tariff_currency", "tariff_flat_price", "tariff_bands")} == {
            "tariff_currency": "GBP",
            "tariff_flat_price": "0.3000",
            "tariff_bands": [NIGHT],
        }
        assert body["emission_factor_kg_per_kwh"] == "0.2100"
    listed = api(carol).get(reverse("api:site-list")).json()["results"]
    assert [(row["id"], row["tariff_currency"], row["tariff_bands"]) for row in listed] == [(site_b.pk, "EUR", [])]


def test_an_admin_sets_the_tariff_and_an_operator_may_not(alice, bob, site_a):
    url = reverse("api:site-detail", kwargs={"pk": site_a.pk})
    weekday_day = {"from": "06:00", "to": "22:00", "price": "0.35", "weekdays": [0, 1, 2, 3, 4]}
    change = {"tariff_currency": "CHF", "tariff_flat_price": "0.2500", "tariff_bands": [NIGHT, weekday_day]}
    refused = api(bob).patch(url, change, format="json")
    assert refused.status_code == 403
    site_a.refresh_from_db()
    assert (site_a.tariff_currency, site_a.tariff_flat_price, site_a.tariff_bands) == ("EUR", None, [])
    response = api(alice).patch(url, change, format="json")
    assert response.status_code == 200, response.json()
    site_a.refresh_from_db()
    assert (site_a.tariff_currency, str(site_a.tariff_flat_price), site_a.tariff_bands) == (
        "CHF",
        "0.2500",
        [NIGHT, weekday_day],
    )
    event = AuditEvent.objects.filter(target_id=str(site_a.pk), action="config.change").latest("id")
    assert event.actor == alice and event.after["tariff_currency"] == "CHF"
    # Bands covering every hour need no flat price; a new site takes a tariff when it is created.
    whole_day = [{"from": "00:00", "to": "24:00", "price": 0.3}]
    cleared = api(alice).patch(url, {"tariff_flat_price": None, "tariff_bands": whole_day}, format="json")
    assert cleared.status_code == 200 and cleared.json()["tariff_flat_price"] is None
    created = api(alice).post(
        reverse("api:site-list"), {"name": "Site T", "tariff_flat_price": "0.1", "tariff_bands": [NIGHT]}, format="json"
    )
    assert created.status_code == 201 and created.json()["tariff_flat_price"] == "0.1000"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"tariff_currency": "eur"}, "tariff_currency", "An ISO 4217 code such as EUR, GBP or USD."),
        ({"tariff_currency": "EURO"}, "tariff_currency", "Ensure this field has no more than 3 characters."),
        ({"tariff_flat_price": "-0.1"}, "tariff_flat_price", "The flat price cannot be negative."),
        ({"tariff_flat_price": "NaN"}, "tariff_flat_price", "A valid number is required."),
        ({"tariff_flat_price": "12345.6789"}, "tariff_flat_price", "no more than 8 digits in total"),
        ({"emission_factor_kg_per_kwh": "-1"}, "emission_factor_kg_per_kwh", "greater than or equal to 0"),
        ({"tariff_bands": {"from": "00:00"}}, "tariff_bands", "Time-of-use bands must be a JSON list of bands."),
        ({"tariff_bands": [{**NIGHT, "from": "00:30"}]}, "tariff_bands", "Band 1: 'from' must be a whole hour"),
        ({"tariff_bands": [{**NIGHT, "from": "06:00"}]}, "tariff_bands", "Band 1: 'from' must be before 'to'"),
        ({"tariff_bands": [{**NIGHT, "price": -1}]}, "tariff_bands", "Band 1: 'price' must be between 0 and 1000"),
        ({"tariff_bands": [{**NIGHT, "price": "lots"}]}, "tariff_bands", "Band 1: 'price' must be a number"),
        ({"tariff_bands": [{**NIGHT, "weekdays": [7]}]}, "tariff_bands", "Band 1: 'weekdays' must be a non-empty"),
        ({"tariff_bands": [{**NIGHT, "colour": "red"}]}, "tariff_bands", "Band 1: unknown key(s) colour."),
        (
            {"tariff_bands": [NIGHT, {**NIGHT, "from": "05:00", "to": "07:00"}]},
            "tariff_bands",
            "Bands 1 and 2 overlap.",
        ),
        ({"tariff_bands": [NIGHT] * 49}, "tariff_bands", "At most 48 time-of-use bands."),
        (
            {"tariff_flat_price": None, "tariff_bands": [NIGHT]},
            "tariff_flat_price",
            "Time-of-use bands that leave hours uncovered need a flat price for those hours.",
        ),
    ],
)
def test_a_bad_tariff_is_a_400_naming_the_field_and_what_to_fix(alice, site_a, change, field, message):
    site_a.tariff_flat_price = "0.3000"
    site_a.save()
    response = api(alice).patch(reverse("api:site-detail", kwargs={"pk": site_a.pk}), change, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field] and any(message in text for text in response.json()[field])
    site_a.refresh_from_db()
    assert (site_a.tariff_currency, site_a.tariff_bands) == ("EUR", [])
