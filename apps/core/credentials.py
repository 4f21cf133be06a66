"""Secrets shown once and stored hashed: gateway API keys (``fwk_...``) and personal API tokens (``fwt_...``).

A plaintext is ``<tag>_<prefix>_<secret>``. The row keeps the prefix, for an indexed lookup, and the SHA-256 of the
whole plaintext, compared in constant time. A fast hash is right here because the secret is 192 random bits; a slow
password hash would only slow every request. Expired and revoked are told only to a caller holding the whole
correct plaintext, so the answers reveal nothing to someone guessing.
"""

import datetime
import hashlib
import hmac
import secrets

from django.db import models
from django.db.models import Q
from django.utils import timezone


class SecretCredentialQuerySet(models.QuerySet):
    def usable(self, now: datetime.datetime | None = None):
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


class SecretCredential(models.Model):
    """The columns and checks every hashed, once-shown credential shares. Subclasses set ``TAG``."""

    PREFIX_LENGTH = 8
    TAG = ""

    prefix = models.CharField(max_length=PREFIX_LENGTH, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = SecretCredentialQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def masked(self) -> str:
        return f"{self.TAG}_{self.prefix}…"

    @staticmethod
    def hash_secret(plaintext: str) -> str:
        return hashlib.sha256(plaintext.encode()).hexdigest()

    def matches(self, plaintext: str) -> bool:
        return hmac.compare_digest(self.key_hash, self.hash_secret(plaintext))

    def is_usable(self, now: datetime.datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    @classmethod
    def new_plaintext(cls) -> tuple[str, str]:
        """A fresh ``(prefix, plaintext)`` whose prefix no row uses. The prefix is random too: it reveals nothing."""
        while True:
            prefix = secrets.token_hex(cls.PREFIX_LENGTH // 2)
            if not cls._default_manager.filter(prefix=prefix).exists():
                return prefix, f"{cls.TAG}_{prefix}_{secrets.token_urlsafe(24)}"

    @classmethod
    def parse_prefix(cls, plaintext: str) -> str | None:
        """The prefix of a well-formed plaintext of this kind, else None."""
        parts = (plaintext or "").split("_", 2)
        if len(parts) != 3 or parts[0] != cls.TAG or len(parts[1]) != cls.PREFIX_LENGTH:
            return None
        return parts[1]

    @classmethod
    def find(cls, plaintext: str, queryset=None):
        """The row this plaintext is (usable or not), or None: one indexed query, a constant-time compare."""
        prefix = cls.parse_prefix(plaintext)
        if prefix is None:
            return None
        credential = (queryset if queryset is not None else cls._default_manager).filter(prefix=prefix).first()
        return credential if credential is not None and credential.matches(plaintext) else None

    def unusable_reason(self) -> str:
        """Why a correctly presented credential is refused; '' when it is usable."""
        name = self._meta.verbose_name
        if self.revoked_at is not None:
            return f"The {name} was revoked at {self.revoked_at.isoformat()}."
        if not self.is_usable():
            return f"The {name} expired at {self.expires_at.isoformat()}."
        return ""

    def touch(self) -> None:
        """Record use, at most once a minute, so a busy client does not write a row per request."""
        now = timezone.now()
        type(self)._default_manager.filter(pk=self.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - datetime.timedelta(minutes=1))
        ).update(last_used_at=now)

    def revoke(self) -> bool:
        """Revoke now; False when it already was (the first revocation time is kept)."""
        updated = (
            type(self)._default_manager.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        )
        self.refresh_from_db(fields=["revoked_at"])
        return updated == 1
