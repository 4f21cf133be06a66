"""What the alerts app tells the apps above it. They connect receivers in their ``AppConfig.ready()``.

``alerts_changed(sender=Alert, alert_ids=[...])`` is sent after the commit of every transaction that opened,
retriggered, cleared, acknowledged or resolved alerts (never for a rolled-back one), with ``send_robust``: a failing
receiver (the dashboard's live fan-out) is logged and never fails the alert change or the ingest flush behind it.
"""

from django.db import transaction
from django.dispatch import Signal

from apps.alerts.models import Alert

alerts_changed = Signal()


def alerts_changed_on_commit(alert_ids: list[int]) -> None:
    """Send ``alerts_changed`` for ``alert_ids`` once the current transaction commits (at once outside one)."""
    alert_ids = list(alert_ids)
    transaction.on_commit(lambda: alerts_changed.send_robust(sender=Alert, alert_ids=alert_ids), robust=True)
