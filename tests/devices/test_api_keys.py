"""API keys: the plaintext exists only in the issuer's hands; lookup is by prefix, comparison in constant time, and
only usable keys authenticate."""

import datetime
import hmac

import pytest
from django.utils import timezone

from apps.devices.models import ApiKey
from apps.devices.services import api_key_authenticate, api_key_issue, api_key_revoke
from tests.devices.factories import GatewayFactory


@pytest.fixture
def gateway(site_a):
    return GatewayFactory(site=site_a)


@pytest.fixture
def issued(gateway):
    return api_key_issue(gateway=gateway, name="primary")


def test_plaintext_has_the_documented_shape_and_starts_with_the_prefix(issued):
    api_key, plaintext = issued
    assert plaintext.startswith(f"fwk_{api_key.prefix}_")
    assert len(api_key.prefix) == ApiKey.PREFIX_LENGTH
    assert len(plaintext.split("_", 2)[2]) >= 32  # 24 random bytes, URL-safe base64


def test_plaintext_is_never_stored(issued):
    api_key, plaintext = issued
    secret = plaintext.split("_", 2)[2]
    assert api_key.key_hash != plaintext
    assert api_key.key_hash == ApiKey.hash_secret(plaintext)
    for row in ApiKey.objects.values_list():
        for value in row:
            assert plaintext not in str(value)
            assert secret not in str(value)


def test_each_issue_gives_a_distinct_key(gateway):
    (first, first_plaintext), (second, second_plaintext) = (
        api_key_issue(gateway=gateway),
        api_key_issue(gateway=gateway),
    )
    assert first.prefix != second.prefix
    assert first_plaintext != second_plaintext


def test_authenticate_finds_the_key_by_its_prefix_in_one_query(issued, django_assert_num_queries):
    api_key, plaintext = issued
    with django_assert_num_queries(1) as context:
        assert api_key_authenticate(plaintext=plaintext) == api_key
    assert api_key.prefix in context.captured_queries[0]["sql"]


def test_authenticate_compares_hashes_in_constant_time(issued, monkeypatch):
    api_key, plaintext = issued
    calls = []
    real_compare_digest = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real_compare_digest(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)

    assert api_key_authenticate(plaintext=plaintext) == api_key
    assert calls == [(api_key.key_hash, ApiKey.hash_secret(plaintext))]


def test_authenticated_key_comes_with_its_gateway_and_site(issued, django_assert_num_queries):
    _, plaintext = issued
    authenticated = api_key_authenticate(plaintext=plaintext)
    with django_assert_num_queries(0):
        assert authenticated.gateway.site.name == "Site A"


def test_wrong_secret_with_a_known_prefix_fails(issued):
    _, plaintext = issued
    assert api_key_authenticate(plaintext=plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None


def test_unknown_key_fails(issued):
    assert api_key_authenticate(plaintext="fwk_00000000_" + "x" * 32) is None


@pytest.mark.parametrize(
    "plaintext",
    ["", None, "fwk", "fwk_", "fwk_abc_secret", "fwk_abcdefghij_secret", "key_abcdef12_secret", "abcdef12"],
)
def test_malformed_key_fails_without_a_query(issued, plaintext, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert api_key_authenticate(plaintext=plaintext) is None


def test_expired_key_fails(gateway):
    api_key, plaintext = api_key_issue(gateway=gateway, expires_at=timezone.now() + datetime.timedelta(hours=1))
    assert api_key_authenticate(plaintext=plaintext) == api_key
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))
    assert api_key_authenticate(plaintext=plaintext) is None


def test_revoked_key_fails(issued):
    api_key, plaintext = issued
    api_key_revoke(api_key=api_key)
    assert api_key_authenticate(plaintext=plaintext) is None


def test_revoke_is_idempotent_and_keeps_the_first_revocation_time(issued):
    api_key, _ = issued
    assert api_key_revoke(api_key=api_key) is True
    first_revocation = api_key.revoked_at
    assert first_revocation is not None

    assert api_key_revoke(api_key=ApiKey.objects.get(pk=api_key.pk)) is False
    api_key.refresh_from_db()
    assert api_key.revoked_at == first_revocation


def test_replacement_links_both_ways_and_both_keys_work_until_the_old_is_revoked(issued, gateway):
    old, old_plaintext = issued
    new, new_plaintext = api_key_issue(gateway=gateway, replaces=old)

    old.refresh_from_db()
    assert new.replaces == old
    assert old.replaced_by == new
    assert api_key_authenticate(plaintext=old_plaintext) == old
    api_key_revoke(api_key=old)
    assert api_key_authenticate(plaintext=old_plaintext) is None
    assert api_key_authenticate(plaintext=new_plaintext) == new


def test_usable_queryset_excludes_revoked_and_expired_keys(gateway):
    now = timezone.now()
    usable, _ = api_key_issue(gateway=gateway)
    later, _ = api_key_issue(gateway=gateway, expires_at=now + datetime.timedelta(days=1))
    expired, _ = api_key_issue(gateway=gateway, expires_at=now - datetime.timedelta(seconds=1))
    revoked, _ = api_key_issue(gateway=gateway)
    api_key_revoke(api_key=revoked)

    assert set(ApiKey.objects.usable(now)) == {usable, later}
    assert [key.is_usable(now) for key in (usable, later, expired, revoked)] == [True, True, False, False]


def test_key_is_shown_by_its_prefix_only(issued):
    api_key, plaintext = issued
    assert str(api_key) == f"fwk_{api_key.prefix}… ({api_key.gateway})"
    assert plaintext.split("_", 2)[2] not in str(api_key)
