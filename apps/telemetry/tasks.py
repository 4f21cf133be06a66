"""Celery tasks of the telemetry app: load by id, call one service, nothing else."""

from celery import shared_task


@shared_task(ignore_result=True)
def rollups_advance_task():
    """Roll up closed buckets past the watermarks and recompute dirty (late) ones, every resolution."""
    from apps.telemetry.rollups import rollups_advance

    return rollups_advance()


@shared_task(ignore_result=True)
def retention_enforce_task():
    """Archive raw days that are about to expire, then drop expired readings and rollups in bounded batches."""
    from apps.telemetry.retention import retention_enforce

    return retention_enforce()


@shared_task(bind=True, ignore_result=True, acks_late=True)
def export_run_task(self, export_id: str):
    from apps.telemetry.exports import export_run

    export_run(export_id=export_id)


@shared_task(ignore_result=True)
def exports_expire_task():
    from apps.telemetry.exports import exports_expire

    return exports_expire()
