"""Issue 11, section 2: an operator could switch off alerting for every tenant with one rule.

Durations of 999,999,999 days made the evaluation's date arithmetic overflow, and every rule evaluated in the same
batch (other sites, other organizations) stopped firing. Now every duration and number of a rule is bounded where
it is stored (validators, database constraints) and accepted (the serializer), and the evaluation isolates a rule
whose arithmetic fails anyway (old rows, written before the bounds): it is skipped, counted and logged, and the
other rules of the batch open their alerts.
"""

import datetime
import importlib
import json

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from apps.alerts.choices import RateDirection, RuleKind
from apps.alerts.models import Alert, AlertRule, EscalationPolicy, EscalationStep
from apps.alerts.services import alerts_evaluate_timers
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.evaluation import T0, Feed, evaluate, hot_rule, make_rule

HUGE = "999999999 00:00:00"  # the probe's 999,999,999 days, in DRF's duration format
HUGE_DELTA = datetime.timedelta(days=999_999_999)
RULE = {"name": "Too hot", "kind": "threshold", "metric_key": "supply_temp", "operator": "gt", "threshold": 80}
RATE = {"kind": "rate_of_change", "rate_direction": "rising", "rate_delta": 5, "operator": "", "threshold": None}
NO_DATA = {"kind": "no_data", "operator": "", "threshold": None}


@pytest.fixture
def heat_pump(organization):
    device_type = DeviceTypeFactory(organization=organization, name="Heat pump")
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", display_name="Supply temp", unit="°C")
    return device_type


@pytest.fixture
def pump(heat_pump, site_a):
    return DeviceFactory(uid="hp-a-001", name="Heat pump A-001", site=site_a, device_type=heat_pump)


@pytest.fixture
def other_pump(other_site):
    device_type = DeviceTypeFactory(organization=other_site.organization, name="Heat pump")
    MetricDefinitionFactory(device_type=device_type, key="supply_temp")
    return DeviceFactory(uid="hp-x-001", site=other_site, device_type=device_type)


def post_rule(user, body):
    client = APIClient()
    client.force_login(user)
    if isinstance(body, str):  # raw JSON text, for literals json.dumps cannot write (1e309)
        return client.post("/api/v1/alert-rules", body, content_type="application/json")
    return client.post("/api/v1/alert-rules", body, format="json")


# ---------------------------------------------------------------------------------------------------------------------
# The probe's payloads are refused with a 400 naming the field
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        pytest.param({"for_duration": HUGE}, "for_duration", "at most 30 d", id="for_duration-999999999-days"),
        pytest.param({**RATE, "rate_window": HUGE}, "rate_window", "at most 30 d", id="rate_window-999999999-days"),
        pytest.param({**NO_DATA, "silence": HUGE}, "silence", "at most 30 d", id="silence-999999999-days"),
        pytest.param({**NO_DATA, "silence": "P999999999D"}, "silence", "at most 30 d", id="silence-iso-8601"),
        pytest.param({**NO_DATA, "silence": "P9999999999D"}, "silence", "number of days", id="beyond-timedelta"),
        pytest.param({**NO_DATA, "silence": "30 00:00:01"}, "silence", "at most 30 d", id="silence-30-days-and-1-s"),
        pytest.param({**NO_DATA, "silence": "00:00:00.5"}, "silence", "at least 1 s", id="silence-half-a-second"),
        pytest.param({"for_duration": "00:00:00"}, "for_duration", "at least 1 s", id="for_duration-zero"),
        pytest.param({"for_duration": "-00:00:05"}, "for_duration", "at least 1 s", id="for_duration-negative"),
        pytest.param({**RATE, "rate_window": "0"}, "rate_window", "at least 1 s", id="rate_window-zero"),
        pytest.param({"threshold": True}, "threshold", "not a number", id="threshold-true"),
        pytest.param({"threshold": False}, "threshold", "not a number", id="threshold-false"),
        pytest.param({"threshold": "NaN"}, "threshold", "finite", id="threshold-nan-string"),
        pytest.param({"threshold": "Infinity"}, "threshold", "finite", id="threshold-infinity-string"),
        pytest.param({"threshold": "-inf"}, "threshold", "finite", id="threshold-minus-inf-string"),
        pytest.param({"clear_threshold": "nan"}, "clear_threshold", "finite", id="clear_threshold-nan"),
        pytest.param(
            {"operator": "outside", "threshold_high": "Infinity"}, "threshold_high", "finite", id="threshold_high-inf"
        ),
        pytest.param({**RATE, "rate_window": "00:05:00", "rate_delta": "NaN"}, "rate_delta", "finite", id="dnan"),
        pytest.param({**RATE, "rate_window": "00:05:00", "rate_delta": True}, "rate_delta", "not a number", id="dtrue"),
    ],
)
def test_out_of_bounds_durations_and_numbers_are_refused(alice, pump, site_a, changes, field, message):
    response = post_rule(alice, {**RULE, "site": site_a.id, **changes})

    assert response.status_code == 400, response.content
    assert message in " ".join(response.json()[field]), response.json()
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize("literal", ["1e309", "-1e309", "1e400"])
def test_a_json_number_beyond_float_is_refused_not_stored_as_infinity(alice, pump, site_a, literal):
    body = json.dumps({**RULE, "site": site_a.id, "threshold": 0}).replace('"threshold": 0', f'"threshold": {literal}')

    response = post_rule(alice, body)

    assert response.status_code == 400, response.content
    assert "finite" in " ".join(response.json()["threshold"])
    assert not AlertRule.objects.exists()


def test_a_patch_cannot_smuggle_an_unbounded_duration_in(alice, pump, site_a):
    rule = hot_rule(site_a)
    client = APIClient()
    client.force_login(alice)

    response = client.patch(f"/api/v1/alert-rules/{rule.id}", {"for_duration": HUGE}, format="json")

    assert response.status_code == 400 and "for_duration" in response.json()
    rule.refresh_from_db()
    assert rule.for_duration is None


def test_the_bounds_themselves_are_accepted(alice, pump, site_a):
    for changes in ({"for_duration": "30 00:00:00"}, {**NO_DATA, "silence": "1"}, {**RATE, "rate_window": "00:00:01"}):
        response = post_rule(alice, {**RULE, "name": str(changes), "site": site_a.id, **changes})
        assert response.status_code == 201, response.content
    assert AlertRule.objects.count() == 3


def test_the_model_validates_and_the_database_refuses_unbounded_values(organization, site_a, pump):
    rule = AlertRule(organization=organization, site=site_a, name="x", kind=RuleKind.NO_DATA, silence=HUGE_DELTA)
    with pytest.raises(ValidationError) as error:
        rule.full_clean()
    assert "silence" in error.value.message_dict

    for fields in (
        {"kind": RuleKind.NO_DATA, "silence": HUGE_DELTA},
        {"kind": RuleKind.RATE_OF_CHANGE, "rate_window": datetime.timedelta(0)},
        {"for_duration": datetime.timedelta(days=31)},
        {"threshold": float("nan")},
        {"threshold": float("inf")},
        {"clear_threshold": float("-inf")},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            make_rule(organization, site=site_a, **fields)

    policy = EscalationPolicy.objects.create(organization=organization, name="On call")
    with pytest.raises(IntegrityError), transaction.atomic():
        EscalationStep.objects.create(policy=policy, position=1, delay=HUGE_DELTA)


# ---------------------------------------------------------------------------------------------------------------------
# Old rows beyond the bounds do not stop anyone else's rules
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def unbounded_rows(db):
    """Rules stored before the bounds existed: the bound constraints are dropped inside the test's transaction
    (DDL is transactional in PostgreSQL, so the test's rollback restores them)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'c' "
            "AND conrelid IN ('alerts_alertrule'::regclass, 'alerts_escalationstep'::regclass) "
            "AND conname NOT IN ('alert_rule_has_scope', 'step_delay_not_negative')"
        )
        dropped = cursor.fetchall()
        assert dropped, "no bound constraints found to drop"
        for table, name in dropped:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')


def failures() -> float:
    return REGISTRY.get_sample_value("fieldwatch_alert_rule_failures_total", {"stage": "evaluation"}) or 0.0


def timer_failures() -> float:
    return REGISTRY.get_sample_value("fieldwatch_alert_rule_failures_total", {"stage": "timers"}) or 0.0


def _bad_policy(organization) -> EscalationPolicy:
    policy = EscalationPolicy.objects.create(organization=organization, name="Never")
    EscalationStep.objects.create(policy=policy, position=1, delay=HUGE_DELTA)
    return policy


BAD_RULES = {
    "rate_window": lambda org, site: make_rule(
        org,
        site=site,
        kind=RuleKind.RATE_OF_CHANGE,
        rate_direction=RateDirection.EITHER,
        rate_delta=1,
        rate_window=HUGE_DELTA,
    ),
    "threshold_none": lambda org, site: make_rule(org, site=site, operator="gt", threshold=None),
    "escalation_delay": lambda org, site: hot_rule(site, escalation_policy=_bad_policy(org)),
}


@pytest.mark.parametrize("bad", list(BAD_RULES))
def test_a_rule_whose_arithmetic_fails_does_not_stop_another_organizations_rule(
    unbounded_rows, bad, pump, other_pump, caplog
):
    bad_rule = BAD_RULES[bad](other_pump.site.organization, other_pump.site)
    good_rule = hot_rule(pump.site)
    feed = Feed()
    before = failures()

    # The bad rule's reading comes first, so the batch meets it before the good one.
    outcome = evaluate(feed.batch((other_pump, "supply_temp", 0, 95), (pump, "supply_temp", 0, 90)))

    alert = Alert.objects.get(rule=good_rule)
    assert alert.device == pump and alert.id in outcome.opened
    assert failures() - before == 1
    assert f"alert rule {bad_rule.id}" in caplog.text
    # And again with the next batch: one bad rule never becomes everyone's outage.
    outcome = evaluate(feed.batch((other_pump, "supply_temp", 1, 96), (pump, "supply_temp", 1, 91)))
    assert outcome.retriggered == [alert.id]


def test_an_unbounded_silence_does_not_stop_another_organizations_no_data_rule(unbounded_rows, pump, other_pump):
    old = T0 - datetime.timedelta(hours=1)
    minute = datetime.timedelta(minutes=1)
    good = make_rule(pump.site.organization, site=pump.site, kind=RuleKind.NO_DATA, silence=minute)
    make_rule(
        other_pump.site.organization, site=other_pump.site, kind=RuleKind.NO_DATA, metric_key="", silence=HUGE_DELTA
    )
    held = hot_rule(other_pump.site, name="Held forever", for_duration=HUGE_DELTA)
    AlertRule.objects.update(created_at=old)
    type(pump).objects.update(created_at=old)
    evaluate(Feed().batch((other_pump, "supply_temp", 0, 95)))  # the held rule's condition starts holding

    result = alerts_evaluate_timers(now=T0 + datetime.timedelta(minutes=5))

    assert result["opened"] == 1
    assert Alert.objects.get().rule == good
    assert not Alert.objects.filter(rule=held).exists()


def test_timers_isolate_a_rule_whose_alert_cannot_be_opened(unbounded_rows, pump, other_pump):
    old = T0 - datetime.timedelta(hours=1)
    minute = datetime.timedelta(minutes=1)
    good = make_rule(pump.site.organization, site=pump.site, kind=RuleKind.NO_DATA, silence=minute)
    organization = other_pump.site.organization
    make_rule(
        organization,
        site=other_pump.site,
        kind=RuleKind.NO_DATA,
        silence=datetime.timedelta(minutes=1),
        escalation_policy=_bad_policy(organization),
    )
    AlertRule.objects.update(created_at=old)
    type(pump).objects.update(created_at=old)
    before = timer_failures()

    result = alerts_evaluate_timers(now=T0)

    assert result["opened"] == 1
    assert Alert.objects.get().rule == good
    assert timer_failures() - before == 1


def test_the_migration_brings_stored_rows_inside_the_bounds(unbounded_rows, pump, other_pump):
    migration = importlib.import_module("apps.alerts.migrations.0003_rule_bounds")
    organization, site = pump.site.organization, pump.site
    at_once = hot_rule(site, name="At once", for_duration=datetime.timedelta(0))
    forever = make_rule(organization, site=site, name="Forever", kind=RuleKind.NO_DATA, silence=HUGE_DELTA)
    not_a_number = hot_rule(site, name="NaN")
    AlertRule.objects.filter(pk=not_a_number.pk).update(threshold=float("nan"))  # no audit: JSON has no NaN
    fine = hot_rule(site, name="Fine", for_duration=datetime.timedelta(minutes=5))
    step = _bad_policy(organization).steps.get()

    with connection.cursor() as cursor:
        cursor.execute(migration.BRING_INSIDE_THE_BOUNDS)

    rules = {rule.name: rule for rule in AlertRule.objects.all()}
    assert (rules[at_once.name].for_duration, rules[at_once.name].enabled) == (None, True)
    assert (rules[forever.name].silence, rules[forever.name].enabled) == (datetime.timedelta(days=30), False)
    assert (rules[not_a_number.name].threshold, rules[not_a_number.name].enabled) == (None, False)
    assert (rules[fine.name].for_duration, rules[fine.name].enabled) == (datetime.timedelta(minutes=5), True)
    step.refresh_from_db()
    assert step.delay == datetime.timedelta(days=30)
    # What the migration leaves satisfies the constraints it adds next.
    for rule in AlertRule.objects.all():
        rule.validate_constraints()
