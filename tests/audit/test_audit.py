"""The audit log: who did what, when, from where, to what; before/after of configuration; read-only, scoped admin;
retention. Services write their event in their own transaction, so a rolled-back change leaves no event."""

import datetime
import uuid

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from apps.alerts.models import Alert, NotificationChannel
from apps.audit.models import AuditEvent
from apps.audit.services import audit_events_purge, audit_record
from apps.core.audit import AuditAction, current_request
from apps.core.management.commands.install_schedules import declared_periodic_tasks
from apps.devices.broker_auth import mqtt_credential_issue, mqtt_credential_revoke
from apps.devices.key_rotation import api_key_rotate, api_keys_revoke_replaced
from apps.devices.models import Site
from apps.devices.services import api_key_issue, api_key_revoke
from apps.telemetry.exports import export_create
from apps.users.services import api_token_create, api_token_revoke
from tests.devices.factories import (
    DeviceFactory,
    DeviceTypeFactory,
    GatewayFactory,
    MetricDefinitionFactory,
    SiteFactory,
)
from tests.support.evaluation import Feed, evaluate, hot_rule

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    """Login failures are counted in Redis, which outlives a test; a key prefix per test keeps counts apart."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"fw-test-{uuid.uuid4().hex}"}}


def last(action) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).latest("id")


def api_client(user, ip="198.51.100.7"):
    client = APIClient(REMOTE_ADDR=ip)
    client.force_login(user)
    return client


@pytest.fixture
def alert_a(site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=device_type, key="supply_temp")
    hot_rule(site_a)
    device = DeviceFactory(uid="a1", site=site_a, device_type=device_type)
    evaluate(Feed().batch((device, "supply_temp", 0, 90)))
    return Alert.objects.get(device=device)


# ---------------------------------------------------------------------------------------------------------------------
# Configuration changes (signals)
# ---------------------------------------------------------------------------------------------------------------------
def test_api_change_of_a_rule_records_actor_ip_and_only_the_changed_fields(alice, site_a, alert_a):
    rule = alert_a.rule
    response = api_client(alice).patch(f"/api/v1/alert-rules/{rule.id}", {"threshold": 95}, format="json")
    assert response.status_code == 200, response.json()
    event = last(AuditAction.CONFIG_CHANGE)
    assert (event.actor, event.actor_label, event.ip) == (alice, "alice", "198.51.100.7")
    assert (event.target_type.model, event.target_id, event.target_repr) == ("alertrule", str(rule.id), str(rule))
    assert event.organization == site_a.organization
    assert event.before == {"threshold": 80.0} and event.after == {"threshold": 95.0}


def test_create_and_delete_are_recorded_and_a_save_without_change_is_not(organization):
    site = SiteFactory(organization=organization, name="Depot")
    created = last(AuditAction.CONFIG_CREATE)
    assert created.actor is None and created.actor_label == "system" and created.ip is None
    assert created.after["name"] == "Depot" and created.before is None

    count = AuditEvent.objects.count()
    Site.objects.get(pk=site.pk).save()
    assert AuditEvent.objects.count() == count

    site_pk = site.pk
    site.delete()
    deleted = last(AuditAction.CONFIG_DELETE)
    assert deleted.target_id == str(site_pk) and deleted.before["name"] == "Depot"
    assert deleted.organization == organization


def test_last_seen_updates_are_not_audited(site_a):
    device = DeviceFactory(site=site_a)
    count = AuditEvent.objects.count()
    device.last_seen = timezone.now()
    device.save(update_fields=["last_seen"])
    assert AuditEvent.objects.count() == count


def test_secrets_never_reach_the_log(organization):
    channel = NotificationChannel.objects.create(
        organization=organization, name="Ops hook", kind="webhook", webhook_url="https://x.example", webhook_secret="s1"
    )
    channel.webhook_secret = "s2"
    channel.save()
    event = last(AuditAction.CONFIG_CHANGE)
    assert event.before == {"webhook_secret": "<redacted>"} and event.after == {"webhook_secret": "<redacted>"}
    assert "s1" not in str(last(AuditAction.CONFIG_CREATE).after)


def test_the_request_context_ends_with_the_request(alice):
    api_client(alice).get("/api/v1/alerts")
    assert current_request() is None


# ---------------------------------------------------------------------------------------------------------------------
# Logins
# ---------------------------------------------------------------------------------------------------------------------
def test_login_logout_and_failed_login_are_recorded_with_the_ip(alice):
    client = Client(REMOTE_ADDR="192.0.2.10")
    client.post("/admin/login/", {"username": "alice", "password": "wrong"})
    failed = last(AuditAction.LOGIN_FAILED)
    assert failed.actor is None and failed.after == {"username": "alice"} and failed.ip == "192.0.2.10"
    assert failed.organization == alice.organization and "wrong" not in str(failed.after)

    assert client.post("/admin/login/", {"username": "alice", "password": PASSWORD}).status_code == 302
    login = last(AuditAction.LOGIN)
    assert (login.actor, login.ip, login.target_id) == (alice, "192.0.2.10", str(alice.pk))

    client.post("/admin/logout/")
    assert last(AuditAction.LOGOUT).actor == alice


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(alice, settings):
    APIClient(REMOTE_ADDR="192.0.2.10", HTTP_X_FORWARDED_FOR="203.0.113.66").post(
        "/admin/login/", {"username": "alice", "password": "wrong"}
    )
    assert last(AuditAction.LOGIN_FAILED).ip == "192.0.2.10"

    settings.TRUSTED_PROXY_NETWORKS = ["10.0.0.0/8"]
    APIClient(REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.66, 10.9.9.9").post(
        "/admin/login/", {"username": "alice", "password": "wrong"}
    )
    assert last(AuditAction.LOGIN_FAILED).ip == "203.0.113.66"


# ---------------------------------------------------------------------------------------------------------------------
# Service events
# ---------------------------------------------------------------------------------------------------------------------
def test_alert_acknowledge_and_resolve_are_recorded_through_the_api(bob, alert_a):
    client = api_client(bob)
    client.post(f"/api/v1/alerts/{alert_a.id}/acknowledge", {"note": "on it"}, format="json")
    client.post(f"/api/v1/alerts/{alert_a.id}/resolve", {"note": "fixed"}, format="json")
    ack, resolve = last(AuditAction.ALERT_ACKNOWLEDGE), last(AuditAction.ALERT_RESOLVE)
    assert (ack.actor, ack.target_id, ack.after, ack.ip) == (bob, str(alert_a.id), {"note": "on it"}, "198.51.100.7")
    assert resolve.after == {"note": "fixed"} and resolve.organization == alert_a.rule.organization


def test_key_issue_rotate_revoke_and_beat_revocation_are_recorded(alice, site_a, settings):
    gateway = GatewayFactory(site=site_a)
    key, _ = api_key_issue(gateway=gateway, name="main")
    assert last(AuditAction.KEY_ISSUE).after["prefix"] == key.prefix
    successor, _ = api_key_rotate(api_key=key)
    rotated = last(AuditAction.KEY_ROTATE)
    assert rotated.target_id == str(successor.pk) and rotated.after["replaces"] == key.prefix
    api_key_revoke(api_key=successor)
    assert last(AuditAction.KEY_REVOKE).target_id == str(successor.pk)

    later = timezone.now() + datetime.timedelta(days=settings.API_KEY_ROTATION_GRACE_DAYS + 1)
    assert api_keys_revoke_replaced(now=later) == 1
    by_beat = last(AuditAction.KEY_REVOKE)
    assert (by_beat.actor_label, by_beat.target_id, by_beat.organization) == ("beat", str(key.pk), site_a.organization)


def test_token_create_revoke_export_and_mqtt_credentials_are_recorded(bob, site_a):
    token, _ = api_token_create(user=bob, name="script")
    api_token_revoke(token=token, by=bob)
    assert last(AuditAction.TOKEN_CREATE).actor == bob
    assert last(AuditAction.TOKEN_REVOKE).target_id == str(token.pk)

    now = timezone.now()
    job = export_create(
        user=bob,
        series=[],
        start=now - datetime.timedelta(hours=1),
        end=now,
        interval="raw",
        aggregates=None,
        file_format="csv",
    )
    export = last(AuditAction.EXPORT_CREATE)
    assert (export.actor, export.target_id, export.after["format"]) == (bob, str(job.id), "csv")

    credential, password = mqtt_credential_issue(device=DeviceFactory(site=site_a))
    mqtt_credential_revoke(credential=credential)
    assert last(AuditAction.MQTT_CREDENTIAL_ISSUE).after == {"username": credential.username}
    assert last(AuditAction.MQTT_CREDENTIAL_REVOKE).organization == site_a.organization
    assert password not in str(list(AuditEvent.objects.values("before", "after")))


def test_a_rolled_back_change_leaves_no_event(bob):
    with pytest.raises(RuntimeError), transaction.atomic():
        api_token_create(user=bob, name="doomed")
        raise RuntimeError
    assert not AuditEvent.objects.filter(action=AuditAction.TOKEN_CREATE).exists()


# ---------------------------------------------------------------------------------------------------------------------
# Admin and retention
# ---------------------------------------------------------------------------------------------------------------------
def test_admin_is_read_only_filterable_and_scoped_to_the_organization(alice, mallory, bob, site_a, other_site):
    audit_record(actor=bob, action=AuditAction.ALERT_ACKNOWLEDGE, target=site_a)
    audit_record(actor=mallory, action=AuditAction.ALERT_ACKNOWLEDGE, target=other_site)
    acme_event = AuditEvent.objects.filter(organization=site_a.organization).latest("id")
    url = "/admin/audit/auditevent/"

    alice_client = Client()
    alice_client.force_login(alice)
    page = alice_client.get(url, {"action": AuditAction.ALERT_ACKNOWLEDGE})
    assert page.status_code == 200
    assert "Site A" in page.text and "Other Site" not in page.text
    assert alice_client.get(url, {"q": "Site A"}).status_code == 200
    assert alice_client.get(f"{url}{acme_event.pk}/change/").status_code == 200
    assert alice_client.get(f"{url}add/").status_code == 403
    assert alice_client.post(f"{url}{acme_event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=acme_event.pk).exists()

    mallory_client = Client()
    mallory_client.force_login(mallory)
    assert mallory_client.get(f"{url}{acme_event.pk}/change/").status_code == 302  # not found: back to the index
    assert "Site A" not in mallory_client.get(url).text

    bob_client = Client()
    bob_client.force_login(bob)
    assert bob_client.get(url).status_code == 302  # not staff: sent to the login page


def test_purge_deletes_only_events_past_retention_in_batches(settings, bob):
    settings.AUDIT_RETENTION_DAYS = 30
    now = timezone.now()
    for days in (40, 35, 31, 5):
        audit_record(actor=bob, action=AuditAction.LOGIN, target=bob)
        AuditEvent.objects.filter(pk=AuditEvent.objects.latest("id").pk).update(
            occurred_at=now - datetime.timedelta(days=days)
        )
    assert audit_events_purge(now=now, batch_size=2) == 3
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN).count() == 1
    assert "apps.audit.tasks.audit_events_purge_task" in {job["task"] for job in declared_periodic_tasks()}
