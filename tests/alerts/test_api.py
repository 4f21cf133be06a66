"""The alerts API as each role sees it: scoped lists, history, acknowledge/resolve rights, rule validation."""

import pytest
from rest_framework.test import APIClient

from apps.alerts.choices import AlertStatus
from apps.alerts.models import Alert, AlertRule
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.evaluation import Feed, evaluate, hot_rule


def client_for(user):
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def heat_pump(organization):
    device_type = DeviceTypeFactory(organization=organization, name="Heat pump")
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", display_name="Supply temp")
    return device_type


@pytest.fixture
def alerts(heat_pump, site_a, site_b, other_site):
    """Two alerts on site A (one device each), one on site B, one in the other organization."""
    feed = Feed()
    hot_rule(site_a), hot_rule(site_b)
    other_type = DeviceTypeFactory(organization=other_site.organization)
    MetricDefinitionFactory(device_type=other_type, key="supply_temp")
    hot_rule(other_site)
    devices = {
        "a1": DeviceFactory(uid="a1", site=site_a, device_type=heat_pump),
        "a2": DeviceFactory(uid="a2", site=site_a, device_type=heat_pump),
        "b1": DeviceFactory(uid="b1", site=site_b, device_type=heat_pump),
        "x1": DeviceFactory(uid="x1", site=other_site, device_type=other_type),
    }
    evaluate(feed.batch(*[(device, "supply_temp", i, 90) for i, device in enumerate(devices.values())]))
    return {uid: Alert.objects.get(device=device) for uid, device in devices.items()}


def uids(response):
    return [row["device"] for row in response.json()["results"]]


def test_alert_list_is_scoped_newest_first_and_filterable(alice, bob, carol, mallory, alerts, site_a):
    assert uids(client_for(alice).get("/api/v1/alerts")) == ["b1", "a2", "a1"]
    assert uids(client_for(bob).get("/api/v1/alerts")) == ["a2", "a1"]
    assert uids(client_for(carol).get("/api/v1/alerts")) == ["b1"]
    assert uids(client_for(mallory).get("/api/v1/alerts")) == ["x1"]
    assert uids(client_for(alice).get(f"/api/v1/alerts?site={site_a.id}&device=a1&status=active")) == ["a1"]
    assert uids(client_for(alice).get("/api/v1/alerts?severity=critical")) == []
    assert client_for(alice).get("/api/v1/alerts?status=bogus").status_code == 400


def test_alert_list_query_count_is_flat(alice, alerts, heat_pump, site_a, django_assert_max_num_queries):
    feed = Feed()
    evaluate(
        feed.batch(*[(DeviceFactory(site=site_a, device_type=heat_pump), "supply_temp", 9, 95) for _ in range(30)])
    )
    client = client_for(alice)
    # session, user, role group, sites (subquery), count, page
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/alerts")
    assert response.json()["count"] == 33


def test_alert_detail_has_its_history(bob, alerts):
    response = client_for(bob).get(f"/api/v1/alerts/{alerts['a1'].id}")
    assert response.status_code == 200
    body = response.json()
    assert body["message"].startswith("Supply temp 90")
    assert [event["kind"] for event in body["events"]] == ["opened"]


def test_operator_acknowledges_and_resolves_with_a_note(bob, alerts):
    client = client_for(bob)
    alert = alerts["a1"]
    response = client.post(f"/api/v1/alerts/{alert.id}/acknowledge", {"note": "looking"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == AlertStatus.ACKNOWLEDGED
    assert response.json()["acknowledged_by"] == "bob"
    assert client.post(f"/api/v1/alerts/{alert.id}/acknowledge").status_code == 409

    response = client.post(f"/api/v1/alerts/{alert.id}/resolve", {"note": "fixed"}, format="json")
    assert response.status_code == 200
    assert [(e["kind"], e["actor"], e["note"]) for e in response.json()["events"]] == [
        ("opened", None, ""),
        ("acknowledged", "bob", "looking"),
        ("resolved", "bob", "fixed"),
    ]


def test_viewer_gets_403_on_their_site_and_404_elsewhere(carol, mallory, alerts):
    carol_client = client_for(carol)
    assert carol_client.post(f"/api/v1/alerts/{alerts['b1'].id}/acknowledge").status_code == 403
    assert carol_client.post(f"/api/v1/alerts/{alerts['b1'].id}/resolve").status_code == 403
    assert carol_client.post(f"/api/v1/alerts/{alerts['a1'].id}/acknowledge").status_code == 404
    assert carol_client.get(f"/api/v1/alerts/{alerts['a1'].id}").status_code == 404
    assert client_for(mallory).post(f"/api/v1/alerts/{alerts['a1'].id}/resolve").status_code == 404
    assert client_for(mallory).get(f"/api/v1/alerts/{alerts['a1'].id}").status_code == 404
    assert Alert.objects.get(pk=alerts["b1"].id).status == AlertStatus.ACTIVE


# ---------------------------------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------------------------------

RULE = {"name": "Too hot", "kind": "threshold", "metric_key": "supply_temp", "operator": "gt", "threshold": 80}


def test_operator_creates_changes_and_deletes_a_rule_on_their_site(bob, heat_pump, site_a):
    DeviceFactory(site=site_a, device_type=heat_pump)
    client = client_for(bob)
    response = client.post("/api/v1/alert-rules", {**RULE, "site": site_a.id, "clear_threshold": 75}, format="json")
    assert response.status_code == 201, response.content
    rule_id = response.json()["id"]
    assert AlertRule.objects.get(pk=rule_id).organization == site_a.organization

    response = client.patch(f"/api/v1/alert-rules/{rule_id}", {"threshold": 85}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["threshold"] == 85
    assert client.delete(f"/api/v1/alert-rules/{rule_id}").status_code == 204
    assert not AlertRule.objects.exists()


def test_rule_list_is_scoped(alice, bob, carol, mallory, alerts):
    assert len(client_for(alice).get("/api/v1/alert-rules").json()["results"]) == 2
    assert len(client_for(bob).get("/api/v1/alert-rules").json()["results"]) == 1
    assert len(client_for(mallory).get("/api/v1/alert-rules").json()["results"]) == 1


def test_viewer_may_not_write_rules_and_other_sites_are_invisible(carol, bob, alerts, site_a, site_b):
    rule_b = AlertRule.objects.get(site=site_b)
    carol_client = client_for(carol)
    assert carol_client.post("/api/v1/alert-rules", {**RULE, "site": site_b.id}, format="json").status_code == 403
    assert carol_client.patch(f"/api/v1/alert-rules/{rule_b.id}", {"threshold": 1}, format="json").status_code == 403
    assert carol_client.delete(f"/api/v1/alert-rules/{rule_b.id}").status_code == 403
    # bob operates site A only: site B's rule does not exist for him, and he cannot scope a rule there
    assert client_for(bob).patch(f"/api/v1/alert-rules/{rule_b.id}", {"threshold": 1}, format="json").status_code == 404
    response = client_for(bob).post("/api/v1/alert-rules", {**RULE, "site": site_b.id}, format="json")
    assert response.status_code == 400 and "site" in response.json()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"metric_key": "supply_tmp"}, "metric_key", "No device type on site 'Site A' has a metric 'supply_tmp'"),
        ({"clear_threshold": 85}, "clear_threshold", "must be below the threshold 80"),
        ({"operator": "lt", "clear_threshold": 70}, "clear_threshold", "must be above the threshold 80"),
        ({"for_duration": "-00:00:05"}, "for_duration", "at least 1 s"),
        ({"operator": ""}, "operator", "needs an operator"),
        ({"operator": "outside"}, "threshold_high", "needs a high bound"),
        ({"kind": "rate_of_change"}, "rate_direction", "needs a direction"),
        ({"kind": "no_data"}, "silence", "needs a silence"),
        ({"kind": "no_data", "silence": "-00:01:00"}, "silence", "at least 1 s"),
    ],
)
def test_invalid_rules_are_rejected_with_specific_messages(alice, heat_pump, site_a, changes, field, message):
    DeviceFactory(site=site_a, device_type=heat_pump)
    response = client_for(alice).post("/api/v1/alert-rules", {**RULE, "site": site_a.id, **changes}, format="json")
    assert response.status_code == 400
    assert message in " ".join(response.json()[field]), response.json()


def test_a_device_type_of_another_organization_is_refused(alice, heat_pump, site_a, other_organization):
    foreign_type = DeviceTypeFactory(organization=other_organization)
    response = client_for(alice).post(
        "/api/v1/alert-rules", {**RULE, "site": site_a.id, "device_type": foreign_type.id}, format="json"
    )
    assert response.status_code == 400 and "device_type" in response.json()


def test_device_rule_metric_must_exist_on_its_type(alice, heat_pump, site_a):
    device = DeviceFactory(site=site_a, device_type=heat_pump)
    response = client_for(alice).post(
        "/api/v1/alert-rules", {**RULE, "device": device.id, "metric_key": "flow"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["metric_key"] == [
        "Device type 'Heat pump' has no metric 'flow' (known metrics: supply_temp)."
    ]


def test_schema_documents_the_endpoints(alice):
    paths = client_for(alice).get("/api/schema", {"format": "json"}).json()["paths"]
    assert {
        "/api/v1/alerts",
        "/api/v1/alerts/{id}",
        "/api/v1/alerts/{id}/acknowledge",
        "/api/v1/alerts/{id}/resolve",
    } <= set(paths)
    assert {"/api/v1/alert-rules", "/api/v1/alert-rules/{id}"} <= set(paths)
