"""Alert evaluation is at least once and applied exactly once: a flush records the readings its rules cover in its
own transaction; an evaluation that fails after the commit, or never runs because the process died, is completed
by the sweep, and the alert opens once however often evaluation is attempted."""

import datetime
import time
import uuid

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.alerts import outbox
from apps.alerts.choices import AlertEventKind
from apps.alerts.models import Alert, AlertEvent, PendingEvaluation
from apps.alerts.outbox import pending_sweep
from apps.alerts.rules_cache import rules_cache
from apps.telemetry.ingest.records import ValidReading
from apps.telemetry.ingest.writer import SeriesResolver, readings_write
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.evaluation import hot_rule
from tests.support.mqtt import ListenerProcess, Publisher, broker_logins
from tests.support.processes import database_url, wait_until

LATER = datetime.timedelta(minutes=5)  # past the sweep's grace period


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def pump(transactional_db, site_a):
    heat_pump = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp")
    MetricDefinitionFactory(device_type=heat_pump, key="flow")
    return DeviceFactory(uid=f"hp-{uuid.uuid4().hex[:6]}", site=site_a, device_type=heat_pump)


@pytest.fixture
def rule(pump):
    rule = hot_rule(pump.site)
    rules_cache.load()  # this process evaluates what it writes: it must know the rule at once
    return rule


def store(pump, value: float, metric: str = "supply_temp", seconds_ago: float = 1.0):
    ts = timezone.now() - datetime.timedelta(seconds=seconds_ago)
    return readings_write([ValidReading(pump.id, metric, ts, value)], received_at=ts, resolver=SeriesResolver())


def fail_once(monkeypatch, error=None):
    """The next evaluation raises (a deadlock that exhausted its retries, the database blinking); later ones work."""
    evaluate = outbox.batch_evaluate
    calls = []

    def flaky(readings, **kwargs):
        calls.append(len(readings))
        if len(calls) == 1:
            raise error or OperationalError("server closed the connection unexpectedly")
        return evaluate(readings, **kwargs)

    monkeypatch.setattr(outbox, "batch_evaluate", flaky)
    return calls


def test_an_alert_opens_right_after_the_commit_and_nothing_stays_pending(rule, pump):
    store(pump, 90)

    assert Alert.objects.filter(rule=rule, device=pump).count() == 1
    assert not PendingEvaluation.objects.exists()


def test_readings_no_rule_covers_write_no_outbox_row(rule, pump):
    with CaptureQueriesContext(connection) as queries:
        store(pump, 3.0, metric="flow")

    assert not any("alerts_pendingevaluation" in q["sql"] for q in queries)
    assert not PendingEvaluation.objects.exists() and not Alert.objects.exists()


def test_an_evaluation_that_fails_after_the_commit_is_completed_by_the_sweep_exactly_once(rule, pump, monkeypatch):
    calls = fail_once(monkeypatch)
    deferred = counter("fieldwatch_alert_evaluations_deferred_total")

    result = store(pump, 90)

    assert result.inserted == 1  # ingest is not affected
    assert not Alert.objects.exists()
    assert PendingEvaluation.objects.count() == 1
    assert counter("fieldwatch_alert_evaluations_deferred_total") == deferred + 1

    assert pending_sweep()["evaluated"] == 0  # within the grace period the sweep leaves it alone
    figures = pending_sweep(now=timezone.now() + LATER)
    again = pending_sweep(now=timezone.now() + LATER)

    assert (figures["evaluated"], figures["opened"], again["evaluated"]) == (1, 1, 0)
    alert = Alert.objects.get(rule=rule, device=pump)
    assert AlertEvent.objects.filter(alert=alert, kind=AlertEventKind.OPENED).count() == 1
    assert not PendingEvaluation.objects.exists()
    assert calls == [1, 1]


def test_readings_of_a_process_that_died_before_evaluating_are_evaluated_by_the_sweep(rule, pump, monkeypatch):
    monkeypatch.setattr(outbox, "pending_evaluate", lambda *args, **kwargs: None)  # the process is gone

    store(pump, 95)

    assert not Alert.objects.exists()
    assert pending_sweep(now=timezone.now() + LATER)["opened"] == 1
    assert Alert.objects.get().last_value == 95


def test_a_batch_that_keeps_failing_is_left_for_an_operator_after_the_attempts(rule, pump, monkeypatch, settings):
    settings.ALERT_EVALUATION_MAX_ATTEMPTS = 2
    monkeypatch.setattr(outbox, "batch_evaluate", lambda readings, **kwargs: 1 / 0)
    abandoned = counter("fieldwatch_alert_evaluations_abandoned_total")
    store(pump, 90)

    first = pending_sweep(now=timezone.now() + LATER)
    second = pending_sweep(now=timezone.now() + LATER)
    third = pending_sweep(now=timezone.now() + LATER)

    assert (first["failed"], second["failed"], second["abandoned"], third["failed"]) == (1, 1, 1, 0)
    pending = PendingEvaluation.objects.get()
    assert pending.attempts == 2
    assert "ZeroDivisionError" in pending.last_error
    assert counter("fieldwatch_alert_evaluations_abandoned_total") == abandoned + 1


def test_a_later_reading_evaluated_first_is_not_undone_by_the_swept_older_batch(rule, pump, monkeypatch):
    """The swept batch is late data: it opens what it shows, but cannot clear an alert triggered after it."""
    fail_once(monkeypatch)
    store(pump, 70, seconds_ago=20)  # fails: pending
    store(pump, 90, seconds_ago=10)  # opens

    pending_sweep(now=timezone.now() + LATER)

    alert = Alert.objects.get()
    assert alert.cleared_at is None and alert.last_value == 90


# --- end to end: the real listener, its evaluation failing once after the commit -------------------------------------


class FlakyEvaluationListener(ListenerProcess):
    entry = ("-m", "tests.support.instrumented_listener")


@pytest.mark.e2e
def test_over_mqtt_an_evaluation_failing_once_after_the_commit_still_opens_the_alert_once(broker, rule, pump):
    prefix = f"fwoutbox{uuid.uuid4().hex[:6]}"
    process = FlakyEvaluationListener(
        "--client-id",
        f"outbox-{uuid.uuid4().hex[:8]}",
        "--flush-ms",
        "50",
        database_url=database_url(),
        MQTT_URL=broker.url,
        MQTT_TOPIC_PREFIX=prefix,
        FIELDWATCH_TEST_EVALUATION_FAILS_ONCE="1",
    )
    password = broker_logins(broker, prefix, pump)[pump.uid]
    process.start()
    publisher = Publisher(broker, pump.uid, password)
    try:
        publisher.publish(
            f"{prefix}/devices/{pump.uid}/telemetry",
            {"ts": int(time.time() * 1000), "values": {"supply_temp": 91}},
        )
        publisher.flush()
        assert wait_until(lambda: PendingEvaluation.objects.exists(), timeout=15), process.output()[-3000:]
        assert wait_until(lambda: "the sweep will retry it" in process.output(), timeout=10)
        assert not Alert.objects.exists()

        figures = pending_sweep(now=timezone.now() + LATER)  # what beat runs every 30 s

        assert figures["opened"] == 1
        alert = Alert.objects.get(rule=rule, device=pump)
        assert alert.status == "active" and alert.last_value == 91
        assert AlertEvent.objects.filter(alert=alert, kind=AlertEventKind.OPENED).count() == 1
        assert not PendingEvaluation.objects.exists()
        assert process.terminate() == 0
    finally:
        publisher.close()
        process.close()
