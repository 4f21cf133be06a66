"""The ingest dialects' flags start on for everyone: the dialects shipped switched on, and firmware already sending
them must not start failing on upgrade. An admin narrows a dialect to some organizations by setting *everyone* to
Unknown and listing them, or switches it off with No. A flag an admin already configured is left as it is.
``discovery_auto_register`` stays off until switched on per organization."""

import logging

from django.db import migrations
from waffle import get_waffle_flag_model

logger = logging.getLogger(__name__)

DIALECT_FLAGS = ("dialect_line_protocol", "dialect_senml", "dialect_sparkplug", "dialect_thingsboard")


def switch_on(apps, schema_editor):
    flag_model = apps.get_model("waffle", "Flag")
    flag_model.objects.filter(name__in=DIALECT_FLAGS, everyone=None, organization_grants__isnull=True).update(
        everyone=True
    )
    # Waffle caches flags (Redis); without this, processes would read the old state until the entries expire.
    try:
        for name in DIALECT_FLAGS:
            get_waffle_flag_model()(name=name).flush()  # deletes cache keys only: no query
    except Exception:  # noqa: BLE001 - a cache that is down holds nothing stale either
        logger.warning("could not clear the cached feature flags; they refresh when their cache entries expire")


class Migration(migrations.Migration):
    dependencies = [("users", "0006_feature_flags_defined")]

    operations = [migrations.RunPython(switch_on, migrations.RunPython.noop)]
