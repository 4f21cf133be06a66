from django.db import models
from django.utils import timezone
from timescale.db.models.fields import TimescaleDateTimeField

from apps.telemetry.choices import IngestSource, RejectReason


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

    class Meta:
        ordering = ["-received_at"]
        verbose_name = "dead letter"

    def __str__(self):
        return f"{self.get_reason_display()} from {self.origin or self.source}"
