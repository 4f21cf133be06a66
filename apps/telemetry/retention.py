"""Retention: archive raw days that expire, then drop them; drop expired 1-minute and 5-minute rollups.

Raw readings are kept ``RAW_RETENTION_DAYS`` (90), or ``DeviceType.raw_retention_days`` for the devices of a type
that overrides it, so the cutoff differs per series. Device types are grouped by their effective retention and each
group is handled with its own cutoff: the start of the UTC day ``retention`` days ago, so only whole UTC days
expire and every deleted reading belongs to a complete archived day.

For each site and expired day that still has readings of the group:

1. ``archive_day`` writes the site's whole day (every device type) unless this run archived it already. If the
   day was archived in an earlier run (a longer per-type retention expiring later, or a restored day) the file is
   re-written merged with the old one, so no reading of it is ever lost and late ones are included;
2. only if that succeeded are the group's readings of the day deleted. A failed archive write is logged and the
   day kept, to be tried again at the next run.

Deletion on plain PostgreSQL is by key in batches of ``DELETE_BATCH_SIZE`` rows, each batch its own transaction:
ingest only inserts new keys, so it never waits for retention, and no transaction lives long enough to hold back
vacuum. On TimescaleDB the default group's days are dropped as whole chunks (``drop_chunks``): instant, no dead
tuples. That is only possible when no device type keeps readings longer than the default (a chunk holds every
series), and the drop stops before the first day that could not be archived or is held after a restore.

A restored day (``ArchivedDay.restored_at``) is older than retention by definition, so the next run would delete it
again; days restored in the last ``RESTORE_HOLD_DAYS`` (7) days are skipped, which gives an operator a week to look
at them. Restore again to extend the hold.

Rollups: ``ROLLUP_RETENTION_DAYS`` (1m: 30 days, 5m: 365 days; 1h and 1d kept) are enforced by the same bounded
batches. They are derived data and are not archived.
"""

import datetime
import logging
from collections import defaultdict

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.core.db import timescale
from apps.core.retention import rows_purge
from apps.devices.models import DeviceType, Site
from apps.telemetry.archive import archive_day, day_bounds
from apps.telemetry.models import ArchivedDay, DeadLetter, Reading, Rollup1d, Rollup1h, Rollup1m, Rollup5m, Series
from apps.telemetry.queries import series_cache_invalidate

logger = logging.getLogger(__name__)

DELETE_BATCH_SIZE = 10_000
RESTORE_HOLD_DAYS = 7

_ROLLUP_MODELS = {"1m": Rollup1m, "5m": Rollup5m, "1h": Rollup1h, "1d": Rollup1d}


def _utc_midnight(moment: datetime.datetime) -> datetime.datetime:
    moment = moment.astimezone(datetime.UTC)
    return datetime.datetime.combine(moment.date(), datetime.time.min, tzinfo=datetime.UTC)


# ---------------------------------------------------------------------------------------------------------------------
# Bounded deletes
# ---------------------------------------------------------------------------------------------------------------------

# By key, not ctid: on a TimescaleDB hypertable ctids repeat across chunks. ``series_id = ANY(...)`` lets every
# batch find its rows through the (series_id, ts|bucket) primary key, one short index range per series, however
# large the table; a bare ``ts < cutoff`` would scan the heap from the start in every batch.
_DELETE_BATCH = """
    DELETE FROM {table} t
    USING (
        SELECT series_id, {time} FROM {table}
        WHERE series_id = ANY({series}) AND {time} >= %s AND {time} < %s
        LIMIT %s
    ) victim
    WHERE t.series_id = victim.series_id AND t.{time} = victim.{time}
"""


def _delete_batched(
    *, table: str, time_column: str, series_sql: str, params: list, start, end, batch_size: int
) -> tuple[int, int]:
    """Delete rows of ``table`` with ``start <= time < end`` of the given series, ``batch_size`` rows per
    transaction. Returns (rows deleted, batches)."""
    sql = _DELETE_BATCH.format(table=table, time=time_column, series=series_sql)
    deleted = batches = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [*params, start, end, batch_size])
            count = cursor.rowcount
        deleted += count
        batches += 1
        if count < batch_size:
            return deleted, batches


# ---------------------------------------------------------------------------------------------------------------------
# Raw readings
# ---------------------------------------------------------------------------------------------------------------------


def _retention_groups() -> dict[int, list[int]]:
    """Effective raw retention in days -> the device types that have it."""
    default = settings.RAW_RETENTION_DAYS
    groups: dict[int, list[int]] = defaultdict(list)
    for type_id, days in DeviceType.objects.values_list("id", "raw_retention_days"):
        groups[days if days is not None else default].append(type_id)
    return dict(groups)


# Per site, the oldest reading of the group's series; min(ts) per series is one probe of the primary key.
_FIRST_READINGS = """
    SELECT d.site_id, min(first.ts)
    FROM telemetry_series s
    JOIN devices_device d ON d.id = s.device_id
    CROSS JOIN LATERAL (SELECT min(r.ts) AS ts FROM telemetry_reading r WHERE r.series_id = s.id) first
    WHERE d.device_type_id = ANY(%s) AND first.ts < %s
    GROUP BY d.site_id
    ORDER BY d.site_id
"""
_DAY_HAS_READINGS = "SELECT EXISTS (SELECT 1 FROM telemetry_reading WHERE series_id = ANY(%s) AND ts >= %s AND ts < %s)"


def retention_enforce(*, now: datetime.datetime | None = None, batch_size: int = DELETE_BATCH_SIZE) -> dict:
    """Archive and delete expired raw days, drop expired rollups; return what was done (see the module docstring).

    Must run outside a transaction (the Celery task does) for the per-batch commits to take effect.
    """
    now = now or timezone.now()
    default_days = settings.RAW_RETENTION_DAYS
    groups = _retention_groups()
    hold_since = now - datetime.timedelta(days=RESTORE_HOLD_DAYS)
    figures = {
        "archived_days": 0,
        "archived_rows": 0,
        "deleted_readings": 0,
        "delete_batches": 0,
        "dropped_chunks": 0,
        "skipped_restored_days": 0,
        "failed_days": 0,
        "rollups_deleted": {},
    }

    use_chunks = False
    if default_days in groups and all(days <= default_days for days in groups):
        with connection.cursor() as cursor:
            use_chunks = timescale.extension_version(cursor) is not None and timescale.is_hypertable(
                cursor, Reading._meta.db_table
            )

    sites = {site.id: site for site in Site.objects.all()}
    archived_now: set[tuple[int, datetime.date]] = set()
    blocked: list[datetime.date] = []  # days that must survive: archive failed, or held after a restore
    chunk_deletes: list[tuple[list[int], datetime.date]] = []  # the default group's days, on TimescaleDB

    for days, type_ids in sorted(groups.items()):
        cutoff = _utc_midnight(now - datetime.timedelta(days=days))
        with connection.cursor() as cursor:
            cursor.execute(_FIRST_READINGS, [type_ids, cutoff])
            firsts = cursor.fetchall()
        for site_id, first_ts in firsts:
            site = sites[site_id]
            series_ids = list(
                Series.objects.filter(device__site_id=site_id, device__device_type_id__in=type_ids).values_list(
                    "id", flat=True
                )
            )
            archived = {
                entry.day: entry
                for entry in ArchivedDay.objects.filter(
                    site_id=site_id, day__gte=first_ts.date(), day__lt=cutoff.date()
                )
            }
            day = first_ts.astimezone(datetime.UTC).date()
            while day < cutoff.date():
                start, end = day_bounds(day)
                with connection.cursor() as cursor:
                    cursor.execute(_DAY_HAS_READINGS, [series_ids, start, end])
                    has_readings = cursor.fetchone()[0]
                entry = archived.get(day)
                if not has_readings:
                    pass
                elif entry is not None and entry.restored_at is not None and entry.restored_at >= hold_since:
                    figures["skipped_restored_days"] += 1
                    blocked.append(day)
                elif _archive(site, day, entry, archived_now, figures):
                    if use_chunks and days == default_days:
                        chunk_deletes.append((series_ids, day))
                    else:
                        deleted, batches = _delete_batched(
                            table=Reading._meta.db_table,
                            time_column="ts",
                            series_sql="%s::int[]",
                            params=[series_ids],
                            start=start,
                            end=end,
                            batch_size=batch_size,
                        )
                        figures["deleted_readings"] += deleted
                        figures["delete_batches"] += batches
                else:
                    blocked.append(day)
                day += datetime.timedelta(days=1)

    if use_chunks:
        _drop_default_days(now, default_days, blocked, chunk_deletes, batch_size, figures)
    figures["rollups_deleted"] = rollups_retention_enforce(now=now, batch_size=batch_size)
    if figures["deleted_readings"] or figures["dropped_chunks"] or any(figures["rollups_deleted"].values()):
        series_cache_invalidate()  # cached answers (and their ETags) of ranges over the dropped days
    logger.info("Retention: %s", figures)
    return figures


def _archive(site, day, entry, archived_now, figures) -> bool:
    """Make sure the day's archive holds every reading about to be deleted; False (logged) when it cannot."""
    if (site.id, day) in archived_now:
        return True
    try:
        # An archive from an earlier run may lack readings that arrived since: re-write it, merged (force).
        written = archive_day(site=site, day=day, force=entry is not None)
    except Exception:
        logger.exception("Could not archive site %s on %s; its readings are kept", site.id, day)
        figures["failed_days"] += 1
        return False
    archived_now.add((site.id, day))
    figures["archived_days"] += 1
    figures["archived_rows"] += written.rows
    return True


def _drop_default_days(now, default_days, blocked, chunk_deletes, batch_size, figures) -> None:
    """TimescaleDB: drop whole chunks up to the default cutoff, or to the first day that must be kept; the archived
    days after such a day are deleted in batches instead."""
    older_than = min([_utc_midnight(now - datetime.timedelta(days=default_days)), *map(_day_start, blocked)])
    with transaction.atomic(), connection.cursor() as cursor:
        figures["dropped_chunks"] = timescale.drop_chunks(cursor, table=Reading._meta.db_table, older_than=older_than)
    for series_ids, day in chunk_deletes:
        start, end = day_bounds(day)
        if start < older_than:
            continue
        deleted, batches = _delete_batched(
            table=Reading._meta.db_table,
            time_column="ts",
            series_sql="%s::int[]",
            params=[series_ids],
            start=start,
            end=end,
            batch_size=batch_size,
        )
        figures["deleted_readings"] += deleted
        figures["delete_batches"] += batches


def _day_start(day: datetime.date) -> datetime.datetime:
    return day_bounds(day)[0]


# ---------------------------------------------------------------------------------------------------------------------
# Rollups
# ---------------------------------------------------------------------------------------------------------------------


def rollups_retention_enforce(*, now: datetime.datetime | None = None, batch_size: int = DELETE_BATCH_SIZE) -> dict:
    """Delete rollup buckets older than ``ROLLUP_RETENTION_DAYS`` (whole UTC days) in bounded batches.

    Returns rows deleted per resolution with a retention.
    """
    now = now or timezone.now()
    deleted = {}
    for resolution, days in settings.ROLLUP_RETENTION_DAYS.items():
        if days is None:
            continue
        cutoff = _utc_midnight(now - datetime.timedelta(days=days))
        deleted[resolution], _ = _delete_batched(
            table=_ROLLUP_MODELS[resolution]._meta.db_table,
            time_column="bucket",
            series_sql="ARRAY(SELECT id FROM telemetry_series)",
            params=[],
            start=datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC),
            end=cutoff,
            batch_size=batch_size,
        )
    return deleted


# ---------------------------------------------------------------------------------------------------------------------
# Dead letters
# ---------------------------------------------------------------------------------------------------------------------
def dead_letters_purge(*, now: datetime.datetime | None = None) -> int:
    """Delete dead letters older than ``DEAD_LETTER_RETENTION_DAYS`` in bounded batches; return how many.

    A flood of bad input (a misconfigured gateway sending garbage every second) must not fill the disk: the dead
    letters are for diagnosing, and the rejection counters keep the long-term picture.
    """
    cutoff = (now or timezone.now()) - datetime.timedelta(days=settings.DEAD_LETTER_RETENTION_DAYS)
    return rows_purge(DeadLetter.objects.filter(received_at__lt=cutoff))
