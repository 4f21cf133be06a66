"""The audit log in the admin: read-only, filterable by action, actor, time and target type, searchable.

Organization admins see their organization's events only (``OrganizationScopedAdminMixin``); superusers see all.
Nobody can add, change or delete an event here -- they leave only through the retention purge.
"""

from django.contrib import admin
from django.utils.html import format_html

from apps.audit.models import AuditEvent
from apps.core.admin_mixins import OrganizationScopedAdminMixin, ReadOnlyAdminMixin


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, OrganizationScopedAdminMixin, admin.ModelAdmin):
    organization_path = "organization"
    list_display = ["occurred_at", "actor_label", "action", "target_type", "target_repr", "ip"]
    list_filter = [
        "action",
        "occurred_at",
        ("actor", admin.RelatedOnlyFieldListFilter),
        ("target_type", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["actor_label", "target_repr", "target_id", "=ip"]
    date_hierarchy = "occurred_at"
    list_select_related = ["target_type"]
    show_full_result_count = False  # no COUNT(*) over a large log on every page
    fields = [
        "occurred_at",
        "action",
        "actor",
        "actor_label",
        "ip",
        "organization",
        "target_type",
        "target_id",
        "target_repr",
        "changes",
    ]
    readonly_fields = fields

    @admin.display(description="Changes (before → after)")
    def changes(self, obj: AuditEvent):
        names = sorted((obj.before or {}).keys() | (obj.after or {}).keys())
        if not names:
            return "—"
        rows = format_html(
            "".join("<tr><th>{}</th><td>{}</td><td>{}</td></tr>" for _ in names),
            *[
                value
                for name in names
                for value in (name, repr((obj.before or {}).get(name)), repr((obj.after or {}).get(name)))
            ],
        )
        return format_html("<table><tr><th>Field</th><th>Before</th><th>After</th></tr>{}</table>", rows)

    def has_view_permission(self, request, obj=None):
        user = request.user
        return user.is_active and user.is_staff and (user.is_superuser or user.is_org_admin)

    def has_module_permission(self, request):
        return self.has_view_permission(request)
