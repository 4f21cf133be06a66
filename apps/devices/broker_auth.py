"""The MQTT broker's own door: device and gateway credentials, rendered into Mosquitto's password and ACL files.

Mosquitto (2.0) reads a password file of ``username:$7$<iterations>$<salt b64>$<hash b64>`` lines, PBKDF2-HMAC-SHA512
with a 12-byte salt, exactly what ``mosquitto_passwd`` writes, and an ACL file of ``user`` blocks. ``broker_sync``
renders both from the database, replaces them atomically and makes the broker reload them (SIGHUP). The rendering
is deterministic, so an unchanged database writes nothing and reloads nothing. A receiver runs the sync after every
committed credential change (``apps/devices/receivers.py``), a beat job every minute.

Who may do what: a device publishes only to ``<prefix>/devices/<uid>/telemetry``, a gateway only to
``<prefix>/gateways/<uid>/telemetry`` and, as a Sparkplug B edge node whose edge node id is its uid, to that node's
telemetry topics (``spBv1.0/<any group>/{NBIRTH,NDATA,NDEATH}/<uid>`` and ``.../{DBIRTH,DDATA,DDEATH}/<uid>/<device>``;
NDEATH is also its will) and reads only its own commands (``NCMD``/``DCMD``). The listener reads those ingest
filters with the matching ``attributes`` topics and ``spBv1.0/#``, and writes only ``NCMD`` (rebirth requests); an
optional monitoring login reads ``#`` and ``$SYS/#``. Nobody else reads anything. ThingsBoard access tokens
(``AccessToken``) are not in these files: the broker's plugin checks them against a third file of their hashes,
rendered here too (docker/mosquitto/plugin/fieldwatch_thingsboard.c says what it allows).

ACL semantics relied on (verified against Mosquitto 2.0.11, tests/devices/test_broker_auth.py):

* a ``topic write`` line grants exactly that topic; a publish anywhere else is dropped, and an MQTT 5 client gets
  PUBACK reason 0x87 "Not authorized" (an MQTT 3.1.1 client gets a plain PUBACK: no way to tell);
* the ACL file never refuses a SUBSCRIBE: every filter is granted (``#``, ``$SYS/#``, ``$share/<group>/...``) and
  read rights are checked per delivered message instead, so a device subscribed to ``#`` receives nothing;
* but a member of a shared subscription that may not read a message is still handed its turn of it, and the
  message is dropped, not passed to another member: a device joining the listener's group would take a share of
  the stream (reproduced: 10 of 20 messages lost). So the listener joins a group whose name derives from its
  password (``apps.telemetry.ingest.topics.private_share_group``), which nobody else can name. The
  dynamic-security plugin would refuse such a SUBSCRIBE (it checks ``$share/<group>/<filter>`` literally), but in
  2.0.11 it neither re-reads its configuration on SIGHUP nor accepts a password hash, only plaintext, so it cannot
  be fed from this database; with an ACL file configured it is not even consulted on SUBSCRIBE;
* on reload (SIGHUP) Mosquitto re-checks every connected client against the new files and disconnects those no
  longer allowed, so a revocation also ends connections made before it, not only new ones.

Credential passwords are 256-bit random secrets, so the PBKDF2 cost adds nothing to their strength; Mosquitto's own
default of 101 iterations keeps the broker's per-CONNECT cost low.
"""

import base64
import dataclasses
import getpass
import hashlib
import hmac
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.core import flags
from apps.core.audit import AuditAction, audit
from apps.devices.models import AccessToken, Device, Gateway, MqttCredential

logger = logging.getLogger(__name__)

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default in 2.0
# What the listener reads under <prefix>/devices/<uid>/ and <prefix>/gateways/<uid>/: readings, and client attributes
# (ThingsBoard's v1/devices/me/attributes, rewritten there by the broker plugin). Kept equal to
# apps.telemetry.ingest.topics.LEAVES (telemetry sits above devices: tests/devices/test_broker_auth.py checks).
INGEST_LEAVES = ("telemetry", "attributes")
SALT_BYTES = 12  # mosquitto_passwd's salt length
# The broker drops root to its own user, which must read the files; they hold only hashes of random secrets.
FILE_MODE = 0o644
# Sparkplug B's topic namespace (fixed by the specification, independent of MQTT_TOPIC_PREFIX).
SPARKPLUG = "spBv1.0"
# pg_advisory_xact_lock key of the broker sync (an arbitrary constant, unique within the project).
SYNC_LOCK_KEY = 0x46575F42524F4B52  # "FW_BROKR"


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

    The owner's previous credential is revoked: one login per device or gateway. The broker hears of both at the
    sync the commit triggers (``apps/devices/receivers.py``).
    Raises ValueError when the uid is already the active username of the other kind (a device and a gateway
    sharing a uid would share a password-file line).
    """
    if (device is None) == (gateway is None):
        raise ValueError("Pass exactly one of device or gateway.")
    owner_filter = {"device": device} if device else {"gateway": gateway}
    username = (device or gateway).uid
    if ":" in username:  # the password file is ``username:hash``; Mosquitto splits at the first colon
        raise ValueError(f"{username!r} contains ':', which a Mosquitto username cannot; rename the uid first.")
    if username.startswith(AccessToken.TAG + "_"):
        # The broker plugin owns every "fwa_" login (access tokens) and never passes one to the password file.
        raise ValueError(f"{username!r} starts like an access token; rename the uid first.")
    if username in reserved_usernames():
        # Its line would merge with the listener's or the monitor's in both files: read access to every tenant.
        raise ValueError(f"{username!r} is the broker login of the platform itself; rename the uid first.")
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
    """Revoke ``credential`` (the broker refuses it after the sync the commit triggers); False when it already was."""
    locked = MqttCredential.objects.select_for_update().get(pk=credential.pk)
    if locked.revoked_at is not None:
        credential.revoked_at = locked.revoked_at
        return False
    # save(), not update(): its post_save is what makes the broker hear of the revocation within seconds.
    credential.revoked_at = timezone.now()
    credential.save(update_fields=["revoked_at"])
    audit(actor=None, action=AuditAction.MQTT_CREDENTIAL_REVOKE, target=credential)
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------------
def _fixed_password_hash(username: str, password: str) -> str:
    # Salt derived from the secret key, so the same platform password renders the same line every minute and an
    # unchanged database never rewrites the file or reloads the broker. A salt need be unique, not secret.
    salt = hmac.new(settings.SECRET_KEY.encode(), f"mqtt-listener:{username}".encode(), "sha256").digest()
    return mosquitto_password_hash(password, salt=salt[:SALT_BYTES])


def _platform_logins() -> list[tuple[str, str, list[str]]]:
    """``(username, password, ACL lines)`` of the platform's own logins that are configured (a password is set)."""
    prefix = settings.MQTT_TOPIC_PREFIX
    logins = []
    if settings.MQTT_LISTENER_USERNAME and settings.MQTT_LISTENER_PASSWORD:
        # Only the ingest filters: the listener reads telemetry, nothing else that may ever share the broker.
        read = [f"topic read {prefix}/{kind}/+/{leaf}" for kind in ("devices", "gateways") for leaf in INGEST_LEAVES]
        # Sparkplug B: the whole namespace (commands and STATE pass through unread), and rebirth requests out.
        read += [f"topic read {SPARKPLUG}/#", f"topic write {SPARKPLUG}/+/NCMD/+"]
        logins.append((settings.MQTT_LISTENER_USERNAME, settings.MQTT_LISTENER_PASSWORD, read))
    if settings.MQTT_MONITOR_USERNAME and settings.MQTT_MONITOR_PASSWORD:
        # "#" does not match topics starting with "$": the broker's own statistics need their own line.
        read_all = ["topic read #", "topic read $SYS/#"]
        logins.append((settings.MQTT_MONITOR_USERNAME, settings.MQTT_MONITOR_PASSWORD, read_all))
    for username, _, _ in logins:
        if not re.fullmatch(r"[^\s:#+/]+", username):
            raise ValueError(f"{username!r} cannot be a broker username (no whitespace, ':', '#', '+' or '/').")
    return logins


def reserved_usernames() -> set[str]:
    """Usernames no device or gateway may log in with: the listener's and the monitor's."""
    return {name for name in (settings.MQTT_LISTENER_USERNAME, settings.MQTT_MONITOR_USERNAME) if name}


def active_credentials() -> list[MqttCredential]:
    """Credentials that open the door: not revoked, not of an inactive device (it loses the broker like ingest), and
    not named like a platform login (issue refuses those; a uid renamed since, or an older row, must not slip in)."""
    return list(
        MqttCredential.objects.filter(revoked_at__isnull=True)
        .filter(Q(device__isnull=True) | Q(device__is_active=True))
        .exclude(username__in=reserved_usernames())
        .only("username", "password_hash", "device_id", "gateway_id")
        .order_by("username")
    )


def active_access_tokens() -> list[tuple[str, str, str]]:
    """``(sha256 hex, "d" | "g", uid)`` of every usable access token whose device is active and whose organization
    has the ThingsBoard dialect switched on (``flags.DIALECT_THINGSBOARD``), sorted by hash."""
    tokens = (
        AccessToken.objects.usable()
        .filter(Q(device__isnull=True) | Q(device__is_active=True))
        .annotate(organization_id=Coalesce("device__site__organization_id", "gateway__site__organization_id"))
        .values_list("key_hash", "device__uid", "gateway__uid", "organization_id")
        .order_by("key_hash")
    )
    flags.flags_forget()  # a sync follows a flag change: read it afresh, not as this process last saw it
    allowed = {}
    rendered = []
    for key_hash, device_uid, gateway_uid, organization_id in tokens:
        if organization_id not in allowed:
            allowed[organization_id] = flags.flag_active(flags.DIALECT_THINGSBOARD, organization_id, default=True)
        if allowed[organization_id]:
            rendered.append((key_hash, "d" if device_uid else "g", device_uid or gateway_uid))
    return rendered


def tokens_path(password_file: str, tokens_file: str = "") -> Path:
    """Where the plugin's tokens file is: ``tokens_file``, else a file named ``tokens`` next to the password file."""
    return Path(tokens_file) if tokens_file else Path(password_file).with_name("tokens")


def render_tokens_file(tokens: list[tuple[str, str, str]]) -> str:
    """The broker plugin's tokens file (docker/mosquitto/plugin/fieldwatch_thingsboard.c): hashes only."""
    header = "# Rendered by `manage.py broker_sync`: SHA-256 of each access token, owner kind (d/g), owner uid.\n"
    return header + "".join(f"{key_hash} {kind} {uid}\n" for key_hash, kind, uid in tokens)


def render_password_file(credentials: list[MqttCredential]) -> str:
    lines = [f"{credential.username}:{credential.password_hash}" for credential in credentials]
    lines += [f"{username}:{_fixed_password_hash(username, password)}" for username, password, _ in _platform_logins()]
    return "".join(f"{line}\n" for line in lines)


def render_acl_file(credentials: list[MqttCredential]) -> str:
    prefix = settings.MQTT_TOPIC_PREFIX
    blocks = ["# Rendered by `manage.py broker_sync` from the Fieldwatch database; edits here are overwritten."]
    blocks += ["\n".join([f"user {username}", *lines]) for username, _, lines in _platform_logins()]
    for credential in credentials:
        kind = "devices" if credential.device_id else "gateways"
        lines = [f"user {credential.username}", f"topic write {prefix}/{kind}/{credential.username}/telemetry"]
        if credential.gateway_id:
            lines += sparkplug_acl(credential.username)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def sparkplug_acl(edge_node_id: str) -> list[str]:
    """A gateway's rights as the Sparkplug B edge node ``edge_node_id`` (its uid) in any group: publish its node and
    device messages, read its commands. A uid cannot contain ``/``, ``+`` or ``#``, so it matches only itself."""
    node = [f"topic write {SPARKPLUG}/+/{kind}/{edge_node_id}" for kind in ("NBIRTH", "NDATA", "NDEATH")]
    devices = [f"topic write {SPARKPLUG}/+/{kind}/{edge_node_id}/+" for kind in ("DBIRTH", "DDATA", "DDEATH")]
    commands = [f"topic read {SPARKPLUG}/+/NCMD/{edge_node_id}", f"topic read {SPARKPLUG}/+/DCMD/{edge_node_id}/+"]
    return node + devices + commands


def render_broker_config(
    template: str,
    *,
    host: str,
    port: int,
    data_dir: Path,
    password_file: str,
    acl_file: str,
    plugin_path: str,
    tokens_file: str,
    topic_prefix: str = "",
    pid_file: str = "",
    log_file: str = "",
) -> str:
    """The project's broker config (``docker/mosquitto/mosquitto.conf``) for a broker outside the container: its
    listener, persistence, auth files, pid file and log destination replaced, every other option kept as is.

    Used for `make run`'s broker (``manage.py broker_setup``) and the tests' brokers, so both run the config the
    platform's guarantees were measured with. ``plugin_path`` is the ThingsBoard plugin built for this machine
    (``apps.devices.broker_plugin.plugin_build``); it rewrites topics under ``topic_prefix`` (default:
    ``MQTT_TOPIC_PREFIX``). The broker runs as whoever starts it (``user``): as root it would otherwise switch to
    the ``mosquitto`` user and could not write its persistence here or remove its pid file.
    """
    replacements = {
        "listener": f"listener {port} {host}",
        "persistence_location": f"persistence_location {data_dir}/",
        "password_file": f"password_file {password_file}",
        "acl_file": f"acl_file {acl_file}",
        "allow_anonymous": "allow_anonymous false",
        "plugin": f"plugin {plugin_path}",
        "plugin_opt_tokens_file": f"plugin_opt_tokens_file {tokens_file}",
        "plugin_opt_topic_prefix": f"plugin_opt_topic_prefix {topic_prefix or settings.MQTT_TOPIC_PREFIX}",
        "log_dest": f"log_dest file {log_file}" if log_file else "log_dest stderr",
    }
    config = template
    for option, line in replacements.items():
        config, found = re.subn(rf"(?m)^#?{option} .*$", line, config)
        if found != 1:
            raise ValueError(f"the broker config template must have exactly one `{option}` line, not {found}")
    extra = [f"user {getpass.getuser()}"] + ([f"pid_file {pid_file}"] if pid_file else [])
    return config.rstrip("\n") + "\n\n# --- Outside the container ---\n" + "\n".join(extra) + "\n"


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


def broker_reload(*, pid_file: str = "", command: str = "") -> bool:
    """Make Mosquitto re-read its password and ACL files: SIGHUP to the pid in ``pid_file``, or run ``command``.

    False when ``pid_file`` names no running Mosquitto (not started yet, or a stale file after a crash): the broker
    reads the new files when it starts, and SIGHUP must never reach whatever process reused the pid.
    """
    if pid_file:
        try:
            pid = int(Path(pid_file).read_text().strip())
            name = Path(f"/proc/{pid}/comm").read_text().strip() if Path("/proc/self/comm").exists() else "mosquitto"
        except (OSError, ValueError):
            return False
        if name != "mosquitto":
            logger.warning("%s names pid %d, which is %r, not Mosquitto: not signalled", pid_file, pid, name)
            return False
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            return False
        return True
    if command:
        subprocess.run(shlex.split(command), check=True, timeout=30)
        return True
    return False


@dataclasses.dataclass(frozen=True)
class BrokerSyncResult:
    credentials: int
    changed: bool
    reloaded: bool


def broker_auth_sync(
    *, password_file: str, acl_file: str, tokens_file: str = "", reload_pid_file: str = "", reload_command: str = ""
) -> BrokerSyncResult:
    """Render the files (password, ACL, and the plugin's access tokens: next to the password file unless given),
    write the ones that changed, and reload the broker when anything changed."""
    tokens_file = str(tokens_path(password_file, tokens_file))
    with transaction.atomic():
        # One sync at a time (several workers, beat and a credential change may start one together): each reads the
        # database after the previous one wrote, so an older view can never overwrite a newer one (a revocation).
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SYNC_LOCK_KEY])
        # One query feeds both files, so a credential never appears in one and not the other.
        credentials = active_credentials()
        passwords, acl = render_password_file(credentials), render_acl_file(credentials)
        tokens = render_tokens_file(active_access_tokens())
        # The ACL first: a user never has a password line without the ACL lines that confine it.
        changed = write_atomically(Path(acl_file), acl)
        changed = write_atomically(Path(password_file), passwords) or changed
        changed = write_atomically(Path(tokens_file), tokens) or changed
        reloaded = changed and broker_reload(pid_file=reload_pid_file, command=reload_command)
    return BrokerSyncResult(credentials=len(credentials), changed=changed, reloaded=reloaded)
