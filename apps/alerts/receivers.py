"""How the alerts app reacts to the apps below it: connected in ``AlertsConfig.ready()``.

* every committed ingest flush is evaluated against the cached rules (``apps.alerts.evaluation``); when that opens
  an alert whose first escalation step is due at once, an escalation run is kicked off so the first notification
  goes out within seconds instead of at the next beat tick (the claims make the kick and beat safe to overlap);
* a change to rules, or to the devices, sites and metrics they cover and name, tells every ingest process to
  reload its rules index (``apps.alerts.rules_cache``), after commit.
"""

from apps.alerts.evaluation import readings_evaluate
from apps.alerts.models import AlertRule
from apps.alerts.rules_cache import rules_changed
from apps.alerts.tasks import escalations_run_task
from apps.core.signals import call_on_commit_when_changed
from apps.devices.models import Device, MetricDefinition, Site
from apps.telemetry.models import Reading
from apps.telemetry.signals import readings_committed

RULES_INDEX_MODELS = (AlertRule, Device, Site, MetricDefinition)


def evaluate_committed_readings(sender, readings, **kwargs):
    outcome = readings_evaluate(readings)
    if outcome.escalation_due:
        escalations_run_task.delay()
    return outcome


readings_committed.connect(evaluate_committed_readings, sender=Reading, dispatch_uid="alerts-evaluate")
call_on_commit_when_changed(RULES_INDEX_MODELS, rules_changed, uid="alert-rules")
