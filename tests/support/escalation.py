"""Building blocks shared by the escalation and notification tests: a heat pump with an alert rule and policy."""

import datetime

from apps.alerts.choices import ChannelKind, RuleKind, Severity
from apps.alerts.models import Alert, AlertRule, EscalationPolicy, EscalationStep, NotificationChannel
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.users.factories import UserFactory

OPENED_AT = datetime.datetime(2025, 1, 15, 13, 30, tzinfo=datetime.UTC)


def heat_pump(site, uid="hp-1", name="Heat pump 1"):
    device_type = DeviceTypeFactory(organization=site.organization)
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", display_name="Supply temperature", unit="°C")
    return DeviceFactory(uid=uid, name=name, site=site, device_type=device_type)


def email_channel(organization, name="On-call list", addresses="ops@acme.example\nlead@acme.example"):
    return NotificationChannel.objects.create(
        organization=organization, name=name, kind=ChannelKind.EMAIL, email_to=addresses
    )


def webhook_channel(organization, url, secret="s3cret-hmac-key", name="Pager webhook"):
    return NotificationChannel.objects.create(
        organization=organization, name=name, kind=ChannelKind.WEBHOOK, webhook_url=url, webhook_secret=secret
    )


def policy(organization, *steps, name="Heat pump on-call"):
    """``steps``: (position, delay, channels, users) tuples."""
    escalation_policy = EscalationPolicy.objects.create(organization=organization, name=name)
    for position, delay, channels, users in steps:
        step = EscalationStep.objects.create(policy=escalation_policy, position=position, delay=delay)
        step.channels.set(channels)
        step.users.set(users)
    return escalation_policy


def rule(device, escalation_policy=None, name="Supply too hot"):
    return AlertRule.objects.create(
        organization=device.site.organization,
        name=name,
        kind=RuleKind.THRESHOLD,
        severity=Severity.CRITICAL,
        device=device,
        metric_key="supply_temp",
        operator="gt",
        threshold=80,
        clear_threshold=75,
        escalation_policy=escalation_policy,
    )


def alert(alert_rule, device, opened_at=OPENED_AT, value=85.5, **fields):
    return Alert.objects.create(
        rule=alert_rule,
        device=device,
        metric_key="supply_temp",
        severity=alert_rule.severity,
        message=f"Supply temperature {value:g} °C > 80 °C",
        opened_at=opened_at,
        last_triggered_at=opened_at,
        first_value=value,
        last_value=value,
        **fields,
    )


def on_call_engineer(organization, username="dana"):
    """A step user for tests on committed data (``transactional_db``).

    Not one of the role fixtures: a transactional test's flush deletes the role groups the migrations created, so
    ``bob`` cannot be built in a later transactional test. Escalation needs only an address, not a role.
    """
    return UserFactory(username=username, organization=organization, email=f"{username}@acme.example")
