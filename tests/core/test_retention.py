"""What outlives its retention is deleted in bounded batches, and only that: dead letters, closed alerts with their
history, deliveries, audit events (each app's purge over apps.core.retention.rows_purge)."""

import datetime

import pytest
from django.utils import timezone

from apps.alerts.choices import AlertEventKind, AlertStatus, ChannelKind
from apps.alerts.models import Alert, AlertEvent, Delivery
from apps.alerts.services import alert_history_purge
from apps.audit.models import AuditEvent
from apps.core.retention import rows_purge
from apps.telemetry.choices import IngestSource, RejectReason
from apps.telemetry.models import DeadLetter
from apps.telemetry.retention import dead_letters_purge
from tests.support.escalation import alert, heat_pump, rule

NOW = timezone.now()
DAY = datetime.timedelta(days=1)


def dead_letter(received_at):
    return DeadLetter.objects.create(
        received_at=received_at,
        source=IngestSource.MQTT,
        reason=RejectReason.INVALID_VALUE,
        payload=b"{}",
        payload_size=2,
    )


def test_rows_purge_deletes_in_batches_and_one_run_is_bounded(db):
    AuditEvent.objects.bulk_create(AuditEvent(action="login", actor_label="x") for _ in range(12))

    assert rows_purge(AuditEvent.objects.all(), batch_size=5, max_batches=2) == 10
    assert AuditEvent.objects.count() == 2
    assert rows_purge(AuditEvent.objects.all(), batch_size=5, max_batches=2) == 2
    assert rows_purge(AuditEvent.objects.all(), batch_size=5) == 0


def test_dead_letters_older_than_their_retention_go_the_rest_stay(db, settings):
    settings.DEAD_LETTER_RETENTION_DAYS = 30
    old, recent = dead_letter(NOW - 31 * DAY), dead_letter(NOW - 29 * DAY)

    assert dead_letters_purge(now=NOW) == 1
    assert list(DeadLetter.objects.values_list("id", flat=True)) == [recent.id]
    assert old.id not in DeadLetter.objects.values_list("id", flat=True)


@pytest.fixture
def history(site_a, settings):
    settings.ALERT_HISTORY_RETENTION_DAYS = 365
    settings.DELIVERY_RETENTION_DAYS = 90
    device = heat_pump(site_a)
    alert_rule = rule(device)
    long_closed = alert(alert_rule, device, opened_at=NOW - 400 * DAY, status=AlertStatus.RESOLVED)
    long_closed.resolved_at = NOW - 366 * DAY
    long_closed.save()
    recently_closed = alert(alert_rule, device, opened_at=NOW - 400 * DAY, status=AlertStatus.CLEARED)
    recently_closed.cleared_at = NOW - 10 * DAY
    recently_closed.save()
    still_open = alert(alert_rule, device, opened_at=NOW - 900 * DAY)
    for each in (long_closed, recently_closed, still_open):
        AlertEvent.objects.create(alert=each, kind=AlertEventKind.OPENED, at=each.opened_at)
    old_delivery = Delivery.objects.create(alert=still_open, kind=ChannelKind.EMAIL, target="ops@acme.example")
    Delivery.objects.filter(pk=old_delivery.pk).update(created_at=NOW - 91 * DAY)
    new_delivery = Delivery.objects.create(alert=recently_closed, kind=ChannelKind.EMAIL, target="ops@acme.example")
    return {"long_closed": long_closed, "recent": recently_closed, "open": still_open, "delivery": new_delivery}


def test_closed_alerts_past_retention_go_with_their_history_open_ones_never(history):
    assert alert_history_purge(now=NOW) == {"deliveries": 1, "alerts": 1}

    assert set(Alert.objects.values_list("id", flat=True)) == {history["recent"].id, history["open"].id}
    assert set(AlertEvent.objects.values_list("alert_id", flat=True)) == {history["recent"].id, history["open"].id}
    assert list(Delivery.objects.values_list("id", flat=True)) == [history["delivery"].id]
    assert alert_history_purge(now=NOW) == {"deliveries": 0, "alerts": 0}
