"""Alert evaluation for tests of any app: rules, a feed of CommittedReading batches, and evaluating them."""

import datetime

from django.utils import timezone

from apps.alerts.choices import Operator, RuleKind
from apps.alerts.evaluation import batch_evaluate
from apps.alerts.models import AlertRule
from apps.alerts.rules_cache import rules_load
from apps.telemetry.ingest.records import CommittedReading
from apps.telemetry.models import Reading, Series

T0 = timezone.now().replace(microsecond=0) - datetime.timedelta(minutes=30)
S = datetime.timedelta(seconds=1)


def make_rule(organization, **fields) -> AlertRule:
    defaults = {"name": "Supply too hot", "kind": RuleKind.THRESHOLD, "metric_key": "supply_temp"}
    return AlertRule.objects.create(organization=organization, **{**defaults, **fields})


def hot_rule(site, **fields) -> AlertRule:
    """'gt 80, clear below 75' on every heat pump of the site."""
    return make_rule(site.organization, site=site, operator=Operator.GT, threshold=80, clear_threshold=75, **fields)


class Feed:
    """Builds CommittedReading batches for devices, with real series ids (rate rules read stored history)."""

    def __init__(self):
        self.series = {}

    def series_id(self, device, metric):
        if (device.id, metric) not in self.series:
            self.series[device.id, metric] = Series.objects.get_or_create(device=device, metric_key=metric)[0].id
        return self.series[device.id, metric]

    def batch(self, *rows, store=False):
        """rows: (device, metric, seconds after T0, value)."""
        readings = [
            CommittedReading(self.series_id(device, metric), device.id, metric, T0 + seconds * S, float(value))
            for device, metric, seconds, value in rows
        ]
        if store:
            Reading.objects.bulk_create(Reading(series_id=r.series_id, ts=r.ts, value=r.value) for r in readings)
        return readings


def evaluate(readings):
    return batch_evaluate(readings, index=rules_load())
