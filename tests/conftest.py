"""Shared fixtures: the role matrix users of STYLE.md (alice admin, bob operator on A, carol viewer on B)."""

import importlib

import pytest
from django.contrib.auth.models import Group, Permission

from apps.devices.services import user_grant_site
from apps.users.choices import Role
from apps.users.services import user_set_role
from tests.devices.factories import SiteFactory
from tests.support.broker import Broker
from tests.support.local_servers import SmtpSink
from tests.users.factories import OrganizationFactory, UserFactory


@pytest.fixture(scope="session", autouse=True)
def cache_of_this_run_only():
    """Redis outlives a test run: what an earlier run cached under the test prefix (waffle's flags, with that
    run's primary keys) would be read by this one. Only keys under this run's prefix are deleted."""
    from django.conf import settings
    from django.core.cache import cache

    client = cache._cache.get_client(write=True)
    keys = list(client.scan_iter(f"{settings.CACHES['default']['KEY_PREFIX']}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def organization(db):
    return OrganizationFactory(name="Acme Heating", slug="acme")


@pytest.fixture
def site_a(organization):
    return SiteFactory(organization=organization, name="Site A")


@pytest.fixture
def site_b(organization):
    return SiteFactory(organization=organization, name="Site B")


@pytest.fixture
def other_organization(db):
    return OrganizationFactory(name="Other Corp", slug="other")


@pytest.fixture
def other_site(other_organization):
    return SiteFactory(organization=other_organization, name="Other Site")


@pytest.fixture(autouse=True)
def role_groups(request):
    """The role groups and the admin role's permissions, as the data migrations create them, in every test that
    uses the database.

    A transactional test ends with a flush that empties every table (permissions come back through post_migrate,
    groups do not), so a later test would otherwise find no roles.
    """
    names = set(request.fixturenames)
    if "transactional_db" in names:
        request.getfixturevalue("transactional_db")
    elif "db" in names:
        request.getfixturevalue("db")
    elif not request.node.get_closest_marker("django_db"):
        return
    if Group.objects.filter(name__in=Role.values).count() == len(Role.values):
        return
    users_migration = importlib.import_module("apps.users.migrations.0002_role_groups")
    alerts_migration = importlib.import_module("apps.alerts.migrations.0002_admin_group_permissions")
    for role in Role.values:
        Group.objects.get_or_create(name=role)
    admin = Group.objects.get(name=Role.ADMIN)
    discovery_migration = importlib.import_module("apps.devices.migrations.0010_discovered_device_admin_permissions")
    grants = [*users_migration.ADMIN_PERMISSIONS.items(), *discovery_migration.ADMIN_PERMISSIONS.items()]
    for app_label, models in grants:
        for model, actions in models.items():
            codenames = [f"{action}_{model}" if action != "operate" else "operate_site" for action in actions]
            admin.permissions.add(*Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames))
    codenames = [f"{a}_{m}" for m in alerts_migration.ALERTS_MODELS for a in ("add", "change", "delete", "view")]
    admin.permissions.add(*Permission.objects.filter(content_type__app_label="alerts", codename__in=codenames))


@pytest.fixture(autouse=True)
def product_flags(request, role_groups):
    """The product's feature flags as the migrations leave them (apps/core/flags.py), and nothing of another test's
    flag state cached: a transactional test's flush deletes the rows (recreated here, with new primary keys), and a
    test that changes a flag leaves waffle's Redis entry and the process's answers behind (cleared after it)."""
    if not ({"db", "transactional_db"} & set(request.fixturenames) or request.node.get_closest_marker("django_db")):
        yield
        return
    from waffle import get_waffle_flag_model

    from apps.core.flags import FLAGS, flags_forget

    flag_model = get_waffle_flag_model()
    dialects_on = importlib.import_module("apps.users.migrations.0007_dialect_flags_on").DIALECT_FLAGS

    def forget():
        for name in FLAGS:
            flag_model(name=name).flush()
        flags_forget()

    if flag_model.objects.filter(name__in=FLAGS).count() != len(FLAGS):
        for name, note in FLAGS.items():
            flag_model.objects.get_or_create(
                name=name, defaults={"everyone": True if name in dialects_on else None, "note": note}
            )
        forget()
    yield
    forget()


@pytest.fixture
def alice(organization, site_a, site_b):
    """Organization admin: every site of the organization, staff access to the admin."""
    user = UserFactory(username="alice", organization=organization)
    user_set_role(user=user, role=Role.ADMIN)
    return user


@pytest.fixture
def bob(organization, site_a):
    """Operator on site A only."""
    user = UserFactory(username="bob", organization=organization)
    user_set_role(user=user, role=Role.OPERATOR)
    user_grant_site(user=user, site=site_a, operate=True)
    return user


@pytest.fixture
def carol(organization, site_b):
    """Viewer on site B only."""
    user = UserFactory(username="carol", organization=organization)
    user_set_role(user=user, role=Role.VIEWER)
    user_grant_site(user=user, site=site_b, operate=False)
    return user


@pytest.fixture
def mallory(other_organization, other_site):
    """Admin of another organization: must see nothing of Acme's."""
    user = UserFactory(username="mallory", organization=other_organization)
    user_set_role(user=user, role=Role.ADMIN)
    return user


@pytest.fixture(scope="module")
def broker():
    """A Mosquitto with the project config on a free port, one per test module that asks for it."""
    broker = Broker()
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", organization=None, is_superuser=True, is_staff=True)


@pytest.fixture(autouse=True)
def fresh_ingest_directory(monkeypatch):
    """Each test gets a device directory loaded from its own data.

    The web process keeps one directory and refreshes it when a commit bumps the catalogue version; tests
    wrapped in a transaction never commit, so they would otherwise see the previous test's devices.
    """
    from apps.telemetry.api import views

    monkeypatch.setattr(views, "_directory", None)


@pytest.fixture
def smtp():
    """A real SMTP server on a free local port that keeps what it receives (tests.support.local_servers)."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()
