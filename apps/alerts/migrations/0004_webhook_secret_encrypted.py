from django.db import migrations

import apps.core.encryption


def encrypt_stored_secrets(apps, schema_editor):
    """Rows written before encryption hold plaintext, which the field reads as it is; writing it back through the
    field stores it encrypted."""
    NotificationChannel = apps.get_model("alerts", "NotificationChannel")
    for channel_id, plaintext in NotificationChannel.objects.exclude(webhook_secret="").values_list(
        "id", "webhook_secret"
    ):
        NotificationChannel.objects.filter(id=channel_id).update(webhook_secret=plaintext)


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0003_rule_bounds"),
    ]

    operations = [
        migrations.AlterField(
            model_name="notificationchannel",
            name="webhook_secret",
            field=apps.core.encryption.EncryptedTextField(
                blank=True,
                help_text="Webhook: the HMAC-SHA256 key the receiver verifies signatures with (stored encrypted).",
                max_length=128,
            ),
        ),
        migrations.RunPython(encrypt_stored_secrets, migrations.RunPython.noop),
    ]
