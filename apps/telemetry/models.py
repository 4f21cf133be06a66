import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from timescale.db.models.fields import TimescaleDateTimeField

from apps.telemetry.choices import ExportFormat, ExportStatus, IngestSource, RejectReason, ReplayResult, Resolution


class Series(models.Model):
    """One metric of one device: the key readings are stored under.

    The id is a 4-byte integer because it is repeated in every reading row; 2 billion series is ample.
    """

    id = models.AutoField(primary_key=True)
    # PROTECT: deleting a device with history is an explicit purge (devices.services.device_purge), never a
    # side effect of a delete button; readings have no database FK (see Reading) so this is the guard.
    device = models.ForeignKey("devices.Device", on_delete=models.PROTECT, related_name="series")
    metric_key = models.CharField(max_length=63)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "series"
        ordering = ["device", "metric_key"]
        constraints = [models.UniqueConstraint(fields=["device", "metric_key"], name="series_unique_per_device")]

    def __str__(self):
        return f"{self.device.uid}:{self.metric_key}"


class Reading(models.Model):
    """A value of a series at an instant: the largest table by far, so the row is kept to 20 bytes of data.

    The primary key (series, ts) makes a repeated reading idempotent (INSERT ... ON CONFLICT DO NOTHING) and is
    the index every range query uses. On TimescaleDB the table is a hypertable partitioned by ``ts`` in 1-day
    chunks. There is no database foreign key to Series: a per-row referential check would cost ingest throughput
    for nothing, since the writer only ever inserts ids it resolved from Series.
    """

    pk = models.CompositePrimaryKey("series", "ts")
    series = models.ForeignKey(
        Series, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )  # the primary key (series, ts) is the index
    ts = TimescaleDateTimeField(interval="1 day")
    value = models.FloatField()

    class Meta:
        # Newest-first listings are the common query; the primary key index serves them scanned backwards.
        ordering = ["series", "-ts"]

    def __str__(self):
        return f"{self.series_id}@{self.ts.isoformat()}={self.value}"


class LatestValue(models.Model):
    """The most recent reading of a series, for O(1) "current value" reads; advanced once per ingest flush."""

    series = models.OneToOneField(Series, primary_key=True, on_delete=models.CASCADE, related_name="latest")
    ts = models.DateTimeField()
    value = models.FloatField()

    class Meta:
        ordering = ["series"]

    def __str__(self):
        return f"{self.series_id}={self.value} at {self.ts.isoformat()}"


class DeadLetter(models.Model):
    """Input ingest refused, kept for diagnosis: why, from where, and the payload truncated to a bound."""

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.CharField(max_length=8, choices=IngestSource.choices)
    origin = models.CharField(max_length=300, blank=True, help_text="MQTT topic, or the API key prefix and address.")
    device_uid = models.CharField(max_length=128, blank=True, db_index=True)
    reason = models.CharField(max_length=32, choices=RejectReason.choices, db_index=True)
    detail = models.CharField(max_length=500, blank=True)
    payload = models.BinaryField(help_text="The offending payload, truncated to INGEST_DEAD_LETTER_PAYLOAD_BYTES.")
    payload_size = models.PositiveIntegerField(help_text="Size of the payload as received, in bytes.")
    # The site the sender is bound to (the gateway's, or the device's own): what scopes a letter to an organization,
    # also when it names a device nobody registered. No database constraint: a letter outlives its site.
    site = models.ForeignKey(
        "devices.Site", null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    # What the transport said about the sender (apps.telemetry.replay.context_of): how to replay the payload.
    context = models.JSONField(default=dict, blank=True)
    replayed_at = models.DateTimeField(null=True, blank=True)
    replay_result = models.CharField(max_length=16, choices=ReplayResult.choices, blank=True)
    replay_detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name = "dead letter"

    def __str__(self):
        return f"{self.get_reason_display()} from {self.origin or self.source}"


class SparkplugNode(models.Model):
    """A Sparkplug B edge node's birth state as the listener last committed it (``apps.telemetry.sparkplug``):
    what its NBIRTH and DBIRTHs defined (metric names, datatypes, aliases), which devices are born, and the last
    sequence number. Written in the transaction of the batch that changed it, so a birth is acknowledged only once
    its aliases are stored, and a restarted listener reads data messages against the same definitions."""

    group_id = models.CharField(max_length=255)
    edge_node_id = models.CharField(max_length=255)
    online = models.BooleanField(default=False, help_text="An NBIRTH came and no NDEATH since.")
    bd_seq = models.BigIntegerField(null=True, blank=True, help_text="The bdSeq of the current NBIRTH.")
    seq = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The last sequence number seen.")
    definitions = models.JSONField(default=dict, help_text="Aliases, metric names and datatypes, born devices.")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["group_id", "edge_node_id"]
        verbose_name = "Sparkplug edge node"
        constraints = [
            models.UniqueConstraint(fields=["group_id", "edge_node_id"], name="sparkplug_node_unique"),
        ]

    def __str__(self):
        return f"{self.group_id}/{self.edge_node_id}"


# ---------------------------------------------------------------------------------------------------------------------
# Rollups: per series and bucket, the mergeable aggregates a chart or a statistic needs. Coarser buckets are merged
# from finer ones (count and sums add, min/max fold, first/last pick by timestamp), so a year of 50 series is read
# from a few thousand rows instead of 26 million readings.
# ---------------------------------------------------------------------------------------------------------------------


class RollupBase(models.Model):
    """Aggregates of one series over one UTC bucket ``[bucket, bucket + resolution)``."""

    pk = models.CompositePrimaryKey("series", "bucket")
    series = models.ForeignKey(
        Series, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    bucket = models.DateTimeField()
    count = models.IntegerField()
    sum = models.FloatField()
    sum_sq = models.FloatField(help_text="Sum of squares, for the standard deviation.")
    min = models.FloatField()
    max = models.FloatField()
    first_ts = models.DateTimeField()
    first_value = models.FloatField()
    last_ts = models.DateTimeField()
    last_value = models.FloatField()

    class Meta:
        abstract = True

    def __str__(self):
        return f"{self.series_id}@{self.bucket.isoformat()}: n={self.count}"


class Rollup1m(RollupBase):
    class Meta:
        db_table = "telemetry_rollup_1m"
        verbose_name = "1-minute rollup"


class Rollup5m(RollupBase):
    class Meta:
        db_table = "telemetry_rollup_5m"
        verbose_name = "5-minute rollup"


class Rollup1h(RollupBase):
    class Meta:
        db_table = "telemetry_rollup_1h"
        verbose_name = "1-hour rollup"


class Rollup1d(RollupBase):
    class Meta:
        db_table = "telemetry_rollup_1d"
        verbose_name = "1-day rollup"


class RollupWatermark(models.Model):
    """Buckets of this resolution that end at or before ``rolled_until`` are rolled up (closed and computed)."""

    resolution = models.CharField(max_length=2, choices=Resolution.choices, primary_key=True)
    rolled_until = models.DateTimeField()
    # 1m only: where the run in progress is closing to. Ingest marks readings older than this dirty; it is
    # published (and in-flight flushes waited for) before the range is computed, so no late reading slips between.
    closing_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.resolution} rolled up until {self.rolled_until.isoformat()}"


class RollupDirtyBucket(models.Model):
    """A 1-minute bucket behind the watermark that received late readings; the next rollup run recomputes it
    (and, from it, the coarser buckets that contain it) and deletes this row."""

    pk = models.CompositePrimaryKey("series", "bucket")
    series = models.ForeignKey(
        Series, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    bucket = models.DateTimeField()
    marked_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.series_id}@{self.bucket.isoformat()} (dirty)"


class SiteEnergyHour(models.Model):
    """A site's electricity in one UTC hour ``[hour, hour + 1 h)``, in kWh: the figure the site energy report computes
    for that hour from the hourly rollups of the site's sources (``energy.kwh`` with ``combine``), stored so that
    long ranges read one row per hour instead of one per source and hour. Written only by
    ``site_energy.site_energy_refresh``; valid for the sources ``SiteEnergyState.sources_digest`` describes. An hour
    without a figure (no source reported) has no row, as the report has no bucket."""

    pk = models.CompositePrimaryKey("site", "hour")
    site = models.ForeignKey("devices.Site", on_delete=models.CASCADE, related_name="+", db_index=False)
    hour = models.DateTimeField()
    kwh = models.FloatField()

    class Meta:
        verbose_name = "site energy hour"

    def __str__(self):
        return f"site {self.site_id}@{self.hour.isoformat()}={self.kwh} kWh"


class SiteEnergyState(models.Model):
    """How far a site's ``SiteEnergyHour`` rows are final, and for which sources.

    The rows before ``complete_until`` are the report's figures for the sources ``sources_digest`` describes
    (``energy.sources_digest``), except from ``dirty_from`` on: the rollup engine recomputed an hourly bucket of a
    source there (late data), and the next refresh recomputes the rows from that hour."""

    site = models.OneToOneField("devices.Site", on_delete=models.CASCADE, primary_key=True, related_name="+")
    sources_digest = models.CharField(max_length=64, blank=True)
    complete_until = models.DateTimeField(null=True, blank=True)
    dirty_from = models.DateTimeField(null=True, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    # The site's ``SiteHeatPumpDay`` rows: final before days_until (a local midnight at most complete_until), for the
    # heat-pump sources and zone days_digest describes (``energy.heat_pump_digest``); dirty_from applies to them too.
    days_digest = models.CharField(max_length=64, blank=True)
    days_until = models.DateTimeField(null=True, blank=True)
    # Each stored source's part of the digests (``energy.sources_parts``; ``{"tz", "series":
    # energy.heat_pump_parts}``): a refresh that finds sources added computes only theirs instead of rebuilding.
    sources_parts = models.JSONField(null=True, blank=True)
    days_parts = models.JSONField(null=True, blank=True)

    class Meta:
        verbose_name = "site energy state"

    def __str__(self):
        return f"site {self.site_id} energy final until {self.complete_until}"


class SiteHeatPumpDay(models.Model):
    """One series' figure in one local day of its site ``[day, next local midnight)`` (23 or 25 hours across a DST
    change): kWh for a heat pump's heat output and electrical input (``energy.kwh`` in 1d buckets of the site's zone,
    per series), degree days for its outdoor temperature (``energy.heating_degree_days`` over that day), from hourly
    rollups. Stored so that the heat-pump page reads one row per series and day instead of 24 rollup rows. Written only
    by ``site_energy.site_energy_refresh``; valid for the sources and zone ``SiteEnergyState.days_digest`` describes.
    A day without a figure (no rollup) has no row, as the page has no bucket. No foreign key to the series: rows go
    with a rebuild when the sources change (a purge changes them).

    ``through`` is the series' running sum: its values from its first stored day through this one, so the sum over
    any range of stored days is two rows' difference (the page reads 300 series' year totals in 600 index probes
    rather than summing 109,500 rows)."""

    pk = models.CompositePrimaryKey("site", "series_id", "day")
    site = models.ForeignKey("devices.Site", on_delete=models.CASCADE, related_name="+", db_index=False)
    series_id = models.IntegerField()
    day = models.DateTimeField()
    value = models.FloatField()
    through = models.FloatField()

    class Meta:
        verbose_name = "site heat-pump day"

    def __str__(self):
        return f"site {self.site_id} series {self.series_id}@{self.day.isoformat()}={self.value}"


# ---------------------------------------------------------------------------------------------------------------------
# Exports and the cold archive
# ---------------------------------------------------------------------------------------------------------------------


class ExportJob(models.Model):
    """An asynchronous export of series over a range, written to Django storage by a Celery worker."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="exports")
    status = models.CharField(max_length=10, choices=ExportStatus.choices, default=ExportStatus.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent done.")
    # What to export, as validated by the API: series ids, range, interval, aggregates, format.
    parameters = models.JSONField()
    format = models.CharField(max_length=10, choices=ExportFormat.choices)
    file_name = models.CharField(max_length=300, blank=True, help_text="Path in the default storage.")
    file_size = models.BigIntegerField(null=True, blank=True)
    rows = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "expires_at"], name="export_status_expiry")]

    def __str__(self):
        return f"export {self.id} ({self.status})"


class ArchivedDay(models.Model):
    """The manifest entry of one site's raw readings of one UTC day, written to storage before they are dropped."""

    site = models.ForeignKey("devices.Site", on_delete=models.PROTECT, related_name="archived_days")
    day = models.DateField()
    file_name = models.CharField(max_length=300)
    rows = models.BigIntegerField()
    file_size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    restored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-day", "site"]
        constraints = [models.UniqueConstraint(fields=["site", "day"], name="archived_day_unique_per_site")]

    def __str__(self):
        return f"{self.site} {self.day.isoformat()} ({self.rows} readings)"
