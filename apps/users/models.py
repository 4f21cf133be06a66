from django.contrib.auth.models import AbstractUser
from django.db import models

from apps.core.credentials import SecretCredential
from apps.users.choices import Role


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


class ApiToken(SecretCredential):
    """A user's personal token for scripts calling the API as that user (``Authorization: Bearer fwt_...``), shown
    once, stored hashed (see apps.core.credentials)."""

    TAG = "fwt"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'nightly export script'.")

    class Meta:
        verbose_name = "API token"
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.masked} ({self.user})"
