"""Saved charts, dashboards, the Exports page and the alert rule pages through the Django test client: who may
see and change what, what a refused input says, and the backtest answer."""

import datetime

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from apps.alerts.models import Alert, AlertEvent, AlertRule
from apps.audit.models import AuditEvent
from apps.core.audit import AuditAction
from apps.dashboard.chart_selectors import chart_list_for_user, dashboard_list_for_user
from apps.dashboard.chart_services import chart_save, dashboard_chart_add, dashboard_save, dashboard_stat_add
from apps.dashboard.models import SavedChart
from apps.devices.services import user_grant_site
from apps.telemetry.exports import export_create
from apps.users.choices import Role
from apps.users.services import user_set_role
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.evaluation import Feed, evaluate, hot_rule
from tests.users.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet(site_a, site_b):
    heat_pump = DeviceTypeFactory(organization=site_a.organization, name="Heat pump")
    MetricDefinitionFactory(device_type=heat_pump, key="supply_temp", display_name="Supply temp", unit="°C")
    MetricDefinitionFactory(device_type=heat_pump, key="power", display_name="Power", unit="kW")
    MetricDefinitionFactory(device_type=heat_pump, key="cop", display_name="COP", unit="")
    return {
        "a1": DeviceFactory(uid="hp-a-1", name="Heat pump A-1", site=site_a, device_type=heat_pump),
        "a2": DeviceFactory(uid="hp-a-2", name="Heat pump A-2", site=site_a, device_type=heat_pump),
        "b1": DeviceFactory(uid="hp-b-1", name="Heat pump B-1", site=site_b, device_type=heat_pump),
    }


def a_chart(user, series, shared=False, title="Supply"):
    return chart_save(user=user, title=title, shared=shared, series=series, range="24h")


def test_bob_builds_a_chart_across_two_devices_through_the_builder(client, bob, fleet):
    client.force_login(bob)
    response = client.post(
        reverse("dashboard:chart-new"),
        {
            "title": "Supply A",
            "series": ["hp-a-1:supply_temp", "hp-a-2:supply_temp"],
            "range": "7d",
            "aggregate": "max",
            "resolution": "auto",
            "style": "step",
        },
    )
    chart = SavedChart.objects.get(title="Supply A")
    assert response.status_code == 302 and response["Location"] == reverse("dashboard:chart-detail", args=[chart.pk])
    assert [(s.device.uid, s.metric_key) for s in chart.series.all()] == [
        ("hp-a-1", "supply_temp"),
        ("hp-a-2", "supply_temp"),
    ]
    page = client.get(response["Location"])
    assert page.status_code == 200 and b"Heat pump A-2 \\u00b7 Supply temp" in page.content


@pytest.mark.parametrize(
    ("series", "message"),
    [
        ([], "Pick at least one series."),
        (["hp-b-1:supply_temp"], "No such device among the devices you may see: hp-b-1."),
        (["hp-a-1:nope"], "Not a metric of the device&#x27;s type: hp-a-1:nope."),
        (["hp-a-1:supply_temp", "hp-a-1:power", "hp-a-1:cop"], "A chart has two axes, one unit each"),
        (["not a series"], "is not a series"),
        ([f"hp-a-1:m{n}" for n in range(51)], "a chart takes at most 50"),
    ],
)
def test_a_refused_chart_says_why(client, bob, fleet, series, message):
    client.force_login(bob)
    response = client.post(
        reverse("dashboard:chart-new"),
        {"title": "x", "series": series, "range": "24h", "aggregate": "avg", "resolution": "auto", "style": "line"},
    )
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not SavedChart.objects.exists()


def test_a_custom_range_needs_a_start_before_its_end(client, bob, fleet):
    client.force_login(bob)
    response = client.post(
        reverse("dashboard:chart-new"),
        {
            "title": "x",
            "series": ["hp-a-1:power"],
            "range": "custom",
            "range_start": "2026-11-02T10:00",
            "range_end": "2026-11-01T10:00",
            "aggregate": "avg",
            "resolution": "auto",
            "style": "line",
        },
    )
    assert response.status_code == 400 and "The end must be after the start." in response.content.decode()


def test_carol_sees_neither_bobs_private_chart_nor_a_shared_one_with_a_site_a_series(client, bob, carol, alice, fleet):
    private = a_chart(bob, [(fleet["a1"], "supply_temp")])
    mixed = a_chart(alice, [(fleet["a1"], "power"), (fleet["b1"], "power")], shared=True, title="Both sites")
    on_b = a_chart(alice, [(fleet["b1"], "power")], shared=True, title="Site B power")
    assert set(chart_list_for_user(user=carol)) == {on_b}
    assert set(chart_list_for_user(user=bob)) == {private}  # the mixed chart has a Site B series bob may not see
    assert set(chart_list_for_user(user=alice)) == {mixed, on_b}
    client.force_login(carol)
    for chart in (private, mixed):
        assert client.get(reverse("dashboard:chart-detail", args=[chart.pk])).status_code == 404
    listing = client.get(reverse("dashboard:chart-list")).content.decode()
    assert "Site B power" in listing and "Both sites" not in listing and "Supply" not in listing


def test_a_dashboard_shows_only_to_those_who_may_see_every_series_in_it(client, alice, bob, carol, fleet):
    on_b = a_chart(alice, [(fleet["b1"], "power")], shared=True, title="Site B power")
    on_a = a_chart(alice, [(fleet["a1"], "power")], shared=True, title="Site A power")
    board = dashboard_save(user=alice, title="Fleet", shared=True)
    dashboard_chart_add(user=alice, dashboard=board, chart=on_b)
    assert set(dashboard_list_for_user(user=carol)) == {board}
    dashboard_chart_add(user=alice, dashboard=board, chart=on_a)
    assert set(dashboard_list_for_user(user=carol)) == set()
    assert set(dashboard_list_for_user(user=bob)) == set()
    client.force_login(carol)
    assert client.get(reverse("dashboard:dashboard-detail", args=[board.pk])).status_code == 404


def test_only_the_owner_edits_a_shared_dashboard(client, alice, carol, fleet):
    chart = a_chart(alice, [(fleet["b1"], "power")], shared=True)
    board = dashboard_save(user=alice, title="Fleet", shared=True)
    url = reverse("dashboard:dashboard-detail", args=[board.pk])
    client.force_login(carol)
    assert client.get(url).status_code == 200
    assert client.post(url, {"action": "add_chart", "chart": chart.pk}).status_code == 403
    client.force_login(alice)
    assert client.post(url, {"action": "add_chart", "chart": chart.pk}).status_code == 302
    assert client.post(url, {"action": "add_stat", "series": "hp-b-1:cop"}).status_code == 302
    kinds = list(board.items.order_by("position").values_list("kind", flat=True))
    assert kinds == ["chart", "stat"]
    stat = board.items.get(kind="stat")
    client.post(url, {"action": "up", "item": stat.pk})
    assert list(board.items.order_by("position").values_list("kind", flat=True)) == ["stat", "chart"]
    response = client.post(url, {"action": "add_chart", "chart": 999999}, follow=True)
    assert "Pick one of the charts you may see." in response.content.decode()


def test_bob_creates_a_rule_after_a_backtest_and_carol_may_not(client, bob, carol, site_a, site_b, fleet):
    body = {
        "name": "Too hot",
        "kind": "threshold",
        "severity": "major",
        "enabled": "on",
        "site": site_a.pk,
        "metric_key": "supply_temp",
        "operator": "gt",
        "threshold": "80",
        "clear_threshold": "75",
    }
    client.force_login(bob)
    answer = client.post(reverse("dashboard:rule-backtest"), body)
    assert answer.status_code == 200
    assert answer.json()["count"] == 0 and answer.json()["devices"] == 2 and answer.json()["days"] == 7
    refused = client.post(reverse("dashboard:rule-backtest"), {**body, "clear_threshold": "85"})
    assert refused.status_code == 400 and "clear_threshold" in refused.json()["errors"]
    assert client.post(reverse("dashboard:rule-new"), body).status_code == 302
    rule = AlertRule.objects.get(name="Too hot")
    assert rule.site == site_a and rule.threshold == 80
    assert client.post(reverse("dashboard:rule-edit", args=[rule.pk]), {**body, "threshold": "82"}).status_code == 302
    rule.refresh_from_db()
    assert rule.threshold == 82
    client.force_login(carol)
    assert client.post(reverse("dashboard:rule-new"), {**body, "site": site_b.pk}).status_code == 403
    assert client.get(reverse("dashboard:rule-edit", args=[rule.pk])).status_code == 404


def test_a_rule_on_a_site_bob_does_not_operate_is_refused_with_a_reason(client, bob, site_b, fleet):
    client.force_login(bob)
    response = client.post(
        reverse("dashboard:rule-new"),
        {"name": "x", "kind": "no_data", "severity": "major", "site": site_b.pk, "silence": "00:05:00"},
    )
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()


def test_bob_deletes_a_rule_after_confirming_and_its_open_alert_goes_with_it(client, bob, site_a, fleet):
    rule = hot_rule(site_a, name="Too hot")
    evaluate(Feed().batch((fleet["a1"], "supply_temp", 0, 90)))
    alert = Alert.objects.get(rule=rule)
    url = reverse("dashboard:rule-delete", args=[rule.pk])
    client.force_login(bob)
    assert (
        reverse("dashboard:rule-delete", args=[rule.pk])
        in client.get(reverse("dashboard:rule-edit", args=[rule.pk])).content.decode()
    )
    confirm = client.get(url)
    assert confirm.status_code == 200 and AlertRule.objects.filter(pk=rule.pk).exists()
    assert "1 of them still open" in confirm.content.decode()
    response = client.post(url, follow=True)
    assert response.redirect_chain == [(reverse("dashboard:rule-list"), 302)]
    assert "Rule “Too hot” deleted." in response.content.decode()
    assert not AlertRule.objects.filter(pk=rule.pk).exists()
    assert not Alert.objects.filter(pk=alert.pk).exists() and not AlertEvent.objects.filter(alert_id=alert.pk).exists()
    deleted = AuditEvent.objects.filter(action=AuditAction.CONFIG_DELETE, target_id=str(rule.pk)).get()
    assert (deleted.actor, deleted.target_type.model, deleted.before["name"]) == (bob, "alertrule", "Too hot")


def test_a_viewer_may_not_delete_a_rule_of_her_site_nor_see_one_of_another(client, carol, site_a, site_b, fleet):
    own_site, other_site = hot_rule(site_b, name="B hot"), hot_rule(site_a, name="A hot")
    client.force_login(carol)
    for method in (client.get, client.post):
        assert method(reverse("dashboard:rule-delete", args=[own_site.pk])).status_code == 403
        assert method(reverse("dashboard:rule-delete", args=[other_site.pk])).status_code == 404
    assert AlertRule.objects.filter(pk__in=[own_site.pk, other_site.pk]).count() == 2


def test_deleting_a_rule_without_the_csrf_token_is_refused(bob, site_a, fleet):
    rule = hot_rule(site_a)
    client = Client(enforce_csrf_checks=True)
    client.force_login(bob)
    response = client.post(reverse("dashboard:rule-delete", args=[rule.pk]))
    assert response.status_code == 403 and b"CSRF" in response.content
    assert AlertRule.objects.filter(pk=rule.pk).exists()


def test_the_exports_page_lists_only_the_users_own_exports(client, bob, carol, fleet):
    now = timezone.now()
    export_create(
        user=bob,
        series=[{"id": 1, "device": "hp-a-1", "metric": "power", "unit": "kW"}],
        start=now - datetime.timedelta(hours=1),
        end=now,
        interval="raw",
        aggregates=None,
        file_format="csv",
    )
    client.force_login(bob)
    assert "hp-a-1:power" in client.get(reverse("dashboard:export-list")).content.decode()
    client.force_login(carol)
    assert "hp-a-1:power" not in client.get(reverse("dashboard:export-list")).content.decode()


def _queries(client, url) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_a_dashboard_page_makes_as_many_queries_for_eight_charts_as_for_one(client, bob, fleet):
    board = dashboard_save(user=bob, title="Board", shared=False)
    url = reverse("dashboard:dashboard-detail", args=[board.pk])
    client.force_login(bob)
    dashboard_chart_add(user=bob, dashboard=board, chart=a_chart(bob, [(fleet["a1"], "power")]))
    dashboard_stat_add(user=bob, dashboard=board, device=fleet["a1"], metric_key="cop")
    client.get(url)  # settle the session
    one = _queries(client, url)
    dashboard_stat_add(user=bob, dashboard=board, device=fleet["a2"], metric_key="cop")
    for n in range(7):
        chart = a_chart(bob, [(fleet["a1"], "supply_temp"), (fleet["a2"], "power")], title=f"Chart {n}")
        dashboard_chart_add(user=bob, dashboard=board, chart=chart)
    assert _queries(client, url) == one


def test_a_private_chart_on_a_shared_dashboard_shows_to_its_owner_only(client, alice, fleet, organization, site_b):
    dave = UserFactory(username="dave", organization=organization)  # a second viewer of site B
    user_set_role(user=dave, role=Role.VIEWER)
    user_grant_site(user=dave, site=site_b, operate=False)
    board = dashboard_save(user=alice, title="Fleet", shared=True)
    dashboard_chart_add(
        user=alice, dashboard=board, chart=a_chart(alice, [(fleet["b1"], "power")], title="Alice's own")
    )
    dashboard_chart_add(
        user=alice, dashboard=board, chart=a_chart(alice, [(fleet["b1"], "cop")], shared=True, title="Shared COP")
    )
    url = reverse("dashboard:dashboard-detail", args=[board.pk])
    client.force_login(alice)
    assert "Alice&#x27;s own" in client.get(url).content.decode()
    client.force_login(dave)
    page = client.get(url).content.decode()
    assert "Shared COP" in page and "Alice&#x27;s own" not in page


@pytest.mark.parametrize(
    ("url_name", "body"),
    [
        ("dashboard:chart-new", {"title": "a\x00b", "series": ["hp-a-1:power"], "range": "24h"}),
        ("dashboard:chart-new", {"title": "x", "series": ["hp-a-1\x00:power"], "range": "sometime"}),
        ("dashboard:rule-backtest", {"name": "x", "kind": "no_data", "severity": "major", "silence": "99999999:00:00"}),
        ("dashboard:rule-backtest", {"name": "x", "kind": "threshold", "severity": "major", "threshold": "nan"}),
        ("dashboard:rule-new", {"name": "x", "kind": "rate_of_change", "severity": "major", "rate_delta": "1e999"}),
        ("dashboard:dashboard-list", {"title": "\x00"}),
    ],
)
def test_hostile_form_input_is_a_400_with_a_reason(client, bob, fleet, url_name, body):
    client.force_login(bob)
    response = client.post(reverse(url_name), body)
    assert response.status_code == 400, response.content[:300]


def test_hostile_dashboard_actions_are_refused_with_a_message(client, bob, fleet):
    board = dashboard_save(user=bob, title="Board", shared=False)
    url = reverse("dashboard:dashboard-detail", args=[board.pk])
    client.force_login(bob)
    for body, message in (
        ({"action": "explode"}, "Unknown action."),
        ({"action": "add_stat", "series": "hp-a-1\x00:power"}, "is not a series"),
        ({"action": "add_stat", "series": "hp-b-1:power"}, "No such device among the devices you may see"),
        ({"action": "remove", "item": "x"}, "No such item on this dashboard."),
        ({"action": "up", "item": "99"}, "No such item on this dashboard."),
    ):
        response = client.post(url, body, follow=True)
        assert response.status_code == 200 and message in response.content.decode(), body
    assert not board.items.exists()
