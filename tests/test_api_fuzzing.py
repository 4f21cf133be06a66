"""Property-based fuzzing of the whole REST API over its OpenAPI document (issue 11, section 3), with schemathesis.

Every operation of ``/api/schema``, every method, as each role - alice (admin), bob (operator of site A), carol
(viewer of site B), an anonymous caller, and a gateway's API key - gets schema-valid (positive) and schema-invalid
(negative) requests generated from the document, and every response must be:

* no server error (no 5xx, whatever the input);
* documented: its status code, content type, headers and body conform to the document (so the document is
  accurate enough to be the API's contract);
* for negative requests, a refusal (4xx): an input the document says is invalid is not accepted.

Requests go in-process to Django's WSGI application (no server), inside the test's transaction on the real
PostgreSQL and Redis. Each (operation, role) pair runs a bounded number of examples, derandomized, so a run is
reproducible and takes a few minutes. A fraction of the examples use the ids of objects that exist (the role's own
device, alert, rule, export...), so generation also reaches the code behind the 404s, and a fraction carry one of
the values that broke the API before (``HOSTILE``) in one of their parameters.
"""

import datetime
import urllib.parse

import hypothesis
import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import override_settings
from django.utils import timezone
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi import checks as openapi_checks

from apps.alerts.models import Alert
from apps.devices.choices import MetricKind
from apps.devices.services import api_key_issue
from apps.telemetry.exports import export_create
from apps.users.services import api_token_create
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.evaluation import Feed, evaluate, hot_rule

APP = get_wsgi_application()
SCHEMA = schemathesis.openapi.from_wsgi("/api/schema?format=json", APP)
SCHEMA.config.generation.update(
    # Each role's credentials are sent by the test; generated Authorization headers and session cookies would only
    # make every role anonymous.
    with_security_parameters=False,
    # Unknown query parameters are ignored, as by most HTTP APIs (and DRF): refusing them would break clients that
    # add a parameter a newer server understands. Negative examples stay about the documented parameters.
    allow_extra_parameters=False,
)
OPERATIONS = {result.ok().label: result.ok() for result in SCHEMA.get_all_operations()}
ROLES = ("alice", "bob", "carol", "anonymous", "gateway")
EXAMPLES = 20  # per (operation, role) and generation mode


def _can_be_invalid(operation) -> bool:
    """Whether a negative example exists: a path segment (``<segment:...>``, any text without '/') cannot be made
    schema-invalid inside a URL, so an operation with nothing else has no negative examples to generate."""
    definition = operation.definition.raw
    parameters = definition.get("parameters", [])
    return "requestBody" in definition or any(
        parameter["in"] != "path" or parameter["schema"].get("type") != "string" or "format" in parameter["schema"]
        for parameter in parameters
    )


CASES = [
    pytest.param(label, role, mode, id=f"{label}-{role}-{mode}")
    for label, operation in sorted(OPERATIONS.items())
    for role in ROLES
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode.is_positive or _can_be_invalid(operation)
]

CHECKS = [
    schemathesis.checks.not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
]
NEGATIVE_CHECKS = [*CHECKS, openapi_checks.negative_data_rejection]


@pytest.fixture
def in_process_requests():
    """Django's test client detaches close_old_connections from the request signals (it would close the connection
    holding the test's transaction); the WSGI application called in-process needs the same."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def world(alice, bob, carol, site_a, site_b):
    """Devices with power, totalizer and gauge metrics on both sites, an alert and a rule each, a gateway with a key
    on site A, an export and a token per user. Returns per-role headers and the ids a path may name."""
    device_type = DeviceTypeFactory(organization=site_a.organization, name="Heat pump")
    MetricDefinitionFactory(device_type=device_type, key="supply_temp")
    MetricDefinitionFactory(device_type=device_type, key="power", unit="kW")
    MetricDefinitionFactory(device_type=device_type, key="heat", unit="kWh", kind=MetricKind.TOTALIZER)
    feed = Feed()
    known: dict[str, list] = {"uid": [], "id": [], "prefix": [], "export_id": []}
    for site, uid in ((site_a, "hp-a-001"), (site_b, "hp-b-001")):
        device = DeviceFactory(uid=uid, site=site, device_type=device_type)
        rule = hot_rule(site)
        evaluate(feed.batch((device, "supply_temp", 0, 90), (device, "power", 0, 2), (device, "heat", 0, 10)))
        known["uid"].append(uid)
        known["id"] += [rule.id, Alert.objects.get(device=device).id]
    gateway = GatewayFactory(uid="gw-a", site=site_a)
    api_key, plaintext = api_key_issue(gateway=gateway, name="main")
    known["uid"].append(gateway.uid)
    known["prefix"].append(api_key.prefix)
    headers = {"anonymous": {}, "gateway": {"X-API-Key": plaintext}}
    now = timezone.now()
    for user in (alice, bob, carol):
        _, secret = api_token_create(user=user, name="fuzzing")
        headers[user.username] = {"Authorization": f"Bearer {secret}"}
        # Another token to revoke: revoking the one the role authenticates with would make the rest anonymous.
        known["id"].append(api_token_create(user=user, name="spare")[0].id)
        job = export_create(
            user=user,
            series=[],
            start=now - datetime.timedelta(hours=1),
            end=now,
            interval="raw",
            aggregates=None,
            file_format="csv",
        )
        known["export_id"].append(str(job.id))
    return {"headers": headers, "known": known}


# Values that broke Fieldwatch before (issue 11's probe) or typically break parsers; generation alone rarely hits
# them. A fraction of examples put one into a path or query parameter (or body field) of the generated request.
HOSTILE = [
    "\x00",
    "hp-a-001\x00",
    "Europe",
    "A" * 300,
    "localtime",
    "0001-01-01T00:00Z",
    "9999-12-31T23:59:59-23:59",
    "99999999999999999999",
    "-99999999999999",
    "1e309",
    "NaN",
    "-Infinity",
    "true",
    "999999999 00:00:00",
    "P9999999999D",
    "hp-a-001:supply\x00temp",
    "[" * 100 + "]" * 100,
]


def _with_known_ids(case, choose, known) -> None:
    for name in list(case.path_parameters or {}):
        if known.get(name):
            case.path_parameters[name] = choose(known[name])


def _with_a_hostile_value(case, data) -> None:
    """Put one HOSTILE value into one of the request's parameters or top-level body fields."""
    slots = [("path", name) for name in case.path_parameters or {}]
    slots += [("query", name) for name in case.query or {}]
    if isinstance(case.body, dict):
        slots += [("body", name) for name in case.body]
    if not slots:
        return
    where, name = data.draw(st.sampled_from(slots), label="hostile slot")
    value = data.draw(st.sampled_from(HOSTILE), label="hostile value")
    if where == "path":
        case.path_parameters[name] = urllib.parse.quote(value, safe="")
    elif where == "query":
        case.query[name] = value
    else:
        case.body[name] = value


@override_settings(API_TOKEN_RATE_PER_MINUTE=1_000_000, INGEST_HTTP_RATE_PER_MINUTE=1_000_000)
@pytest.mark.parametrize(("label", "role", "mode"), CASES)
def test_no_input_makes_the_api_fail_or_break_its_document(world, in_process_requests, label, role, mode):
    operation = OPERATIONS[label]
    headers = world["headers"][role]
    known = world["known"]
    checks = NEGATIVE_CHECKS if mode.is_negative else CHECKS

    @hypothesis.settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same examples on every run: a failure reproduces
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, headers=headers), data=st.data())
    def run(case, data):
        if data.draw(st.booleans(), label="known ids"):
            _with_known_ids(case, lambda values: data.draw(st.sampled_from(values)), known)
        if mode.is_positive and data.draw(st.integers(0, 3), label="hostile") == 0:
            _with_a_hostile_value(case, data)
        response = case.call(headers=headers)
        case.validate_response(response, checks=checks, headers=headers)

    run()
