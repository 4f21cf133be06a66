"""Writes of the alerts app: the alert lifecycle (acknowledge, resolve), rule management, and the beat job for
no-data rules and elapsed *for* durations. Evaluation on ingest lives in apps.alerts.evaluation.

Lifecycle writes re-check the user's right inside the transaction, on the row locked with ``SELECT ... FOR UPDATE``,
so a permission revoked or a state changed by someone else in between is seen. Operators of the alert's site and
admins may act; viewers get ``PermissionDenied``.
"""

import datetime

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.alerts.choices import CLOSED_STATUSES, AlertEventKind, AlertStatus, Operator, RuleKind
from apps.alerts.evaluation import (
    RULE_ERRORS,
    Opening,
    no_data_message,
    rule_failures_report,
    rules_isolated,
    threshold_message,
    transitions_apply,
)
from apps.alerts.models import RULE_DURATIONS, RULE_NUMBERS, Alert, AlertEvent, AlertRule, Delivery, RuleCondition
from apps.alerts.rules_cache import DeviceLabel, RulesIndex, _cached
from apps.alerts.signals import alerts_changed_on_commit
from apps.core.audit import AuditAction, audit
from apps.core.retention import rows_purge
from apps.devices.models import Device, MetricDefinition
from apps.devices.selectors import user_can_operate_site


class AlertStateError(ValidationError):
    """The alert is not in a state that allows this transition (already acknowledged, already resolved)."""


def _require_operator(*, user, site) -> None:
    if not user_can_operate_site(user=user, site=site):
        raise PermissionDenied("Only operators of the site and admins may do this.")


# ---------------------------------------------------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------------------------------------------------


def _lock(alert: Alert) -> Alert:
    return Alert.objects.select_for_update(of=("self",)).select_related("device__site").get(pk=alert.pk)


def alert_acknowledge(*, alert: Alert, user, note: str = "") -> Alert:
    """Someone is on it: record who, when and why, and stop escalation.

    An active alert becomes ``acknowledged``; a cleared one stays ``cleared`` but records the acknowledgement (the
    issue allows acknowledging at any time). Acknowledging twice, or a resolved alert, raises ``AlertStateError``.
    """
    with transaction.atomic():
        locked = _lock(alert)
        _require_operator(user=user, site=locked.device.site)
        if locked.status == AlertStatus.RESOLVED or locked.acknowledged_at is not None:
            raise AlertStateError(f"This alert is already {locked.get_status_display().lower()}.")
        now = timezone.now()
        new_status = AlertStatus.ACKNOWLEDGED if locked.status == AlertStatus.ACTIVE else locked.status
        claimed = Alert.objects.filter(pk=locked.pk, status=locked.status, acknowledged_at__isnull=True).update(
            status=new_status,
            acknowledged_at=now,
            acknowledged_by=user,
            acknowledged_note=note,
            next_escalation_at=None,
        )
        if claimed != 1:  # unreachable under the row lock; kept so a future caller without it cannot double-write
            raise AlertStateError("This alert changed meanwhile; reload it.")
        AlertEvent.objects.create(alert=locked, kind=AlertEventKind.ACKNOWLEDGED, at=now, actor=user, note=note)
        audit(actor=user, action=AuditAction.ALERT_ACKNOWLEDGE, target=locked, after={"note": note})
        alerts_changed_on_commit([locked.pk])  # live dashboards
    alert.refresh_from_db()
    return alert


def alert_resolve(*, alert: Alert, user, note: str = "") -> Alert:
    """Close the alert whatever its state. If its condition still holds, the next trigger opens a new alert."""
    with transaction.atomic():
        locked = _lock(alert)
        _require_operator(user=user, site=locked.device.site)
        if locked.status == AlertStatus.RESOLVED:
            raise AlertStateError("This alert is already resolved.")
        now = timezone.now()
        claimed = Alert.objects.filter(pk=locked.pk, status=locked.status).update(
            status=AlertStatus.RESOLVED,
            resolved_at=now,
            resolved_by=user,
            resolved_note=note,
            next_escalation_at=None,
            next_escalation_position=None,
        )
        if claimed != 1:
            raise AlertStateError("This alert changed meanwhile; reload it.")
        AlertEvent.objects.create(alert=locked, kind=AlertEventKind.RESOLVED, at=now, actor=user, note=note)
        audit(actor=user, action=AuditAction.ALERT_RESOLVE, target=locked, after={"note": note})
        alerts_changed_on_commit([locked.pk])  # live dashboards
    alert.refresh_from_db()
    return alert


# ---------------------------------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------------------------------

RULE_FIELDS = (
    "name",
    "kind",
    "severity",
    "enabled",
    "site",
    "device_type",
    "device",
    "metric_key",
    "operator",
    "threshold",
    "threshold_high",
    "clear_threshold",
    "for_duration",
    "rate_direction",
    "rate_delta",
    "rate_window",
    "silence",
    "escalation_policy",
)


def _metric_errors(rule: AlertRule) -> str | None:
    key = rule.metric_key
    if rule.device_id:
        type_ids, where = [rule.device.device_type_id], f"Device type '{rule.device.device_type}'"
    elif rule.device_type_id:
        type_ids, where = [rule.device_type_id], f"Device type '{rule.device_type}'"
    else:
        type_ids = list(Device.objects.filter(site_id=rule.site_id).values_list("device_type_id", flat=True).distinct())
        where = f"No device type on site '{rule.site}'"
    keys = sorted(set(MetricDefinition.objects.filter(device_type_id__in=type_ids).values_list("key", flat=True)))
    if key in keys:
        return None
    known = f" (known metrics: {', '.join(keys)})" if keys else ""
    if rule.device_id or rule.device_type_id:
        return f"{where} has no metric '{key}'{known}."
    return f"{where} has a metric '{key}'{known}."


def alert_rule_validate(rule: AlertRule) -> None:
    """Raise ``ValidationError`` with a message per field for anything that would make the rule meaningless."""
    errors: dict[str, str] = {}
    org_id = rule.organization_id

    # Scope
    if rule.device_id and (rule.site_id or rule.device_type_id):
        errors["device"] = "A device-scoped rule takes no site or device type: the device decides both."
    elif not rule.device_id and not rule.site_id:
        errors["site"] = "Scope the rule to a device, or to a site (optionally one device type)."
    if rule.device_id and rule.device.site.organization_id != org_id:
        errors["device"] = "This device belongs to another organization."
    if rule.site_id and rule.site.organization_id != org_id:
        errors["site"] = "This site belongs to another organization."
    if rule.device_type_id and rule.device_type.organization_id != org_id:
        errors["device_type"] = "This device type belongs to another organization."
    if rule.escalation_policy_id and rule.escalation_policy.organization_id != org_id:
        errors["escalation_policy"] = "This escalation policy belongs to another organization."

    # Bounds of durations and numbers: the model fields' validators, also for callers that bypass a form or the API.
    for name in (*RULE_DURATIONS, *RULE_NUMBERS):
        try:
            AlertRule._meta.get_field(name).run_validators(getattr(rule, name))
        except ValidationError as error:
            errors[name] = error.messages[0]
    if rule.for_duration and rule.kind != RuleKind.THRESHOLD and "for_duration" not in errors:
        errors["for_duration"] = "A 'for' duration applies to threshold rules only."

    # What each kind needs
    if rule.kind == RuleKind.THRESHOLD:
        if not rule.metric_key:
            errors["metric_key"] = "A threshold rule needs a metric."
        if not rule.operator:
            errors["operator"] = "A threshold rule needs an operator."
        if rule.threshold is None:
            errors["threshold"] = "A threshold rule needs a threshold."
        elif rule.operator == Operator.OUTSIDE:
            if rule.threshold_high is None:
                errors["threshold_high"] = "An 'outside' rule needs a high bound (threshold is the low bound)."
            elif rule.threshold_high <= rule.threshold:
                errors["threshold_high"] = "The high bound must be greater than the low bound (threshold)."
        clear = rule.clear_threshold
        if clear is not None and rule.threshold is not None and "threshold" not in errors:
            if rule.operator in (Operator.GT, Operator.GE) and clear >= rule.threshold:
                errors["clear_threshold"] = (
                    f"The clear threshold must be below the threshold {rule.threshold:g} for a rule raising above it "
                    "(e.g. raise above 80, clear below 75)."
                )
            elif rule.operator in (Operator.LT, Operator.LE) and clear <= rule.threshold:
                errors["clear_threshold"] = (
                    f"The clear threshold must be above the threshold {rule.threshold:g} for a rule raising below it "
                    "(e.g. raise below 5, clear above 8)."
                )
            elif rule.operator == Operator.OUTSIDE:
                errors["clear_threshold"] = (
                    "An 'outside' rule clears when the value is back inside [low, high]; for hysteresis, use two "
                    "rules ('>' and '<') with their own clear thresholds."
                )
    elif rule.kind == RuleKind.RATE_OF_CHANGE:
        if not rule.metric_key:
            errors["metric_key"] = "A rate-of-change rule needs a metric."
        if not rule.rate_direction:
            errors["rate_direction"] = "A rate-of-change rule needs a direction (rising, falling or either)."
        if rule.rate_delta is None:
            errors["rate_delta"] = "A rate-of-change rule needs the change (delta) to watch for."
        elif rule.rate_delta <= 0:
            errors["rate_delta"] = "The change must be positive; the direction says rising or falling."
        if rule.rate_window is None:
            errors["rate_window"] = "A rate-of-change rule needs a window."
    elif rule.kind == RuleKind.NO_DATA:
        if rule.silence is None:
            errors["silence"] = "A no-data rule needs a silence (how long without data raises it)."

    scope_ok = not ({"site", "device", "device_type"} & errors.keys())
    if rule.metric_key and "metric_key" not in errors and scope_ok and (message := _metric_errors(rule)):
        errors["metric_key"] = message
    if errors:
        raise ValidationError(errors)


def _rule_sites(rule: AlertRule) -> list:
    return [rule.device.site] if rule.device_id else [rule.site] if rule.site_id else []


def _require_rule_operator(*, user, rule: AlertRule) -> None:
    for site in _rule_sites(rule):
        _require_operator(user=user, site=site)


def alert_rule_create(*, user, **fields) -> AlertRule:
    """Create a rule after validation; the user must operate the rule's site (or the device's)."""
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"unknown rule fields: {sorted(unknown)}")
    rule = AlertRule(**fields)
    if user.organization_id:
        rule.organization_id = user.organization_id
    else:  # a superuser without an organization: the scope decides
        scope = rule.device.site if rule.device_id else rule.site
        rule.organization_id = scope.organization_id if scope else None
    with transaction.atomic():
        if rule.site_id or rule.device_id:
            _require_rule_operator(user=user, rule=rule)
        alert_rule_validate(rule)
        rule.save()
    return rule


def alert_rule_update(*, rule: AlertRule, user, **fields) -> AlertRule:
    """Change a rule. Pending *for* durations restart: they were measured against the old condition."""
    unknown = set(fields) - set(RULE_FIELDS)
    if unknown:
        raise TypeError(f"unknown rule fields: {sorted(unknown)}")
    with transaction.atomic():
        locked = AlertRule.objects.select_for_update().get(pk=rule.pk)
        _require_rule_operator(user=user, rule=locked)  # may manage the rule where it is ...
        for name, value in fields.items():
            setattr(locked, name, value)
        _require_rule_operator(user=user, rule=locked)  # ... and where it goes
        alert_rule_validate(locked)
        locked.save()
        RuleCondition.objects.filter(rule=locked).delete()
    return locked


def alert_rule_delete(*, rule: AlertRule, user) -> None:
    """Delete a rule and, with it, its alerts and their history (CASCADE): disable it to keep the history."""
    with transaction.atomic():
        locked = AlertRule.objects.select_for_update().get(pk=rule.pk)
        _require_rule_operator(user=user, rule=locked)
        locked.delete()


# ---------------------------------------------------------------------------------------------------------------------
# Timers (beat): no-data rules and *for* durations that elapsed without a new reading
# ---------------------------------------------------------------------------------------------------------------------

_OPEN_ALERT_EXISTS = (
    "EXISTS (SELECT 1 FROM alerts_alert a WHERE a.rule_id = r.id AND a.device_id = d.id "
    "AND a.status IN ('active', 'acknowledged'))"
)

# One statement for every no-data rule and every device it covers. Silence is measured from the device's last_seen
# (device-level rule: metric_key '') or the series' latest reading (metric-level); a device or series that never
# reported counts from when it could first have been expected: the later of the rule's and the device's creation,
# so a new rule does not flood the fleet with alerts for devices that never sent anything before it existed (they
# do alert once the silence has passed since). Only active devices, and for a metric only devices whose type has it.
# Durations are compared with elapsed time (now - then > silence), never added to or subtracted from an instant: a
# difference of two stored instants is always in range, an instant minus a rule's duration may not be, and one
# statement failing here would stop every organization's no-data rules.
_NO_DATA_DUE = f"""
    SELECT r.id, d.id, d.name, s.name, d.device_type_id, COALESCE(md.display_name, '')
    FROM alerts_alertrule r
    JOIN devices_device d ON d.id = r.device_id
        OR (r.device_id IS NULL AND d.site_id = r.site_id
            AND (r.device_type_id IS NULL OR d.device_type_id = r.device_type_id))
    JOIN devices_site s ON s.id = d.site_id
    LEFT JOIN devices_metricdefinition md
        ON r.metric_key <> '' AND md.device_type_id = d.device_type_id AND md.key = r.metric_key
    LEFT JOIN telemetry_series ser ON r.metric_key <> '' AND ser.device_id = d.id AND ser.metric_key = r.metric_key
    LEFT JOIN telemetry_latestvalue lv ON lv.series_id = ser.id
    WHERE r.kind = 'no_data' AND r.enabled AND d.is_active AND r.silence IS NOT NULL
      AND (r.metric_key = '' OR md.id IS NOT NULL)
      AND %s - COALESCE(
              CASE WHEN r.metric_key = '' THEN d.last_seen ELSE lv.ts END, GREATEST(r.created_at, d.created_at)
          ) > r.silence
      AND NOT {_OPEN_ALERT_EXISTS}
"""

# Conditions holding for their whole duration, with no later reading to open them on ingest.
_DURATION_DUE = f"""
    SELECT r.id, d.id, d.name, s.name, d.device_type_id, rc.last_value, rc.last_ts
    FROM alerts_rulecondition rc
    JOIN alerts_alertrule r ON r.id = rc.rule_id
    JOIN devices_device d ON d.id = rc.device_id
    JOIN devices_site s ON s.id = d.site_id
    WHERE r.enabled AND r.kind = 'threshold' AND r.for_duration IS NOT NULL
      AND rc.holding_since IS NOT NULL AND %s - rc.holding_since >= r.for_duration
      AND NOT {_OPEN_ALERT_EXISTS}
"""


def alerts_evaluate_timers(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """Open no-data alerts and alerts whose *for* duration elapsed: two selects and one transition pass. Returns
    how many opened and whether a first escalation step is due at once (the task then kicks an escalation run).

    No-data alerts clear on ingest, when the device (or the metric) reports again (apps.alerts.evaluation).
    """
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_NO_DATA_DUE, [now])
        silent = cursor.fetchall()
        cursor.execute(_DURATION_DUE, [now])
        held = cursor.fetchall()
    if not silent and not held:
        return {"opened": 0, "escalation_due": False}

    rules = {rule.id: _cached(rule) for rule in AlertRule.objects.filter(id__in={row[0] for row in silent + held})}
    index = RulesIndex()
    for _, device_id, device_name, site_name, type_id, *_ in silent + held:
        index.devices[device_id] = DeviceLabel(device_name, site_name, type_id)
    type_ids = {row[4] for row in held}
    index.metrics = {
        (type_id, key): (display_name, unit)
        for type_id, key, display_name, unit in MetricDefinition.objects.filter(
            device_type_id__in=type_ids
        ).values_list("device_type_id", "key", "display_name", "unit")
    }
    openings = []
    failed: dict[int, BaseException] = {}
    for rule_id, device_id, _, _, _, metric_name in silent:
        rule = rules[rule_id]
        try:
            message = no_data_message(metric_name, index.device_label(device_id), rule.silence)
        except RULE_ERRORS as error:
            failed[rule_id] = error
            continue
        openings.append(Opening(rule, device_id, rule.metric_key, message, now, None))
    for rule_id, device_id, _, _, _, value, _ in held:
        rule = rules[rule_id]
        try:
            message = threshold_message(rule, index, device_id, value)
        except RULE_ERRORS as error:
            failed[rule_id] = error
            continue
        openings.append(Opening(rule, device_id, rule.metric_key, message, now, value))

    def apply(only: set[int] | None):
        with transaction.atomic():
            mine = [o for o in openings if o.rule.id not in failed and (only is None or o.rule.id in only)]
            return transitions_apply(mine, [], index=index, retrigger=False)

    outcome = rules_isolated(apply, [o.rule.id for o in openings], failed)
    if failed:
        rule_failures_report(failed, stage="timers")
    return {"opened": len(outcome.opened), "escalation_due": outcome.escalation_due}


# ---------------------------------------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------------------------------------
def alert_history_purge(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """Delete closed alerts (with their events and deliveries) closed over ``ALERT_HISTORY_RETENTION_DAYS`` ago, and
    deliveries older than ``DELIVERY_RETENTION_DAYS`` of any alert, in bounded batches. Open alerts and their history
    are never touched, however old."""
    now = now or timezone.now()
    closed_before = now - datetime.timedelta(days=settings.ALERT_HISTORY_RETENTION_DAYS)
    delivered_before = now - datetime.timedelta(days=settings.DELIVERY_RETENTION_DAYS)
    closed = Alert.objects.filter(status__in=CLOSED_STATUSES).annotate(
        closed_at=Coalesce("resolved_at", "cleared_at", "last_triggered_at")
    )
    return {
        "deliveries": rows_purge(Delivery.objects.filter(created_at__lt=delivered_before)),
        "alerts": rows_purge(closed.filter(closed_at__lt=closed_before)),
    }
