"""Gateway key rotation: successors with a grace period, the periodic job that asks admins to rotate and retires
replaced keys, the admin-only key API, and revocations that ingest notices on the next request."""

import datetime

import pytest
from django.core import mail
from django.test import override_settings
from django.utils import timezone

from apps.devices.key_rotation import KeyNotRotatable, api_key_rotate, api_keys_rotation_run
from apps.devices.models import ApiKey
from apps.devices.services import api_key_authenticate, api_key_issue
from apps.devices.tasks import api_keys_rotation_task
from tests.devices.factories import GatewayFactory

INGEST_URL = "/api/v1/ingest"
GRACE = datetime.timedelta(days=7)


@pytest.fixture
def gateway(site_a):
    return GatewayFactory(site=site_a, uid="gw-a")


@pytest.fixture
def issued(gateway):
    return api_key_issue(gateway=gateway, name="primary")


@pytest.fixture
def admins_with_email(alice, bob, mallory):
    for user, email in ((alice, "alice@acme.test"), (bob, "bob@acme.test"), (mallory, "mallory@other.test")):
        user.email = email
        user.save(update_fields=["email"])


def age(api_key: ApiKey, days: int) -> None:
    ApiKey.objects.filter(pk=api_key.pk).update(created_at=timezone.now() - datetime.timedelta(days=days))
    api_key.refresh_from_db()


def ingest_status(client, plaintext: str) -> int:
    # An empty gateway payload: 202 means the key was accepted (nothing to store), 401 that it was not.
    response = client.generic(
        "POST", INGEST_URL, b"{}", content_type="application/json", headers={"X-API-Key": plaintext}
    )
    return response.status_code


# ---------------------------------------------------------------------------------------------------------------------
# Rotation
# ---------------------------------------------------------------------------------------------------------------------
@override_settings(API_KEY_ROTATION_GRACE_DAYS=7)
def test_rotation_links_the_successor_and_keeps_the_old_key_valid_for_the_grace_period(issued):
    old, old_plaintext = issued

    successor, plaintext = api_key_rotate(api_key=old)

    old.refresh_from_db()
    assert successor.replaces == old and successor.name == "primary"
    assert abs(old.expires_at - (timezone.now() + GRACE)) < datetime.timedelta(seconds=5)
    assert api_key_authenticate(plaintext=old_plaintext) == old
    assert api_key_authenticate(plaintext=plaintext) == successor


def test_rotation_keeps_an_earlier_expiry(gateway):
    soon = timezone.now() + datetime.timedelta(days=1)
    old, _ = api_key_issue(gateway=gateway, expires_at=soon)
    api_key_rotate(api_key=old)
    old.refresh_from_db()
    assert old.expires_at == soon


def test_a_key_is_rotated_once_and_never_when_revoked(issued, gateway):
    old, _ = issued
    api_key_rotate(api_key=old)
    with pytest.raises(KeyNotRotatable):
        api_key_rotate(api_key=old)
    revoked, _ = api_key_issue(gateway=gateway)
    revoked.revoked_at = timezone.now()
    revoked.save()
    with pytest.raises(KeyNotRotatable):
        api_key_rotate(api_key=revoked)


@override_settings(API_KEY_ROTATION_GRACE_DAYS=7)
def test_job_revokes_the_old_key_only_after_the_grace_period(issued):
    old, _ = issued
    successor, _ = api_key_rotate(api_key=old)

    assert api_keys_rotation_run(now=timezone.now() + GRACE - datetime.timedelta(minutes=1))["revoked"] == 0
    old.refresh_from_db()
    assert old.revoked_at is None

    assert api_keys_rotation_run(now=timezone.now() + GRACE + datetime.timedelta(minutes=1))["revoked"] == 1
    old.refresh_from_db()
    successor.refresh_from_db()
    assert old.revoked_at is not None
    assert successor.revoked_at is None


# ---------------------------------------------------------------------------------------------------------------------
# Due keys: admins are told, nobody is sent a key
# ---------------------------------------------------------------------------------------------------------------------
@override_settings(API_KEY_ROTATE_AFTER_DAYS=90, API_KEY_ROTATION_GRACE_DAYS=7)
def test_old_keys_are_marked_due_and_the_organization_admins_emailed_without_any_key(
    issued, gateway, admins_with_email
):
    old, old_plaintext = issued
    age(old, 91)
    young, _ = api_key_issue(gateway=gateway, name="young")
    already_rotated, _ = api_key_issue(gateway=gateway, name="rotated")
    age(already_rotated, 200)
    api_key_issue(gateway=gateway, replaces=already_rotated)

    api_keys_rotation_task.delay()

    (message,) = mail.outbox
    assert message.to == ["alice@acme.test"]  # the organization's admin: not the operator, not another tenant
    assert f"fwk_{old.prefix}…" in message.body
    assert "gw-a" in message.body and "/api/v1/api-keys/<prefix>/rotate" in message.body
    assert f"fwk_{young.prefix}" not in message.body and f"fwk_{already_rotated.prefix}" not in message.body
    assert old_plaintext not in message.body and "fwk_" + old.prefix + "_" not in message.body
    old.refresh_from_db()
    assert old.rotation_due_at is not None
    assert ApiKey.objects.count() == 4  # nothing issued: the job cannot hand a new key to anyone


@override_settings(API_KEY_ROTATE_AFTER_DAYS=90, API_KEY_ROTATION_GRACE_DAYS=7)
def test_due_keys_are_announced_once_then_reminded_every_grace_period(issued, admins_with_email):
    old, _ = issued
    age(old, 91)
    now = timezone.now()

    assert api_keys_rotation_run(now=now)["marked_due"] == 1
    assert api_keys_rotation_run(now=now + datetime.timedelta(days=1))["marked_due"] == 0
    assert len(mail.outbox) == 1
    assert api_keys_rotation_run(now=now + GRACE + datetime.timedelta(minutes=1))["marked_due"] == 1
    assert len(mail.outbox) == 2


# ---------------------------------------------------------------------------------------------------------------------
# API: organization admins only
# ---------------------------------------------------------------------------------------------------------------------
def test_admin_issues_a_key_through_the_api_and_it_works_at_once(client, alice, gateway):
    client.force_login(alice)

    response = client.post(f"/api/v1/gateways/{gateway.uid}/keys", {"name": "field"}, content_type="application/json")

    assert response.status_code == 201
    body = response.json()
    assert body["key"].startswith(f"fwk_{body['prefix']}_") and body["gateway"] == "gw-a"
    assert ApiKey.objects.get(prefix=body["prefix"]).key_hash == ApiKey.hash_secret(body["key"])
    assert ingest_status(client, body["key"]) == 202


def test_admin_rotates_through_the_api(client, alice, issued):
    old, old_plaintext = issued
    client.force_login(alice)

    response = client.post(f"/api/v1/api-keys/{old.prefix}/rotate")

    assert response.status_code == 201
    assert response.json()["replaces"] == old.prefix
    assert ingest_status(client, response.json()["key"]) == 202
    assert ingest_status(client, old_plaintext) == 202  # still valid during the grace period
    assert client.post(f"/api/v1/api-keys/{old.prefix}/rotate").status_code == 409


def test_revocation_through_the_api_is_refused_by_ingest_on_the_next_request(client, alice, issued):
    old, plaintext = issued
    assert ingest_status(client, plaintext) == 202
    client.force_login(alice)

    response = client.post(f"/api/v1/api-keys/{old.prefix}/revoke")

    assert response.status_code == 200 and response.json()["revoked_at"] is not None
    client.logout()
    refused = client.generic(
        "POST", INGEST_URL, b"{}", content_type="application/json", headers={"X-API-Key": plaintext}
    )
    assert refused.status_code == 401 and refused.json()["reason"] == "revoked_api_key"


@pytest.mark.parametrize(
    ("user", "expected"),
    [("bob", 403), ("carol", 404), ("mallory", 404)],
    ids=["operator-of-the-site", "viewer-of-another-site", "other-organization"],
)
def test_only_organization_admins_manage_keys(client, request, issued, gateway, user, expected):
    old, _ = issued
    client.force_login(request.getfixturevalue(user))

    statuses = {
        client.post(f"/api/v1/gateways/{gateway.uid}/keys").status_code,
        client.post(f"/api/v1/api-keys/{old.prefix}/rotate").status_code,
        client.post(f"/api/v1/api-keys/{old.prefix}/revoke").status_code,
    }

    assert statuses == {expected}
    assert ApiKey.objects.count() == 1
    old.refresh_from_db()
    assert old.revoked_at is None and old.expires_at is None
