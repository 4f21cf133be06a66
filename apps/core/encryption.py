"""Secrets the platform must read back (webhook signing keys), encrypted at rest.

A hash will not do for these: the platform signs with the plaintext. They are encrypted with Fernet (AES-128-CBC +
HMAC-SHA256, from the ``cryptography`` package) under the keys in ``FIELDWATCH_SECRET_KEYS``, a comma-separated list
of Fernet keys: values are encrypted with the first and decrypted with whichever matches (``MultiFernet``), so a key
is rotated by putting a new one first, running ``manage.py secrets_reencrypt``, then dropping the old one.

A database dump, a replica or a backup therefore holds no usable secret without the key, which lives only in the
environment (or a ``FIELDWATCH_SECRET_KEYS_FILE``). Stored values carry a prefix, so a row written before
encryption existed (plaintext) is still read, and re-encrypted by the migration that introduced the field.
"""

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "fernet:"


class SecretUnreadable(Exception):
    """A stored secret that none of ``FIELDWATCH_SECRET_KEYS`` decrypts (a key was dropped too early)."""


@cache
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.strip().encode()) for key in keys])
    except (ValueError, TypeError) as error:
        raise ImproperlyConfigured(f"FIELDWATCH_SECRET_KEYS holds a key that is not a Fernet key: {error}") from error


def cipher() -> MultiFernet:
    keys = tuple(key for key in settings.FIELDWATCH_SECRET_KEYS if key.strip())
    if not keys:
        raise ImproperlyConfigured("FIELDWATCH_SECRET_KEYS is empty: secrets cannot be stored.")
    return _cipher(keys)


def secret_encrypt(plaintext: str) -> str:
    return PREFIX + cipher().encrypt(plaintext.encode()).decode()


def secret_decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        return stored  # written before encryption; the field's migration re-encrypts it
    try:
        return cipher().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken as error:
        raise SecretUnreadable("no key in FIELDWATCH_SECRET_KEYS decrypts this secret") from error


class EncryptedTextField(models.TextField):
    """A text column holding ``fernet:<token>``; Python sees the plaintext. Empty stays empty (nothing to hide).

    Not searchable or orderable by its plaintext, by design. ``max_length`` (if given) bounds the plaintext in
    forms and validation, not the column.
    """

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return secret_decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return secret_encrypt(value)
