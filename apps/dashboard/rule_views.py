"""Alert rules in the dashboard: the rules of the user's sites, and for operators of a site creating and editing
rules there with a backtest first ("over the last 7 days this rule would have opened N alerts").

Writes go through ``alert_rule_create`` / ``alert_rule_update`` / ``alert_rule_delete`` (their validation and
permission checks are the API's); the backtest through ``apps.alerts.backtest.rule_backtest`` after the same
validation."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.alerts.backtest import BACKTEST_DAYS, rule_backtest
from apps.alerts.choices import OPEN_STATUSES
from apps.alerts.models import AlertRule
from apps.alerts.selectors import alert_rule_list_for_user
from apps.alerts.services import alert_rule_create, alert_rule_delete, alert_rule_update, alert_rule_validate
from apps.core.time import epoch_ms
from apps.dashboard.chart_forms import RuleForm
from apps.dashboard.selectors import site_scope_for_user
from apps.devices.selectors import user_can_operate_site


def _context(request, **context) -> dict:
    scope = site_scope_for_user(user=request.user, requested=None)
    return {"scope": scope, "site_param": "all", "live_site_ids": [], **context}


def _operable_sites(request) -> list:
    scope = site_scope_for_user(user=request.user, requested=None)
    return [site for site in scope.sites if site.id in scope.operable_site_ids]


def _rule_sites(rule: AlertRule) -> list:
    return [rule.device.site] if rule.device_id else [rule.site] if rule.site_id else []


def _may_operate(user, rule: AlertRule) -> bool:
    sites = _rule_sites(rule)
    return bool(sites) and all(user_can_operate_site(user=user, site=site) for site in sites)


@login_required
@require_GET
def rule_list(request):
    rules = list(alert_rule_list_for_user(user=request.user))
    operable = {site.id for site in _operable_sites(request)}
    for rule in rules:
        rule.editable = all(site.id in operable for site in _rule_sites(rule))
    return render(request, "dashboard/rule_list.html", _context(request, rules=rules, can_create=bool(operable)))


def _form_page(request, form, rule=None, status=200):
    return render(
        request,
        "dashboard/rule_form.html",
        _context(request, form=form, rule=rule, backtest_days=BACKTEST_DAYS),
        status=status,
    )


def _save(request, rule=None):
    operable = _operable_sites(request)
    if not operable:
        raise PermissionDenied("Only operators of a site and admins manage its rules.")
    form = RuleForm(request.POST or None, user=request.user, operable_sites=operable, instance=rule)
    if request.method == "GET":
        return _form_page(request, form, rule)
    if not form.is_valid():
        return _form_page(request, form, rule, status=400)
    try:
        if rule is None:
            saved = alert_rule_create(user=request.user, **form.cleaned_data)
        else:
            saved = alert_rule_update(rule=rule, user=request.user, **form.cleaned_data)
    except ValidationError as error:
        for field, texts in error.message_dict.items():
            form.add_error(field if field in form.fields else None, texts)
        return _form_page(request, form, rule, status=400)
    messages.success(request, f"Rule “{saved.name}” saved.")
    return redirect("dashboard:rule-list")


@login_required
@require_http_methods(["GET", "POST"])
def rule_new(request):
    return _save(request)


def _changeable_rule(request, rule_id: int) -> AlertRule:
    """A rule of the user's sites that the user may change: another site's is 404 (its existence is not told), a
    rule the user only views is 403."""
    rule = alert_rule_list_for_user(user=request.user).filter(pk=rule_id).first()
    if rule is None:
        raise Http404("No such rule among the rules of your sites.")
    if not _may_operate(request.user, rule):
        raise PermissionDenied("Only operators of the rule's site and admins may change it.")
    return rule


@login_required
@require_http_methods(["GET", "POST"])
def rule_edit(request, rule_id: int):
    return _save(request, _changeable_rule(request, rule_id))


@login_required
@require_http_methods(["GET", "POST"])
def rule_delete(request, rule_id: int):
    """GET asks for confirmation; POST deletes the rule with its alerts and their history, as the API's DELETE
    does (``alert_rule_delete``), so the page says how many of those alerts are still open."""
    rule = _changeable_rule(request, rule_id)
    if request.method == "GET":
        alerts = rule.alerts.all()
        return render(
            request,
            "dashboard/rule_delete.html",
            _context(
                request,
                rule=rule,
                alert_count=alerts.count(),
                open_alert_count=alerts.filter(status__in=OPEN_STATUSES).count(),
            ),
        )
    name = rule.name
    alert_rule_delete(rule=rule, user=request.user)
    messages.success(request, f"Rule “{name}” deleted.")
    return redirect("dashboard:rule-list")


@login_required
@require_POST
def rule_backtest_view(request):
    """The rule form's fields -> {"count", "devices", "start", "end", "resolution", "openings": [...]} (JSON), or
    400 with the same messages a save would give."""
    operable = _operable_sites(request)
    if not operable:
        raise PermissionDenied("Only operators of a site and admins manage its rules.")
    form = RuleForm(request.POST, user=request.user, operable_sites=operable)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    rule = AlertRule(organization_id=request.user.organization_id, **form.cleaned_data)
    try:
        alert_rule_validate(rule)
    except ValidationError as error:
        return JsonResponse({"errors": error.message_dict}, status=400)
    result = rule_backtest(rule=rule)
    return JsonResponse(
        {
            "count": result.count,
            "devices": result.devices,
            "days": BACKTEST_DAYS,
            "start": epoch_ms(result.start),
            "end": epoch_ms(result.end),
            "resolution": result.resolution,
            "openings": [{"device": o.device_uid, "at": epoch_ms(o.at), "value": o.value} for o in result.openings],
        }
    )
