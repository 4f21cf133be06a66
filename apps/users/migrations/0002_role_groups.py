from django.contrib.auth.management import create_permissions
from django.db import migrations

# What each role may do in the Django admin, by model. Site scope is added per user with object permissions.
ADMIN_PERMISSIONS = {
    "devices": {
        "site": ("view", "add", "change", "delete", "operate"),
        "devicetype": ("view", "add", "change", "delete"),
        "metricdefinition": ("view", "add", "change", "delete"),
        "gateway": ("view", "add", "change", "delete"),
        "device": ("view", "add", "change", "delete"),
        "apikey": ("view", "add", "change"),
    },
    "telemetry": {
        "series": ("view",),
        "latestvalue": ("view",),
        "deadletter": ("view",),
    },
    "users": {"user": ("view", "add", "change"), "organization": ("view",)},
}


def create_role_groups(apps, schema_editor):
    # Permissions are normally created after all migrations; the admin role needs them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role in ("admin", "operator", "viewer"):
        Group.objects.get_or_create(name=role)

    admin = Group.objects.get(name="admin")
    for app_label, models in ADMIN_PERMISSIONS.items():
        for model, actions in models.items():
            codenames = [f"{action}_{model}" if action != "operate" else "operate_site" for action in actions]
            admin.permissions.add(*Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames))


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0001_initial"),
        ("devices", "0001_initial"),
        ("telemetry", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_role_groups, migrations.RunPython.noop)]
