"""The energy pages: a site's and a device's electricity (kWh, CO₂e, cost, this period against the one before) and
a site's heat pumps ranked by seasonal performance factor. Server-rendered from the telemetry selectors, which scope
every read to the user's sites and say which resolution (raw readings or hourly rollups) a figure came from.

Each page shows a preset (``?preset=``) or a custom range of the site's local days (``?from=&to=``, both included,
``EnergyRangeForm``): a refused range is the page with the form's reason, answered 400.
"""

import zoneinfo
from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect
from django.template.defaultfilters import floatformat
from django.urls import reverse
from django.utils import dateformat, timezone
from django.views.decorators.http import require_GET

from apps.dashboard import selectors
from apps.dashboard.forms import EnergyRangeForm
from apps.dashboard.views import _render, _scope
from apps.devices.selectors import device_get_for_user
from apps.telemetry.energy import PERIODS, RECENT_COP_DAYS, DayRange, HeatPumpFigures
from apps.telemetry.selectors import (
    device_energy_report_for_user,
    site_energy_report_for_user,
    site_get_for_user,
    site_heat_pumps_for_user,
)

DEFAULT_PRESET = "7d"
HEAT_PUMPS_PRESET = "12mo"
NONE = "—"


@dataclass(frozen=True)
class HeatPumpRow:
    """One heat pump as the table shows it, formatted here once: with template filters the 12-month page of 100
    pumps formatted 1,300 numbers and 700 dates, 107 ms of a 351 ms page (bench/energy_pages.py data)."""

    figure: HeatPumpFigures
    spf: str
    heat_kwh: str
    electricity_kwh: str
    degree_days: str
    kwh_per_degree_day: str
    recent_cop: list[tuple[str, str]]  # (local date, COP) of the range's last days


def _number(value: float | None, decimals: int) -> str:
    return NONE if value is None else floatformat(value, decimals)


def _heat_pump_rows(figures: list[HeatPumpFigures], tz: str) -> list[HeatPumpRow]:
    zone, dates = zoneinfo.ZoneInfo(tz), {}
    rows = []
    for item in figures:
        recent = []
        for day, cop in item.cop_days:
            if day not in dates:  # the pumps share their days
                dates[day] = dateformat.format(day.astimezone(zone), "j M")
            recent.append((dates[day], floatformat(cop, 1)))
        rows.append(
            HeatPumpRow(
                figure=item,
                spf=_number(item.spf, 2),
                heat_kwh=_number(item.heat_kwh, 1),
                electricity_kwh=_number(item.electricity_kwh, 1),
                degree_days=_number(item.degree_days, 1),
                kwh_per_degree_day=_number(item.kwh_per_degree_day, 2),
                recent_cop=recent,
            )
        )
    return rows


def _span(request, default: str) -> tuple[str | DayRange | None, EnergyRangeForm]:
    """A custom range when the query string has one (``from``, ``to``; None while it is refused, the form saying
    why), else the chosen preset; an unknown preset falls back to the default (a link, not an input to refuse)."""
    if "from" in request.GET or "to" in request.GET:
        form = EnergyRangeForm(request.GET)
        return (form.cleaned_data["span"] if form.is_valid() else None), form
    preset = request.GET.get("preset", default)
    return (preset if preset in PERIODS else default), EnergyRangeForm()


def _site_scope(request, site):
    scope = _scope(request, remember=False)
    return selectors.SiteScope(user=request.user, sites=scope.sites, selected=site)


def _context(span, form: EnergyRangeForm) -> dict:
    return {
        "preset": span if isinstance(span, str) else None,
        "presets": [(key, label) for key, (label, _, _) in PERIODS.items()],
        "range_form": form,
    }


def _page(request, template: str, site, span, form, context: dict):
    """The page, or for a refused range the page's form with the reason (400) and no figures."""
    return _render(
        request,
        template,
        _site_scope(request, site),
        {**_context(span, form), "site": site, "switcher_action": reverse("dashboard:energy"), **context},
        status=400 if span is None else 200,
    )


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
    span, form = _span(request, DEFAULT_PRESET)
    if span is None:
        site, report = site_get_for_user(user=request.user, site_id=site_id), None
    else:
        found = site_energy_report_for_user(user=request.user, site_id=site_id, span=span, now=timezone.now())
        site, report = found or (None, None)
    if site is None:
        raise Http404("No such site among the sites you may see.")
    return _page(request, "dashboard/energy.html", site, span, form, {"report": report, "subject": site.name})


@login_required
@require_GET
def device_energy(request, uid: str):
    span, form = _span(request, DEFAULT_PRESET)
    if span is None:
        device, report = device_get_for_user(user=request.user, uid=uid), None
    else:
        found = device_energy_report_for_user(user=request.user, uid=uid, span=span, now=timezone.now())
        device, report = found or (None, None)
    if device is None:
        raise Http404("No such device among the devices you may see.")
    context = {"device": device, "report": report, "subject": device.name}
    return _page(request, "dashboard/energy.html", device.site, span, form, context)


@login_required
@require_GET
def heat_pumps(request, site_id: int):
    span, form = _span(request, HEAT_PUMPS_PRESET)
    if span is None:
        site, window, figures, plan, stored_until = (
            site_get_for_user(user=request.user, site_id=site_id),
            None,
            [],
            None,
            None,
        )
    else:
        found = site_heat_pumps_for_user(user=request.user, site_id=site_id, span=span, now=timezone.now())
        site, window, figures, plan, stored_until = found or (None, None, [], None, None)
    if site is None:
        raise Http404("No such site among the sites you may see.")
    context = {
        "recent_cop_days": RECENT_COP_DAYS,
        "window": window,
        "figures": figures,
        "rows": _heat_pump_rows(figures, site.timezone),
        "plan": plan,
        "stored_until": stored_until,
    }
    return _page(request, "dashboard/heat_pumps.html", site, span, form, context)
