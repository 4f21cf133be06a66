"""The account pages of the second factor: enrolling an authenticator app, and entering its code at login.

Both need a logged-in session (the password step done); who must use them is ``apps.users.two_factor``.
"""

import base64
from urllib.parse import urlencode

import segno
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from django_otp import login as otp_login

from apps.users.forms import TokenForm
from apps.users.selectors import totp_device_for_user
from apps.users.services import totp_device_confirm, totp_device_start, totp_verify
from apps.users.two_factor import finish_second_step


def _next_url(request) -> str:
    """Where to go once verified: ``next`` if it is a page of this site, else the dashboard."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return settings.LOGIN_REDIRECT_URL


def _to_step(name: str, request):
    return redirect(f"{reverse(name)}?{urlencode({'next': _next_url(request)})}")


def _grouped_secret(device) -> str:
    """The secret as authenticator apps take it typed in: base32, no padding, in groups of four."""
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def two_factor_setup(request):
    if totp_device_for_user(user=request.user) is not None:
        # Enrolled already: a pending session verifies; a second device would need the first one's removal.
        return _to_step("two-factor-verify", request)
    device = totp_device_start(user=request.user)
    form = TokenForm(request.POST or None)
    status = 400 if request.method == "POST" else 200
    if request.method == "POST" and form.is_valid():
        check = totp_device_confirm(user=request.user, token=form.cleaned_data["otp_token"])
        if check.device is not None:
            otp_login(request, check.device)
            finish_second_step(request)
            return redirect(_next_url(request))
        form.add_error("otp_token", check.message)
        status = 429 if check.retry_after else 400
    context = {
        "form": form,
        "next": _next_url(request),
        "secret": _grouped_secret(device),
        "qr_code": segno.make(device.config_url, error="m").svg_data_uri(scale=5, border=2),
    }
    return render(request, "registration/two_factor_setup.html", context, status=status)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def two_factor_verify(request):
    if totp_device_for_user(user=request.user) is None:
        return _to_step("two-factor-setup", request)
    form = TokenForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            check = totp_verify(user=request.user, token=form.cleaned_data["otp_token"])
            if check.device is not None:
                otp_login(request, check.device)
                finish_second_step(request)
                return redirect(_next_url(request))
            form.add_error("otp_token", check.message)
            if check.retry_after:
                status = 429
    context = {"form": form, "next": _next_url(request)}
    return render(request, "registration/two_factor_verify.html", context, status=status)
