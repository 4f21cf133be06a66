from django.urls import path

from apps.core import converters  # noqa: F401  (registers <segment:...>: a path segment without NUL)
from apps.dashboard import energy_views, views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("devices/", views.device_list, name="device-list"),
    path("devices/<segment:uid>/", views.device_detail, name="device-detail"),
    path("alerts/", views.alert_list, name="alert-list"),
    path("alerts/rows", views.alert_rows, name="alert-rows"),
    path("alerts/<int:alert_id>/", views.alert_detail, name="alert-detail"),
    path("alerts/<int:alert_id>/acknowledge", views.alert_acknowledge_view, name="alert-acknowledge"),
    path("alerts/<int:alert_id>/resolve", views.alert_resolve_view, name="alert-resolve"),
    path("energy/", energy_views.energy_home, name="energy"),
    path("energy/sites/<int:site_id>/", energy_views.site_energy, name="site-energy"),
    path("energy/sites/<int:site_id>/heat-pumps/", energy_views.heat_pumps, name="heat-pumps"),
    path("energy/devices/<segment:uid>/", energy_views.device_energy, name="device-energy"),
]
