"""Acknowledge and resolve: who may, what it records, and what happens next."""

import pytest
from django.core.exceptions import PermissionDenied

from apps.alerts.choices import AlertEventKind, AlertStatus
from apps.alerts.models import Alert
from apps.alerts.services import AlertStateError, alert_acknowledge, alert_resolve
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.evaluation import Feed, evaluate, hot_rule


@pytest.fixture
def feed(db):
    return Feed()


@pytest.fixture
def alert_on(heat_pump_type, feed):
    def make(site):
        hot_rule(site)
        device = DeviceFactory(site=site, device_type=heat_pump_type)
        evaluate(feed.batch((device, "supply_temp", 0, 90)))
        return Alert.objects.get(device=device)

    return make


@pytest.fixture
def heat_pump_type(organization):
    device_type = DeviceTypeFactory(organization=organization)
    MetricDefinitionFactory(device_type=device_type, key="supply_temp")
    return device_type


def test_operator_acknowledges_an_alert_of_their_site_and_escalation_stops(bob, site_a, alert_on):
    alert = alert_on(site_a)
    Alert.objects.filter(pk=alert.pk).update(next_escalation_at=alert.opened_at, next_escalation_position=1)

    alert_acknowledge(alert=alert, user=bob, note="on my way")

    alert.refresh_from_db()
    assert (alert.status, alert.acknowledged_by, alert.acknowledged_note) == (
        AlertStatus.ACKNOWLEDGED,
        bob,
        "on my way",
    )
    assert alert.next_escalation_at is None
    event = alert.events.get(kind=AlertEventKind.ACKNOWLEDGED)
    assert (event.actor, event.note) == (bob, "on my way")


def test_viewer_may_not_acknowledge_and_other_sites_and_tenants_are_refused(
    carol, mallory, bob, site_a, site_b, alert_on
):
    on_b, on_a = alert_on(site_b), alert_on(site_a)
    for user, alert in ((carol, on_b), (carol, on_a), (mallory, on_a), (bob, on_b)):
        with pytest.raises(PermissionDenied):
            alert_acknowledge(alert=alert, user=user)
    assert not Alert.objects.filter(status=AlertStatus.ACKNOWLEDGED).exists()


def test_admin_resolves_and_a_new_trigger_opens_a_new_alert(alice, site_a, alert_on, feed):
    alert = alert_on(site_a)
    alert_resolve(alert=alert, user=alice, note="reset the pump")
    alert.refresh_from_db()
    assert (alert.status, alert.resolved_by, alert.resolved_note) == (AlertStatus.RESOLVED, alice, "reset the pump")

    evaluate(feed.batch((alert.device, "supply_temp", 5, 91)))
    assert Alert.objects.filter(device=alert.device, status=AlertStatus.ACTIVE).exclude(pk=alert.pk).count() == 1


def test_acknowledging_twice_or_resolving_twice_is_refused(bob, site_a, alert_on):
    alert = alert_on(site_a)
    alert_acknowledge(alert=alert, user=bob)
    with pytest.raises(AlertStateError):
        alert_acknowledge(alert=alert, user=bob)
    alert_resolve(alert=alert, user=bob)
    with pytest.raises(AlertStateError):
        alert_resolve(alert=alert, user=bob)
    assert list(alert.events.values_list("kind", flat=True)) == ["opened", "acknowledged", "resolved"]


def test_an_acknowledged_alert_still_clears_by_itself(bob, site_a, alert_on, feed):
    alert = alert_on(site_a)
    alert_acknowledge(alert=alert, user=bob)
    evaluate(feed.batch((alert.device, "supply_temp", 5, 60)))
    alert.refresh_from_db()
    assert alert.status == AlertStatus.CLEARED
