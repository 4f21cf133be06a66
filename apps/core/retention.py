"""Deleting what has outlived its retention, written once: in short batches, so a first purge after months neither
holds locks for minutes nor writes one huge burst of WAL.

Each app owns what it keeps and for how long (a setting, a beat job); this only does the deleting.
"""

from django.db import models, transaction


def rows_purge(queryset: models.QuerySet, *, batch_size: int = 5000, max_batches: int = 1000) -> int:
    """Delete the rows of ``queryset`` ``batch_size`` primary keys at a time, each batch its own transaction;
    return how many rows were deleted (cascades not counted). ``max_batches`` bounds one run; the next continues."""
    deleted = 0
    model = queryset.model
    for _ in range(max_batches):
        with transaction.atomic():
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            _, by_model = model._base_manager.filter(pk__in=ids).delete()
        deleted += by_model.get(model._meta.label, 0)
        if len(ids) < batch_size:
            break
    return deleted
