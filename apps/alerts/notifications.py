"""Notifications: what an alert says, and one delivery attempt by email or webhook, recorded on its ``Delivery``.

Email goes through Django's email backend (``EMAIL_*`` settings). A webhook is a JSON POST::

    POST <channel.webhook_url>
    Content-Type: application/json
    X-Fieldwatch-Timestamp: 1718000000
    X-Fieldwatch-Signature: sha256=<hex>

    {"event": "alert.escalated", "delivery": 42, "step": 1, "alert": {...}}

Verifying a webhook (receiver side): take the raw request body bytes and the timestamp header, compute
``HMAC-SHA256(key=channel secret, message=f"{timestamp}.".encode() + body)`` as lowercase hex, and compare it with
the part of ``X-Fieldwatch-Signature`` after ``sha256=`` using a constant-time comparison
(``hmac.compare_digest``). Reject timestamps more than a few minutes from your clock to stop replays. In Python::

    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected, signature.removeprefix("sha256="))

A delivery is retried by its Celery task (``apps.alerts.tasks.delivery_send_task``) with exponential backoff, and
the same notification may then arrive more than once: receivers should deduplicate on ``delivery``.
"""

import hashlib
import hmac
import http.client
import json
import logging
import re
import time
import urllib.error
import urllib.request
import zoneinfo
from datetime import UTC

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone

from apps.alerts.choices import ChannelKind, DeliveryStatus
from apps.alerts.models import Alert, Delivery
from apps.devices.models import MetricDefinition

logger = logging.getLogger(__name__)

_ADDRESS_SEPARATORS = re.compile(r"[\s,;]+")


def email_addresses(text: str) -> list[str]:
    """A channel's ``email_to`` or a delivery's target (one per line or comma-separated) as a list, in order,
    without duplicates."""
    return list(dict.fromkeys(address for address in _ADDRESS_SEPARATORS.split(text) if address))


WEBHOOK_TIMEOUT_SECONDS = 10
EMAIL_TIMEOUT_SECONDS = 10


def delivery_max_attempts() -> int:
    """How many attempts a delivery gets before it gives up (first try included)."""
    return max(1, int(getattr(settings, "ALERT_DELIVERY_MAX_ATTEMPTS", 5)))


def base_url() -> str:
    return (getattr(settings, "FIELDWATCH_BASE_URL", "") or "http://127.0.0.1:8000").rstrip("/")


class DeliveryError(Exception):
    """One attempt failed; ``response_code`` is the HTTP status when the receiver answered at all."""

    def __init__(self, message: str, response_code: int | None = None):
        super().__init__(message)
        self.response_code = response_code


# ---------------------------------------------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------------------------------------------


def _format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "no value"
    return f"{value:g} {unit}".strip()


def notification_context(*, alert: Alert, step_position: int | None = None) -> dict:
    """What, where, since when, the value and the device link, for the email templates and the webhook payload."""
    device, site, rule = alert.device, alert.device.site, alert.rule
    metric = None
    if alert.metric_key:
        metric = MetricDefinition.objects.filter(device_type_id=device.device_type_id, key=alert.metric_key).first()
    unit = metric.unit if metric else ""
    try:
        site_zone = zoneinfo.ZoneInfo(site.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        site_zone = UTC
    opened_utc = alert.opened_at.astimezone(UTC)
    return {
        "alert": alert,
        "rule_name": rule.name,
        "severity": alert.get_severity_display(),
        "severity_key": alert.severity,
        "status": alert.get_status_display(),
        "message": alert.message,
        "metric_key": alert.metric_key,
        "metric_name": metric.display_name if metric else alert.metric_key,
        "unit": unit,
        "value": alert.last_value,
        "value_text": _format_value(alert.last_value, unit),
        "device_name": device.name,
        "device_uid": device.uid,
        "site_name": site.name,
        "site_timezone": str(site_zone),
        "opened_local": alert.opened_at.astimezone(site_zone).strftime("%Y-%m-%d %H:%M:%S %Z"),
        "opened_utc": opened_utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "opened_iso": opened_utc.isoformat().replace("+00:00", "Z"),
        "trigger_count": alert.trigger_count,
        "url": f"{base_url()}/devices/{device.uid}/",
        "step": step_position,
    }


def email_subject(context: dict) -> str:
    what = f"{context['rule_name']} on {context['device_name']} ({context['device_uid']})"
    return f"[Fieldwatch] {context['severity'].upper()}: {what} at {context['site_name']}"


def webhook_payload(context: dict, *, delivery_id: int) -> dict:
    alert = context["alert"]
    return {
        "event": "alert.escalated",
        "delivery": delivery_id,
        "step": context["step"],
        "alert": {
            "id": alert.pk,
            "status": alert.status,
            "severity": alert.severity,
            "message": alert.message,
            "rule": {"id": alert.rule_id, "name": context["rule_name"]},
            "device": {"uid": context["device_uid"], "name": context["device_name"]},
            "site": {"id": alert.device.site_id, "name": context["site_name"], "timezone": context["site_timezone"]},
            "metric": context["metric_key"],
            "unit": context["unit"],
            "value": context["value"],
            "opened_at": context["opened_iso"],
            "url": context["url"],
        },
    }


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


# ---------------------------------------------------------------------------------------------------------------------
# Transports
# ---------------------------------------------------------------------------------------------------------------------


def _send_email(*, delivery: Delivery, context: dict) -> None:
    recipients = email_addresses(delivery.target)
    text = render_to_string("alerts/email/alert_notification.txt", context)
    html = render_to_string("alerts/email/alert_notification.html", context)
    message = EmailMultiAlternatives(
        subject=email_subject(context),
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=recipients,
        connection=get_connection(fail_silently=False, timeout=EMAIL_TIMEOUT_SECONDS),
        # For mail filters and for telling a retried delivery from a new one.
        headers={"X-Fieldwatch-Alert": str(delivery.alert_id), "X-Fieldwatch-Delivery": str(delivery.pk)},
    )
    message.attach_alternative(html, "text/html")
    message.send()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected webhook is a misconfigured one: report the 3xx instead of re-sending the POST as a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _send_webhook(*, delivery: Delivery, context: dict) -> int:
    body = json.dumps(webhook_payload(context, delivery_id=delivery.pk), separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    secret = delivery.channel.webhook_secret if delivery.channel else ""
    request = urllib.request.Request(
        delivery.target,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "Fieldwatch-Webhook/1",
            "X-Fieldwatch-Timestamp": timestamp,
            "X-Fieldwatch-Signature": webhook_signature(secret=secret, timestamp=timestamp, body=body),
        },
    )
    try:
        with _opener.open(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as error:  # non-2xx answers (and refused redirects) land here
        raise DeliveryError(f"HTTP {error.code} {error.reason}", response_code=error.code) from error
    except urllib.error.URLError as error:  # refused, DNS, TLS: name the underlying error, not urllib's wrapper
        reason = error.reason
        raise DeliveryError(
            f"{type(reason).__name__}: {reason}" if isinstance(reason, Exception) else str(error)
        ) from error
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status}", response_code=status)
    return status


# ---------------------------------------------------------------------------------------------------------------------
# One attempt
# ---------------------------------------------------------------------------------------------------------------------


def delivery_send(*, delivery: Delivery) -> str:
    """Make one attempt at a delivery and record it; return the delivery's new status.

    The attempt is claimed first (``attempts`` moves from the value we read to the next only if the delivery is
    still pending or retrying), so a redelivered or duplicated task message cannot send a notification that was
    already sent, nor two workers send the same attempt at once. ``retrying`` tells the task to try again later.
    """
    max_attempts = delivery_max_attempts()
    claimed = Delivery.objects.filter(
        pk=delivery.pk, status__in=[DeliveryStatus.PENDING, DeliveryStatus.RETRYING], attempts=delivery.attempts
    ).update(attempts=F("attempts") + 1)
    if not claimed:
        return ""  # sent, given up, or being attempted by someone else: nothing to do here
    attempt = delivery.attempts + 1

    alert = Alert.objects.select_related("rule", "device__site").get(pk=delivery.alert_id)
    context = notification_context(alert=alert, step_position=delivery.step.position if delivery.step else None)
    response_code = None
    try:
        if delivery.kind == ChannelKind.WEBHOOK:
            response_code = _send_webhook(delivery=delivery, context=context)
        else:
            _send_email(delivery=delivery, context=context)
    except DeliveryError as error:
        outcome, response_code = str(error), error.response_code
    except (OSError, http.client.HTTPException, ValueError) as error:  # refused, timeout, TLS, SMTP, bad URL
        outcome = f"{type(error).__name__}: {error}"
    else:
        outcome = ""

    if not outcome:
        status, fields = DeliveryStatus.SENT, {"sent_at": timezone.now(), "last_error": ""}
        logger.info(
            "delivery %s attempt %d/%d: sent %s to %s",
            delivery.pk,
            attempt,
            max_attempts,
            delivery.kind,
            delivery.target,
        )
    else:
        status = DeliveryStatus.RETRYING if attempt < max_attempts else DeliveryStatus.GAVE_UP
        fields = {"last_error": f"attempt {attempt}/{max_attempts}: {outcome}"[:2000]}
        logger.warning(
            "delivery %s attempt %d/%d: %s to %s failed (%s)%s",
            delivery.pk,
            attempt,
            max_attempts,
            delivery.kind,
            delivery.target,
            outcome,
            "; giving up" if status == DeliveryStatus.GAVE_UP else "",
        )
    Delivery.objects.filter(pk=delivery.pk).update(status=status, response_code=response_code, **fields)
    delivery.attempts, delivery.status, delivery.response_code = attempt, status, response_code
    for name, value in fields.items():
        setattr(delivery, name, value)
    return status
