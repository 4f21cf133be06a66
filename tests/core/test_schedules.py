from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from apps.core.management.commands.install_schedules import declared_periodic_tasks


def test_install_schedules_creates_every_declared_job_once_and_keeps_admin_edits(db):
    call_command("install_schedules")
    declared = {job["name"]: job["task"] for job in declared_periodic_tasks()}
    assert dict(PeriodicTask.objects.values_list("name", "task")) == declared

    paused = PeriodicTask.objects.get(name="Roll up telemetry")
    paused.enabled = False
    paused.save()
    call_command("install_schedules")
    assert PeriodicTask.objects.count() == len(declared)
    assert not PeriodicTask.objects.get(name="Roll up telemetry").enabled


def test_every_scheduled_task_is_registered_with_celery(db):
    from config.celery import app

    app.loader.import_default_modules()
    for job in declared_periodic_tasks():
        assert job["task"] in app.tasks, job["task"]
