"""``python -m tests.support.poison_listener <mqtt_listen options>``: the listener exactly as ``manage.py mqtt_listen``
runs it, except that validation raises ``RuntimeError`` for any record carrying the value key ``poison``: a stand-in
for a bug deep in the pipeline, injected here so that production parsing and validation stay untouched.
"""

import sys


class PoisonError(RuntimeError):
    pass


def main() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    from apps.telemetry import services

    validate = services.validate_records

    def validate_or_raise(records, **kwargs):
        if any("poison" in record.values for record in records):
            raise PoisonError("a record the pipeline cannot handle")
        return validate(records, **kwargs)

    services.validate_records = validate_or_raise
    call_command("mqtt_listen", *sys.argv[1:])


if __name__ == "__main__":
    main()
