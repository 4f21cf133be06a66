"""``manage.py archive_restore --site <id> --day YYYY-MM-DD``: read an archived day back into the readings table.

A thin interface over ``apps.telemetry.archive.archive_restore``: the file is checked against its manifest first
and refused if it differs; restoring twice inserts nothing the second time. Retention leaves a restored day alone
for ``RESTORE_HOLD_DAYS`` days, then archives (merged) and deletes it again.
"""

import datetime

from django.core.management.base import BaseCommand, CommandError

from apps.devices.models import Site
from apps.telemetry.archive import ArchiveError, archive_restore
from apps.telemetry.retention import RESTORE_HOLD_DAYS


def iso_day(text: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError as error:
        raise ValueError(text) from error


class Command(BaseCommand):
    help = "Restore one site's archived raw readings of one UTC day into the readings table."

    def add_arguments(self, parser):
        parser.add_argument("--site", type=int, required=True, help="Site id.")
        parser.add_argument("--day", type=iso_day, required=True, help="UTC day, YYYY-MM-DD.")

    def handle(self, *args, site: int, day: datetime.date, **options):
        try:
            site_obj = Site.objects.get(pk=site)
        except Site.DoesNotExist:
            raise CommandError(f"There is no site {site}.") from None
        try:
            result = archive_restore(site=site_obj, day=day)
        except ArchiveError as error:
            raise CommandError(f"Not restored: {error}") from error
        self.stdout.write(
            f"Restored {result.restored} readings of site {site} on {day.isoformat()} "
            f"({result.archived_rows} in the archive, {result.archived_rows - result.restored} already present or "
            f"skipped; {result.created_series} series re-created)."
        )
        if result.unknown_devices:
            self.stderr.write(f"Skipped readings of devices that no longer exist: {', '.join(result.unknown_devices)}")
        self.stdout.write(f"Retention keeps this day for {RESTORE_HOLD_DAYS} days from now.")
