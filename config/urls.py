from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.core.views import healthz, metrics, not_found, server_error
from apps.telemetry.api.influx_views import InfluxWriteV1View, InfluxWriteV2View
from apps.users.forms import LimitedPasswordResetForm
from apps.users.throttling import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm

# An unmatched URL under /api/ answers the API's JSON 404, not an HTML page.
handler404 = not_found
handler500 = server_error

# Failed-login throttling shows its own message on the admin login too.
admin.site.login_form = ThrottledAdminAuthenticationForm

# Shown on the pages and in the email, so people know how long a link works.
RESET_LINK_DAYS = {"timeout_days": max(1, settings.PASSWORD_RESET_TIMEOUT // 86400)}

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    # Before admin.site.urls, whose catch-all would answer it: with this name the admin's login page links the
    # dashboard's password reset, so both logins offer the same way back in.
    path(
        "admin/password_reset/",
        RedirectView.as_view(pattern_name="password_reset", permanent=False),
        name="admin_password_reset",
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", include("config.api_router")),
    # InfluxDB's write endpoints, at the paths InfluxDB clients (Telegraf) append to a server URL.
    path("api/v2/write", InfluxWriteV2View.as_view(), name="influxdb-v2-write"),
    path("write", InfluxWriteV1View.as_view(), name="influxdb-v1-write"),
    path("api/schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path(
        "login",
        auth_views.LoginView.as_view(redirect_authenticated_user=True, authentication_form=ThrottledAuthenticationForm),
        name="login",
    ),
    path("logout", auth_views.LogoutView.as_view(), name="logout"),
    # Password reset by email: Django's views, the dashboard's templates (templates/registration/password_reset_*).
    path(
        "password-reset",
        auth_views.PasswordResetView.as_view(
            form_class=LimitedPasswordResetForm,
            email_template_name="registration/password_reset_email.txt",
            extra_email_context=RESET_LINK_DAYS,
        ),
        name="password_reset",
    ),
    path(
        "password-reset/sent",
        auth_views.PasswordResetDoneView.as_view(extra_context=RESET_LINK_DAYS),
        name="password_reset_done",
    ),
    path(
        "password-reset/<uidb64>/<token>",
        auth_views.PasswordResetConfirmView.as_view(),
        name="password_reset_confirm",
    ),
    path("password-reset/done", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("", include("apps.users.urls")),
    path("", include("apps.dashboard.urls")),
]
