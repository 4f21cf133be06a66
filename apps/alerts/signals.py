"""Cache invalidation only: a change to rules, or to the devices, sites and metrics they cover and name, tells
every ingest process to reload its rules index (apps.alerts.rules_cache), after commit and never for a rollback.

The ingest writer advances ``Device.last_seen`` with plain SQL; a save touching nothing but ``last_seen`` is ignored
here too, so seeing a device never invalidates the rules.
"""

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from apps.alerts.models import AlertRule
from apps.alerts.rules_cache import rules_changed
from apps.devices.models import Device, MetricDefinition, Site

RULES_INDEX_MODELS = (AlertRule, Device, Site, MetricDefinition)
NOT_INDEXED_FIELDS = frozenset({"last_seen"})


def rules_row_changed(sender, update_fields=None, **kwargs):
    if update_fields is not None and set(update_fields) <= NOT_INDEXED_FIELDS:
        return
    transaction.on_commit(rules_changed)


for model in RULES_INDEX_MODELS:
    post_save.connect(rules_row_changed, sender=model, dispatch_uid=f"alert-rules-save-{model.__name__}")
    post_delete.connect(rules_row_changed, sender=model, dispatch_uid=f"alert-rules-delete-{model.__name__}")
