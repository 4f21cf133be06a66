"""The in-process index of enabled alert rules that the ingest hook evaluates every committed batch against.

Evaluation runs after every flush, so it must not query per reading (nor per batch, for the rules): each ingest
process loads every enabled rule once, expands site and site+device-type scopes to the device ids they cover, and
indexes them by ``(device_id, metric_key)``. Changes reach it as they reach the ingest catalogue
(apps.telemetry.ingest.directory): a version number in the shared cache, bumped after commit by the signals in
apps.alerts.signals (rules, devices, sites, metric definitions), compared at most once per ``check_interval`` and
reloaded when it differs, plus a full reload every ``max_age`` so a lost bump or a ``QuerySet.update()`` is picked
up eventually.
"""

import datetime
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Q

from apps.alerts.choices import RuleKind
from apps.alerts.models import AlertRule
from apps.core.versioned import VersionedSnapshot, VersionKey
from apps.devices.models import Device, MetricDefinition

logger = logging.getLogger(__name__)

# Bumped (on commit) by apps/alerts/signals.py when rules or the devices they cover change.
RULES_VERSION = VersionKey("alerts:rules-version", "alert rules")
RULES_VERSION_KEY = RULES_VERSION.key
rules_changed = RULES_VERSION.bump


@dataclass(frozen=True, slots=True)
class CachedRule:
    """What evaluation needs of a rule, as plain attributes (no model instance on the hot path)."""

    id: int
    name: str
    kind: str
    severity: str
    metric_key: str
    operator: str
    threshold: float | None
    threshold_high: float | None
    clear_threshold: float | None
    for_duration: datetime.timedelta | None
    rate_direction: str
    rate_delta: float | None
    rate_window: datetime.timedelta | None
    silence: datetime.timedelta | None
    escalation_policy_id: int | None


@dataclass(frozen=True, slots=True)
class DeviceLabel:
    name: str
    site_name: str
    device_type_id: int


@dataclass(slots=True)
class RulesIndex:
    """Rules by what a reading is looked up with, and the names alert messages are written with."""

    # (device_id, metric_key) -> threshold and rate-of-change rules that apply to that series
    metric_rules: dict[tuple[int, str], tuple[CachedRule, ...]] = field(default_factory=dict)
    # device_id -> no-data rules covering the device (device-level: metric_key "", or one metric): a reading clears
    no_data_rules: dict[int, tuple[CachedRule, ...]] = field(default_factory=dict)
    devices: dict[int, DeviceLabel] = field(default_factory=dict)
    # (device_type_id, metric_key) -> (display name, unit)
    metrics: dict[tuple[int, str], tuple[str, str]] = field(default_factory=dict)

    def metric_label(self, device_id: int, metric_key: str) -> tuple[str, str]:
        device = self.devices.get(device_id)
        if device is None:
            return metric_key, ""
        return self.metrics.get((device.device_type_id, metric_key), (metric_key, ""))

    def device_label(self, device_id: int) -> str:
        device = self.devices.get(device_id)
        return f"{device.name} ({device.site_name})" if device else f"device {device_id}"


def _cached(rule: AlertRule) -> CachedRule:
    return CachedRule(
        id=rule.id,
        name=rule.name,
        kind=rule.kind,
        severity=rule.severity,
        metric_key=rule.metric_key,
        operator=rule.operator,
        threshold=rule.threshold,
        threshold_high=rule.threshold_high,
        clear_threshold=rule.clear_threshold,
        for_duration=rule.for_duration or None,
        rate_direction=rule.rate_direction,
        rate_delta=rule.rate_delta,
        rate_window=rule.rate_window,
        silence=rule.silence,
        escalation_policy_id=rule.escalation_policy_id,
    )


def rules_load() -> RulesIndex:
    """Build the index from the database: three queries whatever the number of rules and devices."""
    rows = list(AlertRule.objects.filter(enabled=True))
    if not rows:
        return RulesIndex()
    scope = {rule.id: (rule.device_id, rule.site_id, rule.device_type_id) for rule in rows}
    return _index([_cached(rule) for rule in rows], scope)


def _index(rules: list[CachedRule], scope: dict[int, tuple[int | None, int | None, int | None]]) -> RulesIndex:
    device_ids = {device_id for device_id, _, _ in scope.values() if device_id}
    site_ids = {site_id for device_id, site_id, _ in scope.values() if not device_id and site_id}
    devices = list(
        Device.objects.filter(Q(id__in=device_ids) | Q(site_id__in=site_ids)).values_list(
            "id", "name", "site_id", "site__name", "device_type_id"
        )
    )
    type_ids = {row[4] for row in devices}
    metrics = {
        (type_id, key): (display_name, unit)
        for type_id, key, display_name, unit in MetricDefinition.objects.filter(
            device_type_id__in=type_ids
        ).values_list("device_type_id", "key", "display_name", "unit")
    }
    by_site = defaultdict(list)
    for device_id, _, site_id, _, type_id in devices:
        by_site[site_id].append((device_id, type_id))
    device_type = {row[0]: row[4] for row in devices}

    metric_rules: dict[tuple[int, str], list[CachedRule]] = defaultdict(list)
    no_data_rules: dict[int, list[CachedRule]] = defaultdict(list)
    for rule in rules:
        rule_device, rule_site, rule_type = scope[rule.id]
        if rule_device:
            covered = [(rule_device, device_type.get(rule_device))] if rule_device in device_type else []
        else:
            covered = [(d, t) for d, t in by_site.get(rule_site, ()) if rule_type is None or t == rule_type]
        for device_id, type_id in covered:
            # A site-wide rule on a metric covers only the devices whose type has that metric: a flow meter on the
            # site neither has a supply temperature that can cross a threshold nor one that can fall silent.
            if rule.metric_key and (type_id, rule.metric_key) not in metrics:
                continue
            if rule.kind == RuleKind.NO_DATA:
                no_data_rules[device_id].append(rule)
            else:
                metric_rules[device_id, rule.metric_key].append(rule)
    return RulesIndex(
        metric_rules={key: tuple(value) for key, value in metric_rules.items()},
        no_data_rules={key: tuple(value) for key, value in no_data_rules.items()},
        devices={
            device_id: DeviceLabel(name, site_name, type_id) for device_id, name, _, site_name, type_id in devices
        },
        metrics=metrics,
    )


class RulesCache(VersionedSnapshot):
    """The process's ``RulesIndex``, refreshed when the rules version changes (see apps.core.versioned)."""

    version_key = RULES_VERSION

    def __init__(self, **freshness):
        super().__init__(**freshness)
        self._index = RulesIndex()

    def index(self) -> RulesIndex:
        self.refresh_if_stale()
        return self._index

    def _load(self) -> str:
        self._index = rules_load()
        return f"{len(self._index.metric_rules)} series and {len(self._index.no_data_rules)} devices covered"


rules_cache = RulesCache()
