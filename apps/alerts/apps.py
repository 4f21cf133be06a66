from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Alert rules, alerts and escalation (models arrive with the alerts issue)."""

    name = "apps.alerts"
    label = "alerts"
