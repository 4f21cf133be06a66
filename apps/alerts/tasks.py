"""Celery tasks of the alerts app: load by id, call one service, enqueue what it asks for; nothing else."""

from celery import shared_task

from apps.alerts.choices import DeliveryStatus
from apps.alerts.escalation import escalations_run
from apps.alerts.models import Delivery
from apps.alerts.notifications import delivery_send
from apps.alerts.outbox import pending_sweep
from apps.alerts.services import alert_history_purge, alerts_evaluate_timers


@shared_task(ignore_result=True)
def alerts_evaluate_timers_task():
    """Beat, every 10 s: open no-data alerts and alerts whose *for* duration elapsed without a new reading."""
    result = alerts_evaluate_timers()
    if result["escalation_due"]:
        escalations_run_task.delay()
    return result


@shared_task(ignore_result=True)
def pending_evaluations_sweep_task():
    """Beat, every 30 s: complete the alert evaluations of ingest flushes whose evaluation failed or was cut off."""
    result = pending_sweep()
    if result["escalation_due"]:
        escalations_run_task.delay()
    return result


@shared_task(ignore_result=True)
def escalations_run_task():
    """Beat, every 10 s (and kicked when a new alert's first step is due at once): claim and run every due
    escalation step (safe to overlap, see ``escalations_run``)."""
    return escalations_run(enqueue_deliveries=deliveries_enqueue)


def deliveries_enqueue(delivery_ids: list[int]) -> None:
    for delivery_id in delivery_ids:
        delivery_send_task.delay(delivery_id)


@shared_task(bind=True, ignore_result=True, acks_late=True, max_retries=None)
def delivery_send_task(self, delivery_id: int):
    """Send one notification; on failure retry after 2, 4, 8 ... s until ``ALERT_DELIVERY_MAX_ATTEMPTS``.

    The bound is counted on the ``Delivery`` row (its ``attempts``), not by Celery, so it holds across
    redelivered messages and worker restarts.
    """
    delivery = Delivery.objects.select_related("channel", "step").filter(pk=delivery_id).first()
    if delivery is None:
        return None
    status = delivery_send(delivery=delivery)
    if status == DeliveryStatus.RETRYING:
        raise self.retry(countdown=2**delivery.attempts)
    return status


@shared_task(ignore_result=True)
def alert_history_purge_task():
    """Delete closed alerts past ALERT_HISTORY_RETENTION_DAYS and deliveries past DELIVERY_RETENTION_DAYS."""
    return alert_history_purge()
