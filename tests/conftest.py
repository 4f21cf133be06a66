"""Shared fixtures: the role matrix users of STYLE.md (alice admin, bob operator on A, carol viewer on B)."""

import pytest

from apps.users.choices import Role
from apps.users.services import user_grant_site, user_set_role
from tests.factories import OrganizationFactory, SiteFactory, UserFactory


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
