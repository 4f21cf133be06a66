"""The dashboard pages: parse the request, call the dashboard selectors, render a template.

The site switcher's choice travels as ``?site=<id>`` (or ``all``) and is remembered in the session, so moving between
pages keeps it; every page lists the sites it shows in ``<body data-sites>`` for the live-update script.
"""

import datetime
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from apps.alerts.filters import AlertFilterSet
from apps.alerts.selectors import alert_get_for_user
from apps.alerts.services import AlertStateError, alert_acknowledge, alert_resolve
from apps.dashboard import selectors
from apps.dashboard.chart_views import export_context
from apps.dashboard.forms import AlertNoteForm, filter_form_for_page
from apps.devices.filters import DeviceFilterSet
from apps.devices.selectors import (
    device_get_for_user,
    devices_with_status,
    user_can_operate_site,
)

SITE_SESSION_KEY = "dashboard_site"
DEVICES_PER_PAGE = 50
ALERTS_PER_PAGE = 50
RECENT_ALERTS = 10
DEVICE_ALERTS = 20
# Chart ranges (charts.js knows their lengths); the first is the live one new readings are appended to.
RANGE_PRESETS = [("1h", "1 h (live)"), ("24h", "24 h"), ("7d", "7 d"), ("30d", "30 d"), ("1y", "1 y")]


def _scope(request, *, remember: bool = True) -> selectors.SiteScope:
    """The sites this request shows: ``?site=`` if given (remembered for the next pages), else the session's."""
    requested = request.GET.get("site")
    if requested is None:
        requested = request.session.get(SITE_SESSION_KEY)
    scope = selectors.site_scope_for_user(user=request.user, requested=requested)
    if remember and "site" in request.GET:
        if scope.selected:
            request.session[SITE_SESSION_KEY] = scope.selected.id
        else:
            request.session.pop(SITE_SESSION_KEY, None)
    return scope


def _site_param(scope) -> str:
    return str(scope.selected.id) if scope.selected else "all"


def _render(request, template, scope, context, status: int = 200):
    base = {"scope": scope, "site_param": _site_param(scope), "next": request.get_full_path()}
    return render(request, template, {**base, **context}, status=status)


def _page(paginator: Paginator, request):
    return paginator.get_page(request.GET.get("page"))


# ---------------------------------------------------------------------------------------------------------------------
# Overview
# ---------------------------------------------------------------------------------------------------------------------


@login_required
@require_GET
def overview(request):
    scope = _scope(request)
    now = timezone.now()
    recent = list(scope.alerts()[:RECENT_ALERTS])
    return _render(
        request,
        "dashboard/overview.html",
        scope,
        {
            "counters": selectors.overview_counters(scope=scope, now=now),
            "alerts": recent,
            "operable_site_ids": scope.operable_site_ids,
            "alert_rows_url": _alert_rows_url(request, {"site": _site_param(scope), "limit": RECENT_ALERTS}),
            "attention": selectors.devices_needing_attention(scope=scope, now=now),
            "now": now,
        },
    )


# ---------------------------------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------------------------------


@login_required
@require_GET
def device_list(request):
    scope = _scope(request)
    now = timezone.now()
    # The API's FilterSet (GET /api/v1/devices takes the same query string); an invalid value is ignored here.
    filterset = DeviceFilterSet(request.GET or None, queryset=scope.devices, request=request, now=now)
    form = filter_form_for_page(
        filterset.form, scope=scope, site=_site_param(scope), tags=selectors.device_tags(scope.devices)
    )
    devices = devices_with_status(filterset.qs, now=now).order_by("site__name", "name", "id")
    page = _page(Paginator(devices, DEVICES_PER_PAGE), request)
    selectors.attach_key_latest_values(page.object_list)
    query = {key: value for key, value in request.GET.items() if key != "page" and value}
    query["site"] = _site_param(scope)
    return _render(
        request,
        "dashboard/device_list.html",
        scope,
        {"form": form, "page": page, "devices": page.object_list, "query": urlencode(query), "now": now},
    )


@login_required
@require_GET
def device_detail(request, uid: str):
    device = device_get_for_user(user=request.user, uid=uid)
    if device is None:
        raise Http404("No such device among the devices you may see.")
    scope = _scope(request, remember=False)
    # The page shows one device: its site is what the live script subscribes to, whatever the switcher says.
    scope = selectors.SiteScope(user=request.user, sites=scope.sites, selected=device.site)
    metrics = selectors.device_metrics(device)
    can_operate = user_can_operate_site(user=request.user, site=device.site)
    alerts = list(scope.alerts().filter(device=device)[:DEVICE_ALERTS])
    return _render(
        request,
        "dashboard/device_detail.html",
        scope,
        {
            "device": device,
            "status": device.status(),
            "metrics": metrics,
            "alerts": alerts,
            "operable_site_ids": {device.site_id} if can_operate else set(),
            "alert_rows_url": _alert_rows_url(
                request, {"site": device.site_id, "device": device.uid, "limit": DEVICE_ALERTS}
            ),
            "range_presets": RANGE_PRESETS,
            "switcher_action": reverse("dashboard:device-list"),
            # The device's Export panel (issue 16): every metric, the last 24 h, raw readings by default.
            **export_context(
                series=[f"{device.uid}:{m.key}" for m in metrics if m.ts],  # metrics that ever reported
                start=timezone.now() - datetime.timedelta(days=1),
                end=timezone.now(),
                interval="raw",
            ),
        },
    )


# ---------------------------------------------------------------------------------------------------------------------
# Alerts
# ---------------------------------------------------------------------------------------------------------------------


def _alert_rows_url(request, params: dict) -> str:
    """The rows partial's URL for these filters; ``next`` brings a button's POST back to the page showing it."""
    params = {**params, "next": request.get_full_path()}
    return reverse("dashboard:alert-rows") + "?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})


def _filtered_alerts(request, scope):
    """The API's AlertFilterSet over the scope's alerts; the filters that applied, to carry into links."""
    filterset = AlertFilterSet(request.GET or None, queryset=scope.alerts(), request=request)
    form = filter_form_for_page(filterset.form, scope=scope, site=_site_param(scope))
    alerts = filterset.qs
    applied = form.cleaned_data if filterset.is_bound and form.is_valid() else {}
    params = {name: request.GET[name] for name in filterset.filters if name != "site" and applied.get(name)}
    return form, alerts, {**params, "site": _site_param(scope)}


@login_required
@require_GET
def alert_list(request):
    scope = _scope(request)
    form, alerts, params = _filtered_alerts(request, scope)
    page = _page(Paginator(alerts, ALERTS_PER_PAGE), request)
    return _render(
        request,
        "dashboard/alert_list.html",
        scope,
        {
            "form": form,
            "page": page,
            "alerts": page.object_list,
            "operable_site_ids": scope.operable_site_ids,
            "query": urlencode({k: v for k, v in params.items() if v}),
            "alert_rows_url": _alert_rows_url(request, {**params, "page": page.number if page.number > 1 else None}),
        },
    )


@login_required
@require_GET
def alert_rows(request):
    """The rows of an alert table for the given filters, re-fetched by the live script when alerts change."""
    scope = _scope(request, remember=False)
    _, alerts, _ = _filtered_alerts(request, scope)
    try:
        limit = min(max(int(request.GET.get("limit", ALERTS_PER_PAGE)), 1), ALERTS_PER_PAGE)
    except ValueError:
        limit = ALERTS_PER_PAGE
    if "limit" in request.GET:
        rows, total = list(alerts[:limit]), None
    else:
        page = _page(Paginator(alerts, ALERTS_PER_PAGE), request)
        rows, total = list(page.object_list), page.paginator.count
    response = render(
        request,
        "dashboard/_alert_rows.html",
        {"alerts": rows, "operable_site_ids": scope.operable_site_ids, "next": _safe_next(request, "next")},
    )
    response["Cache-Control"] = "no-store"
    if total is not None:
        # The alert list's "N alerts" follows its rows (live.js); the overview's short lists have no count.
        response["X-Total-Count"] = str(total)
    return response


@login_required
@require_GET
def alert_detail(request, alert_id: int):
    alert = alert_get_for_user(user=request.user, alert_id=alert_id)
    if alert is None:
        raise Http404("No such alert among the alerts you may see.")
    return _alert_page(request, alert)


def _alert_page(request, alert, status: int = 200):
    scope = _scope(request, remember=False)
    scope = selectors.SiteScope(user=request.user, sites=scope.sites, selected=alert.device.site)
    return _render(
        request,
        "dashboard/alert_detail.html",
        scope,
        {
            "alert": alert,
            "events": alert.events.all(),
            "can_operate": user_can_operate_site(user=request.user, site=alert.device.site),
            "switcher_action": reverse("dashboard:alert-list"),
        },
        status=status,
    )


def _transition(request, alert_id: int, service, done: str):
    alert = alert_get_for_user(user=request.user, alert_id=alert_id)
    if alert is None:
        raise Http404("No such alert among the alerts you may see.")
    if not user_can_operate_site(user=request.user, site=alert.device.site):
        raise PermissionDenied("Only operators of the site and admins may do this.")
    form = AlertNoteForm(request.POST)
    if not form.is_valid():
        # A note PostgreSQL cannot store (NUL) or longer than the field: said on the alert's page, nothing changed.
        messages.error(request, " ".join(form.errors["note"]))
        return _alert_page(request, alert, status=400)
    try:
        service(alert=alert, user=request.user, note=form.cleaned_data["note"])
    except AlertStateError as error:
        messages.warning(request, " ".join(error.messages))
    else:
        messages.success(request, f"Alert {alert.id} {done}.")
    return redirect(_safe_next(request, "next", request.POST))


def _safe_next(request, name: str, data=None) -> str:
    """A same-site path to return to after a button's POST; the alert list otherwise."""
    target = (data if data is not None else request.GET).get(name, "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return reverse("dashboard:alert-list")


@login_required
@require_POST
def alert_acknowledge_view(request, alert_id: int):
    return _transition(request, alert_id, alert_acknowledge, "acknowledged")


@login_required
@require_POST
def alert_resolve_view(request, alert_id: int):
    return _transition(request, alert_id, alert_resolve, "resolved")
