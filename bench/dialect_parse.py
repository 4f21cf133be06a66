"""Parse + validate cost of each ingest dialect beside native JSON, in-process (no database, no broker): the same
10-reading message of one device in every dialect, through ``dialects.detect``/``dialects.parse`` and
``validate_records`` as the ingest service calls them. The end-to-end figures are bench/ingest.py's.

    python bench/dialect_parse.py [--messages 20000]
"""

import argparse
import datetime
import json
import time

import _django  # noqa: F401  (before any import from the checkout: sys.path, settings)
import cbor2
import django
import msgpack

django.setup()

from apps.telemetry.ingest import dialects  # noqa: E402
from apps.telemetry.ingest.dialects import Limits, Sender  # noqa: E402
from apps.telemetry.ingest.records import DeviceRule, MetricRule  # noqa: E402
from apps.telemetry.ingest.validation import validate_records  # noqa: E402

KEYS = [f"metric_{i}" for i in range(10)]


def payloads(epoch_ms: int) -> dict[str, bytes]:
    values = {key: 20.5 + i for i, key in enumerate(KEYS)}
    fields = ",".join(f"{key}={value}" for key, value in values.items())
    pack = [{"bn": "hp-1:", "bt": epoch_ms / 1000, "n": KEYS[0], "u": "Cel", "v": values[KEYS[0]]}]
    pack += [{"n": key, "u": "Cel", "v": value} for key, value in list(values.items())[1:]]
    labels = {"bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2}
    native = {"hp-1": [{"ts": epoch_ms, "values": values}]}
    return {
        "native json": json.dumps(native).encode(),
        "native msgpack": msgpack.packb(native),
        "line protocol": f"heating,device=hp-1,host=box {fields} {epoch_ms * 1_000_000}".encode(),
        "senml json": json.dumps(pack).encode(),
        "senml cbor": cbor2.dumps([{labels[k]: v for k, v in record.items()} for record in pack]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    messages = parser.parse_args().messages
    now = datetime.datetime.now(datetime.UTC)
    limits = Limits(received_at=now, max_bytes=1 << 20, max_records=10_000)
    sender = Sender()
    rules = {"hp-1": DeviceRule(1, "hp-1", 1, True, True, {k: MetricRule(k, -100, 1000, "Cel") for k in KEYS})}
    day = datetime.timedelta(days=1)
    rates = {}
    for name, payload in payloads(int(now.timestamp() * 1000) - 60_000).items():
        started = time.perf_counter()
        for _ in range(messages):
            parsed = dialects.parse(payload, dialects.detect(payload), sender, limits)
            valid, errors = validate_records(
                parsed.records, devices=rules, gateway_site_id=None, now=now, future_tolerance=day, retention=day
            )
        assert len(valid) == len(KEYS) and not errors, (name, errors)
        rates[name] = messages * len(KEYS) / (time.perf_counter() - started)
    for name, rate in rates.items():
        print(f"{name:15} {dialects.detect(payloads(0)[name]):14} {rate:12,.0f} readings/s  "
              f"{rate / rates['native json']:.2f}x native json")  # fmt: skip


if __name__ == "__main__":
    main()
