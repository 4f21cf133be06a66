from django.conf import settings
from django.db import migrations

from apps.core.db import timescale


def compress_old_reading_chunks(apps, schema_editor):
    """On TimescaleDB, compress reading chunks older than TIMESCALE_COMPRESS_AFTER; on plain PostgreSQL, nothing.

    Segmenting by series keeps one series' values together, so a range query decompresses only what it reads.
    """
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        if timescale.extension_version(cursor) is None:
            return
    timescale.enable_compression(
        connection,
        table="telemetry_reading",
        segment_by="series_id",
        order_by="ts DESC",
        compress_after=settings.TIMESCALE_COMPRESS_AFTER,
    )


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0001_initial")]

    operations = [migrations.RunPython(compress_old_reading_chunks, migrations.RunPython.noop, elidable=False)]
