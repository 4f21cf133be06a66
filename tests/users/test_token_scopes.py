"""Token scopes on every API route, tokens created by tokens (never broader, never longer-lived, revoked with their
parent), organization admins revoking members' tokens (API and admin), and the migration of existing tokens."""

import datetime
import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse
from django.urls.converters import UUIDConverter
from django.utils import timezone
from rest_framework.settings import api_settings

from apps.audit.models import AuditEvent
from apps.core.audit import AuditAction
from apps.users.authentication import ApiTokenAuthentication
from apps.users.models import ApiToken
from apps.users.permissions import TokenScopePermission
from apps.users.services import api_token_create
from tests.support.api_routes import api_route_patterns, api_routes

URL = "/api/v1/tokens"
ORGANIZATION_URL = "/api/v1/organization/tokens"
READ_WRITE = ["read", "write"]


def bearer(plaintext: str) -> dict:
    return {"Authorization": f"Bearer {plaintext}"}


def route_path(name: str) -> str:
    """A path of the route with placeholder arguments: scopes are checked before any object is looked up."""
    pattern = api_route_patterns()[name].pattern
    kwargs = dict.fromkeys(pattern.regex.groupindex, "1")  # router patterns: [^/.]+
    for key, converter in getattr(pattern, "converters", {}).items():
        kwargs[key] = uuid.uuid4() if isinstance(converter, UUIDConverter) else converter.to_python("1")
    return reverse(f"api:{name}", kwargs=kwargs)


def token_routes():
    """Every (route, method) a personal token can reach: all but the device and gateway endpoints (ingest, the
    ThingsBoard API), which authenticate their own credential and no user at all."""
    patterns = api_route_patterns()
    device_endpoints = {name for name, pattern in patterns.items() if pattern.callback.cls.authentication_classes == []}
    assert {"ingest", "thingsboard-telemetry"} <= device_endpoints
    return sorted((name, method) for name, method in api_routes() if name not in device_endpoints)


def send(client, method: str, path: str, plaintext: str):
    return getattr(client, method.lower())(path, headers=bearer(plaintext), content_type="application/json")


# ---------------------------------------------------------------------------------------------------------------------
# Scopes
# ---------------------------------------------------------------------------------------------------------------------
def test_every_api_view_that_accepts_tokens_checks_their_scopes():
    for name, pattern in api_route_patterns().items():
        view = pattern.callback.cls
        authentication = view.authentication_classes
        permissions = view.permission_classes
        assert authentication is not None and permissions is not None
        if ApiTokenAuthentication in authentication:
            assert TokenScopePermission in permissions, f"{name} accepts tokens but does not check their scopes"
    assert TokenScopePermission in api_settings.DEFAULT_PERMISSION_CLASSES


def test_a_read_only_token_is_refused_every_unsafe_method_of_every_route(client, alice):
    _, plaintext = api_token_create(user=alice, name="dashboards", scopes=["read"])
    unsafe = [(name, method) for name, method in token_routes() if method != "GET"]
    assert len(unsafe) >= 10

    for name, method in unsafe:
        response = send(client, method, route_path(name), plaintext)
        assert response.status_code == 403, (name, method, response.content[:200])
        assert "lacks the 'write' scope" in response.json()["detail"], (name, method)


def test_a_write_only_token_is_refused_every_read_of_every_route(client, alice):
    _, plaintext = api_token_create(user=alice, name="pusher", scopes=["write"])
    reads = [(name, method) for name, method in token_routes() if method == "GET"]
    assert len(reads) >= 10

    for name, method in reads:
        response = send(client, method, route_path(name), plaintext)
        assert response.status_code == 403, (name, method, response.content[:200])
        assert "lacks the 'read' scope" in response.json()["detail"], (name, method)


def test_a_token_with_both_scopes_reads_and_writes_like_its_user(client, bob, site_a):
    _, plaintext = api_token_create(user=bob, name="ops", scopes=READ_WRITE)
    assert client.get("/api/v1/alert-rules", headers=bearer(plaintext)).status_code == 200
    created = client.post(
        URL, {"name": "child", "scopes": ["read"]}, headers=bearer(plaintext), content_type="application/json"
    )
    assert created.status_code == 201


def test_new_tokens_read_only_unless_asked_and_unknown_scopes_are_400(client, alice):
    client.force_login(alice)

    default = client.post(URL, {"name": "plain"}, content_type="application/json")
    ingest = client.post(URL, {"name": "x", "scopes": ["ingest"]}, content_type="application/json")
    empty = client.post(URL, {"name": "x", "scopes": []}, content_type="application/json")
    not_a_list = client.post(URL, {"name": "x", "scopes": "write"}, content_type="application/json")

    assert default.status_code == 201 and default.json()["scopes"] == ["read"]
    for refused in (ingest, empty, not_a_list):
        assert refused.status_code == 400 and "scopes" in refused.json()
    assert ApiToken.objects.count() == 1


def test_a_personal_token_cannot_send_readings(client, alice):
    # Ingest belongs to gateways (their X-API-Key binds readings to a site); a person's token is not one.
    _, plaintext = api_token_create(user=alice, name="script", scopes=READ_WRITE)
    response = client.post("/api/v1/ingest", b"{}", headers=bearer(plaintext), content_type="application/json")
    assert response.status_code == 401
    assert response.json()["reason"] == "missing_api_key"


# ---------------------------------------------------------------------------------------------------------------------
# Tokens created by tokens
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def parent(alice):
    """A token that may write (so may create tokens), expiring in a week."""
    return api_token_create(
        user=alice, name="ci", scopes=READ_WRITE, expires_at=timezone.now() + datetime.timedelta(days=7)
    )


def mint(client, plaintext: str, **body):
    return client.post(URL, {"name": "job", **body}, headers=bearer(plaintext), content_type="application/json")


def test_a_token_cannot_mint_a_token_that_never_expires(client, parent):
    parent_token, plaintext = parent

    response = mint(client, plaintext, expires_at=None, scopes=READ_WRITE)

    assert response.status_code == 201
    child = ApiToken.objects.get(pk=response.json()["id"])
    assert child.expires_at == parent_token.expires_at
    assert child.parent == parent_token
    assert response.json()["created_by_token"] == parent_token.masked


def test_a_token_cannot_mint_a_longer_lived_or_broader_token(client, alice):
    _, read_write = api_token_create(
        user=alice, name="ci", scopes=READ_WRITE, expires_at=timezone.now() + datetime.timedelta(days=1)
    )
    _, write_only = api_token_create(user=alice, name="pusher", scopes=["write"])

    later = mint(client, read_write, expires_at=(timezone.now() + datetime.timedelta(days=2)).isoformat())
    broader = mint(client, write_only, scopes=READ_WRITE)

    assert later.status_code == 400 and "cannot outlive" in later.json()["expires_at"][0]
    assert broader.status_code == 400 and "cannot create a token with read" in broader.json()["scopes"][0]
    assert ApiToken.objects.filter(parent__isnull=False).count() == 0


def test_a_token_created_by_a_token_cannot_create_tokens(client, parent):
    _, plaintext = parent
    child = mint(client, plaintext, scopes=READ_WRITE).json()["token"]

    response = mint(client, child)

    assert response.status_code == 403
    assert "cannot create tokens" in response.json()["detail"]


def test_revoking_a_token_revokes_the_tokens_it_created_on_the_next_request(client, parent, alice):
    parent_token, plaintext = parent
    child = mint(client, plaintext).json()
    assert client.get(URL, headers=bearer(child["token"])).status_code == 200

    client.force_login(alice)
    assert client.delete(f"{URL}/{parent_token.pk}").status_code == 204
    client.logout()

    response = client.get(URL, headers=bearer(child["token"]))
    assert response.status_code == 401
    assert ApiToken.objects.get(pk=child["id"]).revoked_at is not None
    revoked = set(AuditEvent.objects.filter(action=AuditAction.TOKEN_REVOKE).values_list("target_id", flat=True))
    assert revoked == {str(parent_token.pk), str(child["id"])}


@pytest.mark.parametrize(
    "change",
    [
        {"revoked_at": timezone.now()},
        {"expires_at": timezone.now() - datetime.timedelta(seconds=1)},
    ],
    ids=["parent-revoked", "parent-expired"],
)
def test_a_child_is_refused_while_its_parent_is_unusable_even_without_the_cascade(client, parent, change):
    # A parent made unusable by anything but the service (an expiry, a bulk update) still stops its children.
    parent_token, plaintext = parent
    child = mint(client, plaintext).json()
    ApiToken.objects.filter(pk=parent_token.pk).update(**change)

    response = client.get(URL, headers=bearer(child["token"]))

    assert response.status_code == 401
    assert "created this one is no longer usable" in response.json()["detail"]
    assert ApiToken.objects.get(pk=child["id"]).revoked_at is None


# ---------------------------------------------------------------------------------------------------------------------
# Organization admins
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def tokens(alice, bob, carol, mallory):
    return {user.username: api_token_create(user=user, name=f"{user.username}'s") for user in (bob, carol, mallory)}


def test_an_admin_lists_her_members_tokens_and_nothing_of_another_organization(client, alice, tokens):
    client.force_login(alice)

    listed = client.get(ORGANIZATION_URL).json()["results"]

    assert {row["username"] for row in listed} == {"bob", "carol"}
    assert all("token" not in row and row["key"].endswith("…") for row in listed)


def test_an_admin_revokes_a_members_token_and_another_organizations_is_404(client, alice, mallory, tokens):
    bob_token, bob_plaintext = tokens["bob"]
    mallory_token, _ = tokens["mallory"]
    client.force_login(alice)

    assert client.delete(f"{ORGANIZATION_URL}/{mallory_token.pk}").status_code == 404
    assert client.delete(f"{ORGANIZATION_URL}/{bob_token.pk}").status_code == 204

    client.logout()
    assert client.get(URL, headers=bearer(bob_plaintext)).status_code == 401
    event = AuditEvent.objects.get(action=AuditAction.TOKEN_REVOKE)
    assert (event.actor, event.target_id) == (alice, str(bob_token.pk))
    mallory_token.refresh_from_db()
    assert mallory_token.revoked_at is None


def test_members_cannot_use_the_organization_token_api(client, bob, tokens):
    bob_token, _ = tokens["bob"]
    client.force_login(bob)
    assert client.get(ORGANIZATION_URL).status_code == 403
    assert client.delete(f"{ORGANIZATION_URL}/{bob_token.pk}").status_code == 403


ADMIN_LIST = "/admin/users/apitoken/"


def test_the_admin_token_page_lists_members_tokens_without_secrets(client, alice, tokens):
    client.force_login(alice)

    page = client.get(ADMIN_LIST)
    detail = client.get(f"{ADMIN_LIST}{tokens['bob'][0].pk}/change/")
    foreign = client.get(f"{ADMIN_LIST}{tokens['mallory'][0].pk}/change/")

    assert page.status_code == 200 and detail.status_code == 200
    html = page.text + detail.text
    assert tokens["bob"][0].masked in html and tokens["carol"][0].masked in html
    assert tokens["mallory"][0].masked not in page.text
    for token, plaintext in tokens.values():
        assert token.key_hash not in html and plaintext.split("_", 2)[2] not in html
    assert foreign.status_code == 302  # another organization's token: "does not exist", back to the admin index
    assert client.get(f"{ADMIN_LIST}add/").status_code == 403


def test_the_admin_revoke_action_revokes_through_the_service(client, alice, tokens):
    bob_token, bob_plaintext = tokens["bob"]
    mallory_token, _ = tokens["mallory"]
    client.force_login(alice)

    response = client.post(
        ADMIN_LIST, {"action": "revoke_tokens", "_selected_action": [bob_token.pk, mallory_token.pk]}, follow=True
    )

    assert response.status_code == 200
    assert f"Revoked 1 token(s): {bob_token.masked}" in response.text
    bob_token.refresh_from_db()
    mallory_token.refresh_from_db()
    assert bob_token.revoked_at is not None and mallory_token.revoked_at is None
    assert AuditEvent.objects.filter(action=AuditAction.TOKEN_REVOKE, actor=alice).count() == 1
    client.logout()
    assert client.get(URL, headers=bearer(bob_plaintext)).status_code == 401


def test_operators_do_not_see_the_admin_token_page(client, bob, tokens):
    bob.is_staff = True  # even with staff access, only the admin role (or a superuser) sees members' tokens
    bob.save(update_fields=["is_staff"])
    client.force_login(bob)
    assert client.get(ADMIN_LIST).status_code == 403


# ---------------------------------------------------------------------------------------------------------------------
# Migration
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_tokens_that_existed_before_scopes_keep_reading_and_writing(alice):
    before, after = [("users", "0003_api_tokens")], [("users", "0004_api_token_scopes_and_parent")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        OldApiToken = executor.loader.project_state(before).apps.get_model("users", "ApiToken")
        OldApiToken.objects.create(user_id=alice.pk, name="old script", prefix="0ld0ld00", key_hash="0" * 64)
        executor = MigrationExecutor(connection)
        executor.migrate(after)
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        # Every app's leaves, not only users': going back unapplied the migrations of other apps that depend on
        # users' later ones (devices' tariff migration does), and the tests after this one need the whole schema.
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert ApiToken.objects.get(prefix="0ld0ld00").scopes == READ_WRITE
