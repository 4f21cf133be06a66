"""What telemetry tells the apps above it. They connect receivers in their ``AppConfig.ready()``.

``readings_storing(sender=Reading, readings=[CommittedReading, ...])`` is sent by the ingest writer once per flush
*inside* the flush's transaction, after its readings were inserted and before the commit, with exactly the readings
being inserted. A receiver may write in that transaction what must commit (or roll back) with the readings - an
outbox row for work that must happen at least once (alert evaluation) - and register ``transaction.on_commit``
work. It runs on the ingest hot path: one statement at most, no per-reading queries. It is sent with
``send_robust``, and a receiver that writes must do so in a savepoint of its own, so that its failure never fails
the flush.

``readings_committed(sender=Reading, readings=[CommittedReading, ...])`` is sent by the ingest writer once per
flush, after the flush's transaction has committed (never for a rolled-back one), with exactly the readings that
were inserted (duplicates are not repeated). The dashboard's live fan-out receives it. Receivers run synchronously
in the ingest process, so they must be quick (enqueue work, publish to a channel group) and must not assume an
order between them. It is sent with ``send_robust``: a receiver that raises is logged (by django.dispatch, with its
traceback) and skipped; it never affects ingest or the other receivers. Nothing sent after a commit survives a
crash of the process: work that must not be lost belongs behind ``readings_storing``.

``devices_liveness_changed(sender=Device, changes=[LivenessChange, ...])`` is sent after the commit of a flush in
which devices announced their own state: a Sparkplug birth (online) or death (offline at once, not after the type's
timeout; ``Device.offline_since`` is set in that transaction). The dashboard pushes it live. Same rules as
``readings_committed``: synchronous, quick, ``send_robust``.

``export_progressed(sender=ExportJob, export_id=UUID, user_id=int)`` is sent by ``exports.export_run`` after each
write of an export job's state: claimed (running), each series written (progress, rows), done or failed. Those
writes are autocommitted, so a receiver reads what a poller of the export API would. The dashboard pushes it to the
job's owner. Same rules as ``readings_committed``: synchronous, quick, ``send_robust`` (a failed push never fails
the export; the page still sees the job's state on reload or by polling).
"""

from typing import NamedTuple

from django.dispatch import Signal


class LivenessChange(NamedTuple):
    device_id: int
    uid: str
    site_id: int
    online: bool
    at: float  # epoch seconds: when the message saying so was received


readings_storing = Signal()
readings_committed = Signal()
devices_liveness_changed = Signal()
export_progressed = Signal()
