"""ThingsBoard's device HTTP API, as its firmware and HTTP clients call it: ``POST /api/v1/<token>/telemetry`` and
``/attributes`` with ThingsBoard's bodies, answered 200 with an empty body; the token names the device."""

import json
import time

import pytest

from apps.devices.services import access_token_issue, access_token_revoke
from apps.telemetry.models import DeadLetter, LatestValue, Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory

NOW_MS = int(time.time() * 1000) - 60_000


@pytest.fixture
def pump(site_a):
    heat_pump = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", min_value=-50, max_value=150)
    MetricDefinitionFactory(device_type=heat_pump, key="cop", unit="", min_value=0.5, max_value=10)
    return DeviceFactory(uid="hp-tb", site=site_a, device_type=heat_pump)


@pytest.fixture
def token(pump):
    return access_token_issue(device=pump)[1]


def post(client, token, body, what="telemetry"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.generic("POST", f"/api/v1/{token}/{what}", data, content_type="application/json")


def test_both_thingsboard_body_shapes_are_stored_for_the_token_s_device_with_an_empty_200(client, pump, token):
    flat = post(client, token, {"supply_temp": 41.5, "cop": 3.2})
    timestamped = post(client, token, [{"ts": NOW_MS, "values": {"supply_temp": 40}}, {"cop": 3}])

    assert (flat.status_code, flat.content) == (200, b"")
    assert (timestamped.status_code, timestamped.content) == (200, b"")
    assert Reading.objects.filter(series__device=pump).count() == 4
    assert LatestValue.objects.get(series__device=pump, series__metric_key="cop").value == 3


def test_sending_the_same_body_twice_stores_it_once(client, pump, token):
    body = {"ts": NOW_MS, "values": {"supply_temp": 40}}
    assert post(client, token, body).status_code == 200
    assert post(client, token, body).status_code == 200
    assert Reading.objects.count() == 1


def test_refused_values_are_dead_lettered_and_listed_while_the_rest_is_stored(client, pump, token):
    response = post(client, token, {"ts": NOW_MS, "values": {"supply_temp": 40, "cop": 99}})

    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert [(e["reason"], e["metric"]) for e in response.json()["errors"]] == [("out_of_range", "cop")]
    assert DeadLetter.objects.get().reason == "out_of_range"


def test_a_body_that_does_not_parse_gets_400_with_a_reason(client, token):
    response = post(client, token, b"{not json")
    assert (response.status_code, response.json()["reason"]) == (400, "unparseable")
    assert DeadLetter.objects.get().reason == "unparseable"


def test_unknown_revoked_and_gateway_tokens_get_401(client, pump, site_a):
    token, plaintext = access_token_issue(device=pump)
    gateway_token = access_token_issue(gateway=GatewayFactory(site=site_a))[1]
    access_token_revoke(token=token)

    for candidate in (plaintext, "fwa_00000000_nothing", "me", gateway_token):
        response = post(client, candidate, {"supply_temp": 1})
        assert response.status_code == 401, candidate
        assert response.json()["reason"] == "invalid_access_token"
    assert not Reading.objects.exists()


def test_issuing_again_rotates_the_token(client, pump, token):
    rotated = access_token_issue(device=pump)[1]
    assert post(client, token, {"supply_temp": 1}).status_code == 401
    assert post(client, rotated, {"supply_temp": 1}).status_code == 200


def test_client_attributes_are_kept_on_the_device_not_as_readings(client, pump, token):
    pump.metadata = {"serial": "A-1"}  # what an admin entered stays
    pump.save()

    assert post(client, token, {"firmware": "1.2.0", "model": "X"}, "attributes").status_code == 200
    assert post(client, token, {"firmware": "1.3.0"}, "attributes").status_code == 200

    pump.refresh_from_db()
    assert pump.metadata == {"serial": "A-1", "client_attributes": {"firmware": "1.3.0", "model": "X"}}
    assert not Reading.objects.exists()
    assert post(client, token, [1, 2], "attributes").json()["reason"] == "invalid_shape"
