"""Prometheus counters of alert evaluation. Each process (listener, web, worker) exposes its own."""

from prometheus_client import Counter

# A rule whose evaluation raised was skipped so that the other rules of its batch could go on (the log names the rule
# and the error); ``stage`` is ``evaluation`` (ingest batches) or ``timers`` (no-data and elapsed durations, beat).
RULE_FAILURES = Counter(
    "fieldwatch_alert_rule_failures", "Alert rules skipped because evaluating them failed", ["stage"]
)
