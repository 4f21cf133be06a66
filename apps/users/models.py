from django.contrib.auth.models import AbstractUser
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from waffle.models import AbstractUserFlag
from waffle.utils import get_cache, keyfmt

from apps.core.credentials import SecretCredential
from apps.users.choices import Role, TokenScope

# Waffle keeps each flag's users and groups under keys like this; ours keeps its organizations beside them.
ORGANIZATIONS_CACHE_KEY = "flag:%s:organizations"


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


class FeatureFlag(AbstractUserFlag):
    """A django-waffle flag (``WAFFLE_FLAG_MODEL``) that can also be switched on for whole organizations.

    ``everyone`` Yes/No overrides everything, as in waffle; left Unknown, the flag is on for the organizations
    listed (and waffle's users, groups and percentages for request-based checks). Read through
    ``apps.core.flags.flag_active``, which never raises and is cheap enough for the ingest path.
    """

    organizations = models.ManyToManyField(
        Organization,
        blank=True,
        related_name="+",
        help_text="Activate this flag for every member, device and gateway of these organizations.",
    )

    class Meta(AbstractUserFlag.Meta):
        verbose_name = "feature flag"
        verbose_name_plural = "feature flags"

    def organization_ids(self) -> frozenset[int]:
        """The organizations the flag is on for, cached under waffle's cache (flushed with the flag on save)."""
        cache = get_cache()
        key = keyfmt(ORGANIZATIONS_CACHE_KEY, self.name)
        cached = cache.get(key)
        if cached is None:
            cached = frozenset(self.organizations.values_list("pk", flat=True)) if self.pk else frozenset()
            cache.add(key, cached)
        return cached

    def get_flush_keys(self, flush_keys=None):
        return [*super().get_flush_keys(flush_keys), keyfmt(ORGANIZATIONS_CACHE_KEY, self.name)]

    def is_active_for_user(self, user):
        active = super().is_active_for_user(user)
        if active is None and getattr(user, "organization_id", None) in self.organization_ids():
            return True
        return active
