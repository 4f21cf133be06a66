from django.apps import AppConfig


class UsersConfig(AppConfig):
    """Users, organizations (tenants) and roles."""

    name = "apps.users"
    label = "users"

    def ready(self):
        from apps.users import receivers  # noqa: F401  (login throttling, the pending second factor)
