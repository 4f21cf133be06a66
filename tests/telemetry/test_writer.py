"""The ingest writer on real PostgreSQL: idempotent COPY flushes, LatestValue, last_seen, dead letters, and the
readings_committed signal."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import DatabaseError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from apps.alerts.rules_cache import rules_cache
from apps.devices.services import device_purge
from apps.telemetry.choices import IngestSource, RejectReason
from apps.telemetry.ingest.records import CommittedReading, ValidReading
from apps.telemetry.ingest.writer import DeadLetterRow, SeriesResolver, readings_write
from apps.telemetry.models import DeadLetter, LatestValue, Reading, Series
from apps.telemetry.signals import readings_committed
from tests.devices.factories import DeviceFactory

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2025, 3, 1, 12, 5, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def device(db):
    return DeviceFactory(uid="hp-1")


@pytest.fixture
def other_device(db):
    return DeviceFactory(uid="hp-2")


@pytest.fixture
def resolver():
    """A fresh series cache per test, as a fresh process would have."""
    return SeriesResolver()


@pytest.fixture
def committed(monkeypatch):
    """Only this test's receiver on ``readings_committed`` (alert evaluation and live fan-out set aside); the list
    of batches it received."""
    monkeypatch.setattr(readings_committed, "receivers", [])
    calls = []

    def receiver(sender, readings, **kwargs):
        calls.append(readings)

    readings_committed.connect(receiver, weak=False)
    return calls


def write(readings, resolver, **kwargs):
    kwargs.setdefault("received_at", RECEIVED)
    return readings_write(readings, resolver=resolver, **kwargs)


def stored(device) -> dict:
    return {
        (row.series.metric_key, row.ts): row.value
        for row in Reading.objects.filter(series__device=device).select_related("series")
    }


def dead_letter(**overrides) -> DeadLetterRow:
    fields = {
        "received_at": RECEIVED,
        "source": IngestSource.MQTT,
        "origin": "fieldwatch/v1/devices/hp-9/telemetry",
        "device_uid": "hp-9",
        "reason": RejectReason.UNKNOWN_DEVICE,
        "detail": "Device is not registered",
        "payload": b'{"values": {"t": 1}}\x00\xff',
        "payload_size": 22,
    }
    return DeadLetterRow(**{**fields, **overrides})


# --- storing -------------------------------------------------------------------------------------------------------


def test_readings_are_stored_with_their_values(device, other_device, resolver):
    readings = [
        ValidReading(device.id, "supply_temp", at(0), 41.5),
        ValidReading(device.id, "supply_temp", at(60), 42.0),
        ValidReading(device.id, "power", at(0), 3.2),
        ValidReading(other_device.id, "supply_temp", at(0), -7.25),
    ]

    result = write(readings, resolver)

    assert (result.inserted, result.duplicates) == (4, 0)
    assert stored(device) == {("supply_temp", at(0)): 41.5, ("supply_temp", at(60)): 42.0, ("power", at(0)): 3.2}
    assert stored(other_device) == {("supply_temp", at(0)): -7.25}
    assert Series.objects.count() == 3


def test_the_same_batch_again_inserts_nothing_and_counts_duplicates(device, resolver):
    readings = [ValidReading(device.id, "supply_temp", at(i), float(i)) for i in range(5)]
    write(readings, resolver)

    again = write([ValidReading(r.device_id, r.metric_key, r.ts, r.value + 100) for r in readings], resolver)

    assert (again.inserted, again.duplicates, again.committed) == (0, 5, [])
    assert Reading.objects.count() == 5
    assert stored(device)[("supply_temp", at(4))] == 4.0  # the first stored value stays


def test_a_reading_repeated_within_one_batch_is_stored_once_first_value_wins(device, resolver):
    readings = [
        ValidReading(device.id, "supply_temp", at(0), 1.0),
        ValidReading(device.id, "supply_temp", at(1), 2.0),
        ValidReading(device.id, "supply_temp", at(0), 99.0),
    ]

    result = write(readings, resolver)

    assert (result.inserted, result.duplicates) == (2, 1)
    assert stored(device) == {("supply_temp", at(0)): 1.0, ("supply_temp", at(1)): 2.0}


def test_an_empty_batch_writes_nothing(device, resolver, django_assert_num_queries):
    with django_assert_num_queries(0):
        result = write([], resolver)
    assert (result.inserted, result.duplicates, result.committed) == (0, 0, [])


def test_readings_of_a_device_deleted_since_validation_are_refused_not_counted_as_duplicates(device, resolver):
    gone = DeviceFactory()
    gone_id = gone.id
    gone.delete()

    result = write([ValidReading(gone_id, "t", at(0), 1.0), ValidReading(device.id, "t", at(0), 2.0)], resolver)

    assert (result.inserted, result.duplicates, result.gone_readings) == (1, 0, 1)
    assert result.gone_device_ids == {gone_id}
    assert not Series.objects.filter(device_id=gone_id).exists()


def test_a_deleted_device_whose_series_is_cached_gets_no_orphan_readings(device, resolver):
    """The series cache outlives the device: without the device check its readings would land in a deleted series."""
    doomed = DeviceFactory()
    write([ValidReading(doomed.id, "t", at(0), 1.0)], resolver)
    (series_id,) = Series.objects.filter(device_id=doomed.id).values_list("id", flat=True)
    device_purge(device=doomed)

    result = write([ValidReading(doomed.id, "t", at(1), 2.0)], resolver)

    assert (result.inserted, result.duplicates, result.gone_readings) == (0, 0, 1)
    assert not Reading.objects.filter(series_id=series_id).exists()
    assert (doomed.id, "t") not in resolver._ids  # forgotten once the flush committed


def test_readings_of_a_deleted_device_become_the_dead_letters_the_caller_names_in_the_same_transaction(
    device, resolver
):
    gone = DeviceFactory()
    gone_id = gone.id
    gone.delete()
    asked = []

    def letters(device_ids):
        asked.append(device_ids)
        return [DeadLetterRow(at(0), "mqtt", "t", "gone", "unknown_device", "deleted", b"{}", 2)]

    readings_write(
        [ValidReading(gone_id, "t", at(0), 1.0)], received_at=at(0), resolver=resolver, gone_dead_letters=letters
    )

    assert asked == [{gone_id}]
    assert list(DeadLetter.objects.values_list("reason", "device_uid")) == [("unknown_device", "gone")]


# --- LatestValue and last_seen -------------------------------------------------------------------------------------


def test_latest_value_advances_to_the_newest_reading_and_never_back(device, resolver):
    write([ValidReading(device.id, "t", at(10), 1.0), ValidReading(device.id, "t", at(20), 2.0)], resolver)
    series = Series.objects.get(device=device, metric_key="t")
    assert (series.latest.ts, series.latest.value) == (at(20), 2.0)

    # A late reading older than the stored latest value is stored but does not regress it.
    result = write([ValidReading(device.id, "t", at(15), 1.5)], resolver)
    assert result.inserted == 1
    latest = LatestValue.objects.get(series=series)
    assert (latest.ts, latest.value) == (at(20), 2.0)

    write([ValidReading(device.id, "t", at(30), 3.0), ValidReading(device.id, "t", at(25), 2.5)], resolver)
    latest.refresh_from_db()
    assert (latest.ts, latest.value) == (at(30), 3.0)


def test_a_duplicate_does_not_move_latest_value(device, resolver):
    write([ValidReading(device.id, "t", at(20), 2.0)], resolver)
    write([ValidReading(device.id, "t", at(20), 99.0)], resolver)
    assert LatestValue.objects.get().value == 2.0


def test_last_seen_advances_to_the_flush_time_and_never_back(device, other_device, resolver):
    write([ValidReading(device.id, "t", at(0), 1.0)], resolver, received_at=RECEIVED)
    device.refresh_from_db()
    other_device.refresh_from_db()
    assert device.last_seen == RECEIVED
    assert other_device.last_seen is None

    write([ValidReading(device.id, "t", at(1), 1.0)], resolver, received_at=RECEIVED - timedelta(minutes=1))
    device.refresh_from_db()
    assert device.last_seen == RECEIVED

    # Repeating stored readings still shows the device is alive.
    later = RECEIVED + timedelta(minutes=1)
    write([ValidReading(device.id, "t", at(0), 1.0)], resolver, received_at=later)
    device.refresh_from_db()
    assert device.last_seen == later


# --- dead letters --------------------------------------------------------------------------------------------------


def test_dead_letters_are_stored_with_their_payload_bytes(device, resolver):
    result = write(
        [ValidReading(device.id, "t", at(0), 1.0)],
        resolver,
        dead_letters=[dead_letter(), dead_letter(device_uid="", reason=RejectReason.UNPARSEABLE, payload=b"\x00")],
    )

    assert result.inserted == 1
    letters = {letter.reason: letter for letter in DeadLetter.objects.all()}
    assert set(letters) == {RejectReason.UNKNOWN_DEVICE, RejectReason.UNPARSEABLE}
    unknown = letters[RejectReason.UNKNOWN_DEVICE]
    assert bytes(unknown.payload) == b'{"values": {"t": 1}}\x00\xff'
    assert (unknown.source, unknown.origin, unknown.device_uid) == (
        "mqtt",
        "fieldwatch/v1/devices/hp-9/telemetry",
        "hp-9",
    )
    assert (unknown.received_at, unknown.payload_size) == (RECEIVED, 22)
    assert bytes(letters[RejectReason.UNPARSEABLE].payload) == b"\x00"


def test_dead_letters_alone_are_written(db, resolver):
    result = write([], resolver, dead_letters=[dead_letter()])
    assert (result.inserted, result.duplicates) == (0, 0)
    assert DeadLetter.objects.count() == 1


def test_dead_letter_text_that_postgresql_would_refuse_is_made_storable(db, resolver):
    write([], resolver, dead_letters=[dead_letter(device_uid="bad\x00uid", detail="x" * 2000)])
    letter = DeadLetter.objects.get()
    assert letter.device_uid == "bad\ufffduid"
    assert len(letter.detail) == 500


# --- readings_committed -----------------------------------------------------------------------------------------------


def test_readings_committed_is_sent_once_after_commit_with_exactly_the_inserted_readings(
    device, resolver, committed, django_capture_on_commit_callbacks
):
    calls = committed
    write([ValidReading(device.id, "t", at(0), 1.0)], resolver)  # stored before: a duplicate below
    calls.clear()

    with django_capture_on_commit_callbacks(execute=True):
        result = write([ValidReading(device.id, "t", at(0), 5.0), ValidReading(device.id, "t", at(1), 2.0)], resolver)
        assert calls == []  # not before the commit

    series_id = Series.objects.get(device=device).id
    assert calls == [[CommittedReading(series_id, device.id, "t", at(1), 2.0)]]
    assert result.committed == calls[0]


def test_readings_committed_is_not_sent_when_nothing_was_inserted(
    device, resolver, committed, django_capture_on_commit_callbacks
):
    calls = committed
    write([ValidReading(device.id, "t", at(0), 1.0)], resolver)

    calls.clear()

    with django_capture_on_commit_callbacks(execute=True):
        write([ValidReading(device.id, "t", at(0), 1.0)], resolver)

    assert calls == []


def test_readings_committed_is_not_sent_when_the_caller_transaction_rolls_back(
    device, resolver, committed, django_capture_on_commit_callbacks
):
    calls = committed

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(RuntimeError):  # noqa: SIM117
        with transaction.atomic():
            write([ValidReading(device.id, "t", at(0), 1.0)], resolver)
            raise RuntimeError("the caller fails after the write")

    assert (callbacks, calls) == ([], [])
    assert not Reading.objects.exists()


def test_a_failing_statement_rolls_back_the_whole_flush_and_propagates(
    device, resolver, committed, django_capture_on_commit_callbacks
):
    calls = committed

    with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(DatabaseError):
        # payload_size is a PositiveIntegerField: the CHECK constraint fails the dead-letter COPY.
        write([ValidReading(device.id, "t", at(0), 1.0)], resolver, dead_letters=[dead_letter(payload_size=-1)])

    assert (callbacks, calls) == ([], [])
    assert not Reading.objects.exists()
    assert not Series.objects.exists()
    assert len(resolver) == 0  # no id from the rolled-back transaction is kept
    device.refresh_from_db()
    assert device.last_seen is None

    # The connection is usable and the batch goes through on retry.
    with django_capture_on_commit_callbacks(execute=True):
        assert write([ValidReading(device.id, "t", at(0), 1.0)], resolver).inserted == 1
    assert len(calls) == 1


def test_a_raising_receiver_neither_breaks_the_writer_nor_the_other_receivers(
    device, resolver, committed, django_capture_on_commit_callbacks, caplog
):
    def broken(sender, readings, **kwargs):
        raise ValueError("receiver bug")

    readings_committed.connect(broken, weak=False)  # connected after the fixture's: order must not matter
    readings_committed.receivers.reverse()
    calls = committed

    with django_capture_on_commit_callbacks(execute=True):
        result = write([ValidReading(device.id, "t", at(0), 1.0)], resolver)

    assert result.inserted == 1
    assert len(calls) == 1
    assert "receiver bug" in caplog.text
    assert Reading.objects.count() == 1


# --- query counts --------------------------------------------------------------------------------------------------


def batch(devices, count: int, start: int = 0) -> list[ValidReading]:
    """``count`` readings spread over 5 series per device."""
    series = [(d.id, f"m{k}") for d in devices for k in range(5)]
    return [ValidReading(*series[i % len(series)], at(start + i // len(series)), float(i)) for i in range(count)]


def test_flush_query_count_is_a_constant_independent_of_batch_size(
    device, other_device, resolver, django_capture_on_commit_callbacks
):
    devices = [device, other_device]
    # The alert rules' index (read by a receiver of every flush) is loaded once per process, its first load a SELECT:
    # loaded before, so that the list below is the writer's own whichever test ran first.
    rules_cache.index()
    with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as cold:
        write(batch(devices, 10), resolver)
    # Cold: savepoint, the devices' lock, series SELECT + INSERT, staging CREATE + DELETE (inside the test's
    # transaction), COPY, the flush statement in its own savepoint, release. Django's debug cursor logs a COPY like
    # any query.
    assert [q["sql"].split()[0] for q in cold] == [
        "SAVEPOINT",
        "SELECT",
        "SELECT",
        "INSERT",
        "CREATE",
        "DELETE",
        "COPY",
        "SAVEPOINT",
        "WITH",
        "RELEASE",
        "RELEASE",
    ]

    with CaptureQueriesContext(connection) as small:
        assert write(batch(devices, 10, start=1000), resolver).inserted == 10
    with CaptureQueriesContext(connection) as large:
        assert write(batch(devices, 1000, start=2000), resolver).inserted == 1000
    with CaptureQueriesContext(connection) as with_dead_letters:
        write(batch(devices, 1000, start=5000), resolver, dead_letters=[dead_letter()] * 50)

    assert len(small) == len(large) == 9, [q["sql"] for q in large]  # warm: no series queries
    assert len(with_dead_letters) == 10
    assert sum("COPY ingest_staging" in q["sql"] for q in large) == 1


def test_outside_a_transaction_the_staging_table_is_created_once_per_connection(transactional_db, resolver):
    device = DeviceFactory()
    write(batch([device], 10), resolver)

    with CaptureQueriesContext(connection) as warm:
        write(batch([device], 10, start=100), resolver)

    assert [q["sql"].split()[0] for q in warm] == ["BEGIN", "SELECT", "COPY", "SAVEPOINT", "WITH", "RELEASE", "COMMIT"]


def test_a_batch_with_one_stored_reading_falls_back_to_skipping_it_and_stores_the_rest(transactional_db, resolver):
    """The all-new insert fails on the stored key; its savepoint is undone and the skipping statement stores the rest
    exactly once, with LatestValue from the newest reading and the stored one counted as a duplicate."""
    device = DeviceFactory()
    readings = batch([device], 20)
    write(readings[5:6], resolver)

    with CaptureQueriesContext(connection) as fallback:
        result = write(readings, resolver)

    assert (result.inserted, result.duplicates) == (19, 1)
    stored = (readings[5].metric_key, readings[5].ts)
    assert stored not in {(r.metric_key, r.ts) for r in result.committed}
    assert Reading.objects.count() == 20
    newest = max(readings, key=lambda r: r.ts)
    assert LatestValue.objects.get(series__metric_key=newest.metric_key).ts == newest.ts
    statements = [" ".join(q["sql"].split()[:3]) for q in fallback]
    after_copy = statements[statements.index(next(s for s in statements if s.startswith("SAVEPOINT"))) :]
    assert [s.split()[0] for s in after_copy] == ["SAVEPOINT", "WITH", "ROLLBACK", "RELEASE", "WITH", "COMMIT"]
    assert after_copy[2].startswith("ROLLBACK TO SAVEPOINT")  # the statement, not the transaction


# --- series resolution ---------------------------------------------------------------------------------------------


def test_series_resolution_is_idempotent_across_processes(device, other_device):
    pairs = {(device.id, "t"), (device.id, "p"), (other_device.id, "t")}
    first, second = SeriesResolver(), SeriesResolver()

    ids = first.resolve(pairs)
    assert second.resolve(pairs) == ids
    assert second.resolve(pairs | {(other_device.id, "p")}).keys() == pairs | {(other_device.id, "p")}
    assert Series.objects.count() == 4


def test_series_are_cached_only_after_commit(device, resolver, django_assert_num_queries):
    with transaction.atomic():
        resolver.resolve({(device.id, "t")})
    assert len(resolver) == 0  # the test's transaction has not committed

    with django_assert_num_queries(1):  # found by the SELECT, no insert
        resolver.resolve({(device.id, "t")})


def test_two_processes_creating_the_same_series_concurrently_agree(transactional_db):
    """Process A creates the series and holds its transaction; B's insert waits, then finds A's rows."""
    device = DeviceFactory()
    pairs = {(device.id, f"m{k}") for k in range(20)}
    results = {}
    a_inserted, b_started = threading.Event(), threading.Event()

    def process_a():
        try:
            with transaction.atomic():
                results["a"] = SeriesResolver().resolve(pairs)
                a_inserted.set()
                b_started.wait(5)
                threading.Event().wait(0.3)  # let B block on our uncommitted rows
        finally:
            connections.close_all()

    def process_b():
        try:
            a_inserted.wait(5)
            with transaction.atomic():
                b_started.set()
                started = time.monotonic()
                results["b"] = SeriesResolver().resolve(pairs)
                results["b_waited"] = time.monotonic() - started
        finally:
            connections.close_all()

    threads = [threading.Thread(target=process_a), threading.Thread(target=process_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert results["b_waited"] >= 0.25  # B's insert really waited for A's uncommitted rows
    assert results["a"] == results["b"]
    assert len(results["a"]) == 20
    assert Series.objects.filter(device=device).count() == 20


def test_a_purge_during_a_flush_waits_for_it_and_removes_what_it_stored(transactional_db):
    """The flush holds its devices against deletion until it commits; the purge then deletes its readings too."""
    device = DeviceFactory()
    flushed, purge_started = threading.Event(), threading.Event()
    results = {}

    def flush():
        try:
            with transaction.atomic():
                results["flush"] = readings_write(
                    [ValidReading(device.id, "t", at(0), 1.0)], received_at=at(0), resolver=SeriesResolver()
                )
                flushed.set()
                purge_started.wait(5)
                threading.Event().wait(0.5)  # the purge must be waiting on us now
        finally:
            connections.close_all()

    def purge():
        try:
            flushed.wait(5)
            purge_started.set()
            started = time.monotonic()
            results["purged"] = device_purge(device=device)
            results["purge_waited"] = time.monotonic() - started
        finally:
            connections.close_all()

    threads = [threading.Thread(target=flush), threading.Thread(target=purge)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)

    assert results["flush"].inserted == 1
    assert results["purge_waited"] >= 0.4
    assert results["purged"] == 1  # the reading the flush committed went with its device
    assert not Reading.objects.exists() and not Series.objects.exists()
