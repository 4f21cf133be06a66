"""Cache invalidation: any change to the ingest catalogue tells the ingest processes to reload it.

Only after commit, so a reloading process reads the new rows, and never for a rolled-back change. The ingest writer
advances ``Device.last_seen`` with plain SQL (no signal); a save that touches nothing but ``last_seen`` is ignored
here too, so seeing a device never invalidates the catalogue.
"""

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from apps.devices.models import Device, DeviceType, Gateway, MetricDefinition
from apps.telemetry.ingest.directory import catalogue_changed

CATALOGUE_MODELS = (Device, DeviceType, MetricDefinition, Gateway)
NOT_CATALOGUE_FIELDS = frozenset({"last_seen"})


def catalogue_row_changed(sender, update_fields=None, **kwargs):
    if update_fields is not None and set(update_fields) <= NOT_CATALOGUE_FIELDS:
        return
    transaction.on_commit(catalogue_changed)


for model in CATALOGUE_MODELS:
    post_save.connect(catalogue_row_changed, sender=model, dispatch_uid=f"catalogue-save-{model.__name__}")
    post_delete.connect(catalogue_row_changed, sender=model, dispatch_uid=f"catalogue-delete-{model.__name__}")
