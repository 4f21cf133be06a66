from django.contrib.auth.management import create_permissions
from django.db import migrations

ALERTS_MODELS = (
    "notificationchannel",
    "escalationpolicy",
    "escalationstep",
    "alertrule",
    "alert",
    "alertevent",
    "rulecondition",
    "delivery",
)


def grant_admin_group(apps, schema_editor):
    # Permissions are normally created after all migrations; the admin role needs them now (as users.0002 does).
    app_config = apps.get_app_config("alerts")
    app_config.models_module = True
    create_permissions(app_config, verbosity=0, apps=apps)
    app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    admin, _ = Group.objects.get_or_create(name="admin")
    codenames = [f"{action}_{model}" for model in ALERTS_MODELS for action in ("add", "change", "delete", "view")]
    admin.permissions.add(*Permission.objects.filter(content_type__app_label="alerts", codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0001_initial"),
        ("users", "0002_role_groups"),
    ]

    operations = [migrations.RunPython(grant_admin_group, migrations.RunPython.noop)]
