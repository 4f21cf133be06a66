"""Celery tasks of escalation and notifications: load by id, call one service, nothing else.

Kept apart from ``apps/alerts/tasks.py`` (the alert engine's beat jobs) so the two can change independently.
"""

from celery import shared_task


@shared_task(ignore_result=True)
def escalations_run_task():
    """Beat, every 10 s: claim and run every due escalation step (safe to overlap, see ``escalations_run``)."""
    from apps.alerts.escalation import escalations_run

    return escalations_run()


@shared_task(bind=True, ignore_result=True, acks_late=True, max_retries=None)
def delivery_send_task(self, delivery_id: int):
    """Send one notification; on failure retry after 2, 4, 8 ... s until ``ALERT_DELIVERY_MAX_ATTEMPTS``.

    The bound is counted on the ``Delivery`` row (its ``attempts``), not by Celery, so it holds across
    redelivered messages and worker restarts.
    """
    from apps.alerts.choices import DeliveryStatus
    from apps.alerts.models import Delivery
    from apps.alerts.notifications import delivery_send

    delivery = Delivery.objects.select_related("channel", "step").filter(pk=delivery_id).first()
    if delivery is None:
        return None
    status = delivery_send(delivery=delivery)
    if status == DeliveryStatus.RETRYING:
        raise self.retry(countdown=2**delivery.attempts)
    return status
