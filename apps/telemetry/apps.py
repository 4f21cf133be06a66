from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    """Series, readings, latest values and the dead-letter store of rejected input."""

    name = "apps.telemetry"
    label = "telemetry"

    def ready(self):
        from apps.telemetry import receivers  # noqa: F401  (catalogue invalidation, purged devices' history)
