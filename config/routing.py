"""Websocket routes of every app, collected in one place like ``config.urls`` does for HTTP."""

websocket_urlpatterns: list = []
