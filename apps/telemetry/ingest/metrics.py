"""Prometheus counters of ingest. Each process (web, listener) exposes its own; Prometheus sums them by job."""

from prometheus_client import Counter, Gauge, Histogram

RECEIVED = Counter("fieldwatch_ingest_messages_received_total", "Messages and HTTP bodies received", ["source"])
ACCEPTED = Counter("fieldwatch_ingest_readings_accepted_total", "Readings stored", ["source"])
REJECTED = Counter(
    "fieldwatch_ingest_rejected_total", "Records, values or whole payloads refused, by reason", ["source", "reason"]
)
DUPLICATES = Counter("fieldwatch_ingest_readings_duplicate_total", "Readings already stored (idempotent)", ["source"])
FLUSH_SIZE = Histogram(
    "fieldwatch_ingest_flush_readings",
    "Readings written per flush",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000),
)
FLUSH_SECONDS = Histogram(
    "fieldwatch_ingest_flush_seconds",
    "Time to write and commit one flush",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LISTENER_LAG = Gauge(
    "fieldwatch_ingest_listener_lag_seconds", "Age of the oldest message of the last flush when it was committed"
)
FLUSH_FAILURES = Counter("fieldwatch_ingest_flush_failures_total", "Flushes that failed and were retried")
FLUSH_ISOLATIONS = Counter(
    "fieldwatch_ingest_flush_isolations_total", "Batches split because a message raised an unexpected error"
)
LISTENER_CONNECTED = Gauge("fieldwatch_ingest_listener_connected", "1 while the listener is connected to the broker")
# Evaluated at scrape time (set_function), so it grows while the flushing loop is stuck, e.g. retrying a flush
# against an unreachable database; an idle listener's loop turns every 0.25 s.
LISTENER_LOOP_AGE = Gauge(
    "fieldwatch_ingest_listener_loop_age_seconds", "Seconds since the listener's flushing loop last made progress"
)
LISTENER_BUFFER_BYTES = Gauge(
    "fieldwatch_ingest_listener_buffer_bytes",
    "Payload bytes received and waiting for a flush (bounded by INGEST_BUFFER_BYTES)",
)
LISTENER_BACKPRESSURE_SECONDS = Counter(
    "fieldwatch_ingest_listener_backpressure_seconds_total",
    "Time the listener stopped reading from the broker because its buffer was full (the writer was behind)",
)
DIALECT_MESSAGES = Counter(
    "fieldwatch_ingest_dialect_messages_total", "Messages and HTTP bodies received, by dialect", ["source", "dialect"]
)
DIALECT_REJECTED = Counter(
    "fieldwatch_ingest_dialect_rejected_total", "Records, values or payloads refused, by dialect", ["dialect", "reason"]
)
SPARKPLUG_REBIRTHS = Counter(
    "fieldwatch_ingest_sparkplug_rebirth_requests_total",
    "Node Control/Rebirth commands sent to Sparkplug edge nodes (unknown alias, sequence gap, data before a birth)",
)
