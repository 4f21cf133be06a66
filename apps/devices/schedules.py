"""Periodic jobs of the devices app, installed into django-celery-beat by ``manage.py install_schedules``."""

PERIODIC_TASKS = [
    {"name": "Rotate gateway API keys", "task": "apps.devices.tasks.api_keys_rotation_task", "every_seconds": 3600},
    # Credential changes sync at once (apps/devices/receivers.py); this catches bulk updates and failed runs.
    {"name": "Sync broker credentials", "task": "apps.devices.tasks.broker_auth_sync_task", "every_seconds": 60},
]
