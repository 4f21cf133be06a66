"""At-least-once alert evaluation: an outbox row per ingest flush, written in the flush's transaction.

Evaluating after the readings commit (in the ingest process, within milliseconds) keeps alerts fast, but on its own
it is at most once: a deadlock that exhausts its retries, a bug, the database blinking between the two commits or
the process dying there, and the flush is never evaluated - an alert that should open never does. So:

1. ``pending_record`` receives ``readings_storing`` inside the flush's transaction and stores the readings that
   some rule covers (usually a small part of the flush; nothing at all when no rule covers any) as one
   ``PendingEvaluation`` row, in a savepoint so that its failure can never fail ingest;
2. once the flush commits, ``pending_evaluate`` evaluates those readings in ONE transaction that begins by deleting
   the row: the alert transitions and the row's removal commit together or not at all, so a batch is applied
   exactly once however often it is attempted;
3. a failed attempt leaves the row; ``pending_sweep`` (beat, every ``ALERT_EVALUATION_SWEEP_SECONDS``) evaluates rows
   older than ``ALERT_EVALUATION_SWEEP_GRACE_SECONDS`` the same way, and after ``ALERT_EVALUATION_MAX_ATTEMPTS``
   failures leaves the row for an operator (admin: Pending alert evaluations), logged and counted.

The live attempt and the sweep never apply the same row twice: the live one deletes it first (the sweep's
``FOR UPDATE SKIP LOCKED`` passes over a row being deleted), and the sweep locks it first (the live DELETE then
waits, and finds nothing). A batch evaluated late by the sweep is treated like late data: a reading older than the
alert's last trigger neither retriggers nor clears it (see ``apps.alerts.evaluation``).
"""

import datetime
import functools
import logging
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.alerts.evaluation import Outcome, batch_evaluate
from apps.alerts.metrics import EVALUATIONS_ABANDONED, EVALUATIONS_DEFERRED, EVALUATIONS_SWEPT
from apps.alerts.models import PendingEvaluation
from apps.alerts.rules_cache import RulesIndex, rules_cache
from apps.core.db.binary import binary_cursor, binary_execute
from apps.telemetry.ingest.records import CommittedReading

logger = logging.getLogger(__name__)

_RECORD = f"""
    INSERT INTO {PendingEvaluation._meta.db_table}
        (created_at, attempts, last_error, series_ids, device_ids, metric_keys, timestamps, "values")
    VALUES (now(), 0, '', %s::int4[], %s::int8[], %s::varchar[], %s::timestamptz[], %s::float8[])
    RETURNING id
"""
_CLAIM = f"DELETE FROM {PendingEvaluation._meta.db_table} WHERE id = %s RETURNING id"
_CLAIM_AGED = f"""
    DELETE FROM {PendingEvaluation._meta.db_table}
    WHERE id = (SELECT id FROM {PendingEvaluation._meta.db_table} WHERE id = %s FOR UPDATE SKIP LOCKED)
    RETURNING series_ids, device_ids, metric_keys, timestamps, "values"
"""


def covered_readings(readings: list[CommittedReading], index: RulesIndex) -> list[CommittedReading]:
    """The readings some rule looks at: a metric rule of the series, or a no-data rule of the device."""
    metric_rules, no_data_rules = index.metric_rules, index.no_data_rules
    if not metric_rules and not no_data_rules:
        return []
    return [r for r in readings if (r.device_id, r.metric_key) in metric_rules or r.device_id in no_data_rules]


def pending_record(readings: list[CommittedReading], *, evaluated: Callable[[Outcome], None]) -> int | None:
    """In the flush's transaction: record the covered readings as pending and evaluate them once it commits, then
    hand the outcome to ``evaluated``. Returns the row's id (None when no rule covers any reading)."""
    index = rules_cache.index()
    covered = covered_readings(readings, index)
    if not covered:
        return None
    columns = [list(column) for column in zip(*covered, strict=True)]
    try:
        with transaction.atomic(), binary_cursor() as cursor:  # a savepoint: a failure here must not fail ingest
            binary_execute(cursor, _RECORD, columns)
            (pending_id,) = cursor.fetchone()
    except Exception:
        # Ingest goes on; these readings are evaluated once, right after the commit, as before the outbox existed.
        logger.exception("could not record %d readings for alert evaluation; evaluating them once", len(covered))
        pending_id = None
    transaction.on_commit(functools.partial(pending_evaluate, pending_id, covered, index, evaluated), robust=True)
    return pending_id


def pending_evaluate(
    pending_id: int | None, readings: list[CommittedReading], index, evaluated: Callable[[Outcome], None]
) -> Outcome | None:
    """Right after the flush committed: evaluate and delete the pending row in one transaction. On failure the row
    stays for the sweep (logged and counted); None then, or when the sweep got there first."""
    try:
        with transaction.atomic():
            if pending_id is not None:
                with binary_cursor() as cursor:
                    binary_execute(cursor, _CLAIM, [pending_id])
                    if cursor.fetchone() is None:
                        return None  # the sweep evaluated it already
            outcome = batch_evaluate(readings, index=index)
    except Exception:
        EVALUATIONS_DEFERRED.inc()
        logger.exception("alert evaluation of %d readings failed; the sweep will retry it", len(readings))
        return None
    evaluated(outcome)
    return outcome


def pending_sweep(*, now: datetime.datetime | None = None, limit: int = 100) -> dict:
    """Beat: evaluate pending rows older than the grace period (their live attempt failed, or its process died).

    Each row in its own transaction; a failure counts an attempt on the row and goes on with the next.
    ``escalation_due`` in the figures: a new alert's first escalation step is due (the caller kicks a run).
    """
    now = now or timezone.now()
    grace = datetime.timedelta(seconds=settings.ALERT_EVALUATION_SWEEP_GRACE_SECONDS)
    max_attempts = settings.ALERT_EVALUATION_MAX_ATTEMPTS
    aged = list(
        PendingEvaluation.objects.filter(created_at__lt=now - grace, attempts__lt=max_attempts)
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
    figures = {"evaluated": 0, "failed": 0, "abandoned": 0, "opened": 0, "escalation_due": False}
    index = rules_cache.index() if aged else None
    for pending_id in aged:
        try:
            with transaction.atomic():
                with binary_cursor() as cursor:
                    binary_execute(cursor, _CLAIM_AGED, [pending_id])
                    row = cursor.fetchone()
                if row is None:
                    continue  # being evaluated right now, or done
                readings = [CommittedReading(*reading) for reading in zip(*row, strict=True)]
                outcome = batch_evaluate(readings, index=index)
        except Exception as error:  # noqa: BLE001 - whatever failed, the row stays and counts an attempt
            figures["failed"] += 1
            PendingEvaluation.objects.filter(pk=pending_id).update(
                attempts=F("attempts") + 1, last_error=repr(error)[:2000]
            )
            if PendingEvaluation.objects.filter(pk=pending_id, attempts__gte=max_attempts).exists():
                figures["abandoned"] += 1
                EVALUATIONS_ABANDONED.inc()
                logger.error("alert evaluation %s failed %d times; left for an operator", pending_id, max_attempts)
            else:
                logger.warning("alert evaluation %s failed again: %r", pending_id, error)
            continue
        figures["evaluated"] += 1
        figures["opened"] += len(outcome.opened)
        EVALUATIONS_SWEPT.inc()
        figures["escalation_due"] = figures["escalation_due"] or outcome.escalation_due
    return figures
