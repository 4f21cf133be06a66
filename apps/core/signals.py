"""Reacting to changed rows, written once: the receivers behind every in-process cache and the audit log.

The ingest writer advances ``Device.last_seen`` with plain SQL (no signal); a ``save()`` that touches nothing but
such ingest-maintained fields is not a change anyone caches or audits, so seeing a device never invalidates a cache.
"""

from collections.abc import Callable, Iterable

from django.db import models, transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal

# Fields that ingest keeps current; a save limited to them is not a configuration change.
INGEST_MAINTAINED_FIELDS = frozenset({"last_seen"})


# Sent (``sender=<model>``) by a service that wrote rows of a model set-based (``bulk_create``, ``bulk_update``),
# which sends no post_save: the receivers of ``call_on_commit_when_changed`` react to it as to any save.
rows_bulk_changed = Signal()


def saves_only_ingest_fields(update_fields) -> bool:
    """True for ``save(update_fields=...)`` limited to ``INGEST_MAINTAINED_FIELDS``."""
    return update_fields is not None and set(update_fields) <= INGEST_MAINTAINED_FIELDS


def call_on_commit_when_changed(
    model_classes: Iterable[type[models.Model]], callback: Callable[[], object], *, uid: str
) -> None:
    """Call ``callback()`` after the commit of any transaction that saves or deletes a row of ``model_classes``.

    After commit, so a process reloading on the callback reads the new rows, and never for a rolled-back change.
    ``uid`` names the connection (``dispatch_uid``), so connecting twice is harmless.
    """

    def row_changed(sender, update_fields=None, **kwargs):
        if not saves_only_ingest_fields(update_fields):
            transaction.on_commit(callback)

    for model in model_classes:
        post_save.connect(row_changed, sender=model, weak=False, dispatch_uid=f"{uid}-save-{model.__name__}")
        post_delete.connect(row_changed, sender=model, weak=False, dispatch_uid=f"{uid}-delete-{model.__name__}")
        rows_bulk_changed.connect(row_changed, sender=model, weak=False, dispatch_uid=f"{uid}-bulk-{model.__name__}")
