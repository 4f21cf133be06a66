"""POST /api/v1/ingest: every status code a gateway can get, and what each stores."""

import datetime
import json
import time

import msgpack
import pytest
from django.test import override_settings
from django.utils import timezone

from apps.devices.services import api_key_issue, api_key_revoke
from apps.telemetry.models import DeadLetter, LatestValue, Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory

URL = "/api/v1/ingest"
NOW_MS = int(time.time() * 1000) - 60_000


@pytest.fixture
def gateway_key(site_a, site_b):
    heat_pump = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", min_value=-50, max_value=150)
    MetricDefinitionFactory(device_type=heat_pump, key="cop", unit="", min_value=0.5, max_value=10)
    gateway = GatewayFactory(site=site_a, uid="gw-a")
    DeviceFactory(uid="hp-1", site=site_a, device_type=heat_pump, gateway=gateway)
    DeviceFactory(uid="hp-2", site=site_a, device_type=heat_pump)
    DeviceFactory(uid="hp-b", site=site_b, device_type=heat_pump)
    api_key, plaintext = api_key_issue(gateway=gateway, name="test")
    return api_key, plaintext


def post(client, body, key, content_type="application/json", **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.generic("POST", URL, data, content_type=content_type, headers={"X-API-Key": key, **headers})


def test_valid_gateway_payload_is_stored_and_answered_after_commit(client, gateway_key):
    _, key = gateway_key
    body = {"hp-1": [{"ts": NOW_MS, "values": {"supply_temp": 41.5, "cop": 3.2}}], "hp-2": [{"supply_temp": 39}]}
    response = post(client, body, key)
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 3, "rejected": 0, "duplicates": 0, "errors": []}
    assert Reading.objects.count() == 3
    assert LatestValue.objects.filter(series__device__uid="hp-1", series__metric_key="cop").get().value == 3.2


def test_partial_acceptance_lists_each_rejected_record_with_its_reason(client, gateway_key):
    _, key = gateway_key
    body = [
        {"device": "hp-1", "ts": NOW_MS, "values": {"supply_temp": 40}},
        {"device": "hp-1", "ts": NOW_MS + 1000, "values": {"supply_temp": 41, "cop": 3.9e-35}},
        {"device": "hp-b", "ts": NOW_MS, "values": {"supply_temp": 40}},
        {"device": "ghost", "ts": NOW_MS, "values": {"supply_temp": 40}},
    ]
    response = post(client, body, key)
    assert response.status_code == 202
    result = response.json()
    assert (result["accepted"], result["rejected"], result["duplicates"]) == (2, 3, 0)
    assert [(error["index"], error["device"], error["reason"]) for error in result["errors"]] == [
        (1, "hp-1", "out_of_range"),
        (2, "hp-b", "wrong_site"),
        (3, "ghost", "unknown_device"),
    ]
    assert sorted(DeadLetter.objects.values_list("reason", flat=True)) == [
        "out_of_range",
        "unknown_device",
        "wrong_site",
    ]


def test_repeated_body_counts_duplicates_and_stores_nothing_twice(client, gateway_key):
    _, key = gateway_key
    body = {"device": "hp-1", "ts": NOW_MS, "values": {"supply_temp": 40, "cop": 3}}
    assert post(client, body, key).json()["accepted"] == 2
    again = post(client, body, key).json()
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert Reading.objects.count() == 2


def test_messagepack_is_detected_by_content_whatever_the_content_type(client, gateway_key):
    _, key = gateway_key
    body = msgpack.packb({"hp-1": [{"ts": NOW_MS, "values": {"supply_temp": 42.0}}]})
    response = post(client, body, key, content_type="text/plain")
    assert response.status_code == 202
    assert response.json()["accepted"] == 1


def test_body_that_does_not_parse_is_400_and_dead_lettered(client, gateway_key):
    _, key = gateway_key
    response = post(client, b'{"hp-1": [', key)
    assert response.status_code == 400
    assert response.json()["reason"] == "unparseable"
    assert DeadLetter.objects.get().reason == "unparseable"


def test_body_of_an_unsupported_shape_is_400(client, gateway_key):
    _, key = gateway_key
    response = post(client, msgpack.packb("just a string"), key, content_type="application/msgpack")
    assert response.status_code == 400
    assert response.json()["reason"] == "invalid_shape"


@pytest.mark.parametrize(
    ("make_key", "reason"),
    [
        (lambda key: None, "missing_api_key"),
        (lambda key: "fwk_00000000_nope", "invalid_api_key"),
        (lambda key: key[:-2] + "xx", "invalid_api_key"),
        (lambda key: "Bearer something", "invalid_api_key"),
    ],
)
def test_missing_or_unknown_key_is_401(client, gateway_key, make_key, reason):
    _, key = gateway_key
    sent = make_key(key)
    headers = {"X-API-Key": sent} if sent else {}
    response = client.generic("POST", URL, b"{}", content_type="application/json", headers=headers)
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert not Reading.objects.exists()


def test_revoked_key_is_401(client, gateway_key):
    api_key, key = gateway_key
    api_key_revoke(api_key=api_key)
    response = post(client, {"device": "hp-1", "values": {"supply_temp": 1}}, key)
    assert response.status_code == 401
    assert response.json()["reason"] == "revoked_api_key"


def test_expired_key_is_401(client, gateway_key):
    api_key, key = gateway_key
    api_key.expires_at = timezone.now() - datetime.timedelta(seconds=1)
    api_key.save()
    response = post(client, {"device": "hp-1", "values": {"supply_temp": 1}}, key)
    assert response.status_code == 401
    assert response.json()["reason"] == "expired_api_key"


@override_settings(INGEST_HTTP_MAX_BYTES=1000)
def test_body_over_the_size_bound_is_413(client, gateway_key):
    _, key = gateway_key
    body = {"device": "hp-1", "values": {"supply_temp": 1}, "padding": "x" * 2000}
    response = post(client, body, key)
    assert response.status_code == 413
    assert response.json()["reason"] == "too_large"
    assert not Reading.objects.exists()


@override_settings(INGEST_MAX_RECORDS=3)
def test_too_many_records_is_413(client, gateway_key):
    _, key = gateway_key
    body = [{"device": "hp-1", "ts": NOW_MS + i, "values": {"supply_temp": 1}} for i in range(4)]
    response = post(client, body, key)
    assert response.status_code == 413
    assert response.json()["reason"] == "too_many_records"


@override_settings(INGEST_HTTP_RATE_PER_MINUTE=2)
def test_key_over_its_rate_gets_429_with_retry_after(client, gateway_key):
    _, key = gateway_key
    body = {"device": "hp-1", "values": {"supply_temp": 1}}
    statuses = [post(client, body, key).status_code for _ in range(3)]
    assert statuses[:2] == [202, 202]
    assert statuses[2] == 429
    response = post(client, body, key)
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60


def test_last_used_time_of_the_key_is_recorded(client, gateway_key):
    api_key, key = gateway_key
    post(client, {"device": "hp-1", "values": {"supply_temp": 1}}, key)
    api_key.refresh_from_db()
    assert api_key.last_used_at is not None
