"""The demo fleet's broker passwords, kept on the development machine so the simulator can log in as each demo
device and gateway.

The database holds only hashes of broker passwords (``broker_auth``), yet ``manage.py simulate`` publishes as every
device it plays, as a real device would. ``seed_demo`` issues the demo fleet's logins, prints them once and keeps
them in ``DEMO_MQTT_PASSWORDS_PATH`` (mode 0600 under the git-ignored ``var/``), so the printed passwords and the
simulator's are the same and stay valid across runs. Deployments set the path empty: nothing is kept there.
"""

import json
import logging
import os
import tempfile
from pathlib import Path

from django.conf import settings

from apps.devices.broker_auth import mosquitto_password_matches
from apps.devices.models import MqttCredential

logger = logging.getLogger(__name__)


def demo_passwords_load() -> dict[str, str]:
    """The kept passwords by username; empty when none are kept or the file is unreadable (said in the log)."""
    path = settings.DEMO_MQTT_PASSWORDS_PATH
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        logger.warning("the demo broker passwords in %s cannot be read: %s", path, error)
        return {}
    if not isinstance(data, dict):
        return {}
    return {name: password for name, password in data.items() if isinstance(password, str)}


def demo_passwords_keep(passwords: dict[str, str]) -> bool:
    """Add ``passwords`` to the kept ones (written atomically, owner-only); False when none are kept (no path)."""
    path = settings.DEMO_MQTT_PASSWORDS_PATH
    if not path:
        return False
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    merged = {**demo_passwords_load(), **passwords}
    # mkstemp creates the file 0600: the passwords are never readable by others, not even for a moment.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(merged, handle, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def demo_passwords_valid(usernames) -> dict[str, str]:
    """The kept passwords of ``usernames`` that still open the broker: those matching the active credential's hash
    (a login re-issued in the admin, revoked or deleted has none)."""
    kept = demo_passwords_load()
    hashes = dict(
        MqttCredential.objects.filter(revoked_at__isnull=True, username__in=list(usernames)).values_list(
            "username", "password_hash"
        )
    )
    return {
        name: password
        for name, password in kept.items()
        if name in hashes and mosquitto_password_matches(password, hashes[name])
    }
