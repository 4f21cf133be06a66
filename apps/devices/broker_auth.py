"""The MQTT broker's own door: device and gateway credentials, rendered into Mosquitto's password and ACL files.

Mosquitto (2.0) reads a password file of ``username:$7$<iterations>$<salt b64>$<hash b64>`` lines, PBKDF2-HMAC-SHA512
with a 12-byte salt, exactly what ``mosquitto_passwd`` writes, and an ACL file of ``user`` blocks. ``broker_sync``
renders both from the database, replaces them atomically and makes the broker reload them (SIGHUP). The rendering
is deterministic, so an unchanged database writes nothing and reloads nothing.

ACL semantics relied on (verified against Mosquitto 2.0.11):

* a ``topic write`` line grants exactly that topic; a publish anywhere else is dropped, and an MQTT 5 client gets
  PUBACK reason 0x87 "Not authorized" (an MQTT 3.1.1 client gets a plain PUBACK: no way to tell);
* a shared subscription ``$share/<group>/<filter>`` is checked against ``<filter>``, so the listener needs only
  ``topic read <prefix>/#``;
* read ACLs apply per delivered message: a device may subscribe (SUBACK grants it) but receives nothing, since
  device and gateway users have no ``read`` line;
* on reload (SIGHUP) Mosquitto re-checks every connected client against the new files and disconnects those no
  longer allowed, so a revocation also ends connections made before it, not only new ones.

Credential passwords are 256-bit random secrets, so the PBKDF2 cost adds nothing to their strength; Mosquitto's own
default of 101 iterations keeps the broker's per-CONNECT cost low.
"""

import base64
import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.audit import AuditAction, audit
from apps.devices.models import Device, Gateway, MqttCredential

logger = logging.getLogger(__name__)

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default in 2.0
SALT_BYTES = 12  # mosquitto_passwd's salt length
# The broker drops root to its own user, which must read the files; they hold only hashes of random secrets.
FILE_MODE = 0o644


# ---------------------------------------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------------------------------------
def mosquitto_password_hash(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto's ``$7$`` PBKDF2-SHA512 line for ``password`` (a random salt unless one is given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def mosquitto_password_matches(password: str, password_hash: str) -> bool:
    _, kind, iterations, salt, _ = password_hash.split("$")
    if kind != "7":
        return False
    expected = mosquitto_password_hash(password, salt=base64.b64decode(salt), iterations=int(iterations))
    return hmac.compare_digest(expected, password_hash)


# ---------------------------------------------------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------------------------------------------------
@transaction.atomic
def mqtt_credential_issue(
    *, device: Device | None = None, gateway: Gateway | None = None
) -> tuple[MqttCredential, str]:
    """A new broker login for a device or a gateway; return ``(credential, plaintext password)``, shown once.

    The owner's previous credential is revoked: one login per device or gateway, effective at the next sync.
    Raises ValueError when the uid is already the active username of the other kind (a device and a gateway
    sharing a uid would share a password-file line).
    """
    if (device is None) == (gateway is None):
        raise ValueError("Pass exactly one of device or gateway.")
    owner_filter = {"device": device} if device else {"gateway": gateway}
    username = (device or gateway).uid
    if ":" in username:  # the password file is ``username:hash``; Mosquitto splits at the first colon
        raise ValueError(f"{username!r} contains ':', which a Mosquitto username cannot; rename the uid first.")
    now = timezone.now()
    MqttCredential.objects.filter(**owner_filter, revoked_at__isnull=True).update(revoked_at=now)
    if MqttCredential.objects.filter(username=username, revoked_at__isnull=True).exists():
        raise ValueError(f"The broker username {username!r} is already used by another device or gateway.")
    password = secrets.token_urlsafe(32)
    credential = MqttCredential.objects.create(
        **owner_filter, username=username, password_hash=mosquitto_password_hash(password)
    )
    audit(actor=None, action=AuditAction.MQTT_CREDENTIAL_ISSUE, target=credential, after={"username": username})
    return credential, password


@transaction.atomic
def mqtt_credential_revoke(*, credential: MqttCredential) -> bool:
    """Revoke ``credential`` (effective at the next broker sync); False when it already was."""
    updated = MqttCredential.objects.filter(pk=credential.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    credential.refresh_from_db(fields=["revoked_at"])
    if updated == 1:
        audit(actor=None, action=AuditAction.MQTT_CREDENTIAL_REVOKE, target=credential)
    return updated == 1


# ---------------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------------
def _listener_password_hash(username: str, password: str) -> str:
    # Salt derived from the secret key, so the same listener password renders the same line every minute and an
    # unchanged database never rewrites the file or reloads the broker. A salt need be unique, not secret.
    salt = hmac.new(settings.SECRET_KEY.encode(), f"mqtt-listener:{username}".encode(), "sha256").digest()
    return mosquitto_password_hash(password, salt=salt[:SALT_BYTES])


def active_credentials() -> list[MqttCredential]:
    """Credentials that open the door: not revoked, and not of an inactive device (it loses the broker like ingest)."""
    return list(
        MqttCredential.objects.filter(revoked_at__isnull=True)
        .filter(Q(device__isnull=True) | Q(device__is_active=True))
        .only("username", "password_hash", "device_id", "gateway_id")
        .order_by("username")
    )


def render_password_file(credentials: list[MqttCredential]) -> str:
    lines = [f"{credential.username}:{credential.password_hash}" for credential in credentials]
    if settings.MQTT_LISTENER_USERNAME:
        username, password = settings.MQTT_LISTENER_USERNAME, settings.MQTT_LISTENER_PASSWORD
        lines.append(f"{username}:{_listener_password_hash(username, password)}")
    return "".join(f"{line}\n" for line in lines)


def render_acl_file(credentials: list[MqttCredential]) -> str:
    prefix = settings.MQTT_TOPIC_PREFIX
    blocks = ["# Rendered by `manage.py broker_sync` from the Fieldwatch database; edits here are overwritten."]
    if settings.MQTT_LISTENER_USERNAME:
        blocks.append(f"user {settings.MQTT_LISTENER_USERNAME}\ntopic read {prefix}/#")
    for credential in credentials:
        kind = "devices" if credential.device_id else "gateways"
        blocks.append(f"user {credential.username}\ntopic write {prefix}/{kind}/{credential.username}/telemetry")
    return "\n\n".join(blocks) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Writing and reloading
# ---------------------------------------------------------------------------------------------------------------------
def write_atomically(path: Path, content: str) -> bool:
    """Replace ``path`` with ``content`` (temp file in the same directory + rename); False when already equal.

    The broker may reload at any moment: it must see the old file or the new one, never half of one.
    """
    path = Path(path)
    if path.exists() and path.read_text() == content:
        return False
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def broker_reload(*, pid_file: str = "", command: str = "") -> None:
    """Make Mosquitto re-read its password and ACL files: SIGHUP to the pid in ``pid_file``, or run ``command``."""
    if pid_file:
        os.kill(int(Path(pid_file).read_text().strip()), signal.SIGHUP)
    elif command:
        subprocess.run(shlex.split(command), check=True, timeout=30)


@dataclasses.dataclass(frozen=True)
class BrokerSyncResult:
    credentials: int
    changed: bool
    reloaded: bool


def broker_auth_sync(
    *, password_file: str, acl_file: str, reload_pid_file: str = "", reload_command: str = ""
) -> BrokerSyncResult:
    """Render both files, write the ones that changed, and reload the broker when anything changed."""
    # One query feeds both files, so a credential never appears in one and not the other.
    credentials = active_credentials()
    passwords, acl = render_password_file(credentials), render_acl_file(credentials)
    # The ACL first: a user never has a password line without the ACL lines that confine it.
    changed = write_atomically(Path(acl_file), acl)
    changed = write_atomically(Path(password_file), passwords) or changed
    reloaded = False
    if changed and (reload_pid_file or reload_command):
        broker_reload(pid_file=reload_pid_file, command=reload_command)
        reloaded = True
    return BrokerSyncResult(credentials=len(credentials), changed=changed, reloaded=reloaded)
