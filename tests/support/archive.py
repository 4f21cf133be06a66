"""Shared by the archive and retention tests: readings with awkward values, and an independent archive reader."""

import csv
import datetime
import gzip
import io
import random

from apps.telemetry.models import Reading

UTC = datetime.UTC


def use_archive_storage(settings, tmp_path):
    """The default storage in a fresh directory (pytest-django's settings fixture resets default_storage)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}},
    }
    settings.ARCHIVE_PREFIX = "archive/readings"
    return tmp_path


def add_readings(series, timestamps, *, seed=0) -> list[tuple[str, str, datetime.datetime, float]]:
    """Insert a reading of ``series`` at each timestamp; return (device_uid, metric, ts, value) for each."""
    rng = random.Random(f"{seed}-{series.id}")
    rows = [(ts, rng.uniform(-1000, 1000) / 3) for ts in timestamps]  # full-precision doubles
    Reading.objects.bulk_create([Reading(series=series, ts=ts, value=value) for ts, value in rows])
    return [(series.device.uid, series.metric_key, ts, value) for ts, value in rows]


def read_archive(path) -> tuple[list[str], list[tuple[str, str, datetime.datetime, float]]]:
    """Header and rows of a day file, parsed with the standard library only."""
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(io.StringIO(handle.read()))
        header = next(reader)
        rows = [(uid, metric, datetime.datetime.fromisoformat(ts), float(value)) for uid, metric, ts, value in reader]
    return header, rows


def day_file(root, site_id: int, day: datetime.date):
    return root / "archive" / "readings" / str(site_id) / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}.csv.gz"
