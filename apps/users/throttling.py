"""Login throttling: growing delays per (username, client address), and a much higher bound per address alone.

The rules, every web process counting in the same Redis:

* **Per (username, address).** The first ``LOGIN_FREE_FAILURES`` failed logins of a pair cost nothing; each
  further one refuses that pair for ``2**k`` seconds (k = 0, 1, 2, ... for the failures beyond the free ones),
  capped at ``LOGIN_DELAY_MAX_SECONDS``. A pair's failures are forgotten ``LOGIN_FAILURE_MEMORY_HOURS`` after its
  last one, and as soon as that username logs in from that address.
* **Per address.** ``LOGIN_ADDRESS_FAILURE_LIMIT`` failures from one address within ``LOGIN_ADDRESS_WINDOW_MINUTES``
  (whatever the usernames) refuse every login from it for that long: a bound on password spraying, set far above
  what the people behind one office NAT mistype.
* **No per-username lock.** The old rule (5 failures of a username locked it for 15 minutes from everywhere) let
  anyone lock anyone out with five requests. Now a stranger only slows down their own address; the account's
  owner, elsewhere, is untouched. The price: a username guessed from many addresses is slowed per address only,
  which is why organization admins also have a second factor (``apps.users.two_factor``).
* While refused, even the right password is not checked, so a refusal tells nothing. Refused attempts are not
  failures: they neither count nor lengthen the wait, so the time the page shows stays true.

The pieces: ``ThrottledModelBackend`` (in ``AUTHENTICATION_BACKENDS`` instead of ``ModelBackend``) refuses before
the password check by raising ``PermissionDenied``, which makes ``django.contrib.auth.authenticate`` fail at once,
for every password login (dashboard, admin, any later form); ``count_login_failure`` and ``forget_login_failures``
(receivers of ``user_login_failed`` / ``user_logged_in``, connected in ``apps.users.receivers``) keep the counts;
the ``Throttled*AuthenticationForm`` classes say plainly that the login is throttled and for how long, on the
dashboard's login page and on the admin's. ``authenticate()`` called without a request (a shell, a management
command) has no client address and is not throttled; nobody anonymous can reach such a call.

**Redis errors** (``apps.core.versioned.CACHE_ERRORS``) never fail a login: the throttle then fails open (the
attempt goes on to the password check, uncounted) and logs a warning. Failing closed would lock every user, the
admins who must fix the outage included, out of a site whose sessions and passwords live in PostgreSQL and work
without Redis; the password (and the admins' second factor) still stands in front of every account meanwhile.

**Why not django-axes** (8.3.1, well kept, evaluated for this): its lockout parameters can express the pair
(``[["username", "ip_address"], "ip_address"]``) but one failure limit and one cool-off serve every parameter set,
so "5 per pair, 100 per address" cannot be said; it locks for a fixed cool-off after the limit rather than growing
delays; its database handler writes a row per attempt and its cache handler lets a Redis error through to the
login (a 500); it answers a lockout with its own 429 response or template instead of an error on our login forms,
and brings its own client-address resolution (django-ipware) next to ``apps.core.security.client_ip`` and
``TRUSTED_PROXY_NETWORKS``. Adapting it would take as much code as the rules above, which are a few cache calls.

Usernames are counted case-insensitively and hashed into the keys (any characters, bounded key length).
"""

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError

from apps.core.security import client_ip
from apps.core.versioned import CACHE_ERRORS

logger = logging.getLogger(__name__)

NO_ADDRESS = "-"  # a request without a usable client address: all such requests share one address bucket
REFUSED_ATTRIBUTE = "_login_throttle_refused"  # set on the request by the backend when it refused the attempt


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """Whether logins of a (username, address) are refused now, why, and for how many more seconds."""

    retry_after: int = 0
    by_address: bool = False

    @property
    def refused(self) -> bool:
        return self.retry_after > 0

    @property
    def message(self) -> str:
        who = "Logins from your network address" if self.by_address else "Logins as this user from your network address"
        return f"{who} are throttled after too many failed attempts. Try again in {_duration(self.retry_after)}."


OPEN = LoginThrottle()


def _duration(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def _address(request) -> str:
    return client_ip(request) or NO_ADDRESS


def _pair_key(username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.strip().lower()}\0{address}".encode()).hexdigest()[:32]
    return f"login-throttle:pair:{digest}"


def _address_key(address: str) -> str:
    return f"login-throttle:address:{address}"


def pair_delay_seconds(failures: int) -> int:
    """Seconds a pair is refused after its ``failures``-th failure: 0 for the free ones, then 1, 2, 4, ... capped."""
    beyond = failures - settings.LOGIN_FREE_FAILURES
    if beyond < 0:
        return 0
    return min(2 ** min(beyond, 40), settings.LOGIN_DELAY_MAX_SECONDS)  # a bounded exponent: no huge integers


def login_throttle(*, username: str | None, request) -> LoginThrottle:
    """The throttle on logins as ``username`` from the request's address now; ``OPEN`` when Redis cannot say."""
    if request is None:
        return OPEN
    address = _address(request)
    keys = [f"{_address_key(address)}:until"]
    if username:
        keys.append(f"{_pair_key(username, address)}:until")
    try:
        found = cache.get_many(keys)
    except CACHE_ERRORS:
        logger.warning("Could not read the login throttle; letting the attempt through", exc_info=True)
        return OPEN
    now = time.time()
    address_wait = math.ceil(found.get(keys[0], 0) - now)
    pair_wait = math.ceil(found.get(keys[1], 0) - now) if username else 0
    if address_wait <= 0 and pair_wait <= 0:
        return OPEN
    if address_wait >= pair_wait:
        return LoginThrottle(retry_after=address_wait, by_address=True)
    return LoginThrottle(retry_after=pair_wait)


def _count(key: str, timeout: int) -> int:
    cache.add(key, 0, timeout=timeout)
    return cache.incr(key)


def count_login_failure(sender, credentials, request=None, **kwargs):
    """A ``user_login_failed`` receiver: count a failed password check, and refuse the pair or the address for the
    delay it has earned. Attempts the throttle refused are not counted (see the module docstring)."""
    if request is None or getattr(request, REFUSED_ATTRIBUTE, False):
        return
    address = _address(request)
    username = credentials.get("username") or ""
    now = time.time()
    try:
        if username:
            pair = _pair_key(str(username), address)
            memory = settings.LOGIN_FAILURE_MEMORY_HOURS * 3600
            failures = _count(f"{pair}:failures", memory)
            cache.touch(f"{pair}:failures", memory)  # remembered from the *last* failure: slow guessing gains nothing
            if delay := pair_delay_seconds(failures):
                cache.set(f"{pair}:until", now + delay, timeout=delay + 1)
        window = settings.LOGIN_ADDRESS_WINDOW_MINUTES * 60
        if _count(f"{_address_key(address)}:failures", window) >= settings.LOGIN_ADDRESS_FAILURE_LIMIT:
            cache.set(f"{_address_key(address)}:until", now + window, timeout=window + 1)
    except CACHE_ERRORS:
        logger.warning("Could not count a failed login; the throttle misses it", exc_info=True)


def forget_login_failures(sender, request, user, **kwargs):
    """A ``user_logged_in`` receiver: the right password from an address clears that pair's failures."""
    if request is None:
        return
    pair = _pair_key(user.get_username(), _address(request))
    try:
        cache.delete_many([f"{pair}:failures", f"{pair}:until"])
    except CACHE_ERRORS:
        logger.warning("Could not reset the login throttle after a login", exc_info=True)


class ThrottledModelBackend(ModelBackend):
    """``ModelBackend`` that refuses, before checking the password, while the pair or the address is throttled."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if login_throttle(username=username, request=request).refused:
            setattr(request, REFUSED_ATTRIBUTE, True)
            raise PermissionDenied("Login throttled after too many failed attempts.")
        return super().authenticate(request, username=username, password=password, **kwargs)


class ThrottledLoginFormMixin:
    """Say that the login is throttled, and for how long, instead of (or after) "wrong password"."""

    def get_invalid_login_error(self):
        throttle = login_throttle(username=self.cleaned_data.get("username"), request=self.request)
        if not throttle.refused:
            return super().get_invalid_login_error()
        throttled = ValidationError(throttle.message, code="throttled")
        if getattr(self.request, REFUSED_ATTRIBUTE, False):
            return throttled  # the password was not checked: nothing to say about it
        # This failure is the one that started the wait: both are true.
        return ValidationError([super().get_invalid_login_error(), throttled])


class ThrottledAuthenticationForm(ThrottledLoginFormMixin, AuthenticationForm):
    """For ``LoginView(authentication_form=...)`` (the dashboard)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "Your username and password didn't match. Please try again.",
    }


class ThrottledAdminAuthenticationForm(ThrottledLoginFormMixin, AdminAuthenticationForm):
    """For ``admin.site.login_form``."""
