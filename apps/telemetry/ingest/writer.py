"""Validated readings -> telemetry_reading, LatestValue and Device.last_seen, one transaction per flush.

This is the hot path, so nothing here runs per reading except building a COPY row:

1. the batch's devices are locked against deletion (``FOR KEY SHARE``, one statement); readings of a device deleted
   since validation are not stored but handed back as refused, so they are reported as ``unknown_device``;
   series ids come from an in-process cache; misses are fetched or created together in at most three statements;
2. the batch is COPYed (binary) into a session-temporary staging table;
3. one statement with data-modifying CTEs inserts the new readings, advances LatestValue and Device.last_seen and
   marks late buckets for the rollups: a plain insert when nothing of the batch is stored yet, else (a redelivery)
   one that skips each repeated (series, ts), so a redelivered message is idempotent;
4. refused input (dead letters) is COPYed in the same transaction, and so is what the caller's ``also`` writes
   (a stateful dialect's state: Sparkplug birth certificates);
5. before the commit, the inserted readings go to the receivers of ``apps.telemetry.signals.readings_storing``
   (what must commit with them: the alert outbox); after it, to those of ``readings_committed``.

Database errors propagate: the caller retries the same batch with backoff and acknowledges only after success,
which the idempotent insert makes safe.
"""

import datetime
import functools
import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.db import IntegrityError, connection, transaction
from psycopg.types.json import Jsonb

from apps.core.db.binary import binary_cursor, binary_execute, logged_statement
from apps.telemetry.ingest.records import CommittedReading, ValidReading
from apps.telemetry.models import Reading
from apps.telemetry.signals import readings_committed, readings_storing

logger = logging.getLogger(__name__)

SeriesKey = tuple[int, str]  # (device_id, metric_key)


@dataclass(slots=True)
class DeadLetterRow:
    """One refused input for telemetry_deadletter. ``payload`` is already truncated by the caller."""

    received_at: datetime.datetime
    source: str
    origin: str
    device_uid: str
    reason: str
    detail: str
    payload: bytes
    payload_size: int
    site_id: int | None = None  # the site the sender is bound to: what scopes the letter to an organization
    context: dict = field(default_factory=dict)  # how to replay it (apps.telemetry.services.replay_context)


@dataclass(slots=True)
class DiscoveryRow:
    """What one flush saw of a device nobody registered, sent by a gateway under the ``discover`` policy."""

    site_id: int
    gateway_id: int
    uid: str
    first_seen: datetime.datetime
    last_seen: datetime.datetime
    messages: int = 0
    metric_keys: set[str] = field(default_factory=set)
    sample: bytes = b""


@dataclass(slots=True)
class WriteResult:
    """What a flush did: readings inserted, readings skipped as already stored, the inserted ones, and the
    devices that no longer existed (none of their readings were stored; they are neither inserted nor duplicates).
    """

    inserted: int
    duplicates: int
    committed: list[CommittedReading] = field(default_factory=list)
    gone_device_ids: frozenset[int] = frozenset()
    gone_readings: int = 0


# ---------------------------------------------------------------------------------------------------------------------
# Series resolution
# ---------------------------------------------------------------------------------------------------------------------

_SERIES_SELECT = """
    SELECT s.id, s.device_id, s.metric_key
    FROM telemetry_series s
    JOIN unnest(%s::bigint[], %s::text[]) AS wanted (device_id, metric_key)
      ON s.device_id = wanted.device_id AND s.metric_key = wanted.metric_key
"""

# Only pairs found missing by a SELECT first: ON CONFLICT still draws a sequence value for every conflicting row,
# and the id is an int4, so re-inserting known series at every process start would burn the id space.
# Sorted, so two processes creating overlapping series lock the unique-index entries in the same order (no
# deadlock). The join skips devices deleted since the directory loaded, instead of failing the flush at commit.
_SERIES_CREATE = """
    INSERT INTO telemetry_series (device_id, metric_key, created_at)
    SELECT wanted.device_id, wanted.metric_key, now()
    FROM unnest(%s::bigint[], %s::text[]) AS wanted (device_id, metric_key)
    JOIN devices_device d ON d.id = wanted.device_id
    ORDER BY wanted.device_id, wanted.metric_key
    ON CONFLICT (device_id, metric_key) DO NOTHING
    RETURNING id, device_id, metric_key
"""


# Held to the end of the flush: a device being deleted (``device_purge`` locks its row first, then removes its history)
# either waits for this flush to commit and then removes what it stored, or has committed and is absent here. KEY
# SHARE does not conflict with the last_seen UPDATE of a concurrent flush. Ordered, so two flushes cannot deadlock.
_DEVICES_LOCK = "SELECT id FROM devices_device WHERE id = ANY(%s::bigint[]) ORDER BY id FOR KEY SHARE"


def _devices_present(cursor, device_ids: list[int]) -> set[int]:
    binary_execute(cursor, _DEVICES_LOCK, [device_ids])
    return {device_id for (device_id,) in cursor.fetchall()}


class SeriesResolver:
    """(device_id, metric_key) -> series id, cached in-process; misses are created set-wise, never one by one.

    Safe with several ingest processes creating the same series at once: INSERT ... ON CONFLICT DO NOTHING waits
    for the other transaction and then skips, and the follow-up SELECT (a new statement, so a new snapshot under
    READ COMMITTED) sees the row the other process committed.

    Ids enter the cache only once the transaction that found or created them has committed (``on_commit``), so an
    id from a rolled-back transaction, which may not exist, is never reused. Readings have no foreign key: such an
    id would silently store readings under a series that does not exist.
    """

    def __init__(self):
        self._ids: dict[SeriesKey, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def clear(self) -> None:
        self._ids.clear()

    def forget_devices(self, device_ids: Iterable[int]) -> None:
        """Drop the cached series of deleted devices (their series were deleted with them)."""
        gone = set(device_ids)
        for pair in [pair for pair in self._ids if pair[0] in gone]:
            del self._ids[pair]

    def resolve(self, pairs: Iterable[SeriesKey]) -> dict[SeriesKey, int]:
        """Series id of each pair, creating missing series. Pairs whose device no longer exists are left out."""
        cached = self._ids
        found = {}
        missing = []
        for pair in pairs:
            series_id = cached.get(pair)
            if series_id is None:
                missing.append(pair)
            else:
                found[pair] = series_id
        if not missing:
            return found

        fetched = self._fetch_or_create(sorted(missing))
        found.update(fetched)
        if connection.in_atomic_block:
            transaction.on_commit(functools.partial(cached.update, fetched))
        else:  # autocommit: the rows are already committed
            cached.update(fetched)
        return found

    @staticmethod
    def _fetch_or_create(pairs: list[SeriesKey]) -> dict[SeriesKey, int]:
        fetched: dict[SeriesKey, int] = {}

        def collect(rows):
            for series_id, device_id, metric_key in rows:
                fetched[device_id, metric_key] = series_id

        def still_missing():
            rest = [pair for pair in pairs if pair not in fetched]
            return [pair[0] for pair in rest], [pair[1] for pair in rest]

        with binary_cursor() as cursor:
            binary_execute(cursor, _SERIES_SELECT, still_missing())
            collect(cursor.fetchall())
            if len(fetched) < len(pairs):
                binary_execute(cursor, _SERIES_CREATE, still_missing())
                collect(cursor.fetchall())
            if len(fetched) < len(pairs):  # created concurrently by another process (or the device is gone)
                binary_execute(cursor, _SERIES_SELECT, still_missing())
                collect(cursor.fetchall())
        if len(fetched) < len(pairs):
            gone = sorted({device_id for device_id, _ in pairs} - {device_id for device_id, _ in fetched})
            logger.warning("Dropping readings of devices that no longer exist: %s", gone)
        return fetched


# ---------------------------------------------------------------------------------------------------------------------
# Staging table
# ---------------------------------------------------------------------------------------------------------------------

# Temporary, so it is private to the session and never WAL-logged; ON COMMIT DELETE ROWS empties it by truncation
# at each commit. Created once per database connection (Django may reconnect, hence the weak set of connections).
# Needs session-level connections: not for use behind a transaction-pooling PgBouncer.
_STAGING_CREATE = """
    CREATE TEMP TABLE IF NOT EXISTS ingest_staging (series_id int4, ts timestamptz, value float8) ON COMMIT DELETE ROWS
"""
_STAGING_COPY = "COPY ingest_staging (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
_STAGING_TYPES = ("int4", "timestamptz", "float8")
_staging_ready: "weakref.WeakSet" = weakref.WeakSet()

# One round trip for the whole batch, in one of two forms sharing everything after the insert. Sub-statements of one
# statement see the same snapshot, so LatestValue, last_seen and the dirty rollup buckets are computed from the
# readings inserted (``{inserted}``), never read back from the table. Rows are inserted in key order so two processes
# inserting overlapping readings take their index locks in the same order.
_FLUSH_TAIL = """
    latest AS (
        INSERT INTO telemetry_latestvalue (series_id, ts, value)
        SELECT DISTINCT ON (series_id) series_id, ts, value FROM {inserted} ORDER BY series_id, ts DESC
        ON CONFLICT (series_id) DO UPDATE SET ts = EXCLUDED.ts, value = EXCLUDED.value
        WHERE telemetry_latestvalue.ts < EXCLUDED.ts
    ),
    seen AS (
        -- A reading ends a death's offline marker (Device.offline_since, a Sparkplug NDEATH/DDEATH).
        UPDATE devices_device SET last_seen = GREATEST(COALESCE(last_seen, '-infinity'), %s), offline_since = NULL
        WHERE id = ANY(%s::bigint[])
    ),
    dirty AS (
        -- A reading behind the 1m rollup watermark marks its 1-minute bucket for the next rollup run (see
        -- apps.telemetry.rollups); in key order, so two flushes marking the same buckets cannot deadlock.
        INSERT INTO telemetry_rollupdirtybucket (series_id, bucket, marked_at)
        SELECT DISTINCT series_id, date_bin('1 minute', ts, '2000-01-01T00:00:00Z'), now() FROM {inserted}
        WHERE ts < (
            SELECT COALESCE(closing_until, rolled_until) FROM telemetry_rollupwatermark WHERE resolution = '1m'
            FOR SHARE
        )
        ORDER BY 1, 2
        ON CONFLICT DO NOTHING
    )
"""

# The usual case: nothing of the batch is stored yet (a redelivery is the exception). A plain INSERT costs half of
# one with ON CONFLICT and RETURNING (measured: 26 vs 54 ms for 20,000 rows, 36 vs 69 ms for the whole statement),
# and when it succeeds every staged reading was inserted. Any stored or repeated key fails it with a unique
# violation instead, inside a savepoint, and the batch goes through _FLUSH_SKIPPING_STORED.
_FLUSH_ALL_NEW = (
    """
    WITH inserted AS (
        INSERT INTO telemetry_reading (series_id, ts, value)
        SELECT series_id, ts, value FROM ingest_staging ORDER BY series_id, ts
    ),"""
    + _FLUSH_TAIL.format(inserted="ingest_staging")
    + "SELECT 1"
)

# A repeated (series, ts) is skipped, so a redelivered message is idempotent. Within the batch the first of two equal
# keys wins, as against a stored one (ctid is the COPY order in a fresh temp table). It returns the keys that were
# NOT inserted rather than the inserted rows: reading back every row of a 50,000-reading flush cost more than the
# insert, and the caller already holds the rows. The one row with a count says how many were inserted: when that is
# every staged row, no key needs looking up.
_FLUSH_SKIPPING_STORED = (
    """
    WITH inserted AS (
        INSERT INTO telemetry_reading (series_id, ts, value)
        SELECT series_id, ts, value FROM ingest_staging ORDER BY series_id, ts, ctid
        ON CONFLICT (series_id, ts) DO NOTHING
        RETURNING series_id, ts, value
    ),"""
    + _FLUSH_TAIL.format(inserted="inserted")
    + """
    SELECT series_id, ts, NULL::int8 FROM (
        SELECT series_id, ts FROM ingest_staging
        EXCEPT
        SELECT series_id, ts FROM inserted
    ) AS not_inserted
    UNION ALL
    SELECT NULL, NULL, count(*) FROM inserted
"""
)

_DEAD_LETTER_COPY = (
    "COPY telemetry_deadletter (received_at, source, origin, device_uid, reason, detail, payload, payload_size, "
    "site_id, context, replay_result, replay_detail) FROM STDIN"
)


def _text(value: str, max_length: int) -> str:
    # Dead letters hold whatever arrived: PostgreSQL text cannot contain NUL, and an over-long value would fail the
    # whole flush (and its retries), taking the good readings down with the bad input.
    return value.replace("\x00", "\ufffd")[:max_length]


# ---------------------------------------------------------------------------------------------------------------------
# The flush
# ---------------------------------------------------------------------------------------------------------------------

_default_resolver = SeriesResolver()


def readings_write(
    readings: Sequence[ValidReading],
    *,
    received_at: datetime.datetime,
    dead_letters: Sequence[DeadLetterRow] = (),
    resolver: SeriesResolver | None = None,
    gone_dead_letters: Callable[[frozenset[int]], Sequence[DeadLetterRow]] | None = None,
    also: Callable[[], None] | None = None,
) -> WriteResult:
    """Store a batch of validated readings and dead letters in one transaction; see the module docstring.

    ``duplicates`` counts readings not inserted because their (series, ts) was stored already or repeated within
    the batch. Readings of devices deleted meanwhile are not stored either; ``gone_dead_letters(device_ids)``, when
    given, returns the dead letters that record them, written in the same transaction. ``readings_committed`` is
    sent after the commit (of the outermost transaction, when called inside one) with exactly the inserted
    readings. ``resolver`` defaults to the process-wide series cache. ``also()``, when given, runs last inside the
    transaction (after the readings, so what it writes about their devices wins) and may register on_commit work.
    """
    resolver = resolver or _default_resolver
    if not readings and not dead_letters and also is None:
        return WriteResult(inserted=0, duplicates=0)

    outermost = not connection.in_atomic_block
    inserted = _Inserted()
    with transaction.atomic(), binary_cursor() as cursor:
        if readings:
            inserted = _readings_insert(cursor, readings, received_at, resolver, outermost)
        if inserted.gone_device_ids and gone_dead_letters is not None:
            dead_letters = [*dead_letters, *gone_dead_letters(inserted.gone_device_ids)]
        if dead_letters:
            _dead_letters_insert(cursor, dead_letters)
        if inserted.committed:
            readings_storing.send_robust(sender=Reading, readings=inserted.committed)
            transaction.on_commit(
                functools.partial(readings_committed.send_robust, sender=Reading, readings=inserted.committed)
            )
        if inserted.gone_device_ids:
            transaction.on_commit(functools.partial(resolver.forget_devices, inserted.gone_device_ids))
        if also is not None:
            also()
    if outermost and inserted.staged:
        _staging_ready.add(connection.connection)  # the staging table survived a real commit
    committed = inserted.committed
    return WriteResult(
        inserted=len(committed),
        duplicates=len(readings) - len(committed) - inserted.gone_readings,
        committed=committed,
        gone_device_ids=inserted.gone_device_ids,
        gone_readings=inserted.gone_readings,
    )


@dataclass(slots=True)
class _Inserted:
    staged: bool = False  # the staging table was used (and so exists on this connection after a commit)
    committed: list[CommittedReading] = field(default_factory=list)
    gone_device_ids: frozenset[int] = frozenset()
    gone_readings: int = 0


def _readings_insert(cursor, readings, received_at, resolver, outermost) -> _Inserted:
    pairs = {(r.device_id, r.metric_key) for r in readings}
    wanted_devices = {device_id for device_id, _ in pairs}
    gone = frozenset(wanted_devices - _devices_present(cursor, sorted(wanted_devices)))
    gone_readings = 0
    if gone:
        logger.warning("Refusing readings of devices deleted since validation: %s", sorted(gone))
        pairs = {pair for pair in pairs if pair[0] not in gone}
        gone_readings = sum(1 for r in readings if r.device_id in gone)
    series_ids = resolver.resolve(pairs)
    if not series_ids:
        return _Inserted(gone_device_ids=gone, gone_readings=gone_readings)

    if connection.connection not in _staging_ready or not outermost:
        # Inside an outer transaction (tests, a caller's atomic) the table may be rolled back with it, and rows
        # of an earlier call in the same transaction are still there: ON COMMIT has not happened yet.
        binary_execute(cursor, _STAGING_CREATE)
        if not outermost:
            binary_execute(cursor, "DELETE FROM ingest_staging")

    staged: list[CommittedReading] = []  # what the insert commits when nothing was stored before
    append = staged.append
    with logged_statement(_STAGING_COPY), cursor.copy(_STAGING_COPY) as copy:
        copy.set_types(_STAGING_TYPES)
        write_row = copy.write_row
        get_series_id = series_ids.get
        for device_id, metric_key, ts, value in readings:
            series_id = get_series_id((device_id, metric_key))
            if series_id is not None:
                write_row((series_id, ts, value))
                append(CommittedReading(series_id, device_id, metric_key, ts, value))

    # Every device of the batch was seen, also one that only repeated readings already stored.
    device_ids = sorted({device_id for device_id, _ in series_ids})
    try:
        with transaction.atomic():  # a savepoint: a stored or repeated key undoes this statement only
            binary_execute(cursor, _FLUSH_ALL_NEW, [received_at, device_ids])
        return _Inserted(True, staged, gone, gone_readings)
    except IntegrityError:
        pass  # some of it is stored already: the staged rows are still there for the statement that skips them
    binary_execute(cursor, _FLUSH_SKIPPING_STORED, [received_at, device_ids])
    rows = cursor.fetchall()
    if next(count for _, _, count in rows if count is not None) == len(staged):
        return _Inserted(True, staged, gone, gone_readings)

    # The inserted readings are the staged ones minus those stored before, and minus repeats within the batch
    # (of equal keys the first one staged was inserted, see _FLUSH_SKIPPING_STORED).
    stored_before = {(series_id, ts) for series_id, ts, count in rows if count is None}
    committed = []
    seen = set()
    for reading in staged:
        key = (reading.series_id, reading.ts)
        if key in stored_before or key in seen:
            continue
        seen.add(key)
        committed.append(reading)
    return _Inserted(True, committed, gone, gone_readings)


def _dead_letters_insert(cursor, dead_letters: Sequence[DeadLetterRow]) -> None:
    with logged_statement(_DEAD_LETTER_COPY), cursor.copy(_DEAD_LETTER_COPY) as copy:
        for row in dead_letters:
            copy.write_row(
                (
                    row.received_at,
                    _text(row.source, 8),
                    _text(row.origin, 300),
                    _text(row.device_uid, 128),
                    _text(row.reason, 32),
                    _text(row.detail, 500),
                    bytes(row.payload),
                    row.payload_size,
                    row.site_id,
                    Jsonb(row.context),
                    "",
                    "",
                )
            )


# ---------------------------------------------------------------------------------------------------------------------
# Client attributes
# ---------------------------------------------------------------------------------------------------------------------

# One statement for the batch, in device-id order (the order flushes lock device rows in). A key sent again replaces
# the stored value; keys not sent are kept. Admin-entered metadata beside client_attributes is never touched.
_ATTRIBUTES_MERGE = """
    UPDATE devices_device d
    SET metadata = jsonb_set(
        COALESCE(d.metadata, '{}'::jsonb),
        '{client_attributes}',
        COALESCE(d.metadata -> 'client_attributes', '{}'::jsonb) || u.attributes
    )
    FROM unnest(%s::bigint[], %s::jsonb[]) AS u (id, attributes)
    WHERE d.id = u.id
"""


def client_attributes_write(updates: dict[int, dict]) -> None:
    """Merge each device's reported attributes into ``metadata["client_attributes"]`` (one statement)."""
    device_ids = sorted(updates)
    with binary_cursor() as cursor:
        binary_execute(cursor, _ATTRIBUTES_MERGE, [device_ids, [Jsonb(updates[device_id]) for device_id in device_ids]])


# ---------------------------------------------------------------------------------------------------------------------
# Discovered devices
# ---------------------------------------------------------------------------------------------------------------------

# One statement for the flush's discoveries, in (site, uid) order (the unique index's, so two listeners cannot
# deadlock). Counts add up, the metric keys are the union (bounded), the sample is the latest. A site or gateway
# deleted since the directory loaded drops the row or its gateway rather than failing the flush on a foreign key.
_DISCOVERIES_UPSERT = """
    INSERT INTO devices_discovereddevice
        (site_id, gateway_id, uid, first_seen, last_seen, message_count, metric_keys, sample_payload)
    SELECT site.id, (SELECT id FROM devices_gateway WHERE id = d.gateway_id), d.uid, d.first_seen, d.last_seen,
           d.messages, ARRAY(SELECT jsonb_array_elements_text(d.metric_keys)), d.sample
    FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::bigint[],
                %s::jsonb[], %s::bytea[])
         AS d (site_id, gateway_id, uid, first_seen, last_seen, messages, metric_keys, sample)
    JOIN devices_site site ON site.id = d.site_id
    ORDER BY d.site_id, d.uid
    ON CONFLICT (site_id, uid) DO UPDATE SET
        gateway_id = COALESCE(EXCLUDED.gateway_id, devices_discovereddevice.gateway_id),
        first_seen = LEAST(devices_discovereddevice.first_seen, EXCLUDED.first_seen),
        last_seen = GREATEST(devices_discovereddevice.last_seen, EXCLUDED.last_seen),
        message_count = devices_discovereddevice.message_count + EXCLUDED.message_count,
        metric_keys = ARRAY(
            SELECT DISTINCT key FROM unnest(devices_discovereddevice.metric_keys || EXCLUDED.metric_keys) AS key
            ORDER BY key LIMIT %s
        ),
        sample_payload = EXCLUDED.sample_payload
"""


def discoveries_write(rows: Sequence[DiscoveryRow], *, metric_keys_max: int) -> None:
    """Record a flush's discovered devices (one statement); see ``_DISCOVERIES_UPSERT``."""
    rows = sorted(rows, key=lambda row: (row.site_id, row.uid))
    columns = [
        [row.site_id for row in rows],
        [row.gateway_id for row in rows],
        [row.uid for row in rows],
        [row.first_seen for row in rows],
        [row.last_seen for row in rows],
        [row.messages for row in rows],
        [Jsonb(sorted(row.metric_keys)[:metric_keys_max]) for row in rows],
        [row.sample for row in rows],
    ]
    with binary_cursor() as cursor:
        binary_execute(cursor, _DISCOVERIES_UPSERT, [*columns, metric_keys_max])
