"""Admin building blocks shared by every app: tenant scoping, written once.

The Django admin is the configuration UI for organization admins (staff users of an organization) as well as for
platform operators (superusers). A non-superuser must never see, pick or reach by URL a row of another
organization, so every ModelAdmin and inline that shows tenant data mixes in ``OrganizationScopedAdminMixin``.
"""

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone


def organization_id_for_scope(user) -> int | None:
    """The organization a staff user is confined to; None for superusers, who see every organization."""
    return None if user.is_superuser else user.organization_id


class OrganizationScopedAdminMixin:
    """Confine a ModelAdmin (or inline) to the requesting user's organization.

    Set ``organization_path`` to the lookup from the model to its ``Organization`` (``"site__organization"``,
    ``"organization"``, ``"pk"`` for Organization itself), or override ``scope_queryset`` where the model has no
    such path. Superusers are not scoped; staff without an organization see nothing.

    Scoping applies to:

    * ``get_queryset`` -- the changelist, and through ``get_object`` every change, delete and history URL;
    * foreign-key choices -- a field's choices are scoped by the *related* model's registered admin, so a form
      offers only the organization's sites, device types and gateways without each admin listing them again.

    Related list filters must be ``admin.RelatedOnlyFieldListFilter``: it lists only objects the (scoped)
    changelist rows point to, whereas the default filter lists the whole related table, i.e. other
    organizations' site and device type names.
    """

    organization_path: str | None = None

    def scope_queryset(self, queryset: QuerySet, organization_id: int) -> QuerySet:
        if self.organization_path is None:
            raise ImproperlyConfigured(f"{type(self).__name__} must set organization_path or override scope_queryset")
        return queryset.filter(**{self.organization_path: organization_id})

    def scope_for_user(self, queryset: QuerySet, user) -> QuerySet:
        if user.is_superuser:
            return queryset
        organization_id = organization_id_for_scope(user)
        if organization_id is None:
            return queryset.none()
        return self.scope_queryset(queryset, organization_id)

    def get_queryset(self, request):
        return self.scope_for_user(super().get_queryset(request), request.user)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related_admin = self.admin_site._registry.get(db_field.related_model)
        if "queryset" not in kwargs and isinstance(related_admin, OrganizationScopedAdminMixin):
            queryset = self.get_field_queryset(kwargs.get("using"), db_field, request)
            if queryset is None:
                queryset = db_field.related_model._default_manager.using(kwargs.get("using")).all()
            kwargs["queryset"] = related_admin.scope_for_user(queryset, request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyAdminMixin:
    """View only: no add, change or delete, for ModelAdmins and inlines of rows the platform writes (ingest, the
    alert engine, notifications, the audit log, keys issued through services). An admin that must allow one of
    them (dead letters: superusers delete) overrides that one method."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class CredentialStateFilter(admin.SimpleListFilter):
    """Usable / expired / revoked, for the credential models of ``apps.core.credentials`` (gateway API keys, personal
    API tokens): their querysets have ``usable(now)`` and the ``expires_at`` / ``revoked_at`` columns."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("usable", "Usable"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "usable":
            return queryset.usable(now)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


def subquery_count(queryset: QuerySet, *, field: str) -> Coalesce:
    """A correlated ``COUNT(*)`` of ``queryset`` rows whose ``field`` is the outer row, for changelist columns.

    Unlike ``Count()`` over a join it needs no GROUP BY of the outer query, and PostgreSQL evaluates it only for
    the page of rows shown, so the changelist stays one query whatever the size of the related table.
    """
    counts = queryset.filter(**{field: OuterRef("pk")}).order_by().values(field).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counts, output_field=IntegerField()), 0)


def related_count(model, related_name: str) -> Coalesce:
    """``subquery_count`` of the rows behind a reverse relation, e.g. ``related_count(Organization, "sites")``.

    Through the relation rather than the related model, so a lower app's admin can count a higher app's rows
    (an organization's sites, a device's series) without importing it.
    """
    relation = model._meta.get_field(related_name)
    return subquery_count(relation.related_model._default_manager.all(), field=relation.field.name)


def count_column(attribute: str, description: str):
    """A changelist column showing the count ``get_queryset`` annotated as ``attribute`` (see ``subquery_count``),
    sortable by it."""

    @admin.display(description=description, ordering=attribute)
    def column(self, obj):
        return getattr(obj, attribute)

    column.__name__ = attribute
    return column
