import datetime

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from apps.alerts.choices import (
    OPEN_STATUSES,
    AlertEventKind,
    AlertStatus,
    ChannelKind,
    DeliveryStatus,
    Operator,
    RateDirection,
    RuleKind,
    Severity,
)
from apps.core.encryption import EncryptedTextField
from apps.core.validators import DurationRangeValidator, validate_finite

# Every duration of a rule lies within these bounds, checked by the fields' validators (admin, API, services) and by
# constraints in the database. Unbounded, a duration of 999,999,999 days overflowed the date arithmetic of the
# set-based evaluation and stopped every rule evaluated in the same batch, other organizations' included.
RULE_DURATION_MIN = datetime.timedelta(seconds=1)
RULE_DURATION_MAX = datetime.timedelta(days=30)
ESCALATION_DELAY_MAX = datetime.timedelta(days=30)
rule_duration = DurationRangeValidator(RULE_DURATION_MIN, RULE_DURATION_MAX)
RULE_DURATIONS = ("for_duration", "rate_window", "silence")
RULE_NUMBERS = ("threshold", "threshold_high", "clear_threshold", "rate_delta")


def _within(name: str, low, high) -> Q:
    return Q(**{f"{name}__isnull": True}) | Q(**{f"{name}__gte": low, f"{name}__lte": high})


def _finite(name: str) -> Q:
    # In PostgreSQL NaN sorts above every number, Infinity included, so "< Infinity" refuses NaN as well.
    return Q(**{f"{name}__isnull": True}) | Q(**{f"{name}__gt": float("-inf"), f"{name}__lt": float("inf")})


class NotificationChannel(models.Model):
    """Where notifications go: an email list or a webhook (JSON POST signed with HMAC-SHA256)."""

    organization = models.ForeignKey("users.Organization", on_delete=models.CASCADE, related_name="channels")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    email_to = models.TextField(blank=True, help_text="Email: addresses, one per line or comma-separated.")
    webhook_url = models.URLField(blank=True, max_length=500)
    webhook_secret = EncryptedTextField(
        max_length=128,
        blank=True,
        help_text="Webhook: the HMAC-SHA256 key the receiver verifies signatures with (stored encrypted).",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["organization", "name"]
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="channel_name_unique")]

    def __str__(self):
        return f"{self.name} ({self.get_kind_display()})"


class EscalationPolicy(models.Model):
    """Ordered steps: after N minutes still unacknowledged, notify these channels and users."""

    organization = models.ForeignKey("users.Organization", on_delete=models.CASCADE, related_name="policies")
    name = models.CharField(max_length=100)

    class Meta:
        ordering = ["organization", "name"]
        verbose_name_plural = "escalation policies"
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="policy_name_unique")]

    def __str__(self):
        return self.name


class EscalationStep(models.Model):
    policy = models.ForeignKey(EscalationPolicy, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField(help_text="Steps run in this order.")
    delay = models.DurationField(
        default=datetime.timedelta(0),
        validators=[DurationRangeValidator(datetime.timedelta(0), ESCALATION_DELAY_MAX)],
        help_text="How long after the alert opened, if still unacknowledged (at most 30 days).",
    )
    channels = models.ManyToManyField(NotificationChannel, blank=True, related_name="steps")
    users = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="escalation_steps")

    class Meta:
        ordering = ["policy", "position"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "position"], name="step_position_unique"),
            models.CheckConstraint(
                condition=Q(delay__gte=datetime.timedelta(0)),
                name="step_delay_not_negative",
                violation_error_message="An escalation delay cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(delay__lte=ESCALATION_DELAY_MAX),
                name="step_delay_at_most_30_days",
                violation_error_message="An escalation delay is at most 30 days.",
            ),
        ]

    def __str__(self):
        return f"{self.policy} step {self.position} after {self.delay}"


class AlertRule(models.Model):
    """A condition on a device's metric (or its silence) that raises alerts.

    Scope: one device, or every device of a device type on a site, or every device of a site.
    """

    organization = models.ForeignKey("users.Organization", on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=RuleKind.choices)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.MAJOR)
    enabled = models.BooleanField(default=True)
    # Scope
    site = models.ForeignKey("devices.Site", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    device_type = models.ForeignKey(
        "devices.DeviceType", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    device = models.ForeignKey("devices.Device", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    # Condition: blank metric_key on a no-data rule means "the device sent nothing at all".
    metric_key = models.CharField(max_length=63, blank=True)
    operator = models.CharField(max_length=10, choices=Operator.choices, blank=True)
    threshold = models.FloatField(
        null=True, blank=True, validators=[validate_finite], help_text="Threshold; the low bound for 'outside'."
    )
    threshold_high = models.FloatField(
        null=True, blank=True, validators=[validate_finite], help_text="The high bound for 'outside'."
    )
    clear_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[validate_finite],
        help_text="Hysteresis: clear only past this value (e.g. raise above 80, clear below 75).",
    )
    for_duration = models.DurationField(
        null=True,
        blank=True,
        validators=[DurationRangeValidator(RULE_DURATION_MIN, RULE_DURATION_MAX, hint="Leave it empty for none.")],
        help_text="The condition must hold this long before an alert opens (1 s to 30 days; empty: at once).",
    )
    rate_direction = models.CharField(max_length=10, choices=RateDirection.choices, blank=True)
    rate_delta = models.FloatField(
        null=True, blank=True, validators=[validate_finite], help_text="Rate of change: by more than this ..."
    )
    rate_window = models.DurationField(
        null=True, blank=True, validators=[rule_duration], help_text="... within this window (1 s to 30 days)."
    )
    silence = models.DurationField(
        null=True,
        blank=True,
        validators=[rule_duration],
        help_text="No data: silent for longer than this (1 s to 30 days).",
    )
    escalation_policy = models.ForeignKey(
        EscalationPolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="rules"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(device__isnull=False) | Q(site__isnull=False),
                name="alert_rule_has_scope",
                violation_error_message="Scope the rule to a device, or to a site (optionally one device type).",
            ),
            *(
                models.CheckConstraint(
                    condition=_within(name, RULE_DURATION_MIN, RULE_DURATION_MAX),
                    name=f"alert_rule_{name}_in_range",
                    violation_error_message=f"The {name.replace('_', ' ')} is from 1 s to 30 days.",
                )
                for name in RULE_DURATIONS
            ),
            *(
                models.CheckConstraint(
                    condition=_finite(name),
                    name=f"alert_rule_{name}_finite",
                    violation_error_message=f"The {name.replace('_', ' ')} is a finite number.",
                )
                for name in RULE_NUMBERS
            ),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        # Field-level rules (unknown metric, hysteresis side, durations) are validated by the alerts services and
        # the API serializer with specific messages; this guards the scope's consistency for the admin too.
        if self.device_id and (self.site_id or self.device_type_id):
            raise ValidationError("A device-scoped rule takes no site or device type: the device decides both.")


class Alert(models.Model):
    """One problem of one device under one rule, from when it opened until it is resolved."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="alerts")
    metric_key = models.CharField(max_length=63, blank=True)
    severity = models.CharField(max_length=10, choices=Severity.choices)
    status = models.CharField(max_length=14, choices=AlertStatus.choices, default=AlertStatus.ACTIVE)
    message = models.CharField(max_length=500)
    opened_at = models.DateTimeField()
    last_triggered_at = models.DateTimeField()
    trigger_count = models.PositiveIntegerField(default=1)
    first_value = models.FloatField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_note = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_note = models.TextField(blank=True)
    # Escalation: the next step to run (its position) and when; claimed with a conditional UPDATE by beat.
    next_escalation_position = models.PositiveSmallIntegerField(null=True, blank=True)
    next_escalation_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "device"],
                condition=Q(status__in=OPEN_STATUSES),
                name="one_open_alert_per_rule_and_device",
                violation_error_message="This rule already has an open alert for this device.",
            )
        ]
        indexes = [
            models.Index(fields=["status", "-opened_at"], name="alert_status_opened"),
            models.Index(
                fields=["next_escalation_at"],
                condition=Q(next_escalation_at__isnull=False),
                name="alert_escalation_due",
            ),
        ]

    def __str__(self):
        return f"{self.get_severity_display()}: {self.message}"


class AlertEvent(models.Model):
    """One transition of an alert, with who did it and when: the alert's history."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=14, choices=AlertEventKind.choices)
    at = models.DateTimeField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    note = models.TextField(blank=True)
    value = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["alert", "at", "id"]

    def __str__(self):
        return f"{self.alert_id} {self.kind} at {self.at.isoformat()}"


class RuleCondition(models.Model):
    """Per rule and device: since when the condition holds (for *for* durations) and the last value seen.

    Kept apart from Alert because a condition can be pending (holding, duration not reached) with no alert yet.
    """

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="conditions")
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="+")
    holding_since = models.DateTimeField(null=True, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    last_ts = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["rule", "device"], name="rule_condition_unique")]

    def __str__(self):
        return f"{self.rule_id}/{self.device_id} holding since {self.holding_since}"


class Delivery(models.Model):
    """One notification of one alert to one target, with every attempt's outcome: the delivery log."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    step = models.ForeignKey(EscalationStep, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    channel = models.ForeignKey(
        NotificationChannel, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    target = models.CharField(max_length=500, help_text="Email address(es) or webhook URL.")
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        constraints = [
            # A step notifies each target once per alert, however many workers race for it.
            models.UniqueConstraint(fields=["alert", "step", "kind", "target"], name="delivery_once_per_step")
        ]

    def __str__(self):
        return f"{self.kind} to {self.target}: {self.status}"


class PendingEvaluation(models.Model):
    """An ingest flush's readings that alert rules cover, recorded in the flush's own transaction and deleted in the
    transaction that applies their evaluation: so an evaluation that fails, or a process that dies between the
    two commits, leaves the row behind for the sweep (``apps.alerts.outbox``) instead of losing an alert.

    The readings are stored as parallel arrays (one row per flush, not per reading). ``attempts`` counts failed
    evaluations; after ``ALERT_EVALUATION_MAX_ATTEMPTS`` the row is left for an operator to inspect.
    """

    created_at = models.DateTimeField(db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    series_ids = ArrayField(models.IntegerField())
    device_ids = ArrayField(models.BigIntegerField())
    metric_keys = ArrayField(models.CharField(max_length=63))
    timestamps = ArrayField(models.DateTimeField())
    values = ArrayField(models.FloatField())

    class Meta:
        verbose_name = "pending alert evaluation"

    def __str__(self):
        return f"{len(self.series_ids)} readings from {self.created_at.isoformat()} ({self.attempts} failed attempts)"
