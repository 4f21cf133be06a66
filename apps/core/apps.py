from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Cross-cutting pieces: the database backend, health checks and the doctor command."""

    name = "apps.core"
    label = "core"
