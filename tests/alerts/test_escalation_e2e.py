"""End to end: two real Celery workers race over the escalation beat job; every step is delivered exactly once.

The workers run ``celery -A config worker`` against the test database, a private queue on Redis, a real SMTP server
(aiosmtpd) and real HTTP webhook receivers that verify the HMAC signature. The test plays beat, only faster and
doubled: it sends the escalation task twice every 0.25 s, so both workers run it over the same due steps at once.
"""

import datetime
import os
import random
import threading
import time
import uuid
from collections import Counter

import pytest
import redis
from celery import Celery
from django.utils import timezone

from apps.alerts.choices import AlertEventKind, AlertStatus, ChannelKind, DeliveryStatus
from apps.alerts.escalation import escalations_start
from apps.alerts.models import Alert, AlertEvent, Delivery
from tests.support.celery_worker import CeleryWorker
from tests.support.escalation import (
    alert,
    email_channel,
    heat_pump,
    on_call_engineer,
    policy,
    rule,
    webhook_channel,
)
from tests.support.local_servers import WebhookReceiver
from tests.support.processes import database_url, wait_until

pytestmark = pytest.mark.e2e

SECRET = "e2e-webhook-secret"
ESCALATE_TASK = "apps.alerts.tasks.escalations_run_task"
SECOND = datetime.timedelta(seconds=1)


@pytest.fixture
def receivers():
    steady = WebhookReceiver(secret=SECRET).start()
    flaky = WebhookReceiver(secret=SECRET, fail_first=1).start()  # each delivery: 503 once, then 200
    yield steady, flaky
    steady.stop()
    flaky.stop()


@pytest.fixture
def queue():
    """A Redis database picked at random among 5..15 and a queue name of our own on it.

    Only our queue's keys are deleted, never the whole database: other test runs may pick the same number.
    """
    url = f"redis://127.0.0.1:6379/{random.randint(5, 15)}"
    name = f"fw-escalation-e2e-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)
    client.delete(name)
    yield url, name
    client.delete(name)
    client.close()


@pytest.fixture
def workers(transactional_db, smtp, queue, tmp_path):
    broker_url, queue_name = queue
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.support.settings_workers",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": broker_url,
        "CELERY_TASK_DEFAULT_QUEUE": queue_name,
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp.port),
        "DEFAULT_FROM_EMAIL": "Fieldwatch <alerts@fieldwatch.example>",
        "FIELDWATCH_BASE_URL": "https://fieldwatch.example",
        "CACHE_KEY_PREFIX": f"fw-e2e-{queue_name}",
        "PYTHONUNBUFFERED": "1",
    }
    started = [CeleryWorker(name, env, tmp_path).start() for name in ("w1", "w2")]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()


class Beat:
    """Sends the escalation task ``copies`` times every ``interval`` seconds, as an overlapping beat would."""

    def __init__(self, broker_url: str, queue_name: str, interval: float = 0.25, copies: int = 2):
        self.app = Celery("fieldwatch-test-beat", broker=broker_url)
        self.queue_name, self.interval, self.copies = queue_name, interval, copies
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for _ in range(self.copies):
                self.app.send_task(ESCALATE_TASK, queue=self.queue_name)
                self.sent += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)
        self.app.close()


def test_two_workers_send_every_escalation_step_exactly_once(workers, smtp, receivers, queue, organization, site_a):
    steady, flaky = receivers
    engineer = on_call_engineer(organization)
    mailing_list = email_channel(organization)
    pager = webhook_channel(organization, steady.url, SECRET)
    flaky_pager = webhook_channel(organization, flaky.url, SECRET, name="Flaky pager")
    escalation_policy = policy(
        organization,
        (1, 1 * SECOND, [mailing_list, pager, flaky_pager], []),
        (2, 4 * SECOND, [], [engineer]),
        (3, 7 * SECOND, [mailing_list, pager], []),
    )
    alert_count = 8
    devices = [heat_pump(site_a, uid=f"hp-{i}", name=f"Heat pump {i}") for i in range(alert_count)]
    rules = [rule(device, escalation_policy, name=f"Supply too hot {i}") for i, device in enumerate(devices)]
    opened_at = timezone.now()
    alerts = []
    for device, alert_rule in zip(devices, rules, strict=True):
        opened = alert(alert_rule, device, opened_at=opened_at)
        escalations_start(
            alert_ids=[opened.pk]
        )  # first step due in 1 s: left to the workers, no kick from this process
        alerts.append(opened)
    acknowledged = alerts[0]

    # Step 1: 3 targets per alert; then the first alert is acknowledged; steps 2 (1 target) and 3 (2) for the rest.
    expected_deliveries = 3 * alert_count + 3 * (alert_count - 1)
    expected_emails = alert_count + 2 * (alert_count - 1)

    def all_sent():
        return Delivery.objects.filter(status=DeliveryStatus.SENT).count() >= expected_deliveries

    with Beat(*queue) as beat:
        assert wait_until(
            lambda: AlertEvent.objects.filter(alert=acknowledged, kind=AlertEventKind.ESCALATED).exists(), timeout=20
        ), workers[0].output() + workers[1].output()
        Alert.objects.filter(pk=acknowledged.pk).update(
            status=AlertStatus.ACKNOWLEDGED,
            acknowledged_by=engineer,
            acknowledged_at=timezone.now(),
            next_escalation_at=None,
        )
        assert wait_until(all_sent, timeout=40), workers[0].output() + workers[1].output()
        time.sleep(1.5)  # a duplicate sent late would show now

    # The database: each step of each alert claimed once, each target notified once, nothing left over.
    assert Delivery.objects.count() == expected_deliveries
    assert set(Delivery.objects.values_list("status", flat=True)) == {DeliveryStatus.SENT}
    escalations = Counter(AlertEvent.objects.filter(kind=AlertEventKind.ESCALATED).values_list("alert_id", flat=True))
    assert escalations == {a.pk: (1 if a == acknowledged else 3) for a in alerts}
    assert not Alert.objects.filter(next_escalation_at__isnull=False).exists()

    # The outside world: every email and webhook call arrived once (the flaky receiver: a 503, then the retry).
    email_ids = set(Delivery.objects.filter(kind=ChannelKind.EMAIL).values_list("pk", flat=True))
    received_ids = Counter(int(m["message"]["X-Fieldwatch-Delivery"]) for m in smtp.messages)
    assert len(smtp.messages) == expected_emails
    assert set(received_ids) == email_ids and set(received_ids.values()) == {1}
    steady_ids = Counter(call["payload"]["delivery"] for call in steady.calls)
    assert len(steady.calls) == 2 * alert_count - 1 and set(steady_ids.values()) == {1}
    flaky_ids = Counter(call["payload"]["delivery"] for call in flaky.calls)
    assert len(flaky_ids) == alert_count and set(flaky_ids.values()) == {2}
    assert all(call["signature_ok"] for call in steady.calls + flaky.calls)
    for delivery in Delivery.objects.filter(channel=flaky_pager):
        assert (delivery.attempts, delivery.response_code) == (2, 200)
        first, retry = (call["at"] for call in flaky.calls if call["payload"]["delivery"] == delivery.pk)
        assert retry - first >= 1.5  # Celery's countdown (2 s after the first attempt), not an immediate re-send

    # Latency: from a step falling due to its emails arriving (beat here ticks every 0.25 s; in production 10 s).
    step_due = {1: opened_at + 1 * SECOND, 3: opened_at + 7 * SECOND}
    step_of = dict(Delivery.objects.values_list("pk", "step__position"))
    lags = [
        m["at"] - step_due[step_of[int(m["message"]["X-Fieldwatch-Delivery"])]].timestamp()
        for m in smtp.messages
        if step_of[int(m["message"]["X-Fieldwatch-Delivery"])] in step_due
    ]
    print(f"\nstep due -> email received: min {min(lags):.3f} s, max {max(lags):.3f} s over {len(lags)} emails")

    # Both workers took part in the race.
    for worker in workers:
        assert f"{ESCALATE_TASK}[" in worker.output(), worker.output()
    assert beat.sent >= 2 * 10
