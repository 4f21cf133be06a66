"""How the devices app reacts to changes of its own rows: connected in ``DevicesConfig.ready()``.

A committed change to a broker credential (issued, revoked, deleted), to a device (deactivated, deleted) or to a
feature flag enqueues the broker sync, so a revoked login is refused within seconds instead of at the next minute's
beat run. The beat job stays: it covers bulk ``update()`` calls, which send no signal, and a sync that failed.
"""

import logging

from django.conf import settings
from waffle import get_waffle_flag_model

from apps.core.signals import call_on_commit_when_changed
from apps.devices.models import Device, MqttCredential
from apps.devices.tasks import broker_auth_sync_task
from apps.users.models import FlagOrganization

logger = logging.getLogger(__name__)


def broker_sync_enqueue() -> None:
    if not settings.BROKER_AUTH_SYNC:
        return
    try:
        broker_auth_sync_task.delay()
    except Exception:  # noqa: BLE001 - after commit nothing may fail the change itself; beat syncs within a minute
        logger.warning("could not enqueue the broker sync; the periodic job will run it", exc_info=True)


# Feature flags too: the ThingsBoard dialect's flag decides whose access tokens the broker's plugin accepts.
call_on_commit_when_changed(
    (MqttCredential, Device, get_waffle_flag_model(), FlagOrganization), broker_sync_enqueue, uid="broker-auth"
)
