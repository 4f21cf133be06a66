import datetime
from collections import defaultdict

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.management import call_command

from apps.telemetry.models import ArchivedDay, Reading, Rollup1h, Rollup1m, Rollup5m
from apps.telemetry.retention import retention_enforce
from tests.devices.factories import DeviceFactory, DeviceTypeFactory
from tests.support.archive import UTC, add_readings, day_file, read_archive, use_archive_storage
from tests.telemetry.factories import SeriesFactory

NOW = datetime.datetime(2025, 6, 15, 10, 30, tzinfo=UTC)
TODAY = datetime.datetime(2025, 6, 15, tzinfo=UTC)


@pytest.fixture
def archive_storage(settings, tmp_path):
    return use_archive_storage(settings, tmp_path)


SIX_HOURS = datetime.timedelta(hours=6)


def every_six_hours(days_back: int) -> list[datetime.datetime]:
    """From midnight ``days_back`` days ago until NOW, so every UTC day boundary has a reading on it."""
    first = TODAY - datetime.timedelta(days=days_back)
    return [first + i * SIX_HOURS for i in range(days_back * 4 + 4) if first + i * SIX_HOURS < NOW]


@pytest.fixture
def fleet(settings, organization, site_a, site_b):
    """Site A: one device of the default type (10 days), one of a 3-day type and one of a 20-day type; site B: one
    of the default type. Returns (retention days by series id, readings by series id)."""
    settings.RAW_RETENTION_DAYS = 10
    default = DeviceTypeFactory(organization=organization)
    short = DeviceTypeFactory(organization=organization, raw_retention_days=3)
    long = DeviceTypeFactory(organization=organization, raw_retention_days=20)
    retention, readings = {}, {}
    for site, device_type, days in [
        (site_a, default, 10),
        (site_a, short, 3),
        (site_a, long, 20),
        (site_b, default, 10),
    ]:
        device = DeviceFactory(site=site, device_type=device_type)
        for metric in ("temp", "power"):
            series = SeriesFactory(device=device, metric_key=metric)
            retention[series.id] = days
            readings[series.id] = add_readings(series, every_six_hours(30))
    return retention, readings


def expected_kept(retention, readings, now):
    """Readings of whole UTC days younger than the retention of their series' device type."""
    kept = set()
    for series_id, rows in readings.items():
        midnight = datetime.datetime.combine(now.date(), datetime.time.min, tzinfo=UTC)
        cutoff = midnight - datetime.timedelta(days=retention[series_id])
        kept |= {(series_id, ts, value) for _, _, ts, value in rows if ts >= cutoff}
    return kept


def by_site_day(readings, site_of_uid):
    days = defaultdict(list)
    for rows in readings.values():
        for uid, metric, ts, value in rows:
            days[site_of_uid[uid], ts.date()].append((uid, metric, ts, value))
    return days


def site_of_uids():
    from apps.devices.models import Device

    return dict(Device.objects.values_list("uid", "site_id"))


def test_retention_archives_expired_days_then_deletes_exactly_the_expired_readings(archive_storage, fleet):
    retention, readings = fleet
    all_by_day = by_site_day(readings, site_of_uids())
    kept = expected_kept(retention, readings, NOW)
    # Site-days holding at least one expired reading: each must be archived, with every reading of that day.
    site_of_uid = site_of_uids()
    expired_days = {
        (site_of_uid[uid], ts.date())
        for series_id, rows in readings.items()
        for uid, _, ts, value in rows
        if (series_id, ts, value) not in kept
    }

    figures = retention_enforce(now=NOW)

    assert set(Reading.objects.values_list("series_id", "ts", "value")) == kept
    assert {(a.site_id, a.day) for a in ArchivedDay.objects.all()} == expired_days
    for site_id, day in expired_days:
        _, rows = read_archive(day_file(archive_storage, site_id, day))
        assert rows == sorted(all_by_day[site_id, day])  # all device types of the day, not only the expired
    all_rows = sum(len(rows) for rows in readings.values())
    assert figures["deleted_readings"] == all_rows - len(kept)
    assert figures["archived_days"] == len(expired_days)
    assert figures["failed_days"] == 0


def test_a_longer_retention_expiring_later_keeps_the_whole_day_in_the_archive(archive_storage, fleet):
    retention, readings = fleet
    retention_enforce(now=NOW)
    # A late reading of the 20-day device on a day archived already (its short-type readings are gone).
    long_series = next(s for s, days in retention.items() if days == 20)
    late_ts = TODAY - datetime.timedelta(days=5, hours=-1, microseconds=-3)
    readings[long_series] += add_readings(Reading.objects.filter(series_id=long_series)[0].series, [late_ts], seed=9)
    later = NOW + datetime.timedelta(days=12)

    figures = retention_enforce(now=later)

    assert set(Reading.objects.values_list("series_id", "ts", "value")) == expected_kept(retention, readings, later)
    all_by_day = by_site_day(readings, site_of_uids())
    for archived in ArchivedDay.objects.all():
        _, rows = read_archive(day_file(archive_storage, archived.site_id, archived.day))
        assert rows == sorted(all_by_day[archived.site_id, archived.day])
        assert archived.rows == len(rows)
    assert figures["failed_days"] == 0


def test_running_retention_again_changes_nothing(archive_storage, fleet):
    retention_enforce(now=NOW)
    before = set(Reading.objects.values_list("series_id", "ts", "value"))
    archives = set(ArchivedDay.objects.values_list("site_id", "day", "sha256", "created_at"))

    figures = retention_enforce(now=NOW)

    assert set(Reading.objects.values_list("series_id", "ts", "value")) == before
    assert set(ArchivedDay.objects.values_list("site_id", "day", "sha256", "created_at")) == archives
    assert (figures["archived_days"], figures["deleted_readings"]) == (0, 0)


def test_deletion_runs_in_batches_of_the_given_size(archive_storage, settings, site_a):
    settings.RAW_RETENTION_DAYS = 10
    series = SeriesFactory(device=DeviceFactory(site=site_a))
    old_day = TODAY - datetime.timedelta(days=20)
    add_readings(series, [old_day + datetime.timedelta(minutes=7 * i) for i in range(50)])

    figures = retention_enforce(now=NOW, batch_size=7)

    assert not Reading.objects.exists()
    assert figures["deleted_readings"] == 50
    assert figures["delete_batches"] == 50 // 7 + 1  # seven full batches, then the short one that ends it
    assert ArchivedDay.objects.get().rows == 50


class FailingStorage(FileSystemStorage):
    """A storage that refuses to write under ``fail_prefix`` (a full disk, a bucket without permission)."""

    fail_prefix = ""

    def _save(self, name, content):
        if name.startswith(self.fail_prefix):
            raise OSError(28, "No space left on device")
        return super()._save(name, content)


def test_a_failed_archive_write_deletes_nothing_of_that_site(settings, tmp_path, fleet, site_a, site_b):
    retention, readings = fleet
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": f"{__name__}.FailingStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    settings.ARCHIVE_PREFIX = "archive/readings"
    FailingStorage.fail_prefix = f"archive/readings/{site_b.id}/"
    site_b_series = {s for s in readings if readings[s][0][0].startswith(site_b.devices.get().uid)}

    figures = retention_enforce(now=NOW)

    stored = set(Reading.objects.values_list("series_id", "ts", "value"))
    site_b_rows = {(s, ts, value) for s in site_b_series for _, _, ts, value in readings[s]}
    assert site_b_rows <= stored  # every reading of site B is still there
    site_a_kept = {row for row in expected_kept(retention, readings, NOW) if row[0] not in site_b_series}
    assert stored - site_b_rows == site_a_kept
    assert not ArchivedDay.objects.filter(site=site_b).exists()
    assert figures["failed_days"] == 30 - 10  # site B's expired days, each tried and kept


def test_a_restored_day_is_kept_for_a_week_then_archived_and_deleted_again(archive_storage, settings, site_a, capsys):
    settings.RAW_RETENTION_DAYS = 10
    series = SeriesFactory(device=DeviceFactory(site=site_a))
    day = (TODAY - datetime.timedelta(days=15)).date()
    rows = add_readings(series, [TODAY - datetime.timedelta(days=15, hours=-h) for h in range(24)])
    retention_enforce(now=NOW)
    assert not Reading.objects.exists()
    call_command("archive_restore", f"--site={site_a.id}", f"--day={day}")
    restored_at = ArchivedDay.objects.get().restored_at

    held = retention_enforce(now=restored_at + datetime.timedelta(days=6))
    assert held["skipped_restored_days"] == 1
    assert set(Reading.objects.values_list("ts", "value")) == {(ts, value) for _, _, ts, value in rows}

    released = retention_enforce(now=restored_at + datetime.timedelta(days=8))
    assert released["deleted_readings"] == 24
    assert not Reading.objects.exists()
    assert read_archive(day_file(archive_storage, site_a.id, day))[1] == sorted(rows)


def test_rollup_retention_drops_whole_days_older_than_each_resolution_keeps(db, site_a):
    series = SeriesFactory(device=DeviceFactory(site=site_a))
    minute = datetime.timedelta(minutes=1)
    cutoff_1m, cutoff_5m = TODAY - datetime.timedelta(days=30), TODAY - datetime.timedelta(days=365)
    buckets = {
        Rollup1m: [cutoff_1m - 3 * minute, cutoff_1m - minute, cutoff_1m, cutoff_1m + minute, NOW - minute],
        Rollup5m: [cutoff_5m - 10 * minute, cutoff_5m - 5 * minute, cutoff_5m, cutoff_1m],
        Rollup1h: [TODAY - datetime.timedelta(days=2000), TODAY],
    }
    for model, times in buckets.items():
        model.objects.bulk_create(
            model(
                series=series, bucket=t, count=1, sum=1, sum_sq=1, min=1, max=1,
                first_ts=t, first_value=1, last_ts=t, last_value=1,
            )
            for t in times
        )  # fmt: skip

    figures = retention_enforce(now=NOW, batch_size=1)

    assert sorted(Rollup1m.objects.values_list("bucket", flat=True)) == [cutoff_1m, cutoff_1m + minute, NOW - minute]
    assert sorted(Rollup5m.objects.values_list("bucket", flat=True)) == [cutoff_5m, cutoff_1m]
    assert Rollup1h.objects.count() == 2
    assert figures["rollups_deleted"] == {"1m": 2, "5m": 2}
