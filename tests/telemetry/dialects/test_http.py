"""The dialects over HTTP: InfluxDB's /api/v2/write and /write (what Telegraf and InfluxDB clients send), and SenML
on /api/v1/ingest. Stored once, refused with a reason, answered as the client expects."""

import base64
import gzip
import json
import time

import cbor2
import pytest
from django.test import override_settings
from influxdb_client import Point, WritePrecision

from apps.devices.choices import MetricNaming
from apps.devices.services import api_key_issue
from apps.telemetry.models import DeadLetter, Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory

V2 = "/api/v2/write"
V1 = "/write"
NOW_NS = (int(time.time()) - 60) * 1_000_000_000
NOW_S = NOW_NS // 1_000_000_000


@pytest.fixture
def gateway(site_a, site_b):
    heat_pump = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", unit="°C", min_value=-50, max_value=150)
    MetricDefinitionFactory(device_type=heat_pump, key="cop", unit="", min_value=0.5, max_value=10)
    MetricDefinitionFactory(device_type=heat_pump, key="heating_power", unit="W", min_value=0, max_value=1e6)
    gateway = GatewayFactory(site=site_a, uid="gw-a")
    DeviceFactory(uid="hp-1", site=site_a, device_type=heat_pump, gateway=gateway)
    DeviceFactory(uid="urn:dev:mac:0024befffe804ff1", site=site_a, device_type=heat_pump)
    DeviceFactory(uid="hp-b", site=site_b, device_type=heat_pump)
    _, plaintext = api_key_issue(gateway=gateway, name="test")
    return gateway, plaintext


def write(client, body: bytes | str, key: str | None, url: str = V2, query: str = "org=o&bucket=b", **headers):
    data = body.encode() if isinstance(body, str) else body
    if key is not None and "HTTP_AUTHORIZATION" not in headers:
        headers["HTTP_AUTHORIZATION"] = f"Token {key}"
    return client.generic("POST", f"{url}?{query}", data, content_type="text/plain; charset=utf-8", **headers)


# --- /api/v2/write --------------------------------------------------------------------------------------------------


def test_telegraf_lines_are_stored_once_and_answered_204(client, gateway):
    _, key = gateway
    body = f"heating,device=hp-1,host=box supply_temp=41.5,cop=3.2 {NOW_NS}\nheating,host=hp-1 cop=3.3 {NOW_NS + 10**9}"
    response = write(client, body, key)
    assert response.status_code == 204, response.content
    assert Reading.objects.count() == 3
    again = write(client, body, key)  # Telegraf retries a batch it thinks failed: nothing is stored twice
    assert again.status_code == 204
    assert Reading.objects.count() == 3
    assert not DeadLetter.objects.exists()


def test_gzip_bodies_are_inflated(client, gateway):
    _, key = gateway
    body = gzip.compress(f"heating,device=hp-1 supply_temp=40 {NOW_NS}".encode())
    response = write(client, body, key, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 204, response.content
    assert Reading.objects.get().value == 40


@override_settings(INGEST_HTTP_MAX_BYTES=10_000)
def test_a_gzip_bomb_is_refused_413_without_inflating_it(client, gateway):
    _, key = gateway
    bomb = gzip.compress(b"heating,device=hp-1 supply_temp=1 " + b"0" * 5_000_000)  # ~5 KB -> 5 MB
    assert len(bomb) < 10_000
    response = write(client, bomb, key, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413
    assert response.json()["code"] == "request too large"
    assert write(client, b"\x1f\x8bnot gzip", key, HTTP_CONTENT_ENCODING="gzip").status_code == 400
    assert write(client, b"x", key, HTTP_CONTENT_ENCODING="br").status_code == 415


def test_a_line_that_does_not_parse_is_400_with_its_line_number_and_the_rest_is_stored(client, gateway):
    _, key = gateway
    body = f"heating,device=hp-1 supply_temp=40 {NOW_NS}\nheating,device=hp-1 supply_temp\n"
    response = write(client, body, key)
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "invalid"
    assert "line 2" in error["message"] and "1 points written" in error["message"]
    assert Reading.objects.count() == 1
    assert DeadLetter.objects.get().reason == "invalid_syntax"


def test_refused_points_are_422_each_with_its_reason(client, gateway):
    _, key = gateway
    body = "\n".join(
        [
            f'heating,device=hp-1 supply_temp=41,state="defrost" {NOW_NS}',  # a string field
            f"heating,device=ghost supply_temp=41 {NOW_NS}",
            f"heating,device=hp-b supply_temp=41 {NOW_NS}",  # another site's device
            f"heating,device=hp-1 cop=3.9e-35 {NOW_NS}",
        ]
    )
    response = write(client, body, key)
    assert response.status_code == 422
    assert response.json()["code"] == "unprocessable entity"
    assert "line 2: unknown_device" in response.json()["message"]
    assert Reading.objects.count() == 1
    assert sorted(DeadLetter.objects.values_list("reason", flat=True)) == [
        "out_of_range",
        "unknown_device",
        "unsupported_value",
        "wrong_site",
    ]


@pytest.mark.parametrize(
    "headers",
    [{}, {"HTTP_AUTHORIZATION": "Token fwk_00000000_nope"}, {"HTTP_AUTHORIZATION": "Basic Zm9vOmJhcg=="}],
)
def test_a_bad_token_is_401_in_influxdbs_shape(client, gateway, headers):
    response = write(client, f"heating,device=hp-1 supply_temp=40 {NOW_NS}", None, **headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert not Reading.objects.exists()


def test_precision_and_the_gateways_line_protocol_settings(client, gateway):
    gw, key = gateway
    gw.line_protocol_device_tag = "unit"
    gw.line_protocol_metric_naming = MetricNaming.MEASUREMENT_FIELD
    gw.save()
    response = write(client, f"supply,unit=hp-1,host=x temp=42 {NOW_S}", key, query="bucket=b&precision=s")
    assert response.status_code == 204, response.content
    reading = Reading.objects.get()
    assert (reading.value, int(reading.ts.timestamp())) == (42, NOW_S)
    assert write(client, "m,device=hp-1 x=1", key, query="precision=fortnights").status_code == 400


@override_settings(INGEST_HTTP_RATE_PER_MINUTE=1)
def test_rate_limited_like_the_ingest_endpoint(client, gateway):
    _, key = gateway
    assert write(client, f"heating,device=hp-1 supply_temp=40 {NOW_NS}", key).status_code == 204
    response = write(client, f"heating,device=hp-1 supply_temp=40 {NOW_NS}", key)
    assert response.status_code == 429
    assert response.json()["code"] == "too many requests" and int(response["Retry-After"]) > 0


def test_points_written_by_the_influxdb_client_library(client, gateway):
    _, key = gateway
    points = [
        Point("heating")
        .tag("device", "hp-1")
        .field("supply_temp", 38.25)
        .field("cop", 4)
        .time(NOW_S, WritePrecision.S),
        Point("heating").tag("device", "hp-1").field("heating_power", 1200).time(NOW_S + 1, WritePrecision.S),
    ]
    body = "\n".join(point.to_line_protocol() for point in points)
    assert write(client, body, key, query="org=o&bucket=b&precision=s").status_code == 204
    assert sorted(Reading.objects.values_list("value", flat=True)) == [4, 38.25, 1200]


# --- /write (1.x) ---------------------------------------------------------------------------------------------------


def test_v1_write_with_the_key_as_password_parameter_or_basic_auth(client, gateway):
    _, key = gateway
    line = f"heating,device=hp-1 supply_temp=40 {NOW_S}"
    response = write(client, line, None, url=V1, query=f"db=x&u=telegraf&p={key}&precision=s")
    assert response.status_code == 204, response.content
    basic = base64.b64encode(f"telegraf:{key}".encode()).decode()
    response = write(client, line.replace("supply_temp=40", "supply_temp=41"), None, url=V1, query="db=x&precision=s",
                     HTTP_AUTHORIZATION=f"Basic {basic}")  # fmt: skip
    assert response.status_code == 204
    assert Reading.objects.count() == 1  # the same instant: the second value is a duplicate
    assert write(client, line, None, url=V1, query="db=x&p=wrong").status_code == 401


# --- SenML on /api/v1/ingest ----------------------------------------------------------------------------------------


def senml_pack(offset: int = 0):
    return [
        {"bn": "urn:dev:mac:0024befffe804ff1:", "bt": NOW_S + offset, "n": "supply_temp", "u": "Cel", "v": 40.5},
        {"n": "heating_power", "u": "W", "v": 1500},
        {"n": "cop", "v": 3.1, "t": 1},
    ]


def ingest(client, body: bytes, key: str, content_type: str):
    return client.generic("POST", "/api/v1/ingest", body, content_type=content_type, headers={"X-API-Key": key})


@pytest.mark.parametrize(
    ("encode", "content_type"),
    [
        (lambda pack: json.dumps(pack).encode(), "application/senml+json"),
        (lambda pack: json.dumps(pack).encode(), "application/json"),  # detected by content
        (cbor2.dumps, "application/senml+cbor"),
    ],
)
def test_senml_on_the_ingest_endpoint_is_stored_once(client, gateway, encode, content_type):
    _, key = gateway
    pack = senml_pack()
    if encode is cbor2.dumps:
        labels = {"bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2, "t": 6}
        pack = [{labels[k]: v for k, v in record.items()} for record in pack]
    response = ingest(client, encode(pack), key, content_type)
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 3, "rejected": 0, "duplicates": 0, "errors": []}
    again = ingest(client, encode(pack), key, content_type).json()
    assert (again["accepted"], again["duplicates"]) == (0, 3)


def test_senml_units_are_checked_against_the_metrics(client, gateway):
    _, key = gateway
    pack = senml_pack()
    pack[0]["u"] = "K"  # the metric is in °C
    pack[1]["u"] = "kW"
    pack.append({"n": "label", "vs": "machine room"})
    response = ingest(client, json.dumps(pack).encode(), key, "application/senml+json")
    result = response.json()
    assert result["accepted"] == 1
    assert [(e["index"], e["reason"], e.get("metric")) for e in result["errors"]] == [
        (3, "unsupported_value", "label"),
        (0, "unit_mismatch", "supply_temp"),
        (0, "unit_mismatch", "heating_power"),  # one record with supply_temp: same device, same instant
    ]
    assert "sent in 'K', the metric is in 'Cel'" in result["errors"][1]["detail"]
