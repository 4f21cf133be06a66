from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The operator dashboard: server-rendered pages over the permission-scoped selectors of the other apps."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"

    def ready(self):
        # Registers the live fan-out with the ingest hook (readings) and provides alert_changed (alert events).
        from apps.dashboard import fanout  # noqa: F401
