"""What happens after readings are committed: a tiny in-process subscriber registry.

The writer calls ``readings_committed`` once per flush, after the flush's transaction has committed (never for a
rolled-back one), with exactly the readings that were inserted (duplicates are not repeated). Alert evaluation and
live updates plug in here with ``@on_readings_committed``. Subscribers run synchronously in the ingest process, so
they must be quick (enqueue work, publish to a channel group) and must not assume anything about ordering between
them. One that raises is logged and skipped: it never affects ingest or the other subscribers.
"""

import datetime
import logging
from collections.abc import Callable
from typing import NamedTuple

logger = logging.getLogger(__name__)


class CommittedReading(NamedTuple):
    """A reading that is now durably stored (inserted by this flush, not a duplicate). A tuple for speed, as
    ValidReading."""

    series_id: int
    device_id: int
    metric_key: str
    ts: datetime.datetime
    value: float


Subscriber = Callable[[list[CommittedReading]], object]

_subscribers: list[Subscriber] = []


def on_readings_committed(fn: Subscriber) -> Subscriber:
    """Register ``fn`` to be called with each flush's committed readings; usable as a decorator. Idempotent."""
    if fn not in _subscribers:
        _subscribers.append(fn)
    return fn


def readings_committed(readings: list[CommittedReading]) -> None:
    """Call every subscriber with ``readings``. Called after the flush's commit; alerts and live updates plug in here.

    A failing subscriber is logged with its traceback and the others still run; nothing propagates to the writer.
    """
    for fn in tuple(_subscribers):
        try:
            fn(readings)
        except Exception:
            logger.exception("readings_committed subscriber %r failed on %d readings", fn, len(readings))
