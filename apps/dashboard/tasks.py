"""Celery tasks of the dashboard: call one service, nothing else."""

from celery import shared_task


@shared_task(ignore_result=True)
def devices_offline_publish_task():
    """Publish ``status: offline`` for devices whose offline timeout passed since the previous run."""
    from apps.dashboard.fanout import devices_offline_publish

    return devices_offline_publish()
