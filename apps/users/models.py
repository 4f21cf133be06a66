from django.contrib.auth.models import AbstractUser
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from apps.core.credentials import SecretCredential
from apps.users.choices import Role, TokenScope


class Organization(models.Model):
    """A tenant. Its sites, device types and users are invisible to every other organization."""

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=60, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class User(AbstractUser):
    """A person. Belongs to at most one organization; superusers (platform operators) may belong to none."""

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="members"
    )

    def has_role(self, role: Role) -> bool:
        # Groups are prefetched by the selectors that need this per row; a single call costs one query.
        return any(group.name == role for group in self.groups.all())

    @property
    def is_org_admin(self) -> bool:
        return self.organization_id is not None and self.has_role(Role.ADMIN)


def default_token_scopes() -> list[str]:
    """New tokens may only read unless their creator asks for more: least privilege by default."""
    return [TokenScope.READ]


class ApiToken(SecretCredential):
    """A user's personal token for scripts calling the API as that user (``Authorization: Bearer fwt_...``), shown
    once, stored hashed (see apps.core.credentials).

    ``scopes`` bound what it may do whatever its user may (``TokenScope``). ``parent`` is the token whose request
    created this one, if any: such a child is never broader nor longer-lived than its parent, is revoked with it and
    is refused while its parent is unusable (``apps.users.services.api_token_create``).
    """

    TAG = "fwt"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'nightly export script'.")
    scopes = ArrayField(
        models.CharField(max_length=16, choices=TokenScope.choices),
        default=default_token_scopes,
        help_text="read: safe methods (GET, HEAD, OPTIONS); write: every other method.",
    )
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="children",
        editable=False,
        help_text="The token that created this one; revoking it revokes this one.",
    )

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]
        constraints = [
            # A token that may do nothing, or something no view checks for, is a mistake: refused by the database.
            models.CheckConstraint(
                condition=Q(scopes__contained_by=TokenScope.values) & ~Q(scopes=[]), name="api_token_scopes_known"
            ),
        ]

    def __str__(self):
        return f"{self.masked} ({self.user})"


class FlagOrganization(models.Model):
    """Switches a feature flag (django-waffle's ``Flag``) on for one organization: every member, device and gateway
    of it. Read through ``apps.core.flags.flag_active``; the flag's *everyone* Yes/No overrides these rows."""

    flag = models.ForeignKey("waffle.Flag", on_delete=models.CASCADE, related_name="organization_grants")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="flag_grants")

    class Meta:
        verbose_name = "organization with the flag on"
        verbose_name_plural = "organizations with the flag on"
        constraints = [
            models.UniqueConstraint(fields=["flag", "organization"], name="flag_organization_unique"),
        ]

    def __str__(self):
        return f"{self.flag} for {self.organization}"
