from django.db import models


class Severity(models.TextChoices):
    CRITICAL = "critical", "Critical"
    MAJOR = "major", "Major"
    MINOR = "minor", "Minor"
    WARNING = "warning", "Warning"
    INFO = "info", "Info"


class RuleKind(models.TextChoices):
    THRESHOLD = "threshold", "Threshold"
    RATE_OF_CHANGE = "rate_of_change", "Rate of change"
    NO_DATA = "no_data", "No data / offline"


class Operator(models.TextChoices):
    GT = "gt", ">"
    GE = "ge", ">="
    LT = "lt", "<"
    LE = "le", "<="
    OUTSIDE = "outside", "outside [low, high]"


class RateDirection(models.TextChoices):
    RISING = "rising", "Rising by more than"
    FALLING = "falling", "Falling by more than"
    EITHER = "either", "Changing by more than"


class AlertStatus(models.TextChoices):
    """``active`` and ``acknowledged`` are open (at most one per rule and device); ``cleared`` and ``resolved``
    are closed. An acknowledged alert whose condition clears becomes ``cleared``; resolving closes any state."""

    ACTIVE = "active", "Active"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    CLEARED = "cleared", "Cleared"
    RESOLVED = "resolved", "Resolved"


OPEN_STATUSES = (AlertStatus.ACTIVE, AlertStatus.ACKNOWLEDGED)
CLOSED_STATUSES = (AlertStatus.CLEARED, AlertStatus.RESOLVED)


class AlertEventKind(models.TextChoices):
    OPENED = "opened", "Opened"
    RETRIGGERED = "retriggered", "Triggered again"
    ACKNOWLEDGED = "acknowledged", "Acknowledged"
    CLEARED = "cleared", "Cleared"
    RESOLVED = "resolved", "Resolved"
    ESCALATED = "escalated", "Escalated"


class ChannelKind(models.TextChoices):
    EMAIL = "email", "Email"
    WEBHOOK = "webhook", "Webhook"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    RETRYING = "retrying", "Failed, will retry"
    GAVE_UP = "gave_up", "Gave up"
