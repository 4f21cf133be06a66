from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Alert rules, their evaluation on every committed ingest batch, alerts and their escalation."""

    name = "apps.alerts"
    label = "alerts"

    def ready(self):
        from apps.alerts import receivers  # noqa: F401  (evaluation of committed readings, rules cache invalidation)
