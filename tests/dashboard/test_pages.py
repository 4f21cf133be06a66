"""The dashboard pages as each role sees them: content, scoping by site, the site switcher, alert buttons."""

import datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.alerts.choices import AlertStatus, RuleKind, Severity
from apps.alerts.models import Alert, AlertEvent, AlertRule
from apps.telemetry.models import LatestValue
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.telemetry.factories import SeriesFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(organization, site_a, site_b):
    """Two devices per site: one online with a latest value, one that went silent an hour ago."""
    device_type = DeviceTypeFactory(
        organization=organization, name="Heat pump", offline_after=datetime.timedelta(minutes=5)
    )
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", display_name="Supply temperature", unit="°C")
    now = timezone.now()
    devices = {
        "a_online": DeviceFactory(
            uid="hp-a-001", name="Heat pump A1", site=site_a, device_type=device_type, last_seen=now, tags=["heating"]
        ),
        "a_offline": DeviceFactory(
            uid="hp-a-002",
            name="Heat pump A2",
            site=site_a,
            device_type=device_type,
            last_seen=now - datetime.timedelta(hours=1),
        ),
        "b_online": DeviceFactory(
            uid="hp-b-001", name="Heat pump B1", site=site_b, device_type=device_type, last_seen=now
        ),
        "b_offline": DeviceFactory(
            uid="hp-b-002",
            name="Heat pump B2",
            site=site_b,
            device_type=device_type,
            last_seen=now - datetime.timedelta(hours=1),
        ),
    }
    for device in devices.values():
        series = SeriesFactory(device=device, metric_key="supply_temp")
        LatestValue.objects.create(series=series, ts=now, value=41.5)
    return devices


def _alert(device, *, severity=Severity.MAJOR, message=None):
    rule = AlertRule.objects.create(
        organization=device.site.organization,
        name=f"Too hot {device.uid}",
        kind=RuleKind.THRESHOLD,
        device=device,
        metric_key="supply_temp",
        operator="gt",
        threshold=80,
        severity=severity,
    )
    now = timezone.now()
    alert = Alert.objects.create(
        rule=rule,
        device=device,
        metric_key="supply_temp",
        severity=severity,
        message=message or f"{device.uid} too hot",
        opened_at=now,
        last_triggered_at=now,
        first_value=85,
        last_value=85,
    )
    AlertEvent.objects.create(alert=alert, kind="opened", at=now, value=85)
    return alert


@pytest.fixture
def alerts(fleet):
    return {"a": _alert(fleet["a_online"], severity=Severity.CRITICAL), "b": _alert(fleet["b_online"])}


def _get(client, user, url, **params):
    client.force_login(user)
    return client.get(url, params)


# ---------------------------------------------------------------------------------------------------------------------
# Login
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["overview", "device-list", "alert-list", "alert-rows"])
def test_pages_require_login(client, name):
    response = client.get(reverse(f"dashboard:{name}"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_login_page_renders_and_logs_in(client, bob):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    assert b'name="username"' in response.content
    response = client.post(reverse("login"), {"username": "bob", "password": "correct horse battery staple"})
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard:overview")


def test_logout_is_a_post(client, bob):
    client.force_login(bob)
    assert client.post(reverse("logout")).status_code == 302
    assert client.get(reverse("dashboard:overview")).status_code == 302


# ---------------------------------------------------------------------------------------------------------------------
# Overview
# ---------------------------------------------------------------------------------------------------------------------


def test_overview_counts_alices_devices_on_both_sites(client, alice, fleet, alerts):
    response = _get(client, alice, reverse("dashboard:overview"))
    assert response.status_code == 200
    counters = response.context["counters"]
    assert (counters.devices_total, counters.devices_online, counters.devices_offline) == (4, 2, 2)
    assert counters.alerts["critical"] == 1 and counters.alerts["major"] == 1
    assert counters.ingest_lag_seconds is not None
    html = response.content.decode()
    assert 'data-counter="devices_online">2<' in html
    assert 'data-live-url="/ws/live/"' in html
    assert 'id="live-status"' in html
    assert "data-alert-list-url=" in html
    assert "hp-a-002" in html and "hp-b-002" in html  # offline devices need attention


def test_overview_for_carol_shows_only_site_b(client, carol, site_a, site_b, fleet, alerts):
    response = _get(client, carol, reverse("dashboard:overview"))
    html = response.content.decode()
    assert response.context["counters"].devices_total == 2
    assert f'data-sites="{site_b.id}"' in html
    assert "hp-a-" not in html
    assert "Site A" not in html
    assert 'data-action="acknowledge"' not in html


# ---------------------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------------------


def test_device_list_shows_status_last_seen_and_latest_values(client, bob, fleet):
    html = _get(client, bob, reverse("dashboard:device-list")).content.decode()
    assert '<span class="status status--online" data-status="hp-a-001">Online</span>' in html
    assert 'data-status="hp-a-002">Offline<' in html
    assert 'data-latest="hp-a-001:supply_temp" data-unit="°C">41.5<' in html
    assert 'data-last-seen="hp-a-001" datetime=' in html
    assert "hp-b-" not in html


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "online"}, {"hp-a-001", "hp-b-001"}),
        ({"status": "offline"}, {"hp-a-002", "hp-b-002"}),
        ({"q": "A2"}, {"hp-a-002"}),
        ({"q": "hp-b"}, {"hp-b-001", "hp-b-002"}),
        ({"tag": "heating"}, {"hp-a-001"}),
    ],
)
def test_device_list_filters_in_sql(client, alice, fleet, params, expected):
    response = _get(client, alice, reverse("dashboard:device-list"), site="all", **params)
    assert {device.uid for device in response.context["devices"]} == expected


def test_device_list_for_carol_has_no_site_a_device(client, carol, fleet):
    response = _get(client, carol, reverse("dashboard:device-list"), site="all")
    assert {device.uid for device in response.context["devices"]} == {"hp-b-001", "hp-b-002"}
    assert "hp-a-" not in response.content.decode()


def test_device_list_paginates_by_fifty(client, alice, organization, site_a):
    device_type = DeviceTypeFactory(organization=organization)
    DeviceFactory.create_batch(55, site=site_a, device_type=device_type)
    response = _get(client, alice, reverse("dashboard:device-list"))
    assert len(response.context["devices"]) == 50
    assert response.context["page"].paginator.num_pages == 2
    assert 'rel="next"' in response.content.decode()


def test_device_detail_shows_metadata_latest_values_charts_and_alerts(client, bob, fleet, alerts):
    response = _get(client, bob, reverse("dashboard:device-detail", args=["hp-a-001"]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-chart data-device="hp-a-001" data-metric="supply_temp" data-unit="°C"' in html
    assert 'data-latest="hp-a-001:supply_temp"' in html
    assert "hp-a-001 too hot" in html
    assert 'data-action="acknowledge"' in html
    assert "format=csv" in html
    assert f'data-sites="{fleet["a_online"].site_id}"' in html


def test_device_detail_of_another_site_is_404(client, carol, fleet):
    assert _get(client, carol, reverse("dashboard:device-detail", args=["hp-a-001"])).status_code == 404
    assert _get(client, carol, reverse("dashboard:device-detail", args=["hp-b-001"])).status_code == 200


def test_device_detail_is_404_for_another_organization(client, mallory, fleet):
    assert _get(client, mallory, reverse("dashboard:device-detail", args=["hp-a-001"])).status_code == 404


# ---------------------------------------------------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------------------------------------------------


def test_alert_list_shows_buttons_to_the_operator_of_the_site(client, bob, alerts):
    html = _get(client, bob, reverse("dashboard:alert-list")).content.decode()
    assert "hp-a-001 too hot" in html
    assert "hp-b-001 too hot" not in html
    assert f'action="{reverse("dashboard:alert-acknowledge", args=[alerts["a"].id])}"' in html
    assert f'action="{reverse("dashboard:alert-resolve", args=[alerts["a"].id])}"' in html


def test_alert_list_shows_no_buttons_to_a_viewer(client, carol, alerts):
    html = _get(client, carol, reverse("dashboard:alert-list")).content.decode()
    assert "hp-b-001 too hot" in html
    assert "hp-a-001 too hot" not in html
    assert 'data-action="acknowledge"' not in html
    assert 'data-action="resolve"' not in html


def test_alert_list_filters_by_severity_and_status(client, alice, alerts):
    response = _get(client, alice, reverse("dashboard:alert-list"), severity="critical", status="open", site="all")
    assert [alert.id for alert in response.context["alerts"]] == [alerts["a"].id]


def test_alert_rows_partial_is_permission_aware(client, bob, carol, alerts):
    html = _get(client, bob, reverse("dashboard:alert-rows"), site="all").content.decode()
    assert html.strip().startswith("<tr")
    assert 'data-action="acknowledge"' in html
    html = _get(client, carol, reverse("dashboard:alert-rows"), site="all").content.decode()
    assert "hp-b-001 too hot" in html and "hp-a-001" not in html
    assert 'data-action="acknowledge"' not in html


def test_alert_detail_shows_history(client, alice, alerts):
    response = _get(client, alice, reverse("dashboard:alert-detail", args=[alerts["a"].id]))
    assert response.status_code == 200
    assert "Opened" in response.content.decode()


def test_alert_detail_of_another_site_is_404(client, carol, alerts):
    assert _get(client, carol, reverse("dashboard:alert-detail", args=[alerts["a"].id])).status_code == 404


def test_operator_acknowledges_and_resolves_from_the_page(client, bob, alerts):
    client.force_login(bob)
    alert = alerts["a"]
    next_url = reverse("dashboard:device-detail", args=["hp-a-001"])
    response = client.post(reverse("dashboard:alert-acknowledge", args=[alert.id]), {"next": next_url, "note": "On it"})
    assert response.status_code == 302 and response["Location"] == next_url
    alert.refresh_from_db()
    assert alert.status == AlertStatus.ACKNOWLEDGED and alert.acknowledged_by == bob
    assert alert.acknowledged_note == "On it"
    response = client.post(reverse("dashboard:alert-resolve", args=[alert.id]), {"next": "https://evil.example/"})
    assert response["Location"] == reverse("dashboard:alert-list")
    alert.refresh_from_db()
    assert alert.status == AlertStatus.RESOLVED


def test_acknowledging_twice_says_so(client, bob, alerts):
    client.force_login(bob)
    url = reverse("dashboard:alert-acknowledge", args=[alerts["a"].id])
    client.post(url)
    response = client.post(url, follow=True)
    assert "already acknowledged" in response.content.decode()


def test_viewer_cannot_acknowledge(client, carol, alerts):
    client.force_login(carol)
    response = client.post(reverse("dashboard:alert-acknowledge", args=[alerts["b"].id]))
    assert response.status_code == 403
    response = client.post(reverse("dashboard:alert-resolve", args=[alerts["b"].id]))
    assert response.status_code == 403
    alerts["b"].refresh_from_db()
    assert alerts["b"].status == AlertStatus.ACTIVE


def test_other_organization_gets_404_on_acknowledge(client, mallory, alerts):
    client.force_login(mallory)
    assert client.post(reverse("dashboard:alert-acknowledge", args=[alerts["a"].id])).status_code == 404


def test_acknowledge_needs_post_and_csrf(bob, alerts):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    url = reverse("dashboard:alert-acknowledge", args=[alerts["a"].id])
    assert client.get(url).status_code == 405
    assert client.post(url).status_code == 403
    alerts["a"].refresh_from_db()
    assert alerts["a"].status == AlertStatus.ACTIVE


# ---------------------------------------------------------------------------------------------------------------------
# Site switcher
# ---------------------------------------------------------------------------------------------------------------------


def test_site_switcher_lists_only_the_users_sites(client, alice, bob, carol, site_a, site_b, fleet):
    html = _get(client, alice, reverse("dashboard:overview")).content.decode()
    assert f'<option value="{site_a.id}"' in html and f'<option value="{site_b.id}"' in html
    html = _get(client, carol, reverse("dashboard:overview")).content.decode()
    assert f'<option value="{site_b.id}"' in html and f'<option value="{site_a.id}"' not in html
    assert "All my sites" in html


def test_site_switcher_filters_pages_and_is_remembered(client, alice, site_a, site_b, fleet, alerts):
    response = _get(client, alice, reverse("dashboard:overview"), site=site_a.id)
    assert response.context["counters"].devices_total == 2
    assert f'data-sites="{site_a.id}"' in response.content.decode()
    # Remembered in the session for the next page.
    response = client.get(reverse("dashboard:device-list"))
    assert {device.uid for device in response.context["devices"]} == {"hp-a-001", "hp-a-002"}
    response = client.get(reverse("dashboard:alert-list"))
    assert [alert.id for alert in response.context["alerts"]] == [alerts["a"].id]
    # "All my sites" clears it.
    response = client.get(reverse("dashboard:device-list"), {"site": "all"})
    assert len(response.context["devices"]) == 4


def test_site_switcher_ignores_a_site_the_user_may_not_see(client, carol, site_a, site_b, fleet):
    response = _get(client, carol, reverse("dashboard:device-list"), site=site_a.id)
    assert {device.uid for device in response.context["devices"]} == {"hp-b-001", "hp-b-002"}
    assert f'data-sites="{site_b.id}"' in response.content.decode()
