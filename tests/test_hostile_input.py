"""Issue 11, section 3: the probe's held list, one regression test per input that answered 500.

Every input a stranger can send gets a 4xx naming what is wrong; none reaches a traceback. Each class is closed
where it enters: one timezone parser (apps.core.time.timezone_named), one bounded instant field
(apps.telemetry.api.fields.InstantField), NUL-free path converters (apps.core.converters), a bounded page size and
a depth-limited JSON parser for every DRF view (apps.core.api), finite thresholds (apps.core.api.fields). The
property-based fuzzing over the whole OpenAPI document is tests/test_api_fuzzing.py; this file keeps the exact
probes, so a regression names the probe it reopens.
"""

import json

import pytest
from django.test import Client
from rest_framework.test import APIClient

from apps.alerts.models import Alert, AlertRule
from apps.devices.choices import MetricKind
from apps.devices.services import api_key_issue
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.evaluation import Feed, evaluate, hot_rule

DEEP = "[" * 100_000 + "]" * 100_000
HUGE = "99999999999999999999"


@pytest.fixture
def world(alice, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization, name="Heat pump")
    MetricDefinitionFactory(device_type=device_type, key="supply_temp")
    MetricDefinitionFactory(device_type=device_type, key="power", unit="kW")
    MetricDefinitionFactory(device_type=device_type, key="heat", unit="kWh", kind=MetricKind.TOTALIZER)
    device = DeviceFactory(uid="hp-a-001", site=site_a, device_type=device_type)
    gateway = GatewayFactory(uid="gw-a", site=site_a)
    rule = hot_rule(site_a)
    evaluate(Feed().batch((device, "supply_temp", 0, 90)))
    _, plaintext = api_key_issue(gateway=gateway, name="main")
    return {"alert": Alert.objects.get(), "rule": rule, "plaintext": plaintext, "site": site_a}


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_login(user)
    return client


def error_fields(response) -> set[str]:
    body = response.json()
    return set(body) if isinstance(body, dict) else set()


SERIES = "/api/v1/series?device=hp-a-001&metrics=supply_temp"
ENERGY = "/api/v1/devices/hp-a-001/energy?metric=power"
VOLUME = "/api/v1/devices/hp-a-001/volume?metric=heat"
STATISTICS = "/api/v1/devices/hp-a-001/statistics?metrics=supply_temp"
LONG_TZ = "A" * 300

# (path with query, the parameter the 400 names)
GET_PROBES = [
    # One validated timezone: a directory of the zoneinfo tree, a name too long for the file system.
    (f"{SERIES}&interval=1d&tz=Europe", "tz"),
    (f"{SERIES}&interval=1d&tz={LONG_TZ}", "tz"),
    (f"{SERIES}&interval=1d&tz=localtime", "tz"),
    (f"{ENERGY}&interval=1d&tz=Europe", "tz"),
    (f"{ENERGY}&interval=1d&tz={LONG_TZ}", "tz"),
    (f"{VOLUME}&interval=1d&tz=Europe", "tz"),
    (f"{VOLUME}&interval=1d&tz={LONG_TZ}", "tz"),
    # One bounded instant: before 1970, beyond datetime, beyond 2200 in epoch milliseconds.
    (f"{SERIES}&end=0001-01-01T00:00Z", "end"),
    (f"{SERIES}&start={HUGE}", "start"),
    (f"{SERIES}&end=99999999999999", "end"),
    (f"{SERIES}&start=-99999999999999", "start"),
    (f"{SERIES}&start=9999-12-31T23:59:59-23:59", "start"),
    (f"{ENERGY}&end=0001-01-01T00:00Z", "end"),
    (f"{ENERGY}&start={HUGE}", "start"),
    (f"{ENERGY}&end=99999999999999", "end"),
    (f"{VOLUME}&end=0001-01-01T00:00Z", "end"),
    (f"{VOLUME}&start={HUGE}", "start"),
    (f"{STATISTICS}&end=0001-01-01T00:00Z", "end"),
    (f"{STATISTICS}&start={HUGE}", "start"),
    (f"{STATISTICS}&end=99999999999999", "end"),
    # Derived figures: an unknown resolution, an unknown interval, sub-hour buckets over a range read from rollups.
    (f"{ENERGY}&resolution=5m", "resolution"),
    (f"{ENERGY}&interval=2w", "interval"),
    (f"{VOLUME}&interval=15m&start=2001-01-01T00:00Z&end=2001-01-02T00:00Z", "interval"),
    (f"{ENERGY}&interval=1m&resolution=1h", "interval"),
    # NUL in query parameters.
    ("/api/v1/devices/hp-a-001/energy?metric=%00", "metric"),
    ("/api/v1/devices/hp-a-001/statistics?metrics=%00", "metrics"),
    ("/api/v1/series?device=%00&metrics=supply_temp", "device"),
    ("/api/v1/series?series=hp-a-001%00:supply_temp", "series"),
    (f"{SERIES}&tz=%00", "tz"),
    (f"{SERIES}&start=%00", "start"),
    ("/api/v1/alerts?device=%00", "device"),
    # Time-range filters of the lists: years outside 1970-2200, and year 1 shifted past datetime's range.
    ("/api/v1/alerts?opened_after=0001-01-01T00:00:00%2B17:49", "opened_after"),
    ("/api/v1/devices?last_seen_before=9999-12-31T23:59:59-17:49", "last_seen_before"),
    ("/api/v1/dead-letters?received_after=1900-01-01T00:00:00Z", "received_after"),
]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/alerts?opened_after=2026-01-01T00:00:00%2B17:49",  # PostgreSQL refuses offsets past 15:59
        "/api/v1/devices?last_seen_after=2026-01-01T00:00:00-17:49",
        "/api/v1/dead-letters?received_before=2026-01-01T00:00:00%2B17:49",
    ],
)
def test_an_offset_postgresql_refuses_is_read_as_the_instant_it_names(world, alice, path):
    assert api(alice).get(path).status_code == 200


@pytest.mark.parametrize(("path", "field"), GET_PROBES, ids=[path[:90] for path, _ in GET_PROBES])
def test_query_parameter_probe_answers_400_naming_the_parameter(world, alice, path, field):
    response = api(alice).get(path)

    assert response.status_code == 400, response.content[:300]
    assert field in error_fields(response), response.json()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/devices/%00/latest"),
        ("get", "/api/v1/devices/%00/energy?metric=power"),
        ("get", "/api/v1/devices/%00/volume?metric=heat"),
        ("get", "/api/v1/devices/%00/statistics?metrics=supply_temp"),
        ("get", "/api/v1/devices/hp-a-001%00/latest"),
        ("post", "/api/v1/gateways/%00/keys"),
        ("post", "/api/v1/api-keys/%00/rotate"),
        ("post", "/api/v1/api-keys/%00/revoke"),
    ],
)
def test_nul_in_a_path_segment_is_404(world, alice, method, path):
    assert getattr(api(alice), method)(path).status_code == 404


def test_nul_in_a_dashboard_path_is_404(world, alice):
    client = Client()
    client.force_login(alice)
    assert client.get("/devices/%00/").status_code == 404


@pytest.mark.parametrize(
    ("series", "field"),
    [
        (["hp-a-001\u0000:supply_temp"], "series"),
        (["hp-a-001:supply\u0000temp"], "series"),
        ({"device": "\u0000", "metrics": ["supply_temp"]}, "series"),
        ({"device": "hp-a-001", "metrics": ["\u0000"]}, "series"),
    ],
)
def test_nul_in_export_series_names_is_400(world, alice, series, field):
    body = {"series": series, "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}

    response = api(alice).post("/api/v1/exports", body, format="json")

    assert response.status_code == 400, response.content
    assert field in error_fields(response)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"start": "0001-01-01T00:00Z"}, "start"),
        ({"end": "0001-01-01T00:00Z"}, "end"),
        ({"start": int(HUGE)}, "start"),
        ({"start": HUGE}, "start"),
        ({"end": 99999999999999}, "end"),
        ({"end": 1e300}, "end"),
        ({"start": -99999999999999}, "start"),
    ],
)
def test_export_instants_out_of_range_are_400(world, alice, changes, field):
    body = {"series": ["hp-a-001:supply_temp"], "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}

    response = api(alice).post("/api/v1/exports", {**body, **changes}, format="json")

    assert response.status_code == 400, response.content
    assert field in error_fields(response)


def test_nul_in_the_dashboard_acknowledge_note_is_400_and_changes_nothing(world, alice):
    client = Client()
    client.force_login(alice)
    alert = world["alert"]

    response = client.post(f"/alerts/{alert.id}/acknowledge", {"note": "on it\u0000"})

    assert response.status_code == 400
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_nul_in_the_api_acknowledge_note_is_400(world, alice):
    response = api(alice).post(f"/api/v1/alerts/{world['alert'].id}/acknowledge", {"note": "\u0000"}, format="json")
    assert response.status_code == 400 and "note" in response.json()


@pytest.mark.parametrize("path", ["/api/v1/alerts", "/api/v1/alert-rules", "/api/v1/tokens"])
@pytest.mark.parametrize("query", [f"limit={HUGE}", f"offset={HUGE}", f"limit={HUGE}&offset={HUGE}"])
def test_a_huge_page_size_is_clamped(world, alice, path, query):
    response = api(alice).get(f"{path}?{query}")

    assert response.status_code == 200, response.content[:300]
    assert len(response.json()["results"]) <= 1000


@pytest.mark.parametrize(
    ("query", "field"), [("limit=-1", "limit"), ("limit=0", "limit"), ("limit=ten", "limit"), ("offset=-5", "offset")]
)
def test_a_page_size_or_offset_that_is_not_a_count_is_400(world, alice, query, field):
    response = api(alice).get(f"/api/v1/alerts?{query}")

    assert response.status_code == 400
    assert "whole number" in response.json()[field][0]


# Every DRF endpoint that reads a request body ({alert} and {rule}: the world's alert and rule).
BODY_ENDPOINTS = [
    ("post", "/api/v1/alert-rules"),
    ("put", "/api/v1/alert-rules/{rule}"),
    ("patch", "/api/v1/alert-rules/{rule}"),
    ("post", "/api/v1/alerts/{alert}/acknowledge"),
    ("post", "/api/v1/alerts/{alert}/resolve"),
    ("post", "/api/v1/exports"),
    ("post", "/api/v1/tokens"),
    ("post", "/api/v1/gateways/gw-a/keys"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
@pytest.mark.parametrize(
    "body",
    [DEEP, '{"a":' * 100_000 + "1" + "}" * 100_000, "[" * 65 + "]" * 65],
    ids=["100k-arrays", "100k-objects", "65-arrays"],
)
def test_deeply_nested_json_is_400_on_every_drf_endpoint_that_reads_a_body(world, alice, method, path, body):
    path = path.format(alert=world["alert"].id, rule=world["rule"].id)

    response = getattr(api(alice), method)(path, body, content_type="application/json")

    assert response.status_code == 400, response.content[:300]
    assert "nested" in response.json()["detail"]
    assert not AlertRule.objects.exclude(pk=world["rule"].pk).exists()


def test_deeply_nested_json_at_ingest_stays_a_400(world):
    response = Client().post(
        "/api/v1/ingest", DEEP, content_type="application/json", headers={"X-API-Key": world["plaintext"]}
    )
    assert response.status_code == 400


def test_json_nested_within_the_bound_is_parsed(world, alice):
    series = {"device": "hp-a-001", "metrics": ["supply_temp"]}
    body = {"series": series, "start": "2026-03-01T00:00:00Z", "end": "2026-03-02T00:00:00Z"}

    response = api(alice).post("/api/v1/exports", json.dumps(body), content_type="application/json")

    assert response.status_code == 202, response.content


RULE = {"name": "Too hot", "kind": "threshold", "metric_key": "supply_temp", "operator": "gt"}


@pytest.mark.parametrize("literal", ['"NaN"', '"Infinity"', '"-Infinity"', "1e309", "-1e309", "NaN", "Infinity"])
@pytest.mark.parametrize("field", ["threshold", "clear_threshold"])
def test_non_finite_thresholds_are_refused_before_the_audit_insert(world, alice, literal, field):
    body = {**RULE, "site": world["site"].id, "threshold": 80, field: 0}
    text = json.dumps(body).replace(f'"{field}": 0', f'"{field}": {literal}')

    response = api(alice).post("/api/v1/alert-rules", text, content_type="application/json")

    assert response.status_code == 400, response.content
    assert AlertRule.objects.count() == 1


def test_unauthenticated_api_calls_answer_401_with_a_challenge(world):
    for path in ("/api/v1/alerts", "/api/v1/series", "/api/v1/tokens", "/api/v1/"):
        response = api().get(path)
        assert response.status_code == 401, path
        assert response["WWW-Authenticate"].startswith("Bearer"), path
    response = api().post("/api/v1/ingest", {}, format="json")
    assert response.status_code == 401
    assert "WWW-Authenticate" in response


def test_a_session_still_authenticates_api_calls(world, alice):
    assert api(alice).get("/api/v1/alerts").status_code == 200


@pytest.mark.parametrize("padding", [("", " "), (" ", ""), (" ", " "), ("\t", "\t")])
def test_an_api_key_with_surrounding_whitespace_is_trimmed(world, padding):
    before, after = padding
    body = json.dumps({"device": "hp-a-001", "values": {"supply_temp": 20}})

    response = Client().post(
        "/api/v1/ingest",
        body,
        content_type="application/json",
        headers={"X-API-Key": f"{before}{world['plaintext']}{after}"},
    )

    assert response.status_code == 202, response.content


def test_a_form_or_multipart_body_is_415_the_api_reads_json(world, alice):
    response = api(alice).post("/api/v1/alert-rules", {"name": "x"}, format="multipart")
    assert response.status_code == 415
    response = api(alice).post("/api/v1/tokens", "name=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


@pytest.mark.parametrize(
    "path",
    ["/api/v1/alerts/1.5", "/api/v1/exports/not-a-uuid", "/api/v1/no-such-endpoint", "/api/v1/devices/%00/latest"],
)
def test_an_api_url_that_matches_no_route_is_a_json_404(world, alice, path):
    response = api(alice).get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "No such endpoint or object."}


def test_an_error_asked_for_as_msgpack_or_csv_is_json(world, alice):
    for accept in ("application/msgpack", "text/csv"):
        response = api(alice).get("/api/v1/series?device=hp-a-001&metrics=supply_temp&tz=Europe", HTTP_ACCEPT=accept)
        assert response.status_code == 400
        assert response["Content-Type"].startswith("application/json"), accept
        assert "tz" in response.json()
