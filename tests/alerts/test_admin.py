"""The alerts admin: pages render with a flat query count, bulk actions go through the services, tenants are apart."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from apps.alerts.choices import AlertStatus, ChannelKind
from apps.alerts.models import Alert, AlertRule, Delivery, EscalationPolicy, EscalationStep, NotificationChannel
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.evaluation import Feed, evaluate, hot_rule

MODELS = (AlertRule, Alert, EscalationPolicy, NotificationChannel, Delivery)


def login(user):
    user.is_staff = True
    user.save()
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def objects(organization, site_a, site_b):
    device_type = DeviceTypeFactory(organization=organization)
    MetricDefinitionFactory(device_type=device_type, key="supply_temp")
    hot_rule(site_a), hot_rule(site_b)
    feed = Feed()
    devices = [DeviceFactory(site=site, device_type=device_type) for site in (site_a, site_a, site_b)]
    evaluate(feed.batch(*[(device, "supply_temp", 0, 90) for device in devices]))
    channel = NotificationChannel.objects.create(
        organization=organization, name="ops", kind=ChannelKind.EMAIL, email_to="ops@example.com"
    )
    policy = EscalationPolicy.objects.create(organization=organization, name="Default")
    EscalationStep.objects.create(policy=policy, position=1).channels.add(channel)
    alert = Alert.objects.first()
    delivery = Delivery.objects.create(alert=alert, channel=channel, kind=ChannelKind.EMAIL, target="ops@example.com")
    return {
        AlertRule: AlertRule.objects.first(),
        Alert: alert,
        EscalationPolicy: policy,
        NotificationChannel: channel,
        Delivery: delivery,
    }


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_pages_render_for_an_admin_with_flat_queries(alice, objects, model, django_assert_max_num_queries):
    client = login(alice)
    meta = model._meta
    with django_assert_max_num_queries(14):
        assert client.get(reverse(f"admin:alerts_{meta.model_name}_changelist")).status_code == 200
    obj = objects[model]
    assert client.get(reverse(f"admin:alerts_{meta.model_name}_change", args=[obj.pk])).status_code == 200


def test_alert_page_shows_its_history(alice, objects):
    alert = objects[Alert]
    content = login(alice).get(reverse("admin:alerts_alert_change", args=[alert.pk])).content.decode()
    assert "field-kind" in content and "<p>Opened</p>" in content
    assert escape(alert.message) in content


def test_bulk_acknowledge_calls_the_service_and_reports_refusals(bob, objects):
    client = login(bob)
    from django.contrib.auth.models import Permission

    bob.user_permissions.add(*Permission.objects.filter(codename__in=["view_alert", "change_alert"]))
    ids = list(Alert.objects.values_list("pk", flat=True))
    response = client.post(
        reverse("admin:alerts_alert_changelist"),
        {"action": "acknowledge_alerts", "_selected_action": ids},
        follow=True,
    )
    assert response.status_code == 200
    acknowledged = Alert.objects.filter(status=AlertStatus.ACKNOWLEDGED)
    assert {alert.device.site.name for alert in acknowledged} == {"Site A"}
    assert acknowledged.count() == 2
    assert all(alert.acknowledged_by == bob for alert in acknowledged)


def test_other_organization_sees_none_of_it(mallory, objects):
    client = login(mallory)
    for model in MODELS:
        response = client.get(reverse(f"admin:alerts_{model._meta.model_name}_changelist"))
        assert response.status_code == 200
        assert response.context["cl"].result_count == 0
    assert client.get(reverse("admin:alerts_alert_change", args=[objects[Alert].pk])).status_code == 302
