"""Reading settings from the environment.

Every setting comes from an environment variable with a safe local default. Container secrets are
supported through ``<NAME>_FILE``: when set, the variable's value is read from that file (Docker and
Kubernetes mount secrets as files, so the secret never appears in ``docker inspect`` or ``ps e``).
"""

import base64
import hashlib
import os

from django.core.exceptions import ImproperlyConfigured

_MISSING = object()


def env(name: str, default=_MISSING) -> str:
    """Return the variable ``name`` (or the contents of ``name_FILE``), else ``default``.

    Without a default the variable is required: a missing one stops start-up with a message naming it.
    """
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            with open(file_path, encoding="utf-8") as secret:
                return secret.read().strip()
        except OSError as error:
            raise ImproperlyConfigured(f"{name}_FILE={file_path} cannot be read: {error}") from error
    value = os.environ.get(name)
    if value is not None:
        return value
    if default is _MISSING:
        raise ImproperlyConfigured(f"Set the environment variable {name} (or {name}_FILE).")
    return default


def env_secret(name: str, local_file) -> str:
    """``name`` (or ``name_FILE``) when set, else the contents of ``local_file`` when it exists, else ``""``.

    For secrets that ``make setup`` generates on a development machine (under the git-ignored ``var/``), so a fresh
    checkout needs no committed secret and a deployment still sets its own through the environment.
    """
    value = env(name, None)
    if value is not None:
        return value
    try:
        with open(local_file, encoding="utf-8") as secret:
            return secret.read().strip()
    except FileNotFoundError:
        return ""
    except OSError as error:
        raise ImproperlyConfigured(f"{local_file} cannot be read ({name}): {error}") from error


def env_bool(name: str, default: bool) -> bool:
    value = env(name, None)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use true/false).")


def env_int(name: str, default: int) -> int:
    value = env(name, None)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = env(name, None)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def development_fernet_key(secret_key: str) -> str:
    """A Fernet key derived from Django's ``SECRET_KEY``, for local and test settings only (production sets
    ``FIELDWATCH_SECRET_KEYS`` explicitly and refuses to start without it)."""
    return base64.urlsafe_b64encode(hashlib.sha256(f"fieldwatch-secrets:{secret_key}".encode()).digest()).decode()
