"""``manage.py secrets_reencrypt``: re-encrypt every stored secret under the first of ``FIELDWATCH_SECRET_KEYS``.

Rotation: put the new key first (keeping the old one after it), run this, then remove the old key. Every model
field of type ``EncryptedTextField`` in any installed app is covered, one UPDATE per row that has a value.
"""

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.core.encryption import EncryptedTextField


class Command(BaseCommand):
    help = "Re-encrypt stored secrets under the first FIELDWATCH_SECRET_KEYS key (run after adding a new key)."

    def handle(self, *args, **options):
        for model in apps.get_models():
            fields = [field for field in model._meta.concrete_fields if isinstance(field, EncryptedTextField)]
            for field in fields:
                rewritten = 0
                with transaction.atomic():
                    # The field decrypts with whichever key matches; writing the plaintext back through it
                    # encrypts under the first.
                    rows = model._base_manager.exclude(**{field.name: ""}).values_list("pk", field.name)
                    for pk, plaintext in rows.iterator():
                        rewritten += model._base_manager.filter(pk=pk).update(**{field.name: plaintext})
                self.stdout.write(f"{model._meta.label}.{field.name}: {rewritten} re-encrypted")
