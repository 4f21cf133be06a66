"""Organization admins see discovered devices in the admin (and adopt or delete them, apps.telemetry.admin)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADMIN_PERMISSIONS = {"devices": {"discovereddevice": ("view", "delete")}}


def grant_admin_group(apps, schema_editor):
    app_config = apps.get_app_config("devices")  # permissions are created after all migrations; needed now
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    admin, _ = Group.objects.get_or_create(name="admin")
    for app_label, models in ADMIN_PERMISSIONS.items():
        for model, actions in models.items():
            codenames = [f"{action}_{model}" for action in actions]
            admin.permissions.add(*Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [("devices", "0009_discovery"), ("users", "0002_role_groups")]

    operations = [migrations.RunPython(grant_admin_group, migrations.RunPython.noop)]
