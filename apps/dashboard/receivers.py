"""How the dashboard reacts to the apps below it: live fan-out (readings, device liveness, alerts, export progress),
connected in ``DashboardConfig.ready()``.

The signals are sent after commit with ``send_robust``; the receivers only hand their batch to the publisher, whose
own thread merges and sends it, so neither a slow or absent Redis nor the per-reading merge holds back ingest or an
alert change.
"""

from apps.alerts.models import Alert
from apps.alerts.signals import alerts_changed
from apps.dashboard.fanout import alerts_fanout, devices_liveness_fanout, export_fanout, readings_fanout
from apps.devices.models import Device
from apps.telemetry.models import ExportJob, Reading
from apps.telemetry.signals import devices_liveness_changed, export_progressed, readings_committed


def publish_committed_readings(sender, readings, **kwargs):
    readings_fanout(readings)


def publish_devices_liveness(sender, changes, **kwargs):
    devices_liveness_fanout(changes)


def publish_changed_alerts(sender, alert_ids, **kwargs):
    alerts_fanout(alert_ids)


def publish_export_progress(sender, export_id, user_id, **kwargs):
    export_fanout(export_id=export_id, user_id=user_id)


readings_committed.connect(publish_committed_readings, sender=Reading, dispatch_uid="dashboard-live-readings")
alerts_changed.connect(publish_changed_alerts, sender=Alert, dispatch_uid="dashboard-live-alerts")
devices_liveness_changed.connect(publish_devices_liveness, sender=Device, dispatch_uid="dashboard-live-liveness")
export_progressed.connect(publish_export_progress, sender=ExportJob, dispatch_uid="dashboard-live-exports")
