"""Login throttling: after ``LOGIN_FAILURES_BEFORE_LOCK`` failed logins for one username, or from one IP, within
``LOGIN_LOCK_MINUTES``, further attempts are refused for ``LOGIN_LOCK_MINUTES`` -- even with the right password.

Three pieces, each small:

* ``count_login_failure`` (a ``user_login_failed`` receiver) counts failures in Redis through
  ``apps.core.ratelimit`` (one fixed window per username and per IP, shared by every web process); the failure
  that reaches the limit sets a lock key that expires after ``LOGIN_LOCK_MINUTES``. Failures while locked renew
  the lock, so a guessing script never gets a fresh budget.
* ``ThrottledModelBackend`` replaces ``ModelBackend`` in ``AUTHENTICATION_BACKENDS``: while locked it raises
  ``PermissionDenied``, which makes ``django.contrib.auth.authenticate`` stop and fail without checking the
  password. Every password login (admin, dashboard, any later form) is covered whatever form it uses.
* ``ThrottledAuthenticationForm`` / ``ThrottledAdminAuthenticationForm`` turn that refusal into a clear message
  instead of "wrong username or password".

Usernames are counted case-insensitively and hashed into the key (any characters, bounded key length).
"""

import hashlib

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError

from apps.core.ratelimit import rate_limit_hit
from apps.core.security import client_ip

LOCKED_MESSAGE = "Too many failed login attempts. Wait %(minutes)d minutes before trying again."


def _identities(username: str | None, request) -> list[tuple[str, str]]:
    identities = []
    if username:
        identities.append(("login-user", hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]))
    ip = client_ip(request) if request is not None else None
    if ip:
        identities.append(("login-ip", ip))
    return identities


def _lock_key(scope: str, identity: str) -> str:
    return f"login-lock:{scope}:{identity}"


def login_locked(*, username: str | None, request) -> bool:
    """Whether attempts for ``username`` or from the request's IP are currently refused."""
    keys = [_lock_key(scope, identity) for scope, identity in _identities(username, request)]
    return bool(keys) and bool(cache.get_many(keys))


def count_login_failure(sender, credentials, request=None, **kwargs):
    lock_seconds = settings.LOGIN_LOCK_MINUTES * 60
    for scope, identity in _identities(credentials.get("username"), request):
        decision = rate_limit_hit(
            scope=scope, identity=identity, limit=settings.LOGIN_FAILURES_BEFORE_LOCK - 1, window_seconds=lock_seconds
        )
        if not decision.allowed:
            cache.set(_lock_key(scope, identity), 1, timeout=lock_seconds)


class ThrottledModelBackend(ModelBackend):
    """``ModelBackend`` that refuses, before checking the password, while the username or IP is locked."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(self._username_field())
        if login_locked(username=username, request=request):
            raise PermissionDenied("Too many failed login attempts.")
        return super().authenticate(request, username=username, password=password, **kwargs)

    @staticmethod
    def _username_field() -> str:
        from django.contrib.auth import get_user_model

        return get_user_model().USERNAME_FIELD


class ThrottledLoginFormMixin:
    """Say "locked, wait" instead of "wrong password" when the throttle refused the attempt."""

    def get_invalid_login_error(self):
        if login_locked(username=self.cleaned_data.get("username"), request=self.request):
            return ValidationError(LOCKED_MESSAGE, code="throttled", params={"minutes": settings.LOGIN_LOCK_MINUTES})
        return super().get_invalid_login_error()


class ThrottledAuthenticationForm(ThrottledLoginFormMixin, AuthenticationForm):
    """For ``LoginView(authentication_form=...)`` (the dashboard)."""


class ThrottledAdminAuthenticationForm(ThrottledLoginFormMixin, AdminAuthenticationForm):
    """For ``admin.site.login_form``."""
