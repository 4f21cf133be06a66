"""Feature flags (apps/core/flags.py): per organization, cached, never raising; the dialects start on."""

import pytest
from django.db import DatabaseError
from waffle.models import Flag

from apps.core import flags
from apps.core.flags import DIALECT_SENML, DISCOVERY_AUTO_REGISTER, flag_active, flags_forget
from apps.users.models import FlagOrganization


@pytest.fixture(autouse=True)
def fresh_answers():
    flags_forget()
    yield
    flags_forget()


def test_the_product_flags_exist_dialects_on_auto_register_off(db, organization):
    assert set(flags.FLAGS) <= set(Flag.objects.values_list("name", flat=True))
    assert flag_active(DIALECT_SENML, organization.id)
    assert not flag_active(DISCOVERY_AUTO_REGISTER, organization.id)
    assert not flag_active("no_such_flag")
    assert flag_active("no_such_flag", default=True)


def test_a_flag_is_on_for_the_organizations_listed_and_everyone_overrides(db, organization, other_organization):
    flag = Flag.objects.get(name=DISCOVERY_AUTO_REGISTER)
    FlagOrganization.objects.create(flag=flag, organization=organization)
    assert flag_active(DISCOVERY_AUTO_REGISTER, organization.id)
    assert not flag_active(DISCOVERY_AUTO_REGISTER, other_organization.id)
    assert not flag_active(DISCOVERY_AUTO_REGISTER)
    flag.everyone = False
    flag.save()
    flag.flush()  # waffle flushes its cache after the commit, which a test's transaction never reaches
    flags_forget()
    assert not flag_active(DISCOVERY_AUTO_REGISTER, organization.id)


def test_answers_are_cached_in_the_process(db, organization, django_assert_num_queries):
    flag_active(DIALECT_SENML, organization.id)
    with django_assert_num_queries(0):
        for _ in range(100):
            flag_active(DIALECT_SENML, organization.id)


def test_a_failing_database_or_cache_reads_as_off(db, organization, monkeypatch):
    def broken(*args, **kwargs):
        raise DatabaseError("connection lost")

    monkeypatch.setattr(Flag, "get", classmethod(lambda cls, name: broken()))
    assert flag_active(DISCOVERY_AUTO_REGISTER, organization.id) is False
    assert flag_active(DIALECT_SENML, organization.id, default=True) is True


def test_the_doctor_lists_the_flags(db, organization):
    Flag.objects.filter(name=DIALECT_SENML).update(everyone=None)
    FlagOrganization.objects.create(flag=Flag.objects.get(name=DIALECT_SENML), organization=organization)
    assert ("dialect_senml", "on for acme") in flags.flag_states()
    assert ("dialect_sparkplug", "on for everyone") in flags.flag_states()
    assert ("discovery_auto_register", "off (no organization)") in flags.flag_states()
