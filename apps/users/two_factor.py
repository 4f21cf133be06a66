"""Two-factor authentication (TOTP, django-otp): who must have it, and keeping everyone else out until they do.

With ``FIELDWATCH_REQUIRE_ADMIN_2FA`` (on in production, off in local and test settings), everyone who can
configure anything -- superusers, staff (the Django admin), organization admins -- needs a confirmed authenticator
app: logging in with the password alone leaves the session *pending*, and every page sends it to enrol (no device
yet: a QR code and the secret, confirmed by a first code) or to enter a code (``apps.users.views``). Anyone who
enrolled of their own accord is asked for a code too, whatever the setting.

Where it is enforced, so that a pending session reaches nothing:

* ``TwoFactorMiddleware`` (after django-otp's ``OTPMiddleware``, which tells a verified session by the device id
  it stored) redirects every page, the admin's included, to the second step; API calls with such a session get a
  403 saying so. The login, logout, password-reset and two-factor pages themselves stay reachable.
* ``TwoFactorWebsocketMiddleware`` (in config/asgi.py) refuses the live websocket to a pending session.
* Personal API tokens are not sessions and are not asked for a code: a token is created from a logged-in (so
  verified) session or from another token, and is bounded by its scopes.

The decision costs no query per request: who must verify is worked out once at login (``note_login``, a
``user_logged_in`` receiver) and kept in the session, and staff and superusers are recognised from their user row
too, so a session opened before the setting was switched on is caught as well. An organization admin without
staff access whose session predates the setting is asked at their next login.

Enrolment on first login is only as strong as the password it follows: an admin is asked to enrol at the first
login after the setting is switched on. Removing a device (a lost phone) is for superusers and admins of the
owner's organization, in the Django admin (``apps.users.services.totp_device_remove``).
"""

from urllib.parse import urlencode

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.deprecation import MiddlewareMixin
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.models import Device

from apps.users.selectors import totp_device_for_user

PENDING_SESSION_KEY = "two_factor_pending"

# Pages a pending session may open: to finish the second step, to leave, or to log in as somebody else.
REACHABLE_PENDING = {
    "login",
    "logout",
    "two-factor-setup",
    "two-factor-verify",
    "password_reset",
    "password_reset_done",
    "password_reset_confirm",
    "password_reset_complete",
    "admin_password_reset",
    "admin:login",
    "admin:logout",
    "healthz",
    "metrics",
}


def two_factor_required(user) -> bool:
    """Whether the setting demands a second factor of ``user`` (one query for the role, unless staff)."""
    if not settings.FIELDWATCH_REQUIRE_ADMIN_2FA or not user.is_authenticated:
        return False
    return user.is_superuser or user.is_staff or user.is_org_admin


def note_login(sender, request, user, **kwargs):
    """A ``user_logged_in`` receiver: a login by password leaves the session pending when a code is due."""
    if request is None or not hasattr(request, "session"):
        return
    if two_factor_required(user) or totp_device_for_user(user=user) is not None:
        request.session[PENDING_SESSION_KEY] = True


def verified_device_id(user, session) -> str | None:
    """The persistent id of the confirmed device of ``user`` that verified this session, else None (as
    ``OTPMiddleware`` decides, for callers without it: the websocket)."""
    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    if not persistent_id:
        return None
    device = Device.from_persistent_id(persistent_id)
    if device is None or device.user_id != user.pk or not device.confirmed:
        return None
    return persistent_id


def outstanding_step(user, session, *, verified: bool) -> str | None:
    """``"setup"`` or ``"verify"`` while the session still owes its second step, else None."""
    if not user.is_authenticated or verified:
        return None
    due = session.get(PENDING_SESSION_KEY) or (
        settings.FIELDWATCH_REQUIRE_ADMIN_2FA and (user.is_superuser or user.is_staff)
    )
    if not due:
        return None
    return "verify" if totp_device_for_user(user=user) is not None else "setup"


def finish_second_step(request) -> None:
    """After a code verified: the session is no longer pending, under a new key (a change of privilege, like a
    login, so a session id seen before cannot ride on it)."""
    request.session.pop(PENDING_SESSION_KEY, None)
    request.session.cycle_key()


class TwoFactorMiddleware(MiddlewareMixin):
    """Send a pending session to its second step from every page (see the module docstring). ``process_view``
    rather than ``__call__``: the resolved view name says which pages stay reachable, without matching paths."""

    def process_view(self, request, view_func, view_args, view_kwargs):
        match = request.resolver_match
        if match is not None and match.view_name in REACHABLE_PENDING:
            return None
        user = request.user
        step = outstanding_step(user, request.session, verified=user.is_authenticated and user.is_verified())
        if step is None:
            return None
        target = reverse(f"two-factor-{step}")
        if request.path_info.startswith("/api/"):
            return JsonResponse(
                {"detail": f"This session must complete two-factor authentication first: {target}"}, status=403
            )
        return redirect(f"{target}?{urlencode({'next': request.get_full_path()})}")


class TwoFactorWebsocketMiddleware:
    """Refuse the websocket handshake of a pending session; wraps the router inside ``AuthMiddlewareStack``."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        user, session = scope.get("user"), scope.get("session")
        if user is not None and session is not None and await self._outstanding(user, session):
            return await WebsocketDenier()(scope, receive, send)
        return await self.inner(scope, receive, send)

    @staticmethod
    @database_sync_to_async
    def _outstanding(user, session) -> bool:
        if not user.is_authenticated:
            return False
        return outstanding_step(user, session, verified=verified_device_id(user, session) is not None) is not None
