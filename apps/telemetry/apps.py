from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    """Series, readings, latest values and the dead-letter store of rejected input."""

    name = "apps.telemetry"
    label = "telemetry"
