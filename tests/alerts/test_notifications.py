"""Notifications over real sockets: a local SMTP server receives the email, a local HTTP server the signed webhook."""

import datetime
import logging
import time

import pytest

from apps.alerts.choices import DeliveryStatus
from apps.alerts.escalation import escalations_run, escalations_start
from apps.alerts.models import Delivery
from apps.alerts.tasks import deliveries_enqueue, delivery_send_task
from tests.support.escalation import OPENED_AT, alert, email_channel, heat_pump, policy, rule, webhook_channel
from tests.support.local_servers import SmtpSink, WebhookReceiver
from tests.support.ports import free_port

SECRET = "whsec-0f1e2d3c4b5a"


@pytest.fixture
def smtp(settings):
    sink = SmtpSink().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    settings.DEFAULT_FROM_EMAIL = "Fieldwatch <alerts@fieldwatch.example>"
    settings.FIELDWATCH_BASE_URL = "https://fieldwatch.example/"
    yield sink
    sink.stop()


@pytest.fixture
def eager_retries(monkeypatch):
    """Let eager Celery re-run a retried task in-process (countdown skipped) as a worker would after the countdown.

    With ``CELERY_TASK_EAGER_PROPAGATES`` (the test settings), eager mode raises ``Retry`` to the caller instead.
    """
    from config.celery import app

    # The Django-namespaced key, as config/celery.py loads it, takes precedence over the plain one.
    monkeypatch.setitem(app.conf, "CELERY_TASK_EAGER_PROPAGATES", False)


@pytest.fixture
def device(site_a):
    return heat_pump(site_a)


def escalate(device, channels, django_capture_on_commit_callbacks, users=()):
    """Open an alert whose first step notifies ``channels`` and run that step, sending on commit (Celery eager)."""
    escalation_policy = policy(device.site.organization, (1, datetime.timedelta(0), channels, list(users)))
    opened = alert(rule(device, escalation_policy), device)
    escalations_start(alert_ids=[opened.pk])
    with django_capture_on_commit_callbacks(execute=True):
        escalations_run(enqueue_deliveries=deliveries_enqueue, now=OPENED_AT + datetime.timedelta(seconds=1))
    return opened


def test_email_reaches_the_smtp_server_saying_what_where_since_the_value_and_the_link(
    smtp, device, organization, django_capture_on_commit_callbacks
):
    escalate(device, [email_channel(organization)], django_capture_on_commit_callbacks)

    [received] = smtp.messages
    message = received["message"]
    assert received["to"] == ["ops@acme.example", "lead@acme.example"]
    assert received["from"] == "alerts@fieldwatch.example"
    assert message["Subject"] == "[Fieldwatch] CRITICAL: Supply too hot on Heat pump 1 (hp-1) at Site A"
    body = SmtpSink.text_of(message)
    assert "Supply temperature 85.5 °C > 80 °C" in body  # what
    assert "metric Supply temperature (supply_temp)" in body
    assert "Value:  85.5 °C" in body  # the value, with its unit
    assert "Heat pump 1 (hp-1) at site Site A" in body  # where
    assert "2025-01-15 14:30:00 CET (Europe/Berlin) = 2025-01-15 13:30:00 UTC" in body  # since, local and UTC
    assert "https://fieldwatch.example/devices/hp-1/" in body  # the link
    assert "https://fieldwatch.example/devices/hp-1/" in message.get_body(preferencelist=("html",)).get_content()
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == (DeliveryStatus.SENT, 1, "")
    assert delivery.sent_at is not None


def test_step_users_are_mailed_at_their_own_address(smtp, device, bob, django_capture_on_commit_callbacks):
    bob.email = "bob@acme.example"
    bob.save(update_fields=["email"])

    escalate(device, [], django_capture_on_commit_callbacks, users=[bob])

    assert [received["to"] for received in smtp.messages] == [["bob@acme.example"]]


def test_webhook_is_signed_with_the_channel_secret_and_carries_the_alert(
    smtp, device, organization, django_capture_on_commit_callbacks
):
    receiver = WebhookReceiver(secret=SECRET).start()
    try:
        opened = escalate(
            device, [webhook_channel(organization, receiver.url, SECRET)], django_capture_on_commit_callbacks
        )
    finally:
        receiver.stop()

    [call] = receiver.calls
    assert call["signature_ok"] is True
    assert call["content_type"] == "application/json"
    assert abs(int(call["timestamp"]) - time.time()) < 60
    delivery = Delivery.objects.get()
    assert call["payload"] == {
        "event": "alert.escalated",
        "delivery": delivery.pk,
        "step": 1,
        "alert": {
            "id": opened.pk,
            "status": "active",
            "severity": "critical",
            "message": "Supply temperature 85.5 °C > 80 °C",
            "rule": {"id": opened.rule_id, "name": "Supply too hot"},
            "device": {"uid": "hp-1", "name": "Heat pump 1"},
            "site": {"id": device.site_id, "name": "Site A", "timezone": "Europe/Berlin"},
            "metric": "supply_temp",
            "unit": "°C",
            "value": 85.5,
            "opened_at": "2025-01-15T13:30:00Z",
            "url": "https://fieldwatch.example/devices/hp-1/",
        },
    }
    assert (delivery.status, delivery.response_code, delivery.attempts) == (DeliveryStatus.SENT, 200, 1)


def test_receiver_with_another_secret_cannot_verify_the_signature(
    smtp, device, organization, django_capture_on_commit_callbacks
):
    receiver = WebhookReceiver(secret="not-the-channel-secret").start()
    try:
        escalate(device, [webhook_channel(organization, receiver.url, SECRET)], django_capture_on_commit_callbacks)
    finally:
        receiver.stop()

    assert [call["signature_ok"] for call in receiver.calls] == [False]


def test_failing_webhook_is_retried_and_every_attempt_logged(
    eager_retries, smtp, device, organization, django_capture_on_commit_callbacks, caplog
):
    receiver = WebhookReceiver(secret=SECRET, statuses=[500]).start()  # 500 once, then 200
    caplog.set_level(logging.INFO, logger="apps.alerts.notifications")
    try:
        escalate(device, [webhook_channel(organization, receiver.url, SECRET)], django_capture_on_commit_callbacks)
    finally:
        receiver.stop()

    assert [call["status"] for call in receiver.calls] == [500, 200]
    assert len({call["payload"]["delivery"] for call in receiver.calls}) == 1  # the same delivery, twice
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == (DeliveryStatus.SENT, 2, 200)
    attempts = [record.getMessage() for record in caplog.records if record.name == "apps.alerts.notifications"]
    assert len(attempts) == 2
    assert "attempt 1/5" in attempts[0] and "HTTP 500" in attempts[0]
    assert "attempt 2/5: sent" in attempts[1]


def test_permanently_failing_webhook_gives_up_after_the_bound_and_records_it(
    eager_retries, smtp, settings, device, organization, django_capture_on_commit_callbacks
):
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3
    receiver = WebhookReceiver(secret=SECRET, default_status=503).start()
    try:
        escalate(device, [webhook_channel(organization, receiver.url, SECRET)], django_capture_on_commit_callbacks)
    finally:
        receiver.stop()

    assert len(receiver.calls) == 3
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_code) == (DeliveryStatus.GAVE_UP, 3, 503)
    assert delivery.last_error.startswith("attempt 3/3: HTTP 503")
    assert delivery.sent_at is None


def test_unreachable_webhook_and_smtp_server_give_up_with_the_error(
    eager_retries, settings, device, organization, django_capture_on_commit_callbacks
):
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 2
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens there
    dead_url = f"http://127.0.0.1:{free_port()}/hook"

    escalate(
        device,
        [webhook_channel(organization, dead_url, SECRET), email_channel(organization)],
        django_capture_on_commit_callbacks,
    )

    for delivery in Delivery.objects.all():
        assert (delivery.status, delivery.attempts, delivery.response_code) == (DeliveryStatus.GAVE_UP, 2, None)
        assert "ConnectionRefusedError" in delivery.last_error


def test_a_sent_delivery_is_never_sent_again(smtp, device, organization, django_capture_on_commit_callbacks):
    """A redelivered task message (a worker died after sending, before acknowledging) must not mail twice."""
    escalate(device, [email_channel(organization)], django_capture_on_commit_callbacks)
    delivery = Delivery.objects.get()

    delivery_send_task.delay(delivery.pk)

    assert len(smtp.messages) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 1)
