from django.apps import AppConfig


class DevicesConfig(AppConfig):
    """Sites, device types and their metrics, devices, gateways and gateway API keys."""

    name = "apps.devices"
    label = "devices"

    def ready(self):
        from apps.devices import receivers  # noqa: F401  (broker sync on credential and device changes)
