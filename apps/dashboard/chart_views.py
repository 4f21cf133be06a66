"""Saved charts and dashboards: the chart builder, a chart's page, the dashboards and their grid.

Reads go through ``chart_selectors`` (a chart or dashboard the user may not see answers 404, as if it did not
exist); writes through ``chart_services`` (only the owner changes anything: 403 for anyone else who may see it).
Charts load their data in the browser from the series API (``saved_charts.js``)."""

import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from apps.core.time import epoch_ms
from apps.dashboard import chart_selectors, chart_services
from apps.dashboard.chart_forms import CHART_FIELDS, ChartForm, DashboardForm, series_resolve
from apps.dashboard.models import DashboardItemKind
from apps.dashboard.selectors import site_scope_for_user
from apps.telemetry.exports import EXPORT_TABLES
from apps.telemetry.models import LatestValue

DAY = datetime.timedelta(days=1)


def _base(request, site_ids, **context) -> dict:
    """The context every page of this module shares: the switcher shows all the user's sites, the live script
    subscribes to the sites of the series on the page."""
    scope = site_scope_for_user(user=request.user, requested=None)
    return {"scope": scope, "site_param": "all", "live_site_ids": sorted(set(site_ids)), **context}


def _errors_to_form(form, error: ValidationError) -> None:
    for field, messages_ in error.message_dict.items():
        form.add_error(field if field in form.fields else None, messages_)


def _chart_or_404(request, chart_id: int):
    chart = chart_selectors.chart_get_for_user(user=request.user, chart_id=chart_id)
    if chart is None:
        raise Http404("No such chart among the charts you may see.")
    return chart


def _dashboard_or_404(request, dashboard_id: int):
    dashboard = chart_selectors.dashboard_get_for_user(user=request.user, dashboard_id=dashboard_id)
    if dashboard is None:
        raise Http404("No such dashboard among the dashboards you may see.")
    return dashboard


# ---------------------------------------------------------------------------------------------------------------------
# Charts
# ---------------------------------------------------------------------------------------------------------------------


@login_required
@require_GET
def chart_list(request):
    charts = list(chart_selectors.chart_list_for_user(user=request.user))
    dashboards = list(chart_selectors.dashboard_list_for_user(user=request.user))
    return render(request, "dashboard/chart_list.html", _base(request, [], charts=charts, dashboards=dashboards))


def _builder(request, *, chart=None, form=None, status=200, picked=None):
    config = chart_selectors.chart_configs([chart])[chart.pk] if chart else None
    if picked is not None:  # a refused save: show what was picked, as typed
        config = {**(config or {}), "series": [{"device": d.uid, "metric": m} for d, m in picked]}
    series = (config or {}).get("series", [])
    return render(
        request,
        "dashboard/chart_builder.html",
        _base(
            request,
            [s["site_id"] for s in series if "site_id" in s],
            chart=chart,
            form=form,
            config=config,
            choices=chart_selectors.chart_series_choices_for_user(user=request.user),
            can_edit=chart is None or chart.owner_id == request.user.pk,
            **(_export_context(chart, series) if chart else {}),
        ),
        status=status,
    )


def export_context(*, series: list[str], start, end, interval: str, aggregate: str = "avg") -> dict:
    """What ``_export_panel.html`` needs: the series ("uid:metric"), the range (epoch ms), the resolutions."""
    return {
        "export_series": ",".join(series),
        "export_start_ms": epoch_ms(start),
        "export_end_ms": epoch_ms(end),
        "export_intervals": list(EXPORT_TABLES),
        "export_default_interval": interval,
        "export_aggregate": aggregate,
    }


def _export_context(chart, series: list[dict]) -> dict:
    start, end = chart.bounds(timezone.now())
    interval = chart.resolution if chart.resolution in EXPORT_TABLES else "raw" if end - start <= DAY else "1h"
    return export_context(
        series=[f"{s['device']}:{s['metric']}" for s in series],
        start=start,
        end=end,
        interval=interval,
        aggregate=chart.aggregate,
    )


def _save(request, chart=None):
    form = ChartForm(request.POST, user=request.user)
    if not form.is_valid():
        return _builder(request, chart=chart, form=form, status=400)
    data = form.cleaned_data
    fields = {name: data[name] for name in CHART_FIELDS}
    try:
        saved = chart_services.chart_save(user=request.user, chart=chart, series=data["series"], **fields)
    except ValidationError as error:
        _errors_to_form(form, error)
        return _builder(request, chart=chart, form=form, status=400, picked=data["series"])
    messages.success(request, f"Chart “{saved.title}” saved.")
    return redirect("dashboard:chart-detail", chart_id=saved.pk)


@login_required
@require_http_methods(["GET", "POST"])
def chart_new(request):
    if request.method == "POST":
        return _save(request)
    return _builder(request, form=ChartForm(user=request.user))


@login_required
@require_http_methods(["GET", "POST"])
def chart_detail(request, chart_id: int):
    chart = _chart_or_404(request, chart_id)
    if request.method == "POST":
        if chart.owner_id != request.user.pk:
            raise PermissionDenied("Only its owner may change this chart.")
        if request.POST.get("action") == "delete":
            chart_services.chart_delete(user=request.user, chart=chart)
            messages.success(request, f"Chart “{chart.title}” deleted.")
            return redirect("dashboard:chart-list")
        return _save(request, chart)
    return _builder(request, chart=chart, form=ChartForm(user=request.user, initial=ChartForm.initial_for(chart)))


# ---------------------------------------------------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def dashboard_list(request):
    form = DashboardForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        dashboard = chart_services.dashboard_save(user=request.user, **form.cleaned_data)
        return redirect("dashboard:dashboard-detail", dashboard_id=dashboard.pk)
    dashboards = list(chart_selectors.dashboard_list_for_user(user=request.user))
    return render(
        request,
        "dashboard/dashboard_list.html",
        _base(request, [], dashboards=dashboards, form=form),
        status=400 if request.method == "POST" else 200,
    )


def _latest_values(cells) -> dict[str, tuple]:
    """'uid:metric' -> (value, ts) for the stat cards: one statement."""
    stats = [cell.stat for cell in cells if cell.stat]
    if not stats:
        return {}
    rows = LatestValue.objects.filter(
        series__device__uid__in={s.device for s in stats}, series__metric_key__in={s.metric for s in stats}
    ).values_list("series__device__uid", "series__metric_key", "value", "ts")
    return {f"{uid}:{key}": (value, ts) for uid, key, value, ts in rows}


def _stat_value(latest: dict, cell) -> float | None:
    return latest.get(f"{cell.stat.device}:{cell.stat.metric}", (None, None))[0] if cell.stat else None


def _dashboard_edit(request, dashboard) -> None:
    """One POST action of the owner's edit controls; a refusal is a message on the page."""
    action = request.POST.get("action", "")
    user = request.user
    if action == "add_chart":
        chart = chart_selectors.chart_list_for_user(user=user).filter(pk=_int(request.POST.get("chart"))).first()
        if chart is None:
            raise ValidationError({"chart": "Pick one of the charts you may see."})
        chart_services.dashboard_chart_add(user=user, dashboard=dashboard, chart=chart)
    elif action == "add_stat":
        [(device, metric)] = series_resolve(user=user, values=[request.POST.get("series", "")])
        chart_services.dashboard_stat_add(user=user, dashboard=dashboard, device=device, metric_key=metric)
    elif action in ("remove", "up", "down"):
        item_id = _int(request.POST.get("item"))
        if action == "remove":
            chart_services.dashboard_item_remove(user=user, dashboard=dashboard, item_id=item_id)
        else:
            offset = -1 if action == "up" else 1
            chart_services.dashboard_item_move(user=user, dashboard=dashboard, item_id=item_id, offset=offset)
    elif action == "rename":
        form = DashboardForm(request.POST)
        if not form.is_valid():
            raise ValidationError({"title": "Give the dashboard a title (at most 200 characters)."})
        chart_services.dashboard_save(user=user, dashboard=dashboard, **form.cleaned_data)
    else:
        raise ValidationError({"action": "Unknown action."})


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@login_required
@require_http_methods(["GET", "POST"])
def dashboard_detail(request, dashboard_id: int):
    dashboard = _dashboard_or_404(request, dashboard_id)
    if request.method == "POST":
        if dashboard.owner_id != request.user.pk:
            raise PermissionDenied("Only its owner may change this dashboard.")
        if request.POST.get("action") == "delete":
            chart_services.dashboard_delete(user=request.user, dashboard=dashboard)
            messages.success(request, f"Dashboard “{dashboard.title}” deleted.")
            return redirect("dashboard:chart-list")
        try:
            _dashboard_edit(request, dashboard)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        return redirect(reverse("dashboard:dashboard-detail", kwargs={"dashboard_id": dashboard.pk}))
    cells = chart_selectors.dashboard_cells_for_user(user=request.user, dashboard=dashboard)
    latest = _latest_values(cells)
    site_ids = [s["site_id"] for cell in cells if cell.chart for s in cell.chart["series"]]
    site_ids += [cell.stat.site_id for cell in cells if cell.stat]
    is_owner = dashboard.owner_id == request.user.pk
    return render(
        request,
        "dashboard/dashboard_detail.html",
        _base(
            request,
            site_ids,
            dashboard=dashboard,
            cells=[(cell, _stat_value(latest, cell)) for cell in cells],
            is_owner=is_owner,
            rename_form=DashboardForm(initial={"title": dashboard.title, "shared": dashboard.shared}),
            charts=list(chart_selectors.chart_list_for_user(user=request.user)) if is_owner else [],
            choices=chart_selectors.chart_series_choices_for_user(user=request.user) if is_owner else None,
            kinds=DashboardItemKind,
        ),
    )
