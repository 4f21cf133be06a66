"""Who may do what through every route of the versioned API (config/api_router.py).

The routes are found by walking the URL resolver, so an endpoint (or a method on one) without rows here fails
``test_every_api_route_and_method_is_in_the_matrix``. Each row is (user, target, expected status): alice admins
Acme, bob operates site A, carol views site B, mallory admins another organization, ``anonymous`` has no session.
Another tenant's (or another user's) object is 404 -- existence is never revealed -- and lists hold nothing of
another site or organization.

The dashboard pages get the same treatment below (``PAGE_MATRIX``, every route of the ``dashboard`` namespace).
Websocket groups are covered by tests/dashboard/test_live.py (a viewer subscribing to another site's group gets
nothing) and test_browser.py (nothing of another site reaches a viewer's page).
"""

import datetime

import pytest
from django.urls import URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.alerts.models import Alert, AlertRule
from apps.dashboard.chart_services import chart_save, dashboard_save, dashboard_stat_add
from apps.devices.choices import MetricKind
from apps.devices.models import DiscoveredDevice
from apps.devices.services import api_key_issue
from apps.telemetry.exports import export_create
from apps.telemetry.models import DeadLetter
from apps.users.models import ApiToken
from apps.users.services import api_token_create
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.api_routes import api_routes
from tests.support.evaluation import Feed, evaluate, hot_rule

USERS = ("alice", "bob", "carol", "mallory", "anonymous")
SITES = {"a": "site_a", "b": "site_b", "x": "other_site"}  # x: the other organization


# ---------------------------------------------------------------------------------------------------------------------
# The matrix: (route name, method) -> [(user, target, status)]
# ---------------------------------------------------------------------------------------------------------------------
def rows(on_a: dict[str, int], extra: list[tuple[str, str, int]] = (), anonymous=401, target="a"):
    """on_a: expected status per user for the target of site A (missing users: 404); extra: more (user, target,
    status) rows, e.g. carol on her own site B."""
    result = [(user, target, on_a.get(user, 404)) for user in ("alice", "bob", "carol", "mallory")]
    result.append(("anonymous", target, anonymous))
    return result + list(extra)


def everyone(status, anonymous=401):
    return [(user, None, status) for user in USERS[:-1]] + [("anonymous", None, anonymous)]


READ_A = {"alice": 200, "bob": 200}
OWN_READS = [("carol", "b", 200), ("mallory", "x", 200)]
ADMIN_A = {"alice": 200, "bob": 403}
ADMINS_CREATE_OWN = [(user, None, 201 if user in ("alice", "mallory") else 403) for user in USERS[:-1]] + [
    ("anonymous", None, 401)
]
# A body naming site A's objects: created by its admin, 400 for another organization's admin (nonexistent there).
ADMINS_CREATE_ON_A = rows({"alice": 201, "bob": 403, "carol": 403, "mallory": 400}, [("mallory", "x", 201)], target="a")

ADMINS_OWN = [(user, None, 200 if user in ("alice", "mallory") else 403) for user in USERS[:-1]] + [
    ("anonymous", None, 401)
]

MATRIX = {
    ("api-root", "GET"): everyone(200),
    # Gateways only: a user session is not an API key.
    ("ingest", "POST"): everyone(401, anonymous=401),
    # Devices only, by the access token in the path: a user session is not a token.
    ("thingsboard-telemetry", "POST"): everyone(401, anonymous=401),
    ("thingsboard-attributes", "POST"): everyone(401, anonymous=401),
    ("series-query", "GET"): rows(READ_A, OWN_READS),
    ("device-latest", "GET"): rows(READ_A, OWN_READS),
    ("device-energy", "GET"): rows(READ_A, OWN_READS),
    ("device-volume", "GET"): rows(READ_A, OWN_READS),
    ("device-statistics", "GET"): rows(READ_A, OWN_READS),
    ("export-create", "POST"): rows({"alice": 202, "bob": 202}, [("carol", "b", 202), ("mallory", "x", 202)]),
    # Exports belong to their owner (bob's, target "bob"): even his organization's admin gets 404.
    ("export-detail", "GET"): rows({"bob": 200}, target="bob"),
    ("export-download", "GET"): rows({"bob": 409}, target="bob"),  # pending: not downloadable yet
    ("export-retry", "POST"): rows({"bob": 409}, target="bob"),  # not failed: nothing to retry
    ("alert-list", "GET"): everyone(200),
    ("alert-detail", "GET"): rows(READ_A, OWN_READS),
    ("alert-acknowledge", "POST"): rows(READ_A, [("carol", "b", 403), ("mallory", "x", 200)]),
    ("alert-resolve", "POST"): rows(READ_A, [("carol", "b", 403), ("mallory", "x", 200)]),
    ("alert-rule-list", "GET"): everyone(200),
    # A rule on a site the user cannot see: the site field rejects the id as it would a nonexistent one (400).
    ("alert-rule-list", "POST"): rows(
        {"alice": 201, "bob": 201, "carol": 400, "mallory": 400}, [("carol", "b", 403), ("mallory", "x", 201)]
    ),
    ("alert-rule-detail", "GET"): rows(READ_A, OWN_READS),
    ("alert-rule-detail", "PATCH"): rows(READ_A, [("carol", "b", 403), ("mallory", "x", 200)]),
    ("alert-rule-detail", "PUT"): rows(READ_A, [("carol", "b", 403), ("mallory", "x", 200)]),
    ("alert-rule-detail", "DELETE"): rows({"alice": 204, "bob": 204}, [("carol", "b", 403), ("mallory", "x", 204)]),
    ("api-token-list", "GET"): everyone(200),
    ("api-token-list", "POST"): everyone(201),
    ("api-token-detail", "DELETE"): rows({"bob": 204}, target="bob"),
    # Members' tokens: their organization's admins only (bob's own token too is not his to manage here).
    ("organization-token-list", "GET"): [
        ("alice", None, 200),
        ("bob", None, 403),
        ("carol", None, 403),
        ("mallory", None, 200),
        ("anonymous", None, 401),
    ],
    ("organization-token-detail", "DELETE"): rows({"alice": 204, "bob": 403, "carol": 403}, target="bob"),
    # Gateway keys are organization configuration: admins only; bob sees site A's gateway, so 403, not 404.
    ("gateway-key-issue", "POST"): rows({"alice": 201, "bob": 403}, [("carol", "b", 403), ("mallory", "x", 201)]),
    ("api-key-rotate", "POST"): rows({"alice": 201, "bob": 403}, [("carol", "b", 403), ("mallory", "x", 201)]),
    ("api-key-revoke", "POST"): rows({"alice": 200, "bob": 403}, [("carol", "b", 403), ("mallory", "x", 200)]),
    # The registry: admins write, everyone reads what they may see. Creating is refused (403) before the body is
    # read; an admin naming another organization's site gets the 400 of a site that does not exist.
    ("site-list", "GET"): everyone(200),
    ("site-list", "POST"): ADMINS_CREATE_OWN,
    ("site-detail", "GET"): rows(READ_A, OWN_READS),
    ("site-detail", "PATCH"): rows(ADMIN_A, [("carol", "b", 403), ("mallory", "x", 200)]),
    # Sites with devices are not deleted (409): the other rows never get that far.
    ("site-detail", "DELETE"): rows({"alice": 409, "bob": 403}, [("carol", "b", 403), ("mallory", "x", 409)]),
    ("device-type-list", "GET"): everyone(200),
    ("device-type-list", "POST"): ADMINS_CREATE_OWN,
    # Device types are organization-wide: carol (a viewer of site B) reads Acme's.
    ("device-type-detail", "GET"): rows({"alice": 200, "bob": 200, "carol": 200}, [("mallory", "x", 200)]),
    ("device-type-detail", "PATCH"): rows({"alice": 200, "bob": 403, "carol": 403}, [("mallory", "x", 200)]),
    ("device-type-detail", "DELETE"): rows({"alice": 409, "bob": 403, "carol": 403}, [("mallory", "x", 409)]),
    ("gateway-list", "GET"): everyone(200),
    ("gateway-list", "POST"): ADMINS_CREATE_ON_A,
    ("gateway-detail", "GET"): rows(READ_A, OWN_READS),
    ("gateway-detail", "PATCH"): rows(ADMIN_A, [("carol", "b", 403), ("mallory", "x", 200)]),
    ("gateway-detail", "DELETE"): rows({"alice": 204, "bob": 403}, [("carol", "b", 403), ("mallory", "x", 204)]),
    ("device-list", "GET"): everyone(200),
    ("device-list", "POST"): ADMINS_CREATE_ON_A,
    ("device-detail", "GET"): rows(READ_A, OWN_READS),
    # Operators change a device's name, metadata and tags on their site; viewers nothing.
    ("device-detail", "PATCH"): rows(READ_A, [("carol", "b", 403), ("mallory", "x", 200)]),
    # The device has history: deleting it deactivates it (200) unless purge=true.
    ("device-detail", "DELETE"): rows({"alice": 200, "bob": 403}, [("carol", "b", 403), ("mallory", "x", 200)]),
    # Dead letters and discovered devices: organization admins only (403 for members, before any lookup).
    ("dead-letter-list", "GET"): ADMINS_OWN,
    ("dead-letter-detail", "GET"): rows({"alice": 200, "bob": 403, "carol": 403}, [("mallory", "x", 200)]),
    ("dead-letter-replay", "POST"): ADMINS_OWN,
    ("discovered-device-list", "GET"): ADMINS_OWN,
    ("discovered-device-detail", "GET"): rows({"alice": 200, "bob": 403, "carol": 403}, [("mallory", "x", 200)]),
    ("discovered-device-adopt", "POST"): rows({"alice": 201, "bob": 403, "carol": 403}, [("mallory", "x", 201)]),
    # An import answers 200 with its counts (it may create, update or change nothing).
    ("device-import", "POST"): rows(
        {"alice": 200, "bob": 403, "carol": 403, "mallory": 400}, [("mallory", "x", 200)], target="a"
    ),
}

CASES = [
    pytest.param(name, method, user, target, status, id=f"{name}-{method}-{user}-{target}-{status}")
    for (name, method), cells in MATRIX.items()
    for user, target, status in cells
]


def test_every_api_route_and_method_is_in_the_matrix():
    routes = api_routes()
    assert routes - MATRIX.keys() == set(), "add rows to MATRIX for these new API routes"
    assert MATRIX.keys() - routes == set(), "these MATRIX rows name routes that no longer exist"
    for route, cells in MATRIX.items():
        assert {user for user, _, _ in cells} == set(USERS), f"{route} must have a row for every user"


# ---------------------------------------------------------------------------------------------------------------------
# The world every row runs against
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def world(request, alice, bob, carol, mallory, site_a, site_b, other_site):
    sites = {key: request.getfixturevalue(name) for key, name in SITES.items()}
    types = {}
    for organization in {site.organization for site in sites.values()}:
        device_type = DeviceTypeFactory(organization=organization, name="Heat pump")
        MetricDefinitionFactory(device_type=device_type, key="supply_temp")
        MetricDefinitionFactory(device_type=device_type, key="power", unit="kW")
        MetricDefinitionFactory(device_type=device_type, key="heat", unit="kWh", kind=MetricKind.TOTALIZER)
        types[organization.pk] = device_type
    feed = Feed()
    objects = {"users": {"alice": alice, "bob": bob, "carol": carol, "mallory": mallory}}
    for key, site in sites.items():
        device = DeviceFactory(uid=f"dev-{key}", site=site, device_type=types[site.organization_id])
        gateway = GatewayFactory(uid=f"gw-{key}", site=site)
        rule = hot_rule(site)
        evaluate(feed.batch((device, "supply_temp", 0, 90)))
        objects[key] = {
            "dead_letter": DeadLetter.objects.create(
                source="mqtt",
                origin=f"fieldwatch/gateways/{gateway.uid}/telemetry",
                site=site,
                device_uid="x-new",
                reason="unknown_device",
                payload=b"{}",
                payload_size=2,
            ),
            "discovered": DiscoveredDevice.objects.create(
                site=site, gateway=gateway, uid=f"found-{key}", first_seen=timezone.now(), last_seen=timezone.now()
            ),
            "device": device,
            "gateway": gateway,
            "key": api_key_issue(gateway=gateway, name="main")[0],
            "rule": rule,
            "alert": Alert.objects.get(device=device),
        }
    now = timezone.now()
    objects["bob"] = {
        "export": export_create(
            user=bob,
            series=[],
            start=now - datetime.timedelta(hours=1),
            end=now,
            interval="raw",
            aggregates=None,
            file_format="csv",
        ),
        "token": api_token_create(user=bob, name="script")[0],
    }
    for name in ("alice", "carol", "mallory"):
        api_token_create(user=objects["users"][name], name="script")
    device_a = objects["a"]["device"]
    objects["a"]["chart"] = chart_save(
        user=bob, title="Mine", shared=False, series=[(device_a, "supply_temp")], range="24h"
    )
    objects["a"]["dashboard"] = dashboard_save(user=alice, title="Site A", shared=True)
    dashboard_stat_add(user=alice, dashboard=objects["a"]["dashboard"], device=device_a, metric_key="supply_temp")
    return objects


def _rule_body(rule: AlertRule, site) -> dict:
    return {
        "name": f"{rule.name} (edited)",
        "kind": "threshold",
        "severity": "major",
        "site": site.id,
        "metric_key": "supply_temp",
        "operator": "gt",
        "threshold": 85,
        "clear_threshold": 75,
    }


def _device_body(objects, target) -> dict | None:
    if "device" not in objects:
        return None
    device = objects["device"]
    return {"uid": f"new-{target}", "name": "New", "site": device.site_id, "device_type": device.device_type_id}


def request_for(world, name, method, target):
    """(path, query or body) of the request for this row."""
    end = timezone.now()
    span = {"start": (end - datetime.timedelta(hours=2)).isoformat(), "end": end.isoformat()}
    objects = world.get(target, {})
    uid = objects["device"].uid if "device" in objects else None
    site = objects["device"].site if "device" in objects else None
    device_type = objects["device"].device_type if "device" in objects else None
    routes = {
        "api-root": ({}, None),
        "ingest": ({}, {"readings": []}),
        "thingsboard-telemetry": ({"token": "fwa_00000000_not-a-token"}, {"supply_temp": 1}),
        "thingsboard-attributes": ({"token": "fwa_00000000_not-a-token"}, {"firmware": "1"}),
        "series-query": ({}, {"device": uid, "metrics": "supply_temp", **span}),
        "device-latest": ({"uid": uid}, None),
        "device-energy": ({"uid": uid}, {"metric": "power", **span}),
        "device-volume": ({"uid": uid}, {"metric": "heat", **span}),
        "device-statistics": ({"uid": uid}, {"metrics": "supply_temp", **span}),
        "export-create": ({}, {"series": [f"{uid}:supply_temp"], **span, "format": "csv"}),
        "export-detail": ({"export_id": objects.get("export") and objects["export"].id}, None),
        "export-download": ({"export_id": objects.get("export") and objects["export"].id}, None),
        "export-retry": ({"export_id": objects.get("export") and objects["export"].id}, None),
        "alert-list": ({}, None),
        "alert-detail": ({"pk": objects.get("alert") and objects["alert"].id}, None),
        "alert-acknowledge": ({"pk": objects.get("alert") and objects["alert"].id}, {"note": "on it"}),
        "alert-resolve": ({"pk": objects.get("alert") and objects["alert"].id}, {"note": "done"}),
        "alert-rule-list": ({}, _rule_body(objects["rule"], site) if method == "POST" and "rule" in objects else None),
        "alert-rule-detail": (
            {"pk": objects.get("rule") and objects["rule"].id},
            {"threshold": 90}
            if method == "PATCH"
            else _rule_body(objects["rule"], site)
            if "rule" in objects
            else None,
        ),
        "api-token-list": ({}, {"name": "new"} if method == "POST" else None),
        "api-token-detail": ({"pk": objects.get("token") and objects["token"].pk}, None),
        "organization-token-list": ({}, None),
        "organization-token-detail": ({"pk": objects.get("token") and objects["token"].pk}, None),
        "gateway-key-issue": ({"uid": objects.get("gateway") and objects["gateway"].uid}, {"name": "spare"}),
        "api-key-rotate": ({"prefix": objects.get("key") and objects["key"].prefix}, None),
        "api-key-revoke": ({"prefix": objects.get("key") and objects["key"].prefix}, None),
        "site-list": ({}, {"name": "Site N", "timezone": "Europe/Berlin"} if method == "POST" else None),
        "site-detail": ({"pk": site and site.pk}, {"address": "Werkstraße 1"} if method == "PATCH" else None),
        "device-type-list": ({}, {"name": "Flow meter", "metrics": [{"key": "flow", "display_name": "Flow"}]}),
        "device-type-detail": ({"pk": device_type and device_type.pk}, {"description": "edited"}),
        "gateway-list": (
            {},
            {"uid": f"gw-new-{target}", "name": "New", "site": site and site.pk} if method == "POST" else None,
        ),
        "gateway-detail": ({"uid": objects.get("gateway") and objects["gateway"].uid}, {"name": "renamed"}),
        "device-list": ({}, _device_body(objects, target)),
        "device-detail": ({"uid": uid}, {"name": "renamed"} if method == "PATCH" else None),
        "dead-letter-list": ({}, None),
        "dead-letter-detail": ({"pk": objects.get("dead_letter") and objects["dead_letter"].pk}, None),
        "dead-letter-replay": ({}, {"reason": ["unknown_device"]}),
        "discovered-device-list": ({}, None),
        "discovered-device-detail": ({"pk": objects.get("discovered") and objects["discovered"].pk}, None),
        "discovered-device-adopt": (
            {"pk": objects.get("discovered") and objects["discovered"].pk},
            {"device_type": device_type and device_type.pk},
        ),
        "device-import": (
            {},
            [{"uid": f"imp-{target}", "name": "Imported", "site": site and site.name, "type": "Heat pump"}],
        ),
    }
    kwargs, data = routes[name]
    return reverse(f"api:{name}", kwargs=kwargs), data


# What each user's lists may hold: (site keys for alerts and rules), token owners.
VISIBLE_SITES = {"alice": {"a", "b"}, "bob": {"a"}, "carol": {"b"}, "mallory": {"x"}}


def _check_list_scope(world, name, user, body):
    results = body["results"] if isinstance(body, dict) and "results" in body else body
    if name == "alert-list":
        expected = {world[key]["alert"].id for key in VISIBLE_SITES[user]}
        assert {row["id"] for row in results} == expected
    elif name == "alert-rule-list":
        expected = {world[key]["rule"].id for key in VISIBLE_SITES[user]}
        assert {row["id"] for row in results} == expected
    elif name == "api-token-list":
        owner = world["users"][user]
        assert results and all(row["id"] in set(owner.api_tokens.values_list("id", flat=True)) for row in results)
    elif name in ("site-list", "device-list", "gateway-list"):
        key, attribute = {"site-list": ("device", "site_id"), "device-list": ("device", "uid")}.get(
            name, ("gateway", "uid")
        )
        expected = {getattr(world[site][key], attribute) for site in VISIBLE_SITES[user]}
        column = "id" if name == "site-list" else "uid"
        assert {row[column] for row in results} == expected
    elif name == "device-type-list":
        expected = {world[site]["device"].device_type_id for site in VISIBLE_SITES[user]}
        assert {row["id"] for row in results} == expected
    elif name in ("dead-letter-list", "discovered-device-list"):
        key, model = ("dead_letter", DeadLetter) if name == "dead-letter-list" else ("discovered", DiscoveredDevice)
        expected = {world[site][key].pk for site in VISIBLE_SITES[user]}
        assert {row["id"] for row in results} == expected, model
    elif name == "organization-token-list":
        organization = world["users"][user].organization
        expected = set(ApiToken.objects.filter(user__organization=organization).values_list("id", flat=True))
        assert expected and {row["id"] for row in results} == expected


@pytest.mark.parametrize(("name", "method", "user", "target", "status"), CASES)
def test_permission_matrix(world, name, method, user, target, status):
    client = APIClient()
    if user != "anonymous":
        client.force_login(world["users"][user])
    path, data = request_for(world, name, method, target)
    if method == "GET":
        response = client.get(path, data or {})
    else:
        response = getattr(client, method.lower())(path, data, format="json")
    assert response.status_code == status, getattr(response, "data", response)
    if status == 404:
        assert response.status_code != 403
    if status == 401:  # unauthenticated: a challenge says how to authenticate (bearer token, or the gateway key)
        assert "WWW-Authenticate" in response
    if method == "GET" and status == 200 and name.endswith("-list") and user != "anonymous":
        _check_list_scope(world, name, user, response.json())


# ---------------------------------------------------------------------------------------------------------------------
# Dashboard pages: anonymous users are sent to the login page; another site's or tenant's object is 404; viewers may
# look but not acknowledge (403 on their own site).
# ---------------------------------------------------------------------------------------------------------------------
LOGIN = 302
PAGE_EVERYONE = [(user, None, 200) for user in USERS[:-1]] + [("anonymous", None, LOGIN)]
PAGE_ACTION_A = rows({"alice": 302, "bob": 302}, [("carol", "b", 403), ("mallory", "x", 302)], anonymous=LOGIN)

PAGE_MATRIX = {
    ("overview", "GET"): PAGE_EVERYONE,
    ("device-list", "GET"): PAGE_EVERYONE,
    ("gateway-list", "GET"): PAGE_EVERYONE,
    ("alert-list", "GET"): PAGE_EVERYONE,
    ("alert-rows", "GET"): PAGE_EVERYONE,
    ("device-detail", "GET"): rows(READ_A, OWN_READS, anonymous=LOGIN),
    ("alert-detail", "GET"): rows(READ_A, OWN_READS, anonymous=LOGIN),
    ("alert-acknowledge", "POST"): PAGE_ACTION_A,
    ("alert-resolve", "POST"): PAGE_ACTION_A,
    ("chart-list", "GET"): PAGE_EVERYONE,
    ("chart-new", "GET"): PAGE_EVERYONE,
    ("chart-detail", "GET"): rows({"bob": 200}, anonymous=LOGIN),  # bob's private chart of a site A series
    ("dashboard-list", "GET"): PAGE_EVERYONE,
    ("dashboard-detail", "GET"): rows(READ_A, anonymous=LOGIN),  # alice's shared dashboard of a site A series
    ("export-list", "GET"): PAGE_EVERYONE,
    ("rule-list", "GET"): PAGE_EVERYONE,
    ("rule-new", "GET"): [
        ("alice", None, 200),
        ("bob", None, 200),
        ("carol", None, 403),
        ("mallory", None, 200),
        ("anonymous", None, LOGIN),
    ],
    # The body is not a rule: 400 with the fields' messages for those who may manage rules somewhere.
    ("rule-backtest", "POST"): [
        ("alice", None, 400),
        ("bob", None, 400),
        ("carol", None, 403),
        ("mallory", None, 400),
        ("anonymous", None, LOGIN),
    ],
    ("rule-edit", "GET"): rows(READ_A, [("carol", "b", 403), ("mallory", "x", 200)], anonymous=LOGIN),
    ("rule-delete", "GET"): rows(READ_A, [("carol", "b", 403), ("mallory", "x", 200)], anonymous=LOGIN),
    ("rule-delete", "POST"): PAGE_ACTION_A,
    ("energy", "GET"): [(user, None, 302) for user in USERS[:-1]] + [("anonymous", None, LOGIN)],
    ("site-energy", "GET"): rows(READ_A, OWN_READS, anonymous=LOGIN),
    ("heat-pumps", "GET"): rows(READ_A, OWN_READS, anonymous=LOGIN),
    ("device-energy", "GET"): rows(READ_A, OWN_READS, anonymous=LOGIN),
}
PAGE_CASES = [
    pytest.param(name, method, user, target, status, id=f"{name}-{method}-{user}-{target or 'none'}")
    for (name, method), cells in PAGE_MATRIX.items()
    for user, target, status in cells
]


def page_routes() -> set[str]:
    return {
        pattern.name
        for resolver in get_resolver().url_patterns
        if isinstance(resolver, URLResolver) and resolver.namespace == "dashboard"
        for pattern in resolver.url_patterns
    }


def test_every_dashboard_page_is_in_the_matrix():
    assert page_routes() == {name for name, _ in PAGE_MATRIX}, "PAGE_MATRIX and the dashboard routes differ"


@pytest.mark.parametrize(("name", "method", "user", "target", "status"), PAGE_CASES)
def test_dashboard_page_matrix(world, client, name, method, user, target, status):
    if user != "anonymous":
        client.force_login(world["users"][user])
    kwargs = {}
    if name in ("device-detail", "device-energy"):
        kwargs = {"uid": world[target]["device"].uid}
    elif name in ("site-energy", "heat-pumps"):
        kwargs = {"site_id": world[target]["device"].site_id}
    elif name.startswith("alert-") and name not in ("alert-list", "alert-rows"):
        kwargs = {"alert_id": world[target]["alert"].pk}
    elif name == "chart-detail":
        kwargs = {"chart_id": world[target]["chart"].pk}
    elif name == "dashboard-detail":
        kwargs = {"dashboard_id": world[target]["dashboard"].pk}
    elif name in ("rule-edit", "rule-delete"):
        kwargs = {"rule_id": world[target]["rule"].pk}
    url = reverse(f"dashboard:{name}", kwargs=kwargs)
    response = client.post(url, {"note": "seen"}) if method == "POST" else client.get(url)
    assert response.status_code == status, response.content[:300]
    if status == LOGIN and user == "anonymous":
        assert response["Location"].startswith(reverse("login"))
    if status == 200 and user in ("carol", "mallory"):
        # Nothing of site A appears on any page they can open.
        assert world["a"]["device"].uid.encode() not in response.content
        assert f'data-gateway="{world["a"]["gateway"].uid}"'.encode() not in response.content
