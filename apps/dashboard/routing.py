"""Websocket routes of the dashboard, collected by config.routing."""

from django.urls import path

from apps.dashboard.consumers import LiveConsumer

websocket_urlpatterns = [path("ws/live/", LiveConsumer.as_asgi(), name="live")]
