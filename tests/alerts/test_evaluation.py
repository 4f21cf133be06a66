"""Evaluation of committed batches against rules: what opens, updates and clears alerts, set-wise."""

import datetime

import pytest

from apps.alerts.choices import AlertEventKind, AlertStatus, Operator, RateDirection, RuleKind
from apps.alerts.evaluation import batch_evaluate
from apps.alerts.models import Alert, AlertRule, RuleCondition
from apps.alerts.rules_cache import rules_load
from apps.alerts.services import alerts_evaluate_timers
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.evaluation import T0, Feed, S, evaluate, hot_rule, make_rule


@pytest.fixture
def heat_pump(organization):
    device_type = DeviceTypeFactory(organization=organization, name="Heat pump")
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", display_name="Supply temp", unit="°C")
    MetricDefinitionFactory(device_type=device_type, key="cop", display_name="COP", unit="")
    return device_type


@pytest.fixture
def pump(heat_pump, site_a):
    return DeviceFactory(uid="hp-a-001", name="Heat pump A-001", site=site_a, device_type=heat_pump)


@pytest.fixture
def feed(db):
    return Feed()


def test_crossing_a_threshold_opens_one_alert_with_a_readable_message(pump, feed):
    rule = hot_rule(pump.site)

    outcome = evaluate(feed.batch((pump, "supply_temp", 0, 70), (pump, "supply_temp", 1, 85.2)))

    alert = Alert.objects.get()
    assert outcome.opened == [alert.id]
    assert (alert.rule, alert.device, alert.status) == (rule, pump, AlertStatus.ACTIVE)
    assert alert.message == "Supply temp 85.2 °C > 80 on Heat pump A-001 (Site A)"
    assert (alert.first_value, alert.last_value, alert.trigger_count) == (85.2, 85.2, 1)
    assert alert.opened_at == T0 + S
    assert list(alert.events.values_list("kind", "value")) == [(AlertEventKind.OPENED, 85.2)]


def test_more_crossings_update_the_open_alert_instead_of_opening_another(pump, feed):
    hot_rule(pump.site)
    evaluate(feed.batch((pump, "supply_temp", 0, 85)))

    outcome = evaluate(feed.batch((pump, "supply_temp", 1, 86), (pump, "supply_temp", 2, 87)))
    evaluate(feed.batch((pump, "supply_temp", 3, 78)))  # inside the hysteresis band: nothing changes
    evaluate(feed.batch((pump, "supply_temp", 4, 88)))

    alert = Alert.objects.get()
    assert outcome.retriggered == [alert.id] and outcome.opened == []
    assert (alert.status, alert.trigger_count, alert.last_value) == (AlertStatus.ACTIVE, 4, 88)
    assert alert.last_triggered_at == T0 + 4 * S
    # Retriggers are counted, not logged: the history holds transitions only.
    assert list(alert.events.values_list("kind", flat=True)) == [AlertEventKind.OPENED]


def test_hysteresis_clears_only_below_the_clear_threshold(pump, feed):
    hot_rule(pump.site)
    evaluate(feed.batch((pump, "supply_temp", 0, 85)))

    evaluate(feed.batch((pump, "supply_temp", 1, 76)))
    assert Alert.objects.get().status == AlertStatus.ACTIVE

    outcome = evaluate(feed.batch((pump, "supply_temp", 2, 74.5)))
    alert = Alert.objects.get()
    assert outcome.cleared == [alert.id]
    assert (alert.status, alert.cleared_at) == (AlertStatus.CLEARED, T0 + 2 * S)
    assert list(alert.events.values_list("kind", "value")) == [
        (AlertEventKind.OPENED, 85),
        (AlertEventKind.CLEARED, 74.5),
    ]


def test_without_hysteresis_the_alert_clears_when_the_condition_no_longer_holds(pump, feed):
    make_rule(pump.site.organization, device=pump, operator=Operator.LT, threshold=2, metric_key="cop")
    evaluate(feed.batch((pump, "cop", 0, 1.5)))
    evaluate(feed.batch((pump, "cop", 1, 2.0)))
    assert Alert.objects.get().status == AlertStatus.CLEARED


def test_a_new_trigger_after_clearing_opens_a_new_alert(pump, feed):
    hot_rule(pump.site)
    evaluate(feed.batch((pump, "supply_temp", 0, 85)))
    evaluate(feed.batch((pump, "supply_temp", 1, 70)))
    evaluate(feed.batch((pump, "supply_temp", 2, 90)))
    assert sorted(Alert.objects.values_list("status", flat=True)) == [AlertStatus.ACTIVE, AlertStatus.CLEARED]


def test_the_newest_reading_of_a_batch_decides(pump, feed):
    hot_rule(pump.site)
    evaluate(feed.batch((pump, "supply_temp", 0, 90), (pump, "supply_temp", 1, 60)))
    assert not Alert.objects.exists()


def test_an_older_batch_arriving_late_does_not_clear_a_newer_alert(pump, feed):
    hot_rule(pump.site)
    evaluate(feed.batch((pump, "supply_temp", 5, 90)))
    evaluate(feed.batch((pump, "supply_temp", 1, 60)))
    assert Alert.objects.get().status == AlertStatus.ACTIVE


def test_outside_range(pump, feed):
    make_rule(pump.site.organization, device=pump, operator=Operator.OUTSIDE, threshold=20, threshold_high=60)
    evaluate(feed.batch((pump, "supply_temp", 0, 15)))
    alert = Alert.objects.get()
    assert alert.message == "Supply temp 15 °C outside [20, 60] on Heat pump A-001 (Site A)"
    evaluate(feed.batch((pump, "supply_temp", 1, 40)))
    assert Alert.objects.get().status == AlertStatus.CLEARED


def test_for_duration_opens_only_once_the_condition_held_long_enough(pump, feed):
    hot_rule(pump.site, for_duration=datetime.timedelta(seconds=10))

    evaluate(feed.batch((pump, "supply_temp", 0, 85), (pump, "supply_temp", 5, 86)))
    assert not Alert.objects.exists()
    assert RuleCondition.objects.get().holding_since == T0

    evaluate(feed.batch((pump, "supply_temp", 10, 87)))
    alert = Alert.objects.get()
    assert alert.message == "Supply temp 87 °C > 80 for 10 s on Heat pump A-001 (Site A)"


def test_a_reading_breaking_the_condition_restarts_the_for_duration(pump, feed):
    hot_rule(pump.site, for_duration=datetime.timedelta(seconds=10))
    evaluate(feed.batch((pump, "supply_temp", 0, 85)))
    evaluate(feed.batch((pump, "supply_temp", 4, 79), (pump, "supply_temp", 6, 85)))
    assert RuleCondition.objects.get().holding_since == T0 + 6 * S

    evaluate(feed.batch((pump, "supply_temp", 12, 85)))
    assert not Alert.objects.exists()  # held 6 s, not 12
    evaluate(feed.batch((pump, "supply_temp", 16, 85)))
    assert Alert.objects.count() == 1


def test_for_duration_elapsing_without_new_readings_opens_from_the_timer(pump, feed):
    hot_rule(pump.site, for_duration=datetime.timedelta(seconds=10))
    evaluate(feed.batch((pump, "supply_temp", 0, 85)))

    assert alerts_evaluate_timers(now=T0 + 9 * S)["opened"] == 0
    assert alerts_evaluate_timers(now=T0 + 10 * S)["opened"] == 1
    assert alerts_evaluate_timers(now=T0 + 20 * S)["opened"] == 0  # open already: not again
    alert = Alert.objects.get()
    assert (alert.last_value, alert.opened_at) == (85, T0 + 10 * S)


def test_rate_of_change_rising_uses_stored_history(pump, feed):
    make_rule(
        pump.site.organization,
        device=pump,
        kind=RuleKind.RATE_OF_CHANGE,
        rate_direction=RateDirection.RISING,
        rate_delta=10,
        rate_window=datetime.timedelta(seconds=60),
    )
    feed.batch((pump, "supply_temp", 0, 40), (pump, "supply_temp", 30, 45), store=True)

    evaluate(feed.batch((pump, "supply_temp", 50, 52), store=True))  # +12 within 60 s, from history
    alert = Alert.objects.get()
    assert alert.message == "Supply temp rose 12 °C within 1 min (now 52 °C) on Heat pump A-001 (Site A)"

    evaluate(feed.batch((pump, "supply_temp", 100, 53), store=True))  # +8 since the reading at 50 s
    assert Alert.objects.get().status == AlertStatus.CLEARED


def test_rate_of_change_falling_within_one_batch(pump, feed):
    make_rule(
        pump.site.organization,
        device=pump,
        kind=RuleKind.RATE_OF_CHANGE,
        rate_direction=RateDirection.FALLING,
        rate_delta=5,
        rate_window=datetime.timedelta(seconds=10),
    )
    rising = feed.batch(*[(pump, "supply_temp", s, 40 + s) for s in range(12)], store=True)
    evaluate(rising)
    assert not Alert.objects.exists()

    falling = feed.batch(*[(pump, "supply_temp", 12 + s, 50 - s) for s in range(12)], store=True)
    evaluate(falling)
    assert "fell 10 °C within 10 s" in Alert.objects.get().message


def test_one_batch_of_many_devices_opens_and_clears_exactly_the_right_set(heat_pump, site_a, site_b, feed):
    hot_rule(site_a)
    pumps = [DeviceFactory(site=site_a, device_type=heat_pump) for _ in range(20)]
    other_site = DeviceFactory(site=site_b, device_type=heat_pump)
    evaluate(feed.batch(*[(p, "supply_temp", 0, 90) for p in pumps[:10]]))

    # 0-4 stay hot, 5-9 cool below 75, 10-14 get hot, 15-19 stay fine, site B is out of scope
    rows = [(p, "supply_temp", 1, 90) for p in pumps[:5]]
    rows += [(p, "supply_temp", 1, 70) for p in pumps[5:10]]
    rows += [(p, "supply_temp", 1, 95) for p in pumps[10:15]]
    rows += [(p, "supply_temp", 1, 50) for p in pumps[15:]]
    rows += [(other_site, "supply_temp", 1, 99), (pumps[0], "cop", 1, 3)]
    outcome = evaluate(feed.batch(*rows))

    status = dict(Alert.objects.values_list("device_id", "status"))
    assert {p.id for p in pumps if status.get(p.id) == AlertStatus.ACTIVE} == {p.id for p in pumps[:5] + pumps[10:15]}
    assert {p.id for p in pumps if status.get(p.id) == AlertStatus.CLEARED} == {p.id for p in pumps[5:10]}
    assert other_site.id not in status
    assert (len(outcome.opened), len(outcome.retriggered), len(outcome.cleared)) == (5, 5, 5)


def test_evaluating_a_batch_takes_a_constant_number_of_queries(heat_pump, site_a, feed, django_assert_max_num_queries):
    hot_rule(site_a)
    hot_rule(site_a, name="Too hot, sustained", for_duration=datetime.timedelta(seconds=5))
    pumps = [DeviceFactory(site=site_a, device_type=heat_pump) for _ in range(50)]
    index = rules_load()
    batch = feed.batch(*[(p, "supply_temp", s, 70 + 5 * s + i % 3) for i, p in enumerate(pumps) for s in range(4)])
    # savepoint, conditions upsert, open, clear, events, release (no escalation policy)
    with django_assert_max_num_queries(6):
        batch_evaluate(batch, index=index)
    assert Alert.objects.count() == 50


def test_no_data_rule_raises_for_a_silent_device_and_clears_when_it_reports(pump, feed):
    rule = make_rule(
        pump.site.organization,
        site=pump.site,
        kind=RuleKind.NO_DATA,
        metric_key="",
        silence=datetime.timedelta(minutes=5),
    )
    AlertRule.objects.filter(pk=rule.pk).update(created_at=T0 - datetime.timedelta(hours=1))
    type(pump).objects.filter(pk=pump.pk).update(last_seen=T0, created_at=T0 - datetime.timedelta(hours=1))

    assert alerts_evaluate_timers(now=T0 + datetime.timedelta(minutes=4))["opened"] == 0
    assert alerts_evaluate_timers(now=T0 + datetime.timedelta(minutes=6))["opened"] == 1
    alert = Alert.objects.get()
    assert alert.message == "No data from Heat pump A-001 (Site A) for over 5 min"

    evaluate(feed.batch((pump, "cop", 400, 3.1)))
    assert Alert.objects.get().status == AlertStatus.CLEARED


def test_metric_no_data_covers_only_devices_whose_type_has_the_metric(pump, site_a, feed):
    DeviceFactory(site=site_a)  # another type, without supply_temp
    rule = make_rule(site_a.organization, site=site_a, kind=RuleKind.NO_DATA, silence=datetime.timedelta(minutes=1))
    AlertRule.objects.filter(pk=rule.pk).update(created_at=T0 - datetime.timedelta(hours=1))
    type(pump).objects.update(created_at=T0 - datetime.timedelta(hours=1))

    assert alerts_evaluate_timers(now=T0)["opened"] == 1
    alert = Alert.objects.get()
    assert alert.device == pump
    assert alert.message == "No Supply temp readings from Heat pump A-001 (Site A) for over 1 min"

    evaluate(feed.batch((pump, "cop", 1, 3)))  # another metric does not clear it
    assert Alert.objects.get().status == AlertStatus.ACTIVE
    evaluate(feed.batch((pump, "supply_temp", 2, 40)))
    assert Alert.objects.get().status == AlertStatus.CLEARED


def test_a_new_alert_starts_its_rules_escalation(pump, feed):
    from apps.alerts.models import EscalationPolicy, EscalationStep

    policy = EscalationPolicy.objects.create(organization=pump.site.organization, name="On call")
    EscalationStep.objects.create(policy=policy, position=3, delay=datetime.timedelta(minutes=10))
    hot_rule(pump.site, escalation_policy=policy)

    evaluate(feed.batch((pump, "supply_temp", 0, 90)))

    alert = Alert.objects.get()
    assert (alert.next_escalation_position, alert.next_escalation_at) == (3, T0 + datetime.timedelta(minutes=10))
