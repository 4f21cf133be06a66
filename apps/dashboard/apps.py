from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The operator dashboard: server-rendered pages over the permission-scoped selectors of the other apps."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "apps.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"

    def ready(self):
        from apps.dashboard import receivers  # noqa: F401  (live fan-out of committed readings and alert changes)
