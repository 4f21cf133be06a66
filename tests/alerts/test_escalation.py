"""Escalation: an unacknowledged alert walks its policy's steps, each step notifying its targets exactly once."""

import datetime
import threading

import pytest
from django.core import mail
from django.db import connection

from apps.alerts import outbox
from apps.alerts.choices import AlertEventKind, AlertStatus, ChannelKind, DeliveryStatus
from apps.alerts.escalation import escalations_run, escalations_start
from apps.alerts.models import Alert, AlertEvent, Delivery
from apps.alerts.rules_cache import RulesCache
from apps.alerts.tasks import deliveries_enqueue
from apps.telemetry.ingest.records import ValidReading
from apps.telemetry.ingest.writer import SeriesResolver, readings_write
from tests.support.escalation import (
    OPENED_AT,
    alert,
    email_channel,
    heat_pump,
    on_call_engineer,
    policy,
    rule,
    webhook_channel,
)

MINUTE = datetime.timedelta(minutes=1)


def run_escalations(**kwargs) -> dict:
    """``escalations_run`` as the beat task runs it: deliveries are queued (for Celery) after each claim commits."""
    return escalations_run(enqueue_deliveries=deliveries_enqueue, **kwargs)


@pytest.fixture
def on_call(organization, site_a, bob):
    """Step 1 at once: the on-call list and a pager webhook; step 2 after 15 minutes: bob."""
    bob.email = "bob@acme.example"
    bob.save(update_fields=["email"])
    device = heat_pump(site_a)
    channel = email_channel(organization)
    hook = webhook_channel(organization, "https://pager.example/hook")
    escalation_policy = policy(
        organization, (1, datetime.timedelta(0), [channel, hook], []), (2, 15 * MINUTE, [], [bob])
    )
    return {"device": device, "rule": rule(device, escalation_policy), "channel": channel, "hook": hook, "bob": bob}


def test_opening_an_alert_points_it_at_the_first_step(on_call):
    opened = alert(on_call["rule"], on_call["device"])

    escalations_start(alert_ids=[opened.pk])

    opened.refresh_from_db()
    assert (opened.next_escalation_position, opened.next_escalation_at) == (1, OPENED_AT)


def test_first_step_follows_the_lowest_position_and_its_delay(organization, site_a):
    device = heat_pump(site_a)
    channel = email_channel(organization)
    escalation_policy = policy(organization, (20, 30 * MINUTE, [channel], []), (10, 5 * MINUTE, [channel], []))
    opened = alert(rule(device, escalation_policy), device)

    escalations_start(alert_ids=[opened.pk])

    opened.refresh_from_db()
    assert (opened.next_escalation_position, opened.next_escalation_at) == (10, OPENED_AT + 5 * MINUTE)


def test_rule_without_policy_or_without_steps_never_escalates(organization, site_a):
    device = heat_pump(site_a)
    no_policy = alert(rule(device), device)
    empty_policy = alert(rule(device, policy(organization), name="Empty policy"), device)

    escalations_start(alert_ids=[no_policy.pk])
    escalations_start(alert_ids=[empty_policy.pk])

    assert Alert.objects.filter(next_escalation_at__isnull=False).count() == 0
    assert run_escalations(now=OPENED_AT + datetime.timedelta(days=1))["claimed"] == 0


def test_due_step_notifies_each_target_once_and_moves_to_the_next(on_call, django_capture_on_commit_callbacks):
    opened = alert(on_call["rule"], on_call["device"])
    escalations_start(alert_ids=[opened.pk])

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        first = run_escalations(now=OPENED_AT + datetime.timedelta(seconds=5))
        again = run_escalations(now=OPENED_AT + datetime.timedelta(seconds=15))

    assert (first["claimed"], first["deliveries"], again["claimed"]) == (1, 2, 0)
    assert len(enqueued) == 1  # the step's deliveries are queued once, after the claim commits
    assert sorted(Delivery.objects.values_list("kind", "target", "status")) == [
        (ChannelKind.EMAIL, "ops@acme.example, lead@acme.example", DeliveryStatus.PENDING),
        (ChannelKind.WEBHOOK, "https://pager.example/hook", DeliveryStatus.PENDING),
    ]
    opened.refresh_from_db()
    assert (opened.next_escalation_position, opened.next_escalation_at) == (2, OPENED_AT + 15 * MINUTE)
    event = AlertEvent.objects.get(alert=opened, kind=AlertEventKind.ESCALATED)
    assert event.note.startswith("step 1: ")
    assert "On-call list" in event.note and "Pager webhook" in event.note


def test_later_step_waits_for_its_delay_then_ends_the_chase(on_call, django_capture_on_commit_callbacks):
    opened = alert(on_call["rule"], on_call["device"])
    escalations_start(alert_ids=[opened.pk])
    with django_capture_on_commit_callbacks(execute=False):
        run_escalations(now=OPENED_AT + MINUTE)

        assert run_escalations(now=OPENED_AT + 14 * MINUTE)["claimed"] == 0
        assert run_escalations(now=OPENED_AT + 15 * MINUTE)["claimed"] == 1
        assert run_escalations(now=OPENED_AT + datetime.timedelta(days=1))["claimed"] == 0

    bob_delivery = Delivery.objects.get(user=on_call["bob"])
    assert (bob_delivery.kind, bob_delivery.target, bob_delivery.step.position) == ("email", "bob@acme.example", 2)
    opened.refresh_from_db()
    assert (opened.next_escalation_position, opened.next_escalation_at) == (None, None)
    assert AlertEvent.objects.filter(alert=opened, kind=AlertEventKind.ESCALATED).count() == 2


@pytest.mark.parametrize(
    "status, next_escalation_at",
    [
        (AlertStatus.ACKNOWLEDGED, None),  # what acknowledging does
        (AlertStatus.ACKNOWLEDGED, OPENED_AT),  # stopped by the status alone, too
        (AlertStatus.RESOLVED, None),
        (AlertStatus.CLEARED, OPENED_AT),
        (AlertStatus.ACTIVE, None),  # chase over
    ],
)
def test_acknowledged_or_closed_alerts_are_not_escalated(on_call, status, next_escalation_at):
    alert(
        on_call["rule"],
        on_call["device"],
        status=status,
        next_escalation_position=1,
        next_escalation_at=next_escalation_at,
    )

    assert run_escalations(now=OPENED_AT + datetime.timedelta(days=1))["claimed"] == 0
    assert not Delivery.objects.exists()


def test_acknowledging_between_steps_stops_the_next_one(on_call, django_capture_on_commit_callbacks):
    opened = alert(on_call["rule"], on_call["device"])
    escalations_start(alert_ids=[opened.pk])
    with django_capture_on_commit_callbacks(execute=False):
        run_escalations(now=OPENED_AT + MINUTE)
        Alert.objects.filter(pk=opened.pk).update(
            status=AlertStatus.ACKNOWLEDGED, acknowledged_by=on_call["bob"], next_escalation_at=None
        )
        run_escalations(now=OPENED_AT + datetime.timedelta(hours=1))

    assert not Delivery.objects.filter(user=on_call["bob"]).exists()
    assert Delivery.objects.count() == 2


def test_user_already_on_an_email_list_is_mailed_once_and_inactive_channels_are_skipped(organization, site_a, bob):
    bob.email = "Ops@acme.example"
    bob.save(update_fields=["email"])
    device = heat_pump(site_a)
    silenced = email_channel(organization, name="Silenced", addresses="silent@acme.example")
    silenced.is_active = False
    silenced.save()
    escalation_policy = policy(organization, (1, datetime.timedelta(0), [email_channel(organization), silenced], [bob]))
    opened = alert(rule(device, escalation_policy), device)
    escalations_start(alert_ids=[opened.pk])

    run_escalations(now=OPENED_AT)

    assert list(Delivery.objects.values_list("target", flat=True)) == ["ops@acme.example, lead@acme.example"]


def test_deleted_step_is_skipped_and_the_chase_goes_on(on_call, django_capture_on_commit_callbacks):
    opened = alert(on_call["rule"], on_call["device"])
    escalations_start(alert_ids=[opened.pk])
    on_call["rule"].escalation_policy.steps.get(position=1).delete()

    with django_capture_on_commit_callbacks(execute=False):
        run_escalations(now=OPENED_AT + MINUTE)
        run_escalations(now=OPENED_AT + 15 * MINUTE)

    assert list(Delivery.objects.values_list("target", flat=True)) == ["bob@acme.example"]


def test_first_step_due_at_once_is_sent_as_soon_as_the_alert_commits(
    organization, site_a, monkeypatch, django_capture_on_commit_callbacks
):
    """A committed reading that opens the alert kicks an escalation run instead of waiting up to 10 s for beat."""
    device = heat_pump(site_a)
    escalation_policy = policy(organization, (1, datetime.timedelta(0), [email_channel(organization)], []))
    rule(device, escalation_policy)
    monkeypatch.setattr(outbox, "rules_cache", RulesCache())  # this test's rules, not a previous test's
    now = datetime.datetime.now(datetime.UTC)

    with django_capture_on_commit_callbacks(execute=True):
        readings_write([ValidReading(device.id, "supply_temp", now, 85.5)], received_at=now, resolver=SeriesResolver())

    assert [message.to for message in mail.outbox] == [["ops@acme.example", "lead@acme.example"]]
    assert Delivery.objects.get().status == DeliveryStatus.SENT


def test_a_first_step_with_a_delay_waits_for_beat(organization, site_a, django_capture_on_commit_callbacks):
    device = heat_pump(site_a)
    escalation_policy = policy(organization, (1, MINUTE, [email_channel(organization)], []))
    opened = alert(rule(device, escalation_policy), device, opened_at=datetime.datetime.now(datetime.UTC))

    assert escalations_start(alert_ids=[opened.pk]) is False
    assert not Delivery.objects.exists()


def test_escalation_query_count_does_not_grow_with_due_alerts(on_call, django_assert_max_num_queries):
    for i in range(20):
        device = heat_pump(on_call["device"].site, uid=f"hp-x{i}", name=f"Heat pump x{i}")
        alert(on_call["rule"], device, next_escalation_position=1, next_escalation_at=OPENED_AT)

    # 4 to find the work (alerts, steps, their channels, their users) + per alert: savepoint, claim, 2 inserts.
    with django_assert_max_num_queries(4 + 20 * 5):
        assert run_escalations(now=OPENED_AT)["claimed"] == 20


# ---------------------------------------------------------------------------------------------------------------------
# Concurrency: real threads, each with its own database connection, racing over committed rows
# ---------------------------------------------------------------------------------------------------------------------


def test_concurrent_runs_send_each_step_exactly_once(transactional_db, organization, site_a):
    engineer = on_call_engineer(organization)
    channel = email_channel(organization)
    escalation_policy = policy(
        organization, (1, datetime.timedelta(0), [channel], []), (2, datetime.timedelta(0), [], [engineer])
    )
    alert_count, thread_count, rounds = 30, 6, 4
    device = heat_pump(site_a)
    alert_rule = rule(device, escalation_policy)
    for i in range(alert_count):
        other = heat_pump(site_a, uid=f"hp-{i:03d}", name=f"Heat pump {i}")
        alert(alert_rule, other, next_escalation_position=1, next_escalation_at=OPENED_AT)
    mail.outbox = []

    barrier = threading.Barrier(thread_count)
    claimed, errors = [], []

    def worker():
        try:
            barrier.wait()
            for _ in range(rounds):
                claimed.append(run_escalations()["claimed"])
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(thread_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert sum(claimed) == alert_count * 2  # every step of every alert claimed by exactly one run
    assert Delivery.objects.count() == alert_count * 2
    assert Delivery.objects.filter(status=DeliveryStatus.SENT).count() == alert_count * 2
    assert AlertEvent.objects.filter(kind=AlertEventKind.ESCALATED).count() == alert_count * 2
    assert len(mail.outbox) == alert_count * 2
    assert sorted(len(message.to) for message in mail.outbox) == [1] * alert_count + [2] * alert_count
