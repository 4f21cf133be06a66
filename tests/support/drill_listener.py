"""``python -m tests.support.drill_listener <mqtt_listen options>``: the listener exactly as ``manage.py mqtt_listen``
runs it, plus one receiver of ``readings_committed`` for the crash drill (tests/support/crash_drill.py).

The receiver appends a byte to ``FIELDWATCH_DRILL_COMMIT_MARKER`` after each committed flush and holds the flushing
thread for a moment, so the drill can SIGKILL the listener between a commit and its acknowledgements. Nothing else
differs from production; the product itself has no drill hook.
"""

import os
import sys
import time


def main() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    from apps.telemetry.models import Reading
    from apps.telemetry.signals import readings_committed
    from tests.support.crash_drill import COMMIT_HOLD_SECONDS

    marker = os.environ["FIELDWATCH_DRILL_COMMIT_MARKER"]

    def mark_commit(sender, readings, **kwargs):
        with open(marker, "ab") as file:
            file.write(b"c")
        time.sleep(COMMIT_HOLD_SECONDS)

    readings_committed.connect(mark_commit, sender=Reading, weak=False, dispatch_uid="crash-drill-commit-marker")
    call_command("mqtt_listen", *sys.argv[1:])


if __name__ == "__main__":
    main()
