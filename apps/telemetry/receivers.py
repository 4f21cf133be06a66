"""How telemetry reacts to the devices app: connected in ``TelemetryConfig.ready()``.

* any change to the ingest catalogue (devices, their types and metrics, gateways, sites) tells every ingest process to
  reload its device directory, after commit;
* a purged device takes its history with it.
"""

from apps.core.signals import call_on_commit_when_changed
from apps.devices.models import Device, DeviceType, Gateway, MetricDefinition, Site
from apps.devices.signals import device_purging
from apps.telemetry.ingest.directory import catalogue_changed
from apps.telemetry.services import device_history_purge

CATALOGUE_MODELS = (Device, DeviceType, MetricDefinition, Gateway, Site)  # a site's discovery policy too


def purge_device_history(sender, device, **kwargs) -> int:
    return device_history_purge(device_id=device.pk)


call_on_commit_when_changed(CATALOGUE_MODELS, catalogue_changed, uid="catalogue")
device_purging.connect(purge_device_history, dispatch_uid="telemetry-device-purging")
