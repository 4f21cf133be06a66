from django.urls import path

from apps.core import converters  # noqa: F401  (registers <segment:...>: a path segment without NUL)
from apps.dashboard import chart_views, energy_views, export_views, gateway_views, rule_views, views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("devices/", views.device_list, name="device-list"),
    path("devices/<segment:uid>/", views.device_detail, name="device-detail"),
    path("gateways/", gateway_views.gateway_list, name="gateway-list"),
    path("alerts/", views.alert_list, name="alert-list"),
    path("alerts/rows", views.alert_rows, name="alert-rows"),
    path("alerts/<int:alert_id>/", views.alert_detail, name="alert-detail"),
    path("alerts/<int:alert_id>/acknowledge", views.alert_acknowledge_view, name="alert-acknowledge"),
    path("alerts/<int:alert_id>/resolve", views.alert_resolve_view, name="alert-resolve"),
    # Saved charts and dashboards, exports, alert rules (issue 16)
    path("charts/", chart_views.chart_list, name="chart-list"),
    path("charts/new", chart_views.chart_new, name="chart-new"),
    path("charts/<int:chart_id>/", chart_views.chart_detail, name="chart-detail"),
    path("dashboards/", chart_views.dashboard_list, name="dashboard-list"),
    path("dashboards/<int:dashboard_id>/", chart_views.dashboard_detail, name="dashboard-detail"),
    path("exports/", export_views.export_list, name="export-list"),
    path("rules/", rule_views.rule_list, name="rule-list"),
    path("rules/new", rule_views.rule_new, name="rule-new"),
    path("rules/backtest", rule_views.rule_backtest_view, name="rule-backtest"),
    path("rules/<int:rule_id>/", rule_views.rule_edit, name="rule-edit"),
    path("rules/<int:rule_id>/delete", rule_views.rule_delete, name="rule-delete"),
    path("energy/", energy_views.energy_home, name="energy"),
    path("energy/sites/<int:site_id>/", energy_views.site_energy, name="site-energy"),
    path("energy/sites/<int:site_id>/heat-pumps/", energy_views.heat_pumps, name="heat-pumps"),
    path("energy/devices/<segment:uid>/", energy_views.device_energy, name="device-energy"),
]
