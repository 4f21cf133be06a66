"""The Django admin as the configuration UI: pages render, changelists stay flat, keys and purges go through the
services, organization admins see only their organization, and bad input gets a message saying what to fix."""

import datetime
import re

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)
from django_otp.plugins.otp_totp.models import TOTPDevice
from waffle.models import Flag

from apps.alerts.models import Alert, AlertRule, Delivery, EscalationPolicy, NotificationChannel, PendingEvaluation
from apps.audit.models import AuditEvent
from apps.devices.broker_auth import mqtt_credential_issue
from apps.devices.models import (
    AccessToken,
    ApiKey,
    Device,
    DeviceType,
    DiscoveredDevice,
    Gateway,
    MetricDefinition,
    MqttCredential,
    Site,
)
from apps.devices.services import access_token_issue, api_key_authenticate, api_key_issue, api_key_revoke
from apps.telemetry.choices import IngestSource, RejectReason
from apps.telemetry.models import DeadLetter, LatestValue, Reading, Series
from apps.users.models import ApiToken, FlagOrganization, Organization, User
from apps.users.services import api_token_create
from tests.devices.factories import (
    DeviceFactory,
    DeviceTypeFactory,
    GatewayFactory,
    MetricDefinitionFactory,
    SiteFactory,
)
from tests.telemetry.factories import SeriesFactory

PLAINTEXT_RE = re.compile(r"fwk_[0-9a-f]{8}_[A-Za-z0-9_-]+")
NOW = timezone.now()


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------
def changelist_url(model):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def add_url(model):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")


def change_url(obj):
    return reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])


def messages_of(response):
    return [str(message) for message in response.context["messages"]]


def form_errors(response):
    """Every error message of the admin form and its inlines, flattened: what the user sees on the page."""
    errors = [
        str(error) for field_errors in response.context["adminform"].form.errors.values() for error in field_errors
    ]
    for inline in response.context["inline_admin_formsets"]:
        errors += [str(error) for error in inline.formset.non_form_errors()]
        for form_errors_ in inline.formset.errors:
            errors += [str(error) for field_errors in form_errors_.values() for error in field_errors]
    return errors


def inline_management(prefix, total=0):
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def make_series(device, metric_key, *, readings=0, latest=True):
    series = SeriesFactory(device=device, metric_key=metric_key)
    Reading.objects.bulk_create(
        Reading(series=series, ts=NOW - datetime.timedelta(minutes=i), value=float(i)) for i in range(readings)
    )
    if latest:
        LatestValue.objects.create(series=series, ts=NOW, value=21.5)
    return series


def make_dead_letter(device_uid="dev-unknown", payload=b'{"values": {"t": 1}}'):
    return DeadLetter.objects.create(
        source=IngestSource.MQTT,
        origin=f"fw/devices/{device_uid}/readings",
        device_uid=device_uid,
        reason=RejectReason.UNKNOWN_DEVICE,
        detail="Device is not registered",
        payload=payload,
        payload_size=len(payload),
    )


@pytest.fixture
def superuser_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


# ---------------------------------------------------------------------------------------------------------------------
# Every registered admin renders
# ---------------------------------------------------------------------------------------------------------------------
def _one_of_each(site):
    """One saved object per registered model, keyed by model; a newly registered model must be added here."""
    device = DeviceFactory(site=site)
    series = make_series(device, "supply_temp", readings=3)
    gateway = GatewayFactory(site=site)
    api_key, _ = api_key_issue(gateway=gateway, name="primary")
    interval = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    policy = EscalationPolicy.objects.create(organization=site.organization, name="On call")
    channel = NotificationChannel.objects.create(
        organization=site.organization, name="Ops mail", kind="email", email_to="ops@example.com"
    )
    rule = AlertRule.objects.create(
        organization=site.organization,
        name="Too hot",
        kind="threshold",
        site=site,
        metric_key="supply_temp",
        operator="gt",
        threshold=80,
        escalation_policy=policy,
    )
    alert = Alert.objects.create(
        rule=rule,
        device=device,
        metric_key="supply_temp",
        severity="major",
        message="Too hot",
        opened_at=NOW,
        last_triggered_at=NOW,
        first_value=85,
        last_value=85,
    )
    return {
        AlertRule: rule,
        Alert: alert,
        EscalationPolicy: policy,
        NotificationChannel: channel,
        Delivery: Delivery.objects.create(alert=alert, channel=channel, kind="email", target="ops@example.com"),
        PendingEvaluation: PendingEvaluation.objects.create(
            created_at=NOW,
            attempts=5,
            last_error="OperationalError()",
            series_ids=[series.id],
            device_ids=[device.id],
            metric_keys=[series.metric_key],
            timestamps=[NOW],
            values=[1.0],
        ),
        Organization: site.organization,
        Flag: Flag.objects.get(name="discovery_auto_register"),
        FlagOrganization: FlagOrganization.objects.create(
            flag=Flag.objects.get(name="dialect_senml"), organization=site.organization
        ),
        User: (dave := User.objects.create_user("dave", organization=site.organization)),
        ApiToken: api_token_create(user=dave, name="script")[0],
        TOTPDevice: TOTPDevice.objects.create(user=dave, name="phone", confirmed=True),
        Group: Group.objects.get(name="admin"),
        Site: site,
        DeviceType: device.device_type,
        MetricDefinition: MetricDefinitionFactory(device_type=device.device_type),
        Gateway: gateway,
        Device: device,
        ApiKey: api_key,
        MqttCredential: mqtt_credential_issue(gateway=gateway)[0],
        AccessToken: access_token_issue(device=device)[0],
        Series: series,
        LatestValue: series.latest,
        DeadLetter: make_dead_letter(device.uid, payload=b"\x81\xa1t\x01"),
        DiscoveredDevice: DiscoveredDevice.objects.create(
            site=site, gateway=gateway, uid="found-1", first_seen=NOW, last_seen=NOW, metric_keys=["flow"]
        ),
        IntervalSchedule: interval,
        CrontabSchedule: CrontabSchedule.objects.create(),
        SolarSchedule: SolarSchedule.objects.create(event="sunrise", latitude=52.5, longitude=13.4),
        ClockedSchedule: ClockedSchedule.objects.create(clocked_time=NOW),
        PeriodicTask: PeriodicTask.objects.create(name="nightly", task="noop", interval=interval),
        AuditEvent: AuditEvent.objects.filter(action="config.create").latest("id"),
    }


@pytest.mark.parametrize("model", list(admin.site._registry), ids=lambda model: model._meta.label)
def test_every_registered_admin_renders_for_a_superuser(superuser_client, site_a, model, rf, superuser):
    objects = _one_of_each(site_a)
    assert model in objects, f"add an object of {model._meta.label} to _one_of_each"
    model_admin = admin.site._registry[model]
    request = rf.get("/")
    request.user = superuser

    assert superuser_client.get(changelist_url(model)).status_code == 200
    assert superuser_client.get(change_url(objects[model])).status_code == 200
    expected_add_status = 200 if model_admin.has_add_permission(request) else 403
    assert superuser_client.get(add_url(model)).status_code == expected_add_status


def test_series_page_shows_its_recent_readings(superuser_client, site_a):
    series = make_series(DeviceFactory(site=site_a), "supply_temp", readings=60)

    response = superuser_client.get(change_url(series))

    content = response.content.decode()
    assert "Last 50 readings" in content
    assert content.count("<tr><td>") == 50


def test_dead_letter_payload_is_shown_escaped(superuser_client):
    dead_letter = make_dead_letter(payload=b'<script>alert("x")</script>')

    response = superuser_client.get(change_url(dead_letter))

    assert b"<script>alert" not in response.content
    assert b"&lt;script&gt;alert" in response.content


def test_dead_letters_cannot_be_added_or_changed_and_only_superusers_delete(superuser_client, alice_client, rf):
    model_admin = admin.site._registry[DeadLetter]
    request = rf.get("/")
    request.user = User.objects.get(username="alice")
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    request.user = User.objects.get(username="root")
    assert not model_admin.has_change_permission(request)
    assert model_admin.has_delete_permission(request)


def test_reading_cannot_be_registered_with_the_admin():
    """Why Reading has no ModelAdmin: Django 5.2 refuses composite-primary-key models."""
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="composite primary key"):
        admin.AdminSite(name="probe").register(Reading)


# ---------------------------------------------------------------------------------------------------------------------
# Changelist query counts do not grow with rows
# ---------------------------------------------------------------------------------------------------------------------
def _devices(site, n):
    for i in range(n):
        device_type = DeviceTypeFactory(organization=site.organization)
        gateway = GatewayFactory(site=site)
        device = DeviceFactory(site=site, device_type=device_type, gateway=gateway, tags=["boiler", f"t{i}"])
        make_series(device, "supply_temp")


def _series(site, n):
    for i in range(n):
        make_series(DeviceFactory(site=site), "supply_temp", latest=i % 2 == 0)


def _api_keys(site, n):
    for _ in range(n):
        old, _ = api_key_issue(gateway=GatewayFactory(site=site))
        api_key_issue(gateway=old.gateway, replaces=old)


def _gateways(site, n):
    for _ in range(n):
        gateway = GatewayFactory(site=site)
        api_key_issue(gateway=gateway)
        DeviceFactory(site=site, gateway=gateway)


def _dead_letters(site, n):
    for _ in range(n):
        make_dead_letter(DeviceFactory(site=site).uid)


def _sites(site, n):
    for _ in range(n):
        GatewayFactory(site=SiteFactory(organization=site.organization))


def _device_types(site, n):
    for _ in range(n):
        MetricDefinitionFactory(device_type=DeviceFactory(site=site).device_type)


def _latest_values(site, n):
    for _ in range(n):
        make_series(DeviceFactory(site=site), "supply_temp")


def _users(site, n):
    for _ in range(n):
        user = User.objects.create_user(f"user-{User.objects.count()}", organization=site.organization)
        user.groups.add(Group.objects.get(name="viewer"))


ROW_MAKERS = {
    Device: _devices,
    Series: _series,
    ApiKey: _api_keys,
    Gateway: _gateways,
    DeadLetter: _dead_letters,
    Site: _sites,
    DeviceType: _device_types,
    LatestValue: _latest_values,
    User: _users,
}


def _count_queries(client, url):
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    assert response.status_code == 200
    return len(context.captured_queries), response


@pytest.mark.parametrize("model", list(ROW_MAKERS), ids=lambda model: model._meta.label)
@pytest.mark.parametrize("username", ["root", "alice"])
def test_changelist_query_count_does_not_grow_with_rows(client, superuser, alice, site_a, model, username):
    client.force_login(User.objects.get(username=username))
    url = changelist_url(model)
    make_rows = ROW_MAKERS[model]
    client.get(url)  # warm per-process caches (content types) so both measurements see the same state

    make_rows(site_a, 3)
    few, _ = _count_queries(client, url)
    make_rows(site_a, 27)
    many, response = _count_queries(client, url)

    assert response.context["cl"].result_count >= 30
    assert many == few


# ---------------------------------------------------------------------------------------------------------------------
# API keys: issued and revoked through the services
# ---------------------------------------------------------------------------------------------------------------------
def _assert_only_hash_stored(plaintext):
    api_key = ApiKey.objects.get(prefix=plaintext.split("_")[1])
    assert api_key.key_hash == ApiKey.hash_secret(plaintext)
    for row in ApiKey.objects.values_list():
        assert not any(plaintext in str(value) for value in row)
    assert not LogEntry.objects.filter(change_message__contains=plaintext).exists()
    assert not LogEntry.objects.filter(object_repr__contains=plaintext).exists()
    return api_key


def test_issuing_a_key_in_the_admin_shows_the_plaintext_once_and_stores_only_its_hash(superuser_client, site_a):
    gateway = GatewayFactory(site=site_a)

    response = superuser_client.post(
        add_url(ApiKey),
        {"gateway": gateway.pk, "name": "primary", "expires_at_0": "", "expires_at_1": ""},
        follow=True,
    )

    warnings = [message for message in messages_of(response) if PLAINTEXT_RE.search(message)]
    assert len(warnings) == 1
    assert "copy it now, it is not stored" in warnings[0]
    plaintext = PLAINTEXT_RE.search(warnings[0]).group()
    api_key = _assert_only_hash_stored(plaintext)
    assert api_key.name == "primary"
    assert api_key_authenticate(plaintext=plaintext) == api_key
    assert plaintext not in superuser_client.get(changelist_url(ApiKey)).content.decode()


def test_api_key_add_form_has_no_hash_or_prefix_field(superuser_client):
    form = superuser_client.get(add_url(ApiKey)).context["adminform"].form
    assert set(form.fields) == {"gateway", "name", "expires_at"}


def test_issuing_a_key_that_already_expired_is_rejected(superuser_client, site_a):
    gateway = GatewayFactory(site=site_a)
    response = superuser_client.post(
        add_url(ApiKey), {"gateway": gateway.pk, "name": "", "expires_at_0": "2020-01-01", "expires_at_1": "00:00:00"}
    )
    assert "The expiry must be in the future (leave it empty for a key that never expires)." in form_errors(response)
    assert not ApiKey.objects.exists()


def test_gateway_action_issues_a_key_per_gateway_and_shows_each_plaintext(superuser_client, site_a):
    gateways = [GatewayFactory(site=site_a), GatewayFactory(site=site_a)]

    response = superuser_client.post(
        changelist_url(Gateway),
        {"action": "issue_api_key", "_selected_action": [gateway.pk for gateway in gateways]},
        follow=True,
    )

    plaintexts = [PLAINTEXT_RE.search(m).group() for m in messages_of(response) if PLAINTEXT_RE.search(m)]
    assert len(plaintexts) == 2
    assert {_assert_only_hash_stored(plaintext).gateway for plaintext in plaintexts} == set(gateways)


def test_revoke_action_revokes_and_keeps_the_first_revocation_time(superuser_client, site_a):
    gateway = GatewayFactory(site=site_a)
    revoked_earlier, _ = api_key_issue(gateway=gateway)
    api_key_revoke(api_key=revoked_earlier)
    active, _ = api_key_issue(gateway=gateway)

    response = superuser_client.post(
        changelist_url(ApiKey),
        {"action": "revoke_keys", "_selected_action": [revoked_earlier.pk, active.pk]},
        follow=True,
    )

    first_revocation = revoked_earlier.revoked_at
    revoked_earlier.refresh_from_db()
    active.refresh_from_db()
    assert active.revoked_at is not None
    assert revoked_earlier.revoked_at == first_revocation
    assert any("Revoked 1 key(s)" in message for message in messages_of(response))


def test_rotate_action_issues_a_replacement_linked_to_the_old_key(superuser_client, site_a):
    old, _ = api_key_issue(gateway=GatewayFactory(site=site_a), name="primary")

    response = superuser_client.post(
        changelist_url(ApiKey), {"action": "rotate_keys", "_selected_action": [old.pk]}, follow=True
    )

    plaintext = next(PLAINTEXT_RE.search(m).group() for m in messages_of(response) if PLAINTEXT_RE.search(m))
    new = _assert_only_hash_stored(plaintext)
    assert new.replaces == old
    assert new.name == "primary"


def test_gateway_page_lists_its_keys_read_only(superuser_client, site_a):
    gateway = GatewayFactory(site=site_a)
    old, _ = api_key_issue(gateway=gateway)
    api_key_issue(gateway=gateway, replaces=old)

    response = superuser_client.get(change_url(gateway))

    (inline,) = response.context["inline_admin_formsets"]
    assert not inline.has_add_permission and not inline.has_change_permission and not inline.has_delete_permission
    assert f"fwk_{old.prefix}…" in response.content.decode()


# ---------------------------------------------------------------------------------------------------------------------
# Devices: purge
# ---------------------------------------------------------------------------------------------------------------------
def test_purge_action_asks_for_confirmation_then_deletes_devices_with_their_history(superuser_client, site_a):
    device = DeviceFactory(site=site_a, uid="hp-1")
    series = make_series(device, "supply_temp", readings=5)
    kept = DeviceFactory(site=site_a)
    data = {"action": "purge_devices", "_selected_action": [device.pk]}

    confirmation = superuser_client.post(changelist_url(Device), data)
    assert confirmation.status_code == 200
    assert "Yes, purge them and all their readings" in confirmation.content.decode()
    assert Device.objects.filter(pk=device.pk).exists()

    response = superuser_client.post(changelist_url(Device), {**data, "post": "yes"}, follow=True)

    assert "Purged 1 device(s) (hp-1) with 1 series and 5 readings." in messages_of(response)
    assert not Device.objects.filter(pk=device.pk).exists()
    assert not Reading.objects.filter(series_id=series.pk).exists()
    assert not Series.objects.filter(pk=series.pk).exists()
    assert Device.objects.filter(pk=kept.pk).exists()


def test_deleting_a_device_with_history_is_refused_with_the_protected_series_named(superuser_client, site_a):
    device = DeviceFactory(site=site_a)
    make_series(device, "supply_temp")

    response = superuser_client.post(reverse("admin:devices_device_delete", args=[device.pk]), {"post": "yes"})

    assert response.status_code == 200
    assert "protected related objects" in response.content.decode()
    assert Device.objects.filter(pk=device.pk).exists()


def test_tag_filter_lists_tags_in_use_and_filters_by_one(superuser_client, site_a):
    boiler = DeviceFactory(site=site_a, tags=["boiler", "roof"])
    DeviceFactory(site=site_a, tags=["pump"])

    response = superuser_client.get(changelist_url(Device), {"tag": "boiler"})

    assert list(response.context["cl"].queryset) == [boiler]
    tag_filter = next(f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", "") == "tag")
    assert [value for value, _ in tag_filter.lookup_choices] == ["boiler", "pump", "roof"]


# ---------------------------------------------------------------------------------------------------------------------
# Organization scoping
# ---------------------------------------------------------------------------------------------------------------------
def test_org_admin_sees_own_organization_devices_only(alice_client, site_a, other_site):
    ours = DeviceFactory(site=site_a)
    theirs = DeviceFactory(site=other_site)

    response = alice_client.get(changelist_url(Device))

    assert list(response.context["cl"].queryset) == [ours]
    assert theirs.uid not in response.content.decode()
    assert alice_client.get(change_url(theirs), follow=True).redirect_chain[-1][0] == reverse("admin:index")


def test_org_admin_sees_nothing_of_another_organization_anywhere(alice_client, site_a, other_site, mallory):
    other_device = DeviceFactory(site=other_site)
    other_gateway = GatewayFactory(site=other_site)
    other_key, _ = api_key_issue(gateway=other_gateway)
    objects = [
        other_site,
        other_device.device_type,
        other_device,
        other_gateway,
        other_key,
        make_series(other_device, "supply_temp"),
        make_dead_letter(other_device.uid),
        mallory,
        other_site.organization,
    ]
    for obj in objects:
        response = alice_client.get(changelist_url(type(obj)))
        assert obj not in response.context["cl"].queryset, type(obj).__name__
        assert alice_client.get(change_url(obj)).status_code == 302, type(obj).__name__


def test_org_admin_form_offers_only_own_organization_choices(alice_client, site_a, other_site):
    ours = DeviceTypeFactory(organization=site_a.organization)
    theirs = DeviceTypeFactory(organization=other_site.organization)
    GatewayFactory(site=other_site)

    form = alice_client.get(add_url(Device)).context["adminform"].form

    assert set(form.fields["site"].queryset) == set(Site.objects.filter(organization=site_a.organization))
    assert list(form.fields["device_type"].queryset) == [ours]
    assert not form.fields["gateway"].queryset.exists()
    assert theirs.name not in str(form)


def test_org_admin_cannot_post_another_organizations_site(alice_client, site_a, other_site):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    response = alice_client.post(
        add_url(Device),
        {"uid": "dev-x", "name": "X", "site": other_site.pk, "device_type": device_type.pk, "metadata": "{}"},
    )
    assert "Select a valid choice. That choice is not one of the available choices." in form_errors(response)
    assert not Device.objects.filter(uid="dev-x").exists()


def test_org_admin_can_add_a_device_to_own_site(alice_client, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    response = alice_client.post(
        add_url(Device),
        {"uid": "dev-ok", "name": "OK", "site": site_a.pk, "device_type": device_type.pk, "metadata": "{}"},
    )
    assert response.status_code == 302
    assert Device.objects.get(uid="dev-ok").site == site_a


def test_org_admin_cannot_make_a_superuser_or_move_users_to_another_organization(alice_client, alice, other_site):
    user = User.objects.create_user("erin", organization=alice.organization)
    form = alice_client.get(change_url(user)).context["adminform"].form
    assert "is_superuser" not in form.fields
    assert "user_permissions" not in form.fields
    assert "organization" not in form.fields
    assert {group.name for group in form.fields["groups"].queryset} == {"admin", "operator", "viewer"}

    response = alice_client.post(
        add_url(User),
        {
            "username": "frank",
            "usable_password": "false",
            "organization": other_site.organization.pk,
            "is_superuser": "on",
        },
    )
    assert response.status_code == 302
    frank = User.objects.get(username="frank")
    assert frank.organization == alice.organization
    assert not frank.is_superuser


# ---------------------------------------------------------------------------------------------------------------------
# Bad input is refused with a message saying what to fix
# ---------------------------------------------------------------------------------------------------------------------
def _device_post(site, device_type, **overrides):
    return {
        "uid": "dev-new",
        "name": "New",
        "site": site.pk,
        "device_type": device_type.pk,
        "metadata": "{}",
    } | overrides


def test_duplicate_device_id_is_refused(superuser_client, site_a):
    existing = DeviceFactory(site=site_a)
    response = superuser_client.post(add_url(Device), _device_post(site_a, existing.device_type, uid=existing.uid))
    assert "Device with this Device id already exists." in form_errors(response)


def test_device_type_of_another_organization_than_the_site_is_refused(superuser_client, site_a, other_site):
    foreign_type = DeviceTypeFactory(organization=other_site.organization)
    response = superuser_client.post(add_url(Device), _device_post(site_a, foreign_type))
    assert "This device type belongs to another organization than the site." in form_errors(response)


def test_device_id_with_mqtt_wildcards_is_refused(superuser_client, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    response = superuser_client.post(add_url(Device), _device_post(site_a, device_type, uid="hp/1"))
    assert any("'/', '+', '#' and spaces are not allowed" in error for error in form_errors(response))


def test_invalid_tags_are_refused(superuser_client, site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    response = superuser_client.post(add_url(Device), _device_post(site_a, device_type, tags="Roof Top"))
    assert any(error.startswith("Invalid tags 'Roof Top'") for error in form_errors(response))


def _device_type_post(organization, **overrides):
    return (
        {
            "organization": organization.pk,
            "name": "Heat pump X",
            "description": "",
            "unknown_metric_policy": "strict",
            "offline_after": "00:05:00",
            "raw_retention_days": "",
            "payload_schema": "{}",
        }
        | inline_management("metrics")
        | overrides
    )


def test_metric_minimum_above_maximum_is_refused(superuser_client, organization):
    metric = {
        "metrics-0-key": "supply_temp",
        "metrics-0-display_name": "Supply",
        "metrics-0-unit": "°C",
        "metrics-0-kind": "gauge",
        "metrics-0-min_value": "100",
        "metrics-0-max_value": "0",
    }
    response = superuser_client.post(
        add_url(DeviceType), _device_type_post(organization, **inline_management("metrics", total=1), **metric)
    )
    assert "The plausible minimum cannot be greater than the maximum." in form_errors(response)
    assert not DeviceType.objects.exists()


def test_invalid_json_schema_is_refused(superuser_client, organization):
    response = superuser_client.post(
        add_url(DeviceType), _device_type_post(organization, payload_schema='{"type": 12}')
    )
    assert "Invalid JSON Schema at type: 12 is not valid under any of the given schemas" in form_errors(response)


def _site_post(organization, **overrides):
    return (
        {
            "organization": organization.pk,
            "name": "Site New",
            "timezone": "Europe/Berlin",
            "address": "",
            "latitude": "",
            "longitude": "",
            "emission_factor_kg_per_kwh": "0.4",
        }
        | inline_management("gateways")
        | overrides
    )


def test_unknown_timezone_is_refused(superuser_client, organization):
    response = superuser_client.post(add_url(Site), _site_post(organization, timezone="Mars/Olympus_Mons"))
    assert (
        "'Mars/Olympus_Mons' is not a known IANA timezone (e.g. 'Europe/Berlin', 'America/New_York', 'UTC')."
        in form_errors(response)
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Europe", "'Europe' is not a known IANA timezone"),  # a directory of the zoneinfo tree: was a 500
        ("A" * 300, "at most 64 characters"),  # too long for the file system: was a 500
        ("localtime", "'localtime' is not a known IANA timezone"),  # the host's setting, not a name
        ("Europe/", "'Europe/' is not a known IANA timezone"),
        ("../../etc/passwd", "is not a known IANA timezone"),
    ],
)
def test_a_timezone_that_is_no_iana_name_is_a_form_error_not_a_500(superuser_client, organization, name, message):
    response = superuser_client.post(add_url(Site), _site_post(organization, timezone=name))

    assert response.status_code == 200
    assert any(message in error for error in form_errors(response)), form_errors(response)
    assert not Site.objects.filter(name="Site New").exists()


def test_site_form_suggests_timezones(superuser_client):
    content = superuser_client.get(add_url(Site)).content.decode()
    assert 'list="iana-timezones"' in content
    assert '<option value="Europe/Berlin">' in content


def test_negative_emission_factor_is_refused(superuser_client, organization):
    response = superuser_client.post(add_url(Site), _site_post(organization, emission_factor_kg_per_kwh="-1"))
    assert "The emission factor cannot be negative." in form_errors(response)
