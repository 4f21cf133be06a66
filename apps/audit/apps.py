from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The audit log: who did what, when, from where, to which object (with before/after for configuration)."""

    name = "apps.audit"
    label = "audit"

    def ready(self):
        from apps.audit import receivers  # noqa: F401  (connects requested, login and configuration-change recording)
