"""How the alerts app reacts to the apps below it: connected in ``AlertsConfig.ready()``.

* every ingest flush records the readings its rules cover in the flush's own transaction and evaluates them right
  after the commit (``apps.alerts.outbox``: at least once, applied exactly once); when that opens an alert whose
  first escalation step is due at once, an escalation run is kicked off so the first notification goes out within
  seconds instead of at the next beat tick (the claims make the kick and beat safe to overlap);
* a change to rules, or to the devices, sites and metrics they cover and name, tells every ingest process to
  reload its rules index (``apps.alerts.rules_cache``), after commit.
"""

from apps.alerts.evaluation import Outcome
from apps.alerts.models import AlertRule
from apps.alerts.outbox import pending_record
from apps.alerts.rules_cache import rules_changed
from apps.alerts.tasks import escalations_run_task
from apps.core.signals import call_on_commit_when_changed
from apps.devices.models import Device, MetricDefinition, Site
from apps.telemetry.models import Reading
from apps.telemetry.signals import readings_storing

RULES_INDEX_MODELS = (AlertRule, Device, Site, MetricDefinition)


def escalate_when_due(outcome: Outcome) -> None:
    if outcome.escalation_due:
        escalations_run_task.delay()


def record_readings_for_evaluation(sender, readings, **kwargs):
    return pending_record(readings, evaluated=escalate_when_due)


readings_storing.connect(record_readings_for_evaluation, sender=Reading, dispatch_uid="alerts-evaluate")
call_on_commit_when_changed(RULES_INDEX_MODELS, rules_changed, uid="alert-rules")
