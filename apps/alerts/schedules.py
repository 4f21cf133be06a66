"""Periodic jobs of the alerts engine, installed into django-celery-beat by ``manage.py install_schedules``."""

PERIODIC_TASKS = [
    # Every 10 s: a no-data or *for* alert opens at most 10 s after it is due (the issue asks for 30 s or better).
    {
        "name": "Evaluate alert timers (no data, for durations)",
        "task": "apps.alerts.tasks.alerts_evaluate_timers_task",
        "every_seconds": 10,
    },
    # Every 10 s: an escalation step runs at most 10 s after it is due; claims make overlapping runs harmless.
    {
        "name": "Escalate unacknowledged alerts",
        "task": "apps.alerts.tasks.escalations_run_task",
        "every_seconds": 10,
    },
    # Every 30 s: an ingest flush whose alert evaluation failed, or whose process died before it, is evaluated at
    # most ALERT_EVALUATION_SWEEP_GRACE_SECONDS + 30 s after its commit.
    {
        "name": "Sweep pending alert evaluations",
        "task": "apps.alerts.tasks.pending_evaluations_sweep_task",
        "every_seconds": 30,
    },
    {
        "name": "Purge old alert history and deliveries",
        "task": "apps.alerts.tasks.alert_history_purge_task",
        "every_seconds": 6 * 3600,
    },
]
