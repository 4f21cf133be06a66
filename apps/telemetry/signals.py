"""What telemetry tells the apps above it. They connect receivers in their ``AppConfig.ready()``.

``readings_committed(sender=Reading, readings=[CommittedReading, ...])`` is sent by the ingest writer once per
flush, after the flush's transaction has committed (never for a rolled-back one), with exactly the readings that
were inserted (duplicates are not repeated). Alert evaluation and the dashboard's live fan-out receive it.
Receivers run synchronously in the ingest process, so they must be quick (enqueue work, publish to a channel group)
and must not assume an order between them. It is sent with ``send_robust``: a receiver that raises is logged
(by django.dispatch, with its traceback) and skipped; it never affects ingest or the other receivers.
"""

from django.dispatch import Signal

readings_committed = Signal()
