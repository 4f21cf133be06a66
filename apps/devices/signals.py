"""What the devices app tells the apps above it. They connect receivers in their ``AppConfig.ready()``.

``device_purging(sender=Device, device=...)`` is sent inside ``device_purge``'s transaction just before the device
row is deleted. Rows that point at a device without a database cascade (telemetry's readings have no foreign key,
for ingest speed) are deleted by their app's receiver, which returns how many readings it removed.
"""

from django.dispatch import Signal

device_purging = Signal()
