"""Asynchronous exports: a user asks for series over a range, a Celery worker writes the file to Django storage.

Lifecycle: ``export_create`` stores a pending ``ExportJob`` and its caller (the API view) enqueues
``tasks.export_run_task`` with ``tasks.export_enqueue``; ``export_run`` claims the job with a conditional UPDATE
(pending -> running, so a redelivered or duplicated task never runs one job twice), streams the rows out of
PostgreSQL series by series and records done or failed; ``export_retry`` puts a failed job back to pending, to be
enqueued again by its caller; ``exports_expire`` (beat) deletes the files of expired jobs and, a grace period later,
their rows. This module does not know the task queue: the tasks import it, not the other way round. Every state
``export_run`` writes is announced with ``signals.export_progressed`` (the dashboard pushes it to the owner).

File formats, all with timestamps in epoch milliseconds like the series API:

- ``csv``: a header ``device,metric,ts,<value | agg...>`` then one line per point, series after series.
- ``json``: the series API's document ``{"start","end","interval","series":[{"device","metric","unit","columns",
  "points"}]}``.
- ``msgpack``: the same document as one MessagePack map (timestamps and count integers, values float64).

Aggregates are the series API's (``queries.AGGREGATE_SQL``): ``stddev`` is the sample standard deviation, empty
(CSV) or null for a bucket of one reading.

Encoding: each statement reads one page of one series by keyset (the primary key range scan) with binary results,
and the encoder the API uses for the same format writes it: the ``csv`` module, orjson, the ``msgpack`` library.
Memory is bounded by one page (``PAGE_ROWS`` points). The file is written to a local temporary file first and then
handed to the default storage, which moves it on a local disk and uploads it to S3-compatible stores.
"""

import csv
import datetime
import io
import logging
import os
import shutil
import tempfile

import msgpack
import orjson
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.core.audit import AuditAction, audit
from apps.core.db.binary import rows_fetch
from apps.core.time import epoch_ms, epoch_ms_sql
from apps.devices.models import MetricDefinition
from apps.devices.selectors import device_list_for_user
from apps.telemetry.choices import ExportFormat, ExportStatus
from apps.telemetry.models import ExportJob, Series
from apps.telemetry.queries import AGGREGATE_SQL, DEFAULT_AGGREGATES, RAW
from apps.telemetry.signals import export_progressed

logger = logging.getLogger(__name__)

# Interval -> the rollup table it is read from; "raw" reads telemetry_reading.
EXPORT_TABLES = {
    RAW: "telemetry_reading",
    "1m": "telemetry_rollup_1m",
    "5m": "telemetry_rollup_5m",
    "1h": "telemetry_rollup_1h",
    "1d": "telemetry_rollup_1d",
}
CONTENT_TYPES = {
    ExportFormat.CSV: "text/csv",
    ExportFormat.JSON: "application/json",
    ExportFormat.MSGPACK: "application/msgpack",
}
# Points per statement: large enough that statement overhead vanishes, small enough that a page in Python stays at
# a few tens of MB.
PAGE_ROWS = 50_000
# A job still running after this long lost its worker (acks_late redelivery finds it running and leaves it).
RUNNING_TIMEOUT = datetime.timedelta(hours=6)


# ---------------------------------------------------------------------------------------------------------------------
# Services called by the API and the tasks
# ---------------------------------------------------------------------------------------------------------------------


def export_create(
    *,
    user,
    series: list[dict],
    start: datetime.datetime,
    end: datetime.datetime,
    interval: str,
    aggregates: list[str] | None,
    file_format: str,
) -> ExportJob:
    """Store a pending export of already resolved and permission-checked series; the caller enqueues it.

    ``series`` items are ``{"id", "device", "metric", "unit"}``: labels are frozen into the job so the file says
    what the user asked for even if a device is renamed meanwhile.
    """
    parameters = {
        "series": series,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "interval": interval,
        "agg": [] if interval == RAW else list(aggregates or DEFAULT_AGGREGATES),
    }
    with transaction.atomic():
        job = ExportJob.objects.create(user=user, parameters=parameters, format=file_format)
        audit(actor=user, action=AuditAction.EXPORT_CREATE, target=job, after={**parameters, "format": file_format})
    return job


def export_retry(*, job: ExportJob) -> bool:
    """Put a failed job back to pending for its caller to enqueue; False when the job was not failed."""
    reset = ExportJob.objects.filter(pk=job.pk, status=ExportStatus.FAILED).update(
        status=ExportStatus.PENDING, progress=0, error="", rows=None, file_size=None, finished_at=None, expires_at=None
    )
    job.refresh_from_db()
    return bool(reset)


def export_claim(*, export_id) -> bool:
    """Move the job from pending to running; True for the one caller whose UPDATE changed the row.

    The row lock of the UPDATE serialises concurrent claimers and the second one re-checks ``status = pending``
    after the first committed, so two workers (or a redelivered task) never run the same job.
    """
    claimed = ExportJob.objects.filter(pk=export_id, status=ExportStatus.PENDING).update(
        status=ExportStatus.RUNNING, started_at=timezone.now(), attempts=F("attempts") + 1, progress=0, error=""
    )
    return claimed == 1


def export_run(*, export_id) -> None:
    """Claim the job and write its file; record done (rows, size, expiry) or failed (the error's text).

    Runs in autocommit, outside any transaction, so progress updates are visible to pollers while it works and
    each page read is a short statement that holds no snapshot for minutes.
    """
    if not export_claim(export_id=export_id):
        logger.info("Export %s is not pending (already claimed or gone); nothing to do.", export_id)
        return
    job = ExportJob.objects.get(pk=export_id)
    _progressed(job)
    try:
        if job.file_name:  # a retry: the previous attempt's file, if any, is replaced
            default_storage.delete(job.file_name)
        rows, file_name, size = _export_write(job)
    except Exception as error:  # any failure is the job's outcome, reported to the user
        logger.exception("Export %s failed", export_id)
        now = timezone.now()
        ExportJob.objects.filter(pk=export_id).update(
            status=ExportStatus.FAILED,
            error=str(error) or error.__class__.__name__,
            finished_at=now,
            expires_at=now + datetime.timedelta(days=settings.EXPORT_EXPIRY_DAYS),
            file_name="",
        )
        _progressed(job)
        return
    now = timezone.now()
    ExportJob.objects.filter(pk=export_id).update(
        status=ExportStatus.DONE,
        progress=100,
        rows=rows,
        file_name=file_name,
        file_size=size,
        finished_at=now,
        expires_at=now + datetime.timedelta(days=settings.EXPORT_EXPIRY_DAYS),
    )
    _progressed(job)


def _progressed(job: ExportJob) -> None:
    """Tell the apps above that the job's stored state changed (the dashboard pushes it to the job's owner)."""
    export_progressed.send_robust(sender=ExportJob, export_id=job.pk, user_id=job.user_id)


def exports_expire(*, now: datetime.datetime | None = None) -> dict:
    """Delete the files of expired exports, fail jobs whose worker vanished, and drop rows long past expiry.

    An expired job's row is kept for another EXPORT_EXPIRY_DAYS so its download link answers 410 Gone, not 404.
    """
    now = now or timezone.now()
    expired = list(ExportJob.objects.filter(expires_at__lte=now).exclude(file_name="").values_list("pk", "file_name"))
    for _, file_name in expired:
        default_storage.delete(file_name)
    files = ExportJob.objects.filter(pk__in=[pk for pk, _ in expired]).update(file_name="")
    stale = ExportJob.objects.filter(status=ExportStatus.RUNNING, started_at__lt=now - RUNNING_TIMEOUT).update(
        status=ExportStatus.FAILED, error="The worker running this export stopped; retry it.", finished_at=now
    )
    grace = datetime.timedelta(days=settings.EXPORT_EXPIRY_DAYS)
    rows, _ = ExportJob.objects.filter(expires_at__lte=now - grace).delete()
    return {"files_deleted": files, "stale_failed": stale, "jobs_deleted": rows}


def export_series_resolve(*, user, pairs: list[tuple[str, str]]) -> list[dict]:
    """Resolve (device uid, metric key) pairs to series the user may read, in the order asked.

    A device outside the user's sites raises ``DeviceNotFound`` (the API answers 404, as for a device that does not
    exist, so nothing leaks about other tenants); a metric the device has no series for raises ``UnknownSeries``.
    Three queries whatever the number of series.
    """
    uids = {uid for uid, _ in pairs}
    devices = {device.uid: device for device in device_list_for_user(user=user).filter(uid__in=uids)}
    missing = [uid for uid, _ in pairs if uid not in devices]
    if missing:
        raise DeviceNotFound(missing[0])
    found = {
        (series.device_id, series.metric_key): series.id
        for series in Series.objects.filter(
            device_id__in=[device.id for device in devices.values()], metric_key__in={metric for _, metric in pairs}
        )
    }
    units = {
        (definition.device_type_id, definition.key): definition.unit
        for definition in MetricDefinition.objects.filter(
            device_type_id__in={device.device_type_id for device in devices.values()},
            key__in={metric for _, metric in pairs},
        )
    }
    resolved = []
    for uid, metric in pairs:
        device = devices[uid]
        series_id = found.get((device.id, metric))
        if series_id is None:
            raise UnknownSeries(f"Device {uid!r} has no metric {metric!r}.")
        resolved.append(
            {"id": series_id, "device": uid, "metric": metric, "unit": units.get((device.device_type_id, metric), "")}
        )
    return resolved


class DeviceNotFound(Exception):
    """A device that does not exist or that the user may not see."""


class UnknownSeries(Exception):
    """A metric a visible device has no series for."""


def export_is_expired(job: ExportJob, *, now: datetime.datetime | None = None) -> bool:
    return job.expires_at is not None and job.expires_at <= (now or timezone.now())


def export_file_extension(file_format: str) -> str:
    return {ExportFormat.CSV: "csv", ExportFormat.JSON: "json", ExportFormat.MSGPACK: "msgpack"}[file_format]


# ---------------------------------------------------------------------------------------------------------------------
# Writing the file
# ---------------------------------------------------------------------------------------------------------------------


def _export_write(job: ExportJob) -> tuple[int, str, int]:
    """Write the job's file to storage; return (points written, storage name, bytes)."""
    parameters = job.parameters
    start = datetime.datetime.fromisoformat(parameters["start"])
    end = datetime.datetime.fromisoformat(parameters["end"])
    interval = parameters["interval"]
    aggregates = parameters["agg"] if interval != RAW else []
    series = parameters["series"]
    sql = _page_sql(interval, aggregates)
    extension = export_file_extension(job.format)
    handle, path = tempfile.mkstemp(prefix=f"export-{job.pk}-", suffix=f".{extension}")
    total = 0
    try:
        with os.fdopen(handle, "wb", buffering=1024 * 1024) as out:
            encoder = _ENCODERS[job.format](
                out,
                head={"start": epoch_ms(start), "end": epoch_ms(end), "interval": interval},
                columns=["ts", *(aggregates or ["value"])],
                series_count=len(series),
            )
            for index, item in enumerate(series):
                total += encoder.series(item, _pages(sql, item["id"], start, end), first=index == 0)
                ExportJob.objects.filter(pk=job.pk).update(progress=int(100 * (index + 1) / len(series)), rows=total)
                _progressed(job)
            encoder.close()
        name = f"exports/{job.pk}.{extension}"
        with open(path, "rb") as stored:
            name = default_storage.save(name, _LocalFile(stored, path))
        return total, name, default_storage.size(name)
    finally:
        if os.path.exists(path):  # the storage moved it away on a local disk
            os.unlink(path)


class _LocalFile(File):
    """A file the storage may move instead of copying (FileSystemStorage checks ``temporary_file_path``)."""

    def __init__(self, file, path):
        super().__init__(file, name=os.path.basename(path))
        self._path = path

    def temporary_file_path(self):
        return self._path


def _page_sql(interval: str, aggregates: list[str]) -> str:
    """One page of one series by keyset over its primary key: rows ``(time, ts_ms, *values)``.

    Params: series id, after (exclusive), end (exclusive), page size.
    """
    time_column = "ts" if interval == RAW else "bucket"
    values = ["value"] if interval == RAW else [AGGREGATE_SQL[name] for name in aggregates]
    return (
        f"SELECT {time_column}, {epoch_ms_sql(time_column)}, {', '.join(values)} FROM {EXPORT_TABLES[interval]}"
        f" WHERE series_id = %s AND {time_column} > %s AND {time_column} < %s ORDER BY {time_column} LIMIT %s"
    )


def _pages(sql: str, series_id: int, start: datetime.datetime, end: datetime.datetime):
    """Yield the points ``(ts_ms, *values)`` of one series in ``[start, end)``, a list of at most PAGE_ROWS at a time.

    Each page is its own short statement, so a long export holds no snapshot open while it writes.
    """
    # The first page starts at `start` inclusive: `> start - 1 µs` keeps one statement shape for every page.
    after = start - datetime.timedelta(microseconds=1)
    while True:
        rows = rows_fetch(sql, [series_id, after, end, PAGE_ROWS])
        if rows:
            yield [row[1:] for row in rows]
        if len(rows) < PAGE_ROWS:
            return
        after = rows[-1][0]


class _CsvEncoder:
    """``device,metric,<columns>`` then one line per point, through the ``csv`` module a page at a time."""

    def __init__(self, out, *, head, columns, series_count):
        self.out = out
        self.buffer = io.StringIO()
        self.writer = csv.writer(self.buffer, lineterminator="\n")
        self.writer.writerow(["device", "metric", *columns])
        self._flush()

    def _flush(self):
        self.out.write(self.buffer.getvalue().encode())
        self.buffer.seek(0)
        self.buffer.truncate()

    def series(self, item, pages, *, first) -> int:
        labels = (item["device"], item["metric"])
        count = 0
        for points in pages:
            self.writer.writerows(labels + point for point in points)
            self._flush()
            count += len(points)
        return count

    def close(self):
        pass


class _JsonEncoder:
    """The series API's JSON document, encoded by orjson as the API's renderer does.

    The document is streamed, so its brackets and commas are written here; every value inside is orjson's (a page of
    points is one orjson array with its own brackets cut off).
    """

    def __init__(self, out, *, head, columns, series_count):
        self.out, self.columns = out, columns
        out.write(orjson.dumps(head)[:-1] + b',"series":[')

    def series(self, item, pages, *, first) -> int:
        head = {"device": item["device"], "metric": item["metric"], "unit": item["unit"], "columns": self.columns}
        self.out.write((b"" if first else b",") + orjson.dumps(head)[:-1] + b',"points":[')
        count = 0
        for points in pages:
            self.out.write((b"," if count else b"") + orjson.dumps(points)[1:-1])
            count += len(points)
        self.out.write(b"]}")
        return count

    def close(self):
        self.out.write(b"]}\n")


class _MsgpackEncoder:
    """The JSON document's structure as one MessagePack map, every byte from the ``msgpack`` library.

    A MessagePack array begins with its length, and a series' point count is known only after its last page, so its
    points are packed into a temporary spool file first and copied behind the array header once counted.
    """

    def __init__(self, out, *, head, columns, series_count):
        self.out, self.columns = out, columns
        self.packer = msgpack.Packer()
        out.write(self._map_open(head, "series") + self.packer.pack_array_header(series_count))

    def _map_open(self, items: dict, last_key: str) -> bytes:
        """A map of ``items`` and ``last_key``, up to that key: its value (an array) is written by the caller."""
        pack = self.packer.pack
        pairs = b"".join(pack(key) + pack(value) for key, value in items.items())
        return self.packer.pack_map_header(len(items) + 1) + pairs + pack(last_key)

    def series(self, item, pages, *, first) -> int:
        head = {"device": item["device"], "metric": item["metric"], "unit": item["unit"], "columns": self.columns}
        count = 0
        with tempfile.TemporaryFile() as spool:
            for points in pages:
                spool.write(b"".join(map(self.packer.pack, points)))
                count += len(points)
            self.out.write(self._map_open(head, "points") + self.packer.pack_array_header(count))
            spool.seek(0)
            shutil.copyfileobj(spool, self.out)
        return count

    def close(self):
        pass


_ENCODERS = {ExportFormat.CSV: _CsvEncoder, ExportFormat.JSON: _JsonEncoder, ExportFormat.MSGPACK: _MsgpackEncoder}
