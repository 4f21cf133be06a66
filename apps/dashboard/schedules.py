"""Periodic jobs of the dashboard, installed into django-celery-beat by ``manage.py install_schedules``."""

PERIODIC_TASKS = [
    # Every 15 s: a device that went silent shows "Offline" live at most 15 s after its timeout passed.
    {
        "name": "Publish devices gone offline",
        "task": "apps.dashboard.tasks.devices_offline_publish_task",
        "every_seconds": 15,
    },
]
