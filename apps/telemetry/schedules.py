"""Periodic jobs of the telemetry app, installed into django-celery-beat by ``manage.py install_schedules``."""

PERIODIC_TASKS = [
    {"name": "Roll up telemetry", "task": "apps.telemetry.tasks.rollups_advance_task", "every_seconds": 30},
    # After rollups: the sites' stored hourly kWh follow the hourly watermark (at most one hour behind it).
    {
        "name": "Refresh sites' hourly energy",
        "task": "apps.telemetry.tasks.site_energy_refresh_task",
        "every_seconds": 60,
    },
    {
        "name": "Archive and expire old telemetry",
        "task": "apps.telemetry.tasks.retention_enforce_task",
        "every_seconds": 3600,
    },
    {"name": "Delete expired exports", "task": "apps.telemetry.tasks.exports_expire_task", "every_seconds": 3600},
    {
        "name": "Purge old dead letters",
        "task": "apps.telemetry.tasks.dead_letters_purge_task",
        "every_seconds": 6 * 3600,
    },
]
