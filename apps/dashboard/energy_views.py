"""The energy pages: a site's and a device's electricity (kWh, CO₂e, cost, this period against the one before) and
a site's heat pumps ranked by seasonal performance factor. Server-rendered from the telemetry selectors, which scope
every read to the user's sites and say which resolution (raw readings or hourly rollups) a figure came from.
"""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from apps.dashboard import selectors
from apps.dashboard.views import _render, _scope
from apps.telemetry.energy import PERIODS
from apps.telemetry.selectors import (
    device_energy_report_for_user,
    site_energy_report_for_user,
    site_heat_pumps_for_user,
)

DEFAULT_PRESET = "7d"


def _preset(request) -> str:
    """The chosen preset; an unknown one falls back to the default (a page, not an API: nothing to refuse)."""
    preset = request.GET.get("preset", DEFAULT_PRESET)
    return preset if preset in PERIODS else DEFAULT_PRESET


def _site_scope(request, site):
    scope = _scope(request, remember=False)
    return selectors.SiteScope(user=request.user, sites=scope.sites, selected=site)


def _context(preset: str) -> dict:
    return {"preset": preset, "presets": [(key, label) for key, (label, _, _) in PERIODS.items()]}


@login_required
@require_GET
def energy_home(request):
    """The energy page of the site the switcher shows, else of the first site the user may see."""
    scope = _scope(request)
    site = scope.selected or (scope.sites[0] if scope.sites else None)
    if site is None:
        raise Http404("You may see no site.")
    return redirect(reverse("dashboard:site-energy", kwargs={"site_id": site.id}))


@login_required
@require_GET
def site_energy(request, site_id: int):
    preset = _preset(request)
    found = site_energy_report_for_user(user=request.user, site_id=site_id, preset=preset, now=timezone.now())
    if found is None:
        raise Http404("No such site among the sites you may see.")
    site, report = found
    return _render(
        request,
        "dashboard/energy.html",
        _site_scope(request, site),
        {
            **_context(preset),
            "site": site,
            "report": report,
            "subject": site.name,
            "switcher_action": reverse("dashboard:energy"),
        },
    )


@login_required
@require_GET
def device_energy(request, uid: str):
    preset = _preset(request)
    found = device_energy_report_for_user(user=request.user, uid=uid, preset=preset, now=timezone.now())
    if found is None:
        raise Http404("No such device among the devices you may see.")
    device, report = found
    return _render(
        request,
        "dashboard/energy.html",
        _site_scope(request, device.site),
        {
            **_context(preset),
            "site": device.site,
            "device": device,
            "report": report,
            "subject": device.name,
            "switcher_action": reverse("dashboard:energy"),
        },
    )


@login_required
@require_GET
def heat_pumps(request, site_id: int):
    preset = request.GET.get("preset", "12mo")
    preset = preset if preset in PERIODS else "12mo"
    found = site_heat_pumps_for_user(user=request.user, site_id=site_id, preset=preset, now=timezone.now())
    if found is None:
        raise Http404("No such site among the sites you may see.")
    site, window, figures, plan = found
    return _render(
        request,
        "dashboard/heat_pumps.html",
        _site_scope(request, site),
        {
            **_context(preset),
            "site": site,
            "window": window,
            "figures": figures,
            "plan": plan,
            "switcher_action": reverse("dashboard:energy"),
        },
    )
