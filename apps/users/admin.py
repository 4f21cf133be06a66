"""Organizations, their users and the users' personal API tokens.

An organization admin (staff, not superuser) manages the people of their own organization: they cannot see other
organizations' users, move anyone to another organization, or grant anything beyond the role groups (no
superuser flag, no individual permissions), so the admin cannot be used to escalate beyond one's own tenant.

API tokens are listed for the organization's admins (as ``/api/v1/organization/tokens`` does) and can only be
revoked here, through ``api_token_revoke`` (audited, cascading to the tokens a token created); nothing derived from
a secret is shown, and tokens are created by their owners only (``POST /api/v1/tokens``), never by an admin.

Authenticator (TOTP) devices replace django-otp's own admin, which can show a device's secret and its QR code and
lets an admin type in a key: here they are listed without either and can only be removed (a lost phone), through
``totp_device_remove`` (audited); the owner enrols a new one at their next login.
"""

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.models import Group
from django_otp.plugins.otp_totp.models import TOTPDevice
from waffle.admin import FlagAdmin
from waffle.models import Flag

from apps.core.admin_mixins import (
    CredentialStateFilter,
    OrganizationScopedAdminMixin,
    ReadOnlyAdminMixin,
    count_column,
    related_count,
)
from apps.users.choices import Role
from apps.users.models import ApiToken, FlagOrganization, Organization, User
from apps.users.services import api_token_revoke, totp_device_may_remove, totp_device_remove


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


def manages_members(request) -> bool:
    """Whether the requesting user administers members' credentials (an organization admin or a superuser).

    Worked out once per request: the admin's sidebar asks every ModelAdmin several times per page, and the role is
    a query.
    """
    cached = getattr(request, "_manages_members", None)
    if cached is None:
        user = request.user
        cached = user.is_active and user.is_staff and (user.is_superuser or user.is_org_admin)
        request._manages_members = cached
    return cached


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdminMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Members' tokens, read-only but for the revoke action. Visible to organization admins and superusers, as the
    audit log is: a role check rather than model permissions, so no data migration has to grant them."""

    organization_path = "user__organization"
    list_display = ("key", "user", "name", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = (CredentialStateFilter, ("user", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("user", "parent")
    search_fields = ("prefix", "name", "user__username")
    fields = (
        "key",
        "user",
        "name",
        "scopes",
        "created_by_token",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = fields
    actions = ["revoke_tokens"]

    def has_view_permission(self, request, obj=None):
        return manages_members(request)

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_revoke_permission(self, request):
        return self.has_view_permission(request)

    @admin.display(description="key", ordering="prefix")
    def key(self, token):
        return token.masked

    @admin.display(description="created by token")
    def created_by_token(self, token):
        return token.parent.masked if token.parent is not None else "—"

    @admin.action(description="Revoke selected tokens (and the tokens they created)", permissions=["revoke"])
    def revoke_tokens(self, request, queryset):
        revoked = [token for token in queryset.select_related("user") if api_token_revoke(token=token, by=request.user)]
        if revoked:
            labels = ", ".join(token.masked for token in revoked)
            self.message_user(request, f"Revoked {len(revoked)} token(s): {labels}.", messages.SUCCESS)
        if skipped := queryset.count() - len(revoked):
            self.message_user(request, f"{skipped} token(s) were already revoked; left unchanged.", messages.INFO)


if admin.site.is_registered(TOTPDevice):
    admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class TOTPDeviceAdmin(ReadOnlyAdminMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    """Members' authenticator apps: who enrolled and when it was last used; removal only, never the secret."""

    organization_path = "user__organization"
    list_display = ("user", "name", "confirmed", "created_at", "last_used_at")
    list_filter = ("confirmed", ("user", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("user__username", "name")
    fields = ("user", "name", "confirmed", "created_at", "last_used_at", "throttling_failure_count")
    readonly_fields = fields
    actions = ["remove_devices"]

    def has_view_permission(self, request, obj=None):
        return manages_members(request)

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_delete_permission(self, request, obj=None):
        if obj is None:
            return self.has_view_permission(request)
        return totp_device_may_remove(device=obj, by=request.user)

    def has_remove_permission(self, request):
        return self.has_view_permission(request)

    def get_actions(self, request):
        # Removal goes through the service (audited): the bulk delete action would bypass it.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_model(self, request, obj):
        totp_device_remove(device=obj, by=request.user)

    @admin.action(description="Remove selected devices (their owners enrol again)", permissions=["remove"])
    def remove_devices(self, request, queryset):
        devices = list(queryset.select_related("user"))
        for device in devices:
            totp_device_remove(device=device, by=request.user)
        self.message_user(request, f"Removed {len(devices)} device(s).", messages.SUCCESS)


class FlagOrganizationInline(admin.TabularInline):
    model = FlagOrganization
    extra = 0
    autocomplete_fields = ("organization",)


@admin.register(Flag)
class FeatureFlagAdmin(FlagAdmin):
    """Waffle's flag admin plus the organizations a flag is on for. Flags are platform settings: only superusers
    hold their model permissions (the admin role's do not include them), so organization admins never see this."""

    list_display = ("name", "everyone", "organization_names", "percent", "note")
    inlines = [FlagOrganizationInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("organization_grants__organization")

    @admin.display(description="on for organizations")
    def organization_names(self, flag):
        return ", ".join(grant.organization.name for grant in flag.organization_grants.all()) or "—"
