"""Retention's TimescaleDB branch, the one production runs: expired days are archived, then dropped as whole chunks
(``drop_chunks``), on the real TimescaleDB server of the suite (tests/support/timescale_server.py)."""

import json

import pytest

from tests.support.processes import manage
from tests.support.timescale_server import timescale_server

# Runs in a child process on the TimescaleDB database (PGlite serves one connection at a time, so the test itself
# holds none while the child works): a site with one device, a reading every 6 hours for 100 days, then retention.
SCENARIO = """
import datetime, json
from django.db import connection
from django.utils import timezone
from apps.telemetry.models import ArchivedDay, Reading, Series
from apps.telemetry.retention import retention_enforce
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, SiteFactory

now = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
site = SiteFactory(timezone="UTC")
device = DeviceFactory(site=site, device_type=DeviceTypeFactory(organization=site.organization))
series = Series.objects.create(device=device, metric_key="t")
Reading.objects.bulk_create(
    Reading(series_id=series.id, ts=now - datetime.timedelta(hours=6 * n), value=float(n)) for n in range(400)
)
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM show_chunks('telemetry_reading')")
    chunks_before = cursor.fetchone()[0]
figures = retention_enforce(now=now)
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM show_chunks('telemetry_reading')")
    chunks_after = cursor.fetchone()[0]
cutoff = (now - datetime.timedelta(days=90)).replace(hour=0)
print("RESULT " + json.dumps({
    "figures": {k: v for k, v in figures.items() if k != "rollups_deleted"},
    "chunks_before": chunks_before,
    "chunks_after": chunks_after,
    "oldest_kept": Reading.objects.order_by("ts").first().ts.isoformat(),
    "expired_left": Reading.objects.filter(ts__lt=cutoff).count(),
    "kept": Reading.objects.filter(ts__gte=cutoff).count(),
    "expected_kept": sum(1 for n in range(400) if now - datetime.timedelta(hours=6 * n) >= cutoff),
    "archived_days": ArchivedDay.objects.count(),
    "cutoff": cutoff.isoformat(),
}))
"""


@pytest.fixture(scope="module")
def timescale_url():
    with timescale_server() as dsn:
        yield dsn


def test_expired_days_are_archived_then_dropped_as_whole_chunks(timescale_url, tmp_path):
    manage("migrate", "--noinput", database_url=timescale_url)
    output = manage(
        "shell",
        "-c",
        SCENARIO,
        database_url=timescale_url,
        RAW_RETENTION_DAYS="90",
        FIELDWATCH_MEDIA_ROOT=str(tmp_path),
    ).stdout
    result = json.loads(output.split("RESULT ", 1)[1])

    assert result["figures"]["dropped_chunks"] > 0
    assert result["figures"]["deleted_readings"] == 0  # no row-by-row deletes: whole chunks went
    assert result["chunks_after"] == result["chunks_before"] - result["figures"]["dropped_chunks"]
    assert result["expired_left"] == 0
    assert result["kept"] == result["expected_kept"]
    assert result["oldest_kept"] >= result["cutoff"]
    # Every dropped day was archived first (10 days: 100 days of readings, 90 kept).
    assert result["figures"]["archived_days"] == result["archived_days"] == 10
    assert len(list(tmp_path.rglob("*.csv.gz"))) == 10
