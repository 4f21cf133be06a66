from django.db import models


class AuditAction(models.TextChoices):
    """What happened. Dotted codes group by area, so ``action__startswith="key."`` finds every key event."""

    LOGIN = "login", "Login"
    LOGOUT = "logout", "Logout"
    LOGIN_FAILED = "login.failed", "Login failed"
    CONFIG_CREATE = "config.create", "Configuration created"
    CONFIG_CHANGE = "config.change", "Configuration changed"
    CONFIG_DELETE = "config.delete", "Configuration deleted"
    ALERT_ACKNOWLEDGE = "alert.acknowledge", "Alert acknowledged"
    ALERT_RESOLVE = "alert.resolve", "Alert resolved"
    KEY_ISSUE = "key.issue", "Gateway API key issued"
    KEY_ROTATE = "key.rotate", "Gateway API key rotated"
    KEY_REVOKE = "key.revoke", "Gateway API key revoked"
    TOKEN_CREATE = "token.create", "API token created"
    TOKEN_REVOKE = "token.revoke", "API token revoked"
    MQTT_CREDENTIAL_ISSUE = "mqtt.issue", "MQTT credential issued"
    MQTT_CREDENTIAL_REVOKE = "mqtt.revoke", "MQTT credential revoked"
    EXPORT_CREATE = "export.create", "Export created"


# Actors that are not users: recorded in ``actor_label`` with ``actor`` empty.
SYSTEM_ACTOR = "system"  # no request and no explicit actor (a management command, a shell)
BEAT_ACTOR = "beat"  # a periodic job
