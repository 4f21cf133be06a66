"""Writes on users: roles and site grants."""

from django.contrib.auth.models import Group
from django.db import transaction
from guardian.shortcuts import assign_perm, remove_perm

from apps.devices.models import Site
from apps.users.choices import Role


@transaction.atomic
def user_set_role(*, user, role: Role) -> None:
    """Give ``user`` exactly one role; admins also get staff access to the Django admin (the config UI)."""
    user.groups.remove(*Group.objects.filter(name__in=Role.values))
    user.groups.add(Group.objects.get(name=role))
    user.is_staff = role == Role.ADMIN
    user.save(update_fields=["is_staff"])


@transaction.atomic
def user_grant_site(*, user, site: Site, operate: bool) -> None:
    """Let ``user`` see ``site``; with ``operate``, also acknowledge alerts and manage rules there."""
    if user.organization_id != site.organization_id:
        raise ValueError(f"{user} belongs to another organization than site {site}.")
    assign_perm("devices.view_site", user, site)
    if operate:
        assign_perm("devices.operate_site", user, site)
    else:
        remove_perm("devices.operate_site", user, site)


@transaction.atomic
def user_revoke_site(*, user, site: Site) -> None:
    remove_perm("devices.view_site", user, site)
    remove_perm("devices.operate_site", user, site)
