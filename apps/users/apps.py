from django.apps import AppConfig


class UsersConfig(AppConfig):
    """Users, organizations (tenants) and roles."""

    name = "apps.users"
    label = "users"
