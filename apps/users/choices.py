from django.db import models


class Role(models.TextChoices):
    """Roles are auth groups of these names (created by a migration); site scope comes from object permissions."""

    ADMIN = "admin", "Admin (organization-wide configuration)"
    OPERATOR = "operator", "Operator (read, acknowledge and manage rules on granted sites)"
    VIEWER = "viewer", "Viewer (read-only on granted sites)"
