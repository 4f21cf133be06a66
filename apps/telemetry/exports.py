"""Asynchronous exports: a user asks for series over a range, a Celery worker writes the file to Django storage.

Lifecycle: ``export_create`` stores a pending ``ExportJob`` and enqueues the task after commit; ``export_run``
claims the job with a conditional UPDATE (pending -> running, so a redelivered or duplicated task never runs one job
twice), streams the rows out of PostgreSQL series by series and records done or failed; ``export_retry`` puts a
failed job back to pending; ``exports_expire`` (beat) deletes the files of expired jobs and, a grace period later,
their rows.

File formats, all with timestamps in epoch milliseconds like the series API:

- ``csv``: a header ``device,metric,ts,<value | agg...>`` then one line per point, series after series.
- ``json``: the series API's document ``{"start","end","interval","series":[{"device","metric","unit","columns",
  "points"}]}``.
- ``msgpack``: the same document as one MessagePack map (timestamps int64, values float64, count int64).

Speed: PostgreSQL formats the points itself. Each statement reads one page of one series by keyset (the primary key
range scan) and returns the page already encoded (``string_agg`` of CSV/JSON fragments, or of MessagePack bytes built
with ``int8send``/``float8send``), so Python only copies a few megabytes per page to the file and never touches a row.
The file is written to a local temporary file first (MessagePack needs a seek to patch each series' point count) and
then handed to the default storage, which moves it on a local disk and uploads it to S3-compatible stores.
"""

import datetime
import logging
import os
import tempfile

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.audit.choices import AuditAction
from apps.audit.services import audit_record
from apps.core.time import epoch_ms, epoch_ms_sql
from apps.devices.models import MetricDefinition
from apps.devices.selectors import device_list_for_user
from apps.telemetry.choices import ExportFormat, ExportStatus
from apps.telemetry.models import ExportJob, Series

logger = logging.getLogger(__name__)

RAW = "raw"
# Interval -> the rollup table it is read from; "raw" reads telemetry_reading.
EXPORT_TABLES = {
    RAW: "telemetry_reading",
    "1m": "telemetry_rollup_1m",
    "5m": "telemetry_rollup_5m",
    "1h": "telemetry_rollup_1h",
    "1d": "telemetry_rollup_1d",
}
# Aggregate -> (SQL over a rollup row, is integer). stddev is the population standard deviation; the
# greatest(..., 0) absorbs the rounding that can make sum_sq/n - mean^2 slightly negative for constant series.
EXPORT_AGGREGATES = {
    "avg": ("sum / count", False),
    "min": ("min", False),
    "max": ("max", False),
    "count": ("count::float8", True),
    "sum": ("sum", False),
    "stddev": ("sqrt(greatest(sum_sq / count - (sum / count) ^ 2, 0))", False),
    "first": ("first_value", False),
    "last": ("last_value", False),
}
DEFAULT_AGGREGATES = ["avg"]
CONTENT_TYPES = {
    ExportFormat.CSV: "text/csv",
    ExportFormat.JSON: "application/json",
    ExportFormat.MSGPACK: "application/msgpack",
}
# Points per statement: large enough that statement overhead vanishes, small enough that a page is a few MB.
PAGE_ROWS = 200_000
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
    """Store a pending export of already resolved and permission-checked series and enqueue it after commit.

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
        audit_record(
            actor=user, action=AuditAction.EXPORT_CREATE, target=job, after={**parameters, "format": file_format}
        )
        _enqueue(job.id)
    return job


def export_retry(*, job: ExportJob) -> bool:
    """Put a failed job back to pending and enqueue it; False when the job was not failed (nothing to retry)."""
    reset = ExportJob.objects.filter(pk=job.pk, status=ExportStatus.FAILED).update(
        status=ExportStatus.PENDING, progress=0, error="", rows=None, file_size=None, finished_at=None, expires_at=None
    )
    if reset:
        _enqueue(job.pk)
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


def _enqueue(export_id) -> None:
    from apps.telemetry.tasks import export_run_task

    transaction.on_commit(lambda: export_run_task.delay(str(export_id)))


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
    writer = _WRITERS[job.format](
        start=start, end=end, interval=interval, columns=["ts", *(aggregates or ["value"])], series_count=len(series)
    )
    handle, path = tempfile.mkstemp(prefix=f"export-{job.pk}-", suffix=f".{export_file_extension(job.format)}")
    total = 0
    try:
        with os.fdopen(handle, "w+b", buffering=1024 * 1024) as out:
            out.write(writer.head())
            for index, item in enumerate(series):
                out.write(writer.series_head(item, first=index == 0))
                total += writer.series_body(out, item, _pages(job.format, item, interval, aggregates, start, end))
                out.write(writer.series_tail())
                ExportJob.objects.filter(pk=job.pk).update(progress=int(100 * (index + 1) / len(series)), rows=total)
            out.write(writer.tail())
        name = f"exports/{job.pk}.{export_file_extension(job.format)}"
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


def _point_fragment(file_format: str, interval: str, aggregates: list[str]) -> tuple[str, str]:
    """SQL that encodes one point in the target format, and the time column's name."""
    time_column = "ts" if interval == RAW else "bucket"
    ts_ms = epoch_ms_sql(time_column)
    values = [("value", False)] if interval == RAW else [EXPORT_AGGREGATES[name] for name in aggregates]
    if file_format == ExportFormat.MSGPACK:
        # fixarray header, int64 (0xd3) timestamp, then float64 (0xcb) or int64 values: big-endian as *send() gives.
        parts = [f"'\\x{0x90 + 1 + len(values):02x}d3'::bytea", f"int8send({ts_ms})"]
        for expression, integer in values:
            parts += (
                ["'\\xd3'::bytea", f"int8send(({expression})::int8)"]
                if integer
                else [
                    "'\\xcb'::bytea",
                    f"float8send({expression})",
                ]
            )
        return " || ".join(parts), time_column
    texts = [f"({expression})::int8::text" if integer else f"({expression})::text" for expression, integer in values]
    if file_format == ExportFormat.JSON:
        return "'[' || " + " || ',' || ".join([f"{ts_ms}::text", *texts]) + " || ']'", time_column
    return "%(prefix)s || " + " || ',' || ".join([f"{ts_ms}::text", *texts]), time_column


def _pages(file_format, item, interval, aggregates, start, end):
    """Yield (encoded page, points, last time) for one series, by keyset over its primary key."""
    fragment, time_column = _point_fragment(file_format, interval, aggregates)
    separator = {ExportFormat.CSV: "E'\\n'", ExportFormat.JSON: "','", ExportFormat.MSGPACK: "''::bytea"}[file_format]
    sql = f"""
        SELECT string_agg(fragment, {separator} ORDER BY t), count(*), max(t)
        FROM (
            SELECT {time_column} AS t, {fragment} AS fragment
            FROM {EXPORT_TABLES[interval]}
            WHERE series_id = %(series_id)s AND {time_column} > %(after)s AND {time_column} < %(end)s
            ORDER BY {time_column}
            LIMIT {PAGE_ROWS}
        ) page
    """
    prefix = _csv_field(item["device"]) + "," + _csv_field(item["metric"]) + ","
    # The first page starts at `start` inclusive: `> start - 1 µs` keeps one statement shape for every page.
    after = start - datetime.timedelta(microseconds=1)
    with connection.cursor() as cursor:
        while True:
            cursor.execute(sql, {"series_id": item["id"], "after": after, "end": end, "prefix": prefix})
            data, count, last = cursor.fetchone()
            if not count:
                return
            yield (bytes(data) if file_format == ExportFormat.MSGPACK else data.encode()), count
            if count < PAGE_ROWS:
                return
            after = last


def _csv_field(value: str) -> str:
    if any(character in value for character in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


class _CsvWriter:
    def __init__(self, *, start, end, interval, columns, series_count):
        self.columns = columns

    def head(self) -> bytes:
        return (",".join(["device", "metric", *self.columns]) + "\n").encode()

    def series_head(self, item, *, first) -> bytes:
        return b""

    def series_body(self, out, item, pages) -> int:
        total = 0
        for data, count in pages:
            out.write(data)
            out.write(b"\n")
            total += count
        return total

    def series_tail(self) -> bytes:
        return b""

    def tail(self) -> bytes:
        return b""


class _JsonWriter:
    def __init__(self, *, start, end, interval, columns, series_count):
        import json

        self.json = json
        self.start, self.end, self.interval, self.columns = start, end, interval, columns

    def head(self) -> bytes:
        head = {"start": epoch_ms(self.start), "end": epoch_ms(self.end), "interval": self.interval}
        return (self.json.dumps(head)[:-1] + ', "series": [').encode()

    def series_head(self, item, *, first) -> bytes:
        head = {"device": item["device"], "metric": item["metric"], "unit": item["unit"], "columns": self.columns}
        return (("" if first else ", ") + self.json.dumps(head)[:-1] + ', "points": [').encode()

    def series_body(self, out, item, pages) -> int:
        total = 0
        for data, count in pages:
            if total:
                out.write(b",")
            out.write(data)
            total += count
        return total

    def series_tail(self) -> bytes:
        return b"]}"

    def tail(self) -> bytes:
        return b"]}\n"


class _MsgpackWriter:
    """The JSON document's structure as one MessagePack map.

    A series' point count is only known at its end, so its points array gets an array32 header (valid MessagePack
    for any count) that is patched in place once the series is written.
    """

    def __init__(self, *, start, end, interval, columns, series_count):
        import msgpack

        self.packb = msgpack.packb
        self.start, self.end, self.interval, self.columns, self.series_count = (
            start,
            end,
            interval,
            columns,
            series_count,
        )

    def head(self) -> bytes:
        packb = self.packb
        return (
            b"\x84"  # fixmap of 4
            + packb("start")
            + packb(epoch_ms(self.start))
            + packb("end")
            + packb(epoch_ms(self.end))
            + packb("interval")
            + packb(self.interval)
            + packb("series")
            + b"\xdd"
            + self.series_count.to_bytes(4, "big")
        )

    def series_head(self, item, *, first) -> bytes:
        packb = self.packb
        return (
            b"\x85"
            + b"".join(packb(key) + packb(item[key]) for key in ("device", "metric", "unit"))
            + packb("columns")
            + packb(self.columns)
            + packb("points")
        )

    def series_body(self, out, item, pages) -> int:
        out.write(b"\xdd")
        position = out.tell()
        out.write(b"\0\0\0\0")
        total = 0
        for data, count in pages:
            out.write(data)
            total += count
        end = out.tell()
        out.seek(position)
        out.write(total.to_bytes(4, "big"))
        out.seek(end)
        return total

    def series_tail(self) -> bytes:
        return b""

    def tail(self) -> bytes:
        return b""


_WRITERS = {ExportFormat.CSV: _CsvWriter, ExportFormat.JSON: _JsonWriter, ExportFormat.MSGPACK: _MsgpackWriter}
