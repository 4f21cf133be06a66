from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Alert rules, their evaluation on every committed ingest batch, alerts and their escalation."""

    name = "apps.alerts"
    label = "alerts"

    def ready(self):
        from apps.alerts import signals  # noqa: F401  (connects the rules cache invalidation)
        from apps.alerts.evaluation import readings_evaluate
        from apps.telemetry.ingest.hooks import on_readings_committed

        on_readings_committed(readings_evaluate)
