from django.db import migrations, models

# The running sum of the rows already stored, per site and series in day order: what the refresh writes from now on.
_THROUGH = """
    UPDATE telemetry_siteheatpumpday AS d SET through = r.through
    FROM (
        SELECT site_id, series_id, day, sum(value) OVER (PARTITION BY site_id, series_id ORDER BY day) AS through
        FROM telemetry_siteheatpumpday
    ) AS r
    WHERE d.site_id = r.site_id AND d.series_id = r.series_id AND d.day = r.day
"""


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0013_heat_pump_days"),
    ]

    operations = [
        migrations.AddField(
            model_name="siteheatpumpday",
            name="through",
            field=models.FloatField(default=0.0),
            preserve_default=False,
        ),
        migrations.RunSQL(_THROUGH, migrations.RunSQL.noop),
    ]
