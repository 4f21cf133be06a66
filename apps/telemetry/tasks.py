"""Celery tasks of the telemetry app: load by id, call one service, nothing else."""

from celery import shared_task
from django.db import transaction

from apps.telemetry.exports import export_run, exports_expire
from apps.telemetry.retention import dead_letters_purge, retention_enforce
from apps.telemetry.rollups import rollups_advance
from apps.telemetry.site_energy import site_energy_refresh_all


@shared_task(ignore_result=True)
def rollups_advance_task():
    """Roll up closed buckets past the watermarks and recompute dirty (late) ones, every resolution."""
    return rollups_advance()


@shared_task(ignore_result=True)
def site_energy_refresh_task():
    """Bring every site's stored hourly kWh and heat-pump days up to the hourly rollups (rebuild where its sources
    changed)."""
    return site_energy_refresh_all()


@shared_task(ignore_result=True)
def retention_enforce_task():
    """Archive raw days that are about to expire, then drop expired readings and rollups in bounded batches."""
    return retention_enforce()


@shared_task(ignore_result=True)
def dead_letters_purge_task():
    """Delete dead letters older than DEAD_LETTER_RETENTION_DAYS, in bounded batches."""
    return dead_letters_purge()


@shared_task(bind=True, ignore_result=True, acks_late=True)
def export_run_task(self, export_id: str):
    export_run(export_id=export_id)


@shared_task(ignore_result=True)
def exports_expire_task():
    return exports_expire()


def export_enqueue(export_id) -> None:
    """Send ``export_run_task`` once the transaction that stored the pending job commits (at once outside one)."""
    transaction.on_commit(lambda: export_run_task.delay(str(export_id)))
