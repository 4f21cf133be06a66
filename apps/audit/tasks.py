"""Celery tasks of the audit app: call one function, nothing else."""

from celery import shared_task


@shared_task(ignore_result=True)
def audit_events_purge_task():
    """Delete audit events older than AUDIT_RETENTION_DAYS, in bounded batches."""
    from apps.audit.services import audit_events_purge

    return audit_events_purge()
