import datetime
import io
import re
from decimal import Decimal

import pytest
from django.core.management import call_command

from apps.alerts.choices import ChannelKind, RuleKind
from apps.alerts.models import AlertRule
from apps.devices import demo
from apps.devices.choices import UnknownMetricPolicy
from apps.devices.models import ApiKey, Device, DeviceType, Gateway, MetricDefinition, Site
from apps.devices.selectors import site_list_for_user, user_can_operate_site
from apps.devices.services import api_key_authenticate
from apps.users.models import Organization, User

pytestmark = pytest.mark.django_db

KEY_LINE_RE = re.compile(r"^\s+(gw-site-[ab])\s+(fwk_[0-9a-f]{8}_[A-Za-z0-9_-]+)\s*$", re.MULTILINE)
KEY_RE = re.compile(r"fwk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}")


def seed() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def row_counts() -> dict[str, int]:
    models = (Organization, Site, Gateway, DeviceType, MetricDefinition, Device, User, ApiKey)
    return {model.__name__: model.objects.count() for model in models}


def test_second_run_creates_nothing_new():
    seed()
    first = row_counts()
    seed()
    assert (
        row_counts()
        == first
        == {
            "Organization": 1,
            "Site": 2,
            "Gateway": 2,
            "DeviceType": 3,
            "MetricDefinition": 15,
            "Device": 24,
            "User": 3,
            "ApiKey": 2,
        }
    )


def test_keys_are_printed_only_by_the_run_that_issues_them():
    first, second = seed(), seed()
    assert len(KEY_LINE_RE.findall(first)) == 2
    assert not KEY_RE.search(second)
    assert second.count("already seeded") == 2
    assert "http://127.0.0.1:8000/admin/" in first and "http://127.0.0.1:8000/admin/" in second


def test_printed_keys_authenticate_as_their_site_gateway():
    for gateway_uid, plaintext in KEY_LINE_RE.findall(seed()):
        api_key = api_key_authenticate(plaintext=plaintext)
        assert api_key is not None
        assert api_key.gateway.uid == gateway_uid


def test_demo_users_have_their_roles_and_site_scopes():
    seed()
    alice, bob, carol = (User.objects.get(username=name) for name in ("alice", "bob", "carol"))
    site_a, site_b = Site.objects.get(name="Site A"), Site.objects.get(name="Site B")

    assert set(site_list_for_user(user=alice)) == {site_a, site_b}
    assert alice.is_staff and alice.is_org_admin
    assert list(site_list_for_user(user=bob)) == [site_a]
    assert user_can_operate_site(user=bob, site=site_a)
    assert list(site_list_for_user(user=carol)) == [site_b]
    assert not user_can_operate_site(user=carol, site=site_b)
    assert not bob.is_staff and not carol.is_staff


def test_demo_passwords_work_and_are_printed():
    output = seed()
    for spec in demo.USERS:
        assert User.objects.get(username=spec.username).check_password(spec.password)
        assert f"{spec.username} " in output and spec.password in output
    assert "local demo only" in output


def test_rerun_keeps_a_password_changed_since():
    seed()
    alice = User.objects.get(username="alice")
    alice.set_password("changed by alice")
    alice.save()
    output = seed()
    alice.refresh_from_db()
    assert alice.check_password("changed by alice")
    assert "password left unchanged" in output


def test_rerun_restores_a_catalogue_value_edited_since():
    seed()
    MetricDefinition.objects.filter(key="supply_temp").update(max_value=1)
    seed()
    assert MetricDefinition.objects.get(key="supply_temp").max_value == 95.0


def test_fleet_spreads_over_both_sites_with_a_gateway_each():
    seed()
    by_site = {site.name: site.devices.count() for site in Site.objects.all()}
    assert by_site == {"Site A": 12, "Site B": 12}
    for uid in ("hp-a-001", "fm-b-002", "em-a-001"):
        assert Device.objects.filter(uid=uid, is_active=True).exists()
    for gateway in Gateway.objects.all():
        assert gateway.uid in {"gw-site-a", "gw-site-b"}
        assert gateway.devices.exists()
        assert not gateway.devices.exclude(site=gateway.site).exists()
    assert Device.objects.filter(gateway__isnull=True).exists()  # the heat pumps report directly


def test_seeded_rows_pass_model_validation():
    seed()
    for model in (Site, DeviceType, MetricDefinition, Gateway, Device):
        for row in model.objects.all():
            row.full_clean()
    assert set(DeviceType.objects.values_list("unknown_metric_policy", flat=True)) == {UnknownMetricPolicy.STRICT}
    emission = dict(Site.objects.values_list("name", "emission_factor_kg_per_kwh"))
    assert emission == {"Site A": Decimal("0.38"), "Site B": Decimal("0.12")}


def test_every_seeded_rule_escalates_by_email_to_the_on_call_address_at_once_and_after_two_minutes():
    seed()
    seed()  # idempotent: one policy, two steps, one channel
    rules = list(AlertRule.objects.select_related("escalation_policy"))
    assert {rule.kind for rule in rules} == {RuleKind.THRESHOLD, RuleKind.RATE_OF_CHANGE, RuleKind.NO_DATA}
    assert {rule.escalation_policy.name for rule in rules} == {demo.ESCALATION_POLICY}
    steps = list(rules[0].escalation_policy.steps.order_by("position"))
    assert [step.delay for step in steps] == [datetime.timedelta(0), datetime.timedelta(minutes=2)]
    for step in steps:
        (channel,) = step.channels.all()
        assert (channel.kind, channel.email_to) == (ChannelKind.EMAIL, "oncall@acme.example")


def test_heat_pumps_mark_the_metrics_their_efficiency_is_computed_from():
    seed()
    roles = dict(
        MetricDefinition.objects.filter(device_type__name="Heat pump").exclude(role="").values_list("role", "key")
    )
    assert roles == {"heat_output": "heat_kwh", "electrical_input": "energy_kwh", "outdoor_temperature": "outdoor_temp"}
