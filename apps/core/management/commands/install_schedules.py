"""``manage.py install_schedules``: put every app's periodic jobs into django-celery-beat's tables.

Jobs live in the database so admins can see, pause and re-time them in the admin. This command creates missing
ones and leaves existing ones as the admin left them (enabled flag and interval), so re-running it is safe.
"""

import importlib

from django.apps import apps
from django.core.management.base import BaseCommand
from django_celery_beat.models import IntervalSchedule, PeriodicTask


def declared_periodic_tasks() -> list[dict]:
    declared = []
    for app_config in apps.get_app_configs():
        try:
            module = importlib.import_module(f"{app_config.name}.schedules")
        except ModuleNotFoundError as error:
            if error.name != f"{app_config.name}.schedules":
                raise
            continue
        declared.extend(module.PERIODIC_TASKS)
    return declared


class Command(BaseCommand):
    help = "Create the platform's periodic jobs in django-celery-beat (idempotent; admin edits are kept)."

    def handle(self, *args, **options):
        for job in declared_periodic_tasks():
            interval, _ = IntervalSchedule.objects.get_or_create(
                every=job["every_seconds"], period=IntervalSchedule.SECONDS
            )
            _, created = PeriodicTask.objects.get_or_create(
                name=job["name"], defaults={"task": job["task"], "interval": interval}
            )
            self.stdout.write(f"{'created' if created else 'kept   '} {job['name']} ({job['task']})")
