"""Organizations and their users.

An organization admin (staff, not superuser) manages the people of their own organization: they cannot see other
organizations' users, move anyone to another organization, or grant anything beyond the role groups (no
superuser flag, no individual permissions), so the admin cannot be used to escalate beyond one's own tenant.
"""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group

from apps.core.admin_mixins import OrganizationScopedAdminMixin, count_column, related_count
from apps.users.choices import Role
from apps.users.models import Organization, User


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "pk"
    list_display = ("name", "slug", "member_count", "site_count", "created_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_at",)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_count=related_count(Organization, "members"),
                site_count=related_count(Organization, "sites"),
            )
        )

    member_count = count_column("member_count", "members")
    site_count = count_column("site_count", "sites")


@admin.register(User)
class UserAdmin(OrganizationScopedAdminMixin, DjangoUserAdmin):
    organization_path = "organization"
    list_display = ("username", "email", "first_name", "last_name", "organization", "roles", "is_staff", "is_active")
    list_filter = (
        ("organization", admin.RelatedOnlyFieldListFilter),
        "groups",
        "is_staff",
        "is_superuser",
        "is_active",
    )
    list_select_related = ("organization",)
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Organization", {"fields": ("organization",)}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("username", "usable_password", "password1", "password2")}),
        ("Organization", {"fields": ("organization",)}),
    )

    def get_queryset(self, request):
        # Roles are groups, listed per row: one prefetch query for the page instead of one per user.
        return super().get_queryset(request).prefetch_related("groups")

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.is_superuser:
            return fieldsets
        # Organization admins manage roles (groups) and access, never superuser status or raw permissions.
        restricted = {"Permissions": {"fields": ("is_active", "is_staff", "groups")}}
        return tuple((name, restricted.get(name, options)) for name, options in fieldsets)

    def get_readonly_fields(self, request, obj=None):
        readonly = super().get_readonly_fields(request, obj)
        if request.user.is_superuser:
            return readonly
        return (*readonly, "organization", "last_login", "date_joined")

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "groups" and not request.user.is_superuser:
            kwargs["queryset"] = Group.objects.filter(name__in=Role.values)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if not request.user.is_superuser:
            obj.organization_id = request.user.organization_id
        super().save_model(request, obj, form, change)

    @admin.display(description="roles")
    def roles(self, user):
        return ", ".join(group.name for group in user.groups.all()) or "—"
