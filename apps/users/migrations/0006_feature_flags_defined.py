"""The flags the product checks (apps/core/flags.py), created off so they are there to switch on in the admin."""

from django.db import migrations

FLAGS = {
    "dialect_line_protocol": "Accept InfluxDB line protocol payloads.",
    "dialect_senml": "Accept SenML (RFC 8428) payloads.",
    "dialect_sparkplug": "Accept Sparkplug B payloads.",
    "dialect_thingsboard": "Accept the ThingsBoard gateway API's payloads.",
    "discovery_auto_register": "Let gateways with the auto-register policy create unknown devices.",
}


def create_flags(apps, schema_editor):
    flag_model = apps.get_model("waffle", "Flag")
    for name, note in FLAGS.items():
        flag_model.objects.get_or_create(name=name, defaults={"everyone": None, "note": note})


class Migration(migrations.Migration):
    dependencies = [("users", "0005_feature_flag_organizations")]

    operations = [migrations.RunPython(create_flags, migrations.RunPython.noop)]
