from django.apps import AppConfig


class AuditConfig(AppConfig):
    """The audit log: who did what, when, from where, to which object (with before/after for configuration)."""

    name = "apps.audit"
    label = "audit"

    def ready(self):
        from apps.audit import signals  # noqa: F401  (connects login and configuration-change recording)
