"""Celery tasks of the alerts engine: call one service, nothing else (escalation's live in notification_tasks)."""

from celery import shared_task


@shared_task(ignore_result=True)
def alerts_evaluate_timers_task():
    """Open no-data alerts and alerts whose *for* duration elapsed without a new reading."""
    from apps.alerts.services import alerts_evaluate_timers

    return alerts_evaluate_timers()
