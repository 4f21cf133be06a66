"""``python -m tests.support.instrumented_listener <mqtt_listen options>``: the listener exactly as
``manage.py mqtt_listen`` runs it, plus test-only instruments switched on by the environment. The product itself
carries no test hook.

* ``FIELDWATCH_DRILL_COMMIT_MARKER=<path>`` (the crash drill, tests/support/crash_drill.py): a receiver of
  ``readings_committed`` appends a byte to the file after each committed flush and holds the flushing thread for
  a moment, so the drill can SIGKILL the listener between a commit and its acknowledgements.
* ``FIELDWATCH_TEST_POISON=1``: validation raises ``PoisonError`` for any record carrying the value key
  ``poison``, and the write raises it for any batch holding a reading of the metric ``poison_write``: stand-ins
  for a bug deep in the pipeline, before and in the write (tests/telemetry/test_listener_poison.py).
* ``FIELDWATCH_TEST_EVALUATION_FAILS_ONCE=1``: the first alert evaluation after a commit raises OperationalError, as
  when the database blinks between the readings' commit and the evaluation (tests/alerts/test_outbox.py).
"""

import os
import sys
import time

COMMIT_HOLD_SECONDS = 0.05


class PoisonError(RuntimeError):
    pass


def commit_marker(path: str) -> None:
    from apps.telemetry.models import Reading
    from apps.telemetry.signals import readings_committed

    def mark_commit(sender, readings, **kwargs):
        with open(path, "ab") as file:
            file.write(b"c")
        time.sleep(COMMIT_HOLD_SECONDS)

    readings_committed.connect(mark_commit, sender=Reading, weak=False, dispatch_uid="test-commit-marker")


def poison_validation() -> None:
    from apps.telemetry import services

    validate = services.validate_records

    def validate_or_raise(records, **kwargs):
        if any("poison" in record.values for record in records):
            raise PoisonError("a record the pipeline cannot handle")
        return validate(records, **kwargs)

    services.validate_records = validate_or_raise

    write = services.readings_write

    def write_or_raise(readings, **kwargs):
        if any(reading.metric_key == "poison_write" for reading in readings):
            raise PoisonError("a reading the writer cannot handle")
        return write(readings, **kwargs)

    services.readings_write = write_or_raise


def evaluation_fails_once() -> None:
    from django.db import OperationalError

    from apps.alerts import outbox

    evaluate = outbox.batch_evaluate
    failed = []

    def fail_first(readings, **kwargs):
        if not failed:
            failed.append(True)
            raise OperationalError("the database went away between the readings' commit and their evaluation")
        return evaluate(readings, **kwargs)

    outbox.batch_evaluate = fail_first


def main() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    if marker := os.environ.get("FIELDWATCH_DRILL_COMMIT_MARKER"):
        commit_marker(marker)
    if os.environ.get("FIELDWATCH_TEST_POISON") == "1":
        poison_validation()
    if os.environ.get("FIELDWATCH_TEST_EVALUATION_FAILS_ONCE") == "1":
        evaluation_fails_once()
    call_command("mqtt_listen", *sys.argv[1:])


if __name__ == "__main__":
    main()
