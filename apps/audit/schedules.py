"""Periodic jobs of the audit app, installed into django-celery-beat by ``manage.py install_schedules``."""

PERIODIC_TASKS = [
    {"name": "Purge old audit events", "task": "apps.audit.tasks.audit_events_purge_task", "every_seconds": 6 * 3600},
]
