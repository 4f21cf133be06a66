from apps.devices.selectors import device_list_for_user, site_list_for_user, user_can_operate_site
from tests.devices.factories import DeviceFactory


def test_admin_sees_every_site_of_the_organization_only(alice, site_a, site_b, other_site):
    assert set(site_list_for_user(user=alice)) == {site_a, site_b}


def test_operator_sees_only_granted_site(bob, site_a, site_b):
    assert list(site_list_for_user(user=bob)) == [site_a]


def test_viewer_cannot_see_other_site_devices(carol, site_a, site_b):
    visible = DeviceFactory(site=site_b)
    DeviceFactory(site=site_a)
    assert list(device_list_for_user(user=carol)) == [visible]


def test_other_organization_admin_sees_nothing_of_ours(mallory, site_a, site_b, other_site):
    DeviceFactory(site=site_a)
    assert list(site_list_for_user(user=mallory)) == [other_site]
    assert not device_list_for_user(user=mallory).filter(site__organization=site_a.organization).exists()


def test_only_operators_and_admins_may_operate(alice, bob, carol, site_a, site_b):
    assert user_can_operate_site(user=alice, site=site_b)
    assert user_can_operate_site(user=bob, site=site_a)
    assert not user_can_operate_site(user=bob, site=site_b)
    assert not user_can_operate_site(user=carol, site=site_b)


def test_anonymous_sees_nothing(site_a):
    from django.contrib.auth.models import AnonymousUser

    assert not site_list_for_user(user=AnonymousUser()).exists()
