"""Async exports: 202 + Location, status, download equal to the rows in the database, failure and retry, expiry,
scoping by owner and by site, and the conditional claim that keeps two workers off one job."""

import csv
import datetime
import io
import json
import statistics
import threading

import msgpack
import pytest
from django.core.files.storage import default_storage
from django.db import connection

from apps.devices.choices import MetricKind
from apps.telemetry import exports
from apps.telemetry.choices import ExportStatus
from apps.telemetry.exports import export_claim, export_run, exports_expire
from apps.telemetry.models import ExportJob, Reading, Rollup1m, Series
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory

URL = "/api/v1/exports"
T0 = datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)


def ms(value: datetime.datetime) -> int:
    return int(value.timestamp() * 1000)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def plant(site_a, site_b):
    """Two devices on site A (power in kW, temperature) and one on site B, with raw readings and 1m rollups.

    Each 1m rollup summarises the readings ``bucket_values[bucket]``, so a test can recompute its aggregates."""
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=device_type, key="power", unit="kW", kind=MetricKind.GAUGE)
    MetricDefinitionFactory(device_type=device_type, key="temp", unit="°C")
    devices = {
        uid: DeviceFactory(uid=uid, site=site, device_type=device_type)
        for uid, site in (("hp-1", site_a), ("hp-2", site_a), ("hp-b", site_b))
    }
    series = {}
    readings = []
    rollups = []
    bucket_values = {}
    for uid, device in devices.items():
        for metric in ("power", "temp"):
            item = Series.objects.create(device=device, metric_key=metric)
            series[(uid, metric)] = item
            for i in range(40):  # every 20 s, from 2 minutes before T0 (outside the range)
                readings.append(Reading(series=item, ts=T0 + datetime.timedelta(seconds=20 * i - 120), value=i * 1.5))
            for i in range(10):
                bucket = T0 + datetime.timedelta(minutes=i - 2)
                values = bucket_values[bucket] = [9 + i, 11.25 + i, 11 + i]  # min, max, last all differ
                rollups.append(
                    Rollup1m(
                        series=item,
                        bucket=bucket,
                        count=len(values),
                        sum=sum(values),
                        sum_sq=sum(value * value for value in values),
                        min=min(values),
                        max=max(values),
                        first_ts=bucket,
                        first_value=values[0],
                        last_ts=bucket + datetime.timedelta(seconds=40),
                        last_value=values[-1],
                    )
                )
    Reading.objects.bulk_create(readings)
    Rollup1m.objects.bulk_create(rollups)
    return {"devices": devices, "series": series, "bucket_values": bucket_values}


def create(client, body, **kwargs):
    return client.post(URL, body, content_type="application/json", **kwargs)


def raw_reference(series: Series, start, end):
    """The readings of the range straight from the table, as (epoch ms, value)."""
    return [
        (ms(reading.ts), reading.value)
        for reading in Reading.objects.filter(series=series, ts__gte=start, ts__lt=end).order_by("ts")
    ]


def download(client, job_id) -> bytes:
    response = client.get(f"{URL}/{job_id}/download")
    assert response.status_code == 200, response.content
    assert response["Content-Disposition"].startswith("attachment")
    return b"".join(response.streaming_content)


def test_raw_csv_export_lifecycle_returns_the_rows_of_the_range(client, bob, plant, django_capture_on_commit_callbacks):
    client.force_login(bob)
    start, end = T0, T0 + datetime.timedelta(minutes=5)
    with django_capture_on_commit_callbacks(execute=True):
        response = create(
            client,
            {"series": ["hp-1:power", "hp-2:temp"], "start": ms(start), "end": end.isoformat(), "format": "csv"},
        )
    assert response.status_code == 202, response.content
    body = response.json()
    assert response["Location"] == f"/api/v1/exports/{body['id']}" == body["url"]

    status = client.get(response["Location"]).json()
    assert (status["status"], status["progress"], status["error"]) == ("done", 100, "")
    expected = [
        [uid, metric, str(ts), repr(value)]
        for uid, metric in (("hp-1", "power"), ("hp-2", "temp"))
        for ts, value in raw_reference(plant["series"][(uid, metric)], start, end)
    ]
    assert status["rows"] == len(expected) == 30  # 15 readings per series in [T0, T0 + 5 min)
    content = download(client, body["id"])
    assert status["file_size"] == len(content)
    lines = list(csv.reader(io.StringIO(content.decode())))
    assert lines[0] == ["device", "metric", "ts", "value"]
    assert [[d, m, t, repr(float(v))] for d, m, t, v in lines[1:]] == expected


@pytest.mark.parametrize("file_format", ["json", "msgpack"])
def test_rollup_export_in_json_and_msgpack_has_the_series_api_shape(
    client, bob, plant, file_format, django_capture_on_commit_callbacks
):
    client.force_login(bob)
    start, end = T0, T0 + datetime.timedelta(minutes=6)
    with django_capture_on_commit_callbacks(execute=True):
        response = create(
            client,
            {
                "series": {"device": "hp-1", "metrics": ["power", "temp"]},
                "start": start.isoformat(),
                "end": end.isoformat(),
                "interval": "1m",
                "agg": ["avg", "max", "count", "stddev", "last"],
                "format": file_format,
            },
        )
    assert response.status_code == 202, response.content
    content = download(client, response.json()["id"])
    document = json.loads(content) if file_format == "json" else msgpack.unpackb(content)
    assert (document["start"], document["end"], document["interval"]) == (ms(start), ms(end), "1m")
    assert [(s["device"], s["metric"], s["unit"]) for s in document["series"]] == [
        ("hp-1", "power", "kW"),
        ("hp-1", "temp", "°C"),
    ]
    for item in document["series"]:
        assert item["columns"] == ["ts", "avg", "max", "count", "stddev", "last"]
        rollups = Rollup1m.objects.filter(
            series=plant["series"][("hp-1", item["metric"])], bucket__gte=start, bucket__lt=end
        ).order_by("bucket")
        expected = []
        for row in rollups:
            values = plant["bucket_values"][row.bucket]
            mean, stddev = statistics.mean(values), statistics.stdev(values)  # stdev: the sample deviation
            expected.append([ms(row.bucket), mean, max(values), len(values), stddev, values[-1]])
        assert len(expected) == 6
        assert item["points"] == [pytest.approx(point, rel=1e-12) for point in expected]
        assert all(isinstance(point[3], int) for point in item["points"])


@pytest.mark.parametrize("file_format", ["csv", "json", "msgpack"])
def test_stddev_of_a_bucket_of_one_reading_is_null_in_every_format(client, bob, plant, file_format):
    series = plant["series"][("hp-1", "power")]
    bucket = T0 + datetime.timedelta(hours=1)
    Rollup1m.objects.create(
        series=series, bucket=bucket, count=1, sum=5.0, sum_sq=25.0, min=5.0, max=5.0,
        first_ts=bucket, first_value=5.0, last_ts=bucket, last_value=5.0,
    )  # fmt: skip
    job = ExportJob.objects.create(
        user=bob,
        format=file_format,
        parameters={
            "series": [{"id": series.id, "device": "hp-1", "metric": "power", "unit": "kW"}],
            "start": bucket.isoformat(),
            "end": (bucket + datetime.timedelta(minutes=1)).isoformat(),
            "interval": "1m",
            "agg": ["count", "stddev", "avg"],
        },
    )
    export_run(export_id=job.id)
    client.force_login(bob)
    content = download(client, job.id)
    if file_format == "csv":
        assert list(csv.reader(io.StringIO(content.decode()))) == [
            ["device", "metric", "ts", "count", "stddev", "avg"],
            ["hp-1", "power", str(ms(bucket)), "1", "", "5.0"],
        ]
    else:
        document = json.loads(content) if file_format == "json" else msgpack.unpackb(content)
        assert document["series"][0]["points"] == [[ms(bucket), 1, None, 5.0]]


def test_pages_of_a_long_series_are_written_once_each(client, bob, plant, monkeypatch):
    monkeypatch.setattr(exports, "PAGE_ROWS", 4)  # 15 readings -> pages of 4, 4, 4, 3
    series = plant["series"][("hp-1", "power")]
    job = ExportJob.objects.create(
        user=bob,
        format="json",
        parameters={
            "series": [{"id": series.id, "device": "hp-1", "metric": "power", "unit": "kW"}],
            "start": T0.isoformat(),
            "end": (T0 + datetime.timedelta(minutes=5)).isoformat(),
            "interval": "raw",
            "agg": [],
        },
    )
    export_run(export_id=job.id)
    client.force_login(bob)
    points = json.loads(download(client, job.id))["series"][0]["points"]
    assert [tuple(point) for point in points] == raw_reference(series, T0, T0 + datetime.timedelta(minutes=5))


def test_viewer_of_another_site_gets_404_for_its_devices(client, carol, plant):
    client.force_login(carol)
    response = create(client, {"series": ["hp-b:power", "hp-1:power"], "start": ms(T0), "end": ms(T0) + 60_000})
    assert response.status_code == 404
    assert ExportJob.objects.count() == 0


def test_other_users_cannot_see_download_or_retry_an_export(
    client, bob, mallory, alice, plant, django_capture_on_commit_callbacks
):
    client.force_login(bob)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = create(client, {"series": ["hp-1:power"], "start": ms(T0), "end": ms(T0) + 60_000}).json()["id"]
    for intruder in (mallory, alice):  # another tenant, and an admin of the same organization: jobs are personal
        client.force_login(intruder)
        assert client.get(f"{URL}/{job_id}").status_code == 404
        assert client.get(f"{URL}/{job_id}/download").status_code == 404
        assert client.post(f"{URL}/{job_id}/retry").status_code == 404
    client.logout()
    assert client.get(f"{URL}/{job_id}").status_code == 401


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"series": [f"hp-1:m{i}" for i in range(51)]}, "series", "at most 50"),
        ({"series": ["hp-1"]}, "series", "is not"),
        ({"series": {"device": "hp-1"}}, "series", "metrics"),
        ({"series": ["hp-1:power"], "end": ms(T0)}, "end", "after start"),
        ({"series": ["hp-1:power"], "start": "yesterday"}, "start", "not an instant"),
        ({"series": ["hp-1:power"], "start": 10**20}, "start", "outside the years 1970 to 2200"),
        ({"series": ["hp-1:power"], "agg": ["avg"]}, "agg", "rollup intervals"),
        ({"series": ["hp-1:power"], "interval": "1m", "agg": ["median"]}, "agg", "not a valid choice"),
        ({"series": ["hp-1:power"], "format": "xlsx"}, "format", "not a valid choice"),
        ({"series": ["hp-1:humidity"]}, "series", "has no metric 'humidity'"),
    ],
)
def test_invalid_requests_answer_400_with_the_reason(client, bob, plant, body, field, message):
    client.force_login(bob)
    response = create(client, {"start": ms(T0), "end": ms(T0) + 60_000, **body})
    assert response.status_code == 400, response.content
    assert message in json.dumps(response.json()[field], ensure_ascii=False)
    assert ExportJob.objects.count() == 0


def test_failed_export_says_why_and_succeeds_on_retry(
    client, bob, plant, settings, tmp_path, django_capture_on_commit_callbacks
):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.MEDIA_ROOT = str(blocker / "media")  # storage cannot create its directory: the write fails
    client.force_login(bob)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = create(client, {"series": ["hp-1:power"], "start": ms(T0), "end": ms(T0) + 60_000}).json()["id"]
    status = client.get(f"{URL}/{job_id}").json()
    assert status["status"] == "failed"
    assert "not-a-directory" in status["error"]
    assert client.get(f"{URL}/{job_id}/download").status_code == 409

    settings.MEDIA_ROOT = str(tmp_path / "media")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{URL}/{job_id}/retry")
    assert response.status_code == 202
    assert response["Location"] == f"/api/v1/exports/{job_id}"
    status = client.get(f"{URL}/{job_id}").json()
    assert (status["status"], status["error"], status["attempts"], status["rows"]) == ("done", "", 2, 3)
    assert client.post(f"{URL}/{job_id}/retry").status_code == 409  # done: nothing to retry


def test_download_of_a_pending_export_is_409(client, bob, plant):
    client.force_login(bob)
    job_id = create(client, {"series": ["hp-1:power"], "start": ms(T0), "end": ms(T0) + 60_000}).json()["id"]
    # No on-commit capture: the task was not sent, the job stays pending.
    assert client.get(f"{URL}/{job_id}").json()["status"] == "pending"
    assert client.get(f"{URL}/{job_id}/download").status_code == 409


def test_expired_export_answers_410_and_the_sweep_deletes_file_then_row(
    client, bob, plant, settings, django_capture_on_commit_callbacks
):
    client.force_login(bob)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = create(client, {"series": ["hp-1:power"], "start": ms(T0), "end": ms(T0) + 60_000}).json()["id"]
    job = ExportJob.objects.get(pk=job_id)
    assert job.status == ExportStatus.DONE and default_storage.exists(job.file_name)
    expiry = job.finished_at + datetime.timedelta(days=settings.EXPORT_EXPIRY_DAYS)
    assert job.expires_at == expiry

    assert exports_expire(now=expiry - datetime.timedelta(seconds=1))["files_deleted"] == 0
    ExportJob.objects.filter(pk=job_id).update(expires_at=job.finished_at)  # now in the past
    assert client.get(f"{URL}/{job_id}/download").status_code == 410
    assert exports_expire()["files_deleted"] == 1
    assert not default_storage.exists(job.file_name)
    assert client.get(f"{URL}/{job_id}/download").status_code == 410  # the row stays for the grace period

    later = job.finished_at + datetime.timedelta(days=settings.EXPORT_EXPIRY_DAYS, seconds=1)
    assert exports_expire(now=later)["jobs_deleted"] == 1
    assert client.get(f"{URL}/{job_id}").status_code == 404


def test_a_job_runs_once_when_the_task_is_delivered_twice(bob, plant):
    series = plant["series"][("hp-1", "power")]
    job = ExportJob.objects.create(
        user=bob,
        format="csv",
        parameters={
            "series": [{"id": series.id, "device": "hp-1", "metric": "power", "unit": "kW"}],
            "start": T0.isoformat(),
            "end": (T0 + datetime.timedelta(minutes=1)).isoformat(),
            "interval": "raw",
            "agg": [],
        },
    )
    export_run(export_id=job.id)
    finished = ExportJob.objects.get(pk=job.id)
    export_run(export_id=job.id)
    again = ExportJob.objects.get(pk=job.id)
    assert (again.status, again.attempts, again.finished_at) == ("done", 1, finished.finished_at)


@pytest.mark.django_db(transaction=True)
def test_two_workers_claiming_one_job_concurrently_one_wins(bob):
    job = ExportJob.objects.create(user=bob, format="csv", parameters={})
    barrier = threading.Barrier(8)
    results = []

    def worker():
        try:
            barrier.wait()
            results.append(export_claim(export_id=job.id))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert ExportJob.objects.get(pk=job.id).attempts == 1
