"""Websocket routes of every app, collected in one place like ``config.urls`` does for HTTP."""

from apps.dashboard.routing import websocket_urlpatterns as dashboard_websocket_urlpatterns

websocket_urlpatterns: list = []
websocket_urlpatterns += dashboard_websocket_urlpatterns
