"""Prometheus counters of alert evaluation. Each process (listener, web, worker) exposes its own."""

from prometheus_client import Counter

# A rule whose evaluation raised was skipped so that the other rules of its batch could go on (the log names the rule
# and the error); ``stage`` is ``evaluation`` (ingest batches) or ``timers`` (no-data and elapsed durations, beat).
RULE_FAILURES = Counter(
    "fieldwatch_alert_rule_failures", "Alert rules skipped because evaluating them failed", ["stage"]
)
# At-least-once evaluation (apps.alerts.outbox): a batch whose evaluation right after its commit failed is deferred to
# the sweep; the sweep counts what it evaluated and what it gave up on after ALERT_EVALUATION_MAX_ATTEMPTS.
EVALUATIONS_DEFERRED = Counter(
    "fieldwatch_alert_evaluations_deferred_total", "Ingest batches whose alert evaluation failed and awaits the sweep"
)
EVALUATIONS_SWEPT = Counter(
    "fieldwatch_alert_evaluations_swept_total", "Deferred alert evaluations completed by the sweep"
)
EVALUATIONS_ABANDONED = Counter(
    "fieldwatch_alert_evaluations_abandoned_total",
    "Deferred alert evaluations left for an operator after repeated failures",
)
