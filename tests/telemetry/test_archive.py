import datetime
import gzip
import hashlib
import json

import pytest
from django.core.management import CommandError, call_command

from apps.telemetry.archive import archive_day
from apps.telemetry.models import ArchivedDay, Reading, Series
from tests.devices.factories import DeviceFactory
from tests.support.archive import UTC, add_readings, day_file, read_archive, use_archive_storage
from tests.telemetry.factories import SeriesFactory

DAY = datetime.date(2025, 3, 30)  # the European DST switch: bounds stay UTC
START = datetime.datetime(2025, 3, 30, tzinfo=UTC)


@pytest.fixture
def two_series(site_a):
    device = DeviceFactory(site=site_a, uid="hp-01")
    return [SeriesFactory(device=device, metric_key="flow_temp"), SeriesFactory(device=device, metric_key="power")]


@pytest.fixture
def archive_storage(settings, tmp_path):
    return use_archive_storage(settings, tmp_path)


def day_timestamps(count: int) -> list[datetime.datetime]:
    # The first and the last microsecond of the day, and odd microseconds between.
    inside = [START + datetime.timedelta(seconds=i * 317, microseconds=i * 7919 % 1_000_000) for i in range(count)]
    return [START, *inside[1:-1], START + datetime.timedelta(days=1, microseconds=-1)]


def test_archive_holds_exactly_the_sites_readings_of_the_utc_day(archive_storage, site_a, site_b, two_series):
    expected = []
    for series in two_series:
        expected += add_readings(series, day_timestamps(40))
        # Neighbouring days are not part of it.
        add_readings(series, [START - datetime.timedelta(microseconds=1), START + datetime.timedelta(days=1)], seed=1)
    add_readings(SeriesFactory(device=DeviceFactory(site=site_b)), day_timestamps(5))  # another site

    archived = archive_day(site=site_a, day=DAY)

    header, rows = read_archive(day_file(archive_storage, site_a.id, DAY))
    assert header == ["device_uid", "metric", "ts", "value"]
    assert rows == sorted(expected)  # every value bit-identical, timestamps to the microsecond, sorted
    assert archived.rows == len(expected) == 80
    with gzip.open(day_file(archive_storage, site_a.id, DAY), "rt") as handle:
        handle.readline()
        assert handle.readline().split(",")[2] == "2025-03-30T00:00:00.000000Z"


def test_manifest_and_database_row_describe_the_file(archive_storage, site_a, two_series):
    add_readings(two_series[0], day_timestamps(30))

    archived = archive_day(site=site_a, day=DAY)

    content = day_file(archive_storage, site_a.id, DAY).read_bytes()
    manifest_file = day_file(archive_storage, site_a.id, DAY).with_name("30.manifest.json")
    manifest = json.loads(manifest_file.read_text())
    assert manifest["sha256"] == archived.sha256 == hashlib.sha256(content).hexdigest()
    assert manifest["file_size"] == archived.file_size == len(content)
    assert manifest["rows"] == archived.rows == 30
    assert manifest["columns"] == ["device_uid", "metric", "ts", "value"]
    assert manifest["file"] == archived.file_name == f"archive/readings/{site_a.id}/2025/03/30.csv.gz"
    assert datetime.datetime.fromisoformat(manifest["created_at"]) == archived.created_at
    assert ArchivedDay.objects.get(site=site_a, day=DAY).created_at == archived.created_at


def test_archiving_an_unchanged_day_again_does_nothing(archive_storage, site_a, two_series):
    add_readings(two_series[0], day_timestamps(10))
    first = archive_day(site=site_a, day=DAY)
    path = day_file(archive_storage, site_a.id, DAY)
    path.write_bytes(path.read_bytes())  # a later re-write would change the modification time
    mtime = path.stat().st_mtime_ns

    again = archive_day(site=site_a, day=DAY)

    assert (again.pk, again.created_at, again.sha256) == (first.pk, first.created_at, first.sha256)
    assert path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in path.parent.iterdir()) == ["30.csv.gz", "30.manifest.json"]


def test_rearchiving_adds_late_readings_and_keeps_rows_deleted_since(archive_storage, site_a, two_series):
    early = add_readings(two_series[0], day_timestamps(10))
    archive_day(site=site_a, day=DAY)
    # A shorter retention deleted one series' readings; late readings of the other arrived.
    Reading.objects.filter(series=two_series[0]).delete()
    late = add_readings(two_series[1], day_timestamps(6)[1:-1], seed=2)

    archived = archive_day(site=site_a, day=DAY)

    _, rows = read_archive(day_file(archive_storage, site_a.id, DAY))
    assert rows == sorted(early + late)
    assert archived.rows == 14
    assert sorted(p.name for p in day_file(archive_storage, site_a.id, DAY).parent.iterdir()) == [
        "30.csv.gz",
        "30.manifest.json",
    ]


def test_restore_round_trip_restores_exactly_the_archived_rows(archive_storage, site_a, two_series, capsys):
    expected = []
    for series in two_series:
        expected += add_readings(series, day_timestamps(25))
    archive_day(site=site_a, day=DAY)
    Reading.objects.filter(series__in=two_series).delete()
    two_series[1].delete()  # a series gone since is re-created from (device uid, metric)
    kept_other_day = add_readings(two_series[0], [START + datetime.timedelta(days=2)])

    call_command("archive_restore", f"--site={site_a.id}", f"--day={DAY}")

    assert "Restored 50 readings" in capsys.readouterr().out
    restored = {
        (r.series.device.uid, r.series.metric_key, r.ts, r.value)
        for r in Reading.objects.select_related("series__device").filter(series__device__site=site_a)
    }
    assert restored == set(expected + kept_other_day)
    assert Series.objects.filter(device__uid="hp-01", metric_key="power").exists()
    assert ArchivedDay.objects.get(site=site_a, day=DAY).restored_at is not None


def test_restoring_twice_is_harmless(archive_storage, site_a, two_series, capsys):
    add_readings(two_series[0], day_timestamps(12))
    archive_day(site=site_a, day=DAY)
    Reading.objects.all().delete()
    call_command("archive_restore", f"--site={site_a.id}", f"--day={DAY}")
    before = set(Reading.objects.values_list("series_id", "ts", "value"))

    call_command("archive_restore", f"--site={site_a.id}", f"--day={DAY}")

    assert "Restored 0 readings" in capsys.readouterr().out.splitlines()[-2]
    assert set(Reading.objects.values_list("series_id", "ts", "value")) == before
    assert len(before) == 12


def test_restore_refuses_a_file_that_differs_from_its_manifest(archive_storage, site_a, two_series):
    add_readings(two_series[0], day_timestamps(12))
    archive_day(site=site_a, day=DAY)
    Reading.objects.all().delete()
    path = day_file(archive_storage, site_a.id, DAY)
    text = gzip.decompress(path.read_bytes()).decode()
    path.write_bytes(gzip.compress(text.replace(",", ",1", 1).encode()))  # a well-formed but altered file

    with pytest.raises(CommandError, match="does not match its manifest"):
        call_command("archive_restore", f"--site={site_a.id}", f"--day={DAY}")

    assert not Reading.objects.exists()
    assert ArchivedDay.objects.get(site=site_a, day=DAY).restored_at is None


def test_restore_without_database_row_trusts_the_manifest(archive_storage, site_a, two_series, capsys):
    expected = add_readings(two_series[0], day_timestamps(8))
    archive_day(site=site_a, day=DAY)
    Reading.objects.all().delete()
    ArchivedDay.objects.all().delete()  # a database restored from a backup older than the archive

    call_command("archive_restore", f"--site={site_a.id}", f"--day={DAY}")

    assert "Restored 8 readings" in capsys.readouterr().out
    assert set(Reading.objects.values_list("ts", "value")) == {(ts, value) for _, _, ts, value in expected}
    assert ArchivedDay.objects.get(site=site_a, day=DAY).rows == 8


def test_restore_of_a_day_never_archived_is_refused(archive_storage, site_a):
    with pytest.raises(CommandError, match=r"manifest .* does not exist"):
        call_command("archive_restore", f"--site={site_a.id}", f"--day={DAY}")
