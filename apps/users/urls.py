"""Account pages of the users app, included at the site root by config.urls (next to login and password reset)."""

from django.urls import path

from apps.users import views

urlpatterns = [
    path("account/two-factor/setup", views.two_factor_setup, name="two-factor-setup"),
    path("account/two-factor/verify", views.two_factor_verify, name="two-factor-verify"),
]
