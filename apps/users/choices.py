from django.db import models


class Role(models.TextChoices):
    """Roles are auth groups of these names (created by a migration); site scope comes from object permissions."""

    ADMIN = "admin", "Admin (organization-wide configuration)"
    OPERATOR = "operator", "Operator (read, acknowledge and manage rules on granted sites)"
    VIEWER = "viewer", "Viewer (read-only on granted sites)"


class TokenScope(models.TextChoices):
    """What a personal API token may do, checked by ``apps.users.permissions.TokenScopePermission`` on every view.

    There is no ``ingest`` scope: ``POST /api/v1/ingest`` authenticates gateways by their ``X-API-Key`` only, and
    readings are bound to that gateway's site. A person's token has no site of its own to send readings for, so an
    ingest scope would grant nothing; a script that must send readings uses a gateway key (issued with ``write``).
    """

    READ = "read", "Read (GET, HEAD, OPTIONS)"
    WRITE = "write", "Write (POST, PUT, PATCH, DELETE)"
