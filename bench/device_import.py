"""Device import: ``POST /api/v1/devices/import``'s plan and apply on a CSV fleet, against a per-row ORM save.

    python bench/device_import.py [--rows 10000] [--baseline-rows 2000] [--json-out import.json]

On a scratch database ``fieldwatch_import`` (created, migrated, dropped; ``--database-url`` to use another): one
organization, two sites, a device type and a gateway, and an admin. Timed, each on an empty device table:

* ``import``: ``device_import_plan`` + ``device_import_apply`` of ``--rows`` CSV rows (parse, validate with the
  admin's rules, bulk_create, the audit events in bulk), what the API endpoint does minus HTTP;
* ``reimport``: the same file again with ``mode=upsert`` (every row read and compared; nothing written);
* ``per_row_save``: ``--baseline-rows`` of the same rows as ``full_clean()`` + ``save()`` each, as the admin or a
  naive import would (one INSERT, its audit event and the catalogue signals per device), for the ratio.

Prints rows/s of each and the ratio; DEBUG is off (bench/_django.py).
"""

import time

import _django  # before any import from the checkout: sys.path, DEBUG off
from _support import ScratchDatabase, argument_parser, log, machine_facts, result_print

DATABASE = "fieldwatch_import"


def fleet_csv(rows: int) -> str:
    lines = ["uid,name,site,type,gateway,tags,metadata"]
    for n in range(rows):
        site, gateway = ("Bench A", "gw-bench-a") if n % 2 else ("Bench B", "")
        lines.append(
            f'bench-{n:06d},Meter {n},{site},Bench meter,{gateway},"heating,zone-{n % 7}","{{""serial"": ""S{n}""}}"'
        )
    return "\n".join(lines) + "\n"


def seed():
    from apps.devices.models import DeviceType, Gateway, Site
    from apps.users.choices import Role
    from apps.users.models import Organization, User
    from apps.users.services import user_set_role

    organization = Organization.objects.create(name="Bench", slug="bench")
    site_a = Site.objects.create(organization=organization, name="Bench A", timezone="UTC")
    Site.objects.create(organization=organization, name="Bench B", timezone="UTC")
    DeviceType.objects.create(organization=organization, name="Bench meter")
    Gateway.objects.create(site=site_a, uid="gw-bench-a", name="Bench gateway")
    admin = User.objects.create_user("bench-admin", organization=organization)
    user_set_role(user=admin, role=Role.ADMIN)
    return admin


def timed(label: str, function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - started
    log(f"{label}: {seconds:.2f} s")
    return seconds, result


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--baseline-rows", type=int, default=2_000)
    args = parser.parse_args()
    _django.setup()
    import psycopg
    from django.db import connection

    from apps.audit.models import AuditEvent
    from apps.devices import imports
    from apps.devices.models import Device

    scratch = ScratchDatabase(DATABASE, url=args.database_url)
    try:
        scratch.create()
        scratch.use()
        admin = seed()
        text = fleet_csv(args.rows)

        def import_all(mode):
            rows = imports.rows_from_csv(text)
            plan = imports.device_import_plan(user=admin, rows=rows, mode=mode)
            assert not plan.errors, plan.errors[:3]
            return imports.device_import_apply(plan=plan)

        import_seconds, summary = timed(f"import {args.rows}", lambda: import_all("create"))
        assert summary["created"] == args.rows, summary
        reimport_seconds, again = timed(f"re-import {args.rows}", lambda: import_all("upsert"))
        assert again["unchanged"] == args.rows, again

        Device.objects.all().delete()
        AuditEvent.objects.all().delete()
        baseline_rows = imports.rows_from_csv(fleet_csv(args.baseline_rows))
        plan = imports.device_import_plan(user=admin, rows=baseline_rows, mode="create")

        def save_each():
            for device in plan.creates:
                device.full_clean()
                device.save()

        baseline_seconds, _ = timed(f"per-row save {args.baseline_rows}", save_each)
        assert Device.objects.count() == args.baseline_rows

        with psycopg.connect(scratch.url) as db:
            facts = machine_facts(db, ("shared_buffers", "synchronous_commit"))
        import_rate = args.rows / import_seconds
        baseline_rate = args.baseline_rows / baseline_seconds
        result_print(
            {
                "benchmark": "device_import",
                "rows": args.rows,
                "import_seconds": round(import_seconds, 3),
                "import_rows_per_second": round(import_rate),
                "reimport_seconds": round(reimport_seconds, 3),
                "reimport_rows_per_second": round(args.rows / reimport_seconds),
                "per_row_save_rows": args.baseline_rows,
                "per_row_save_rows_per_second": round(baseline_rate),
                "speedup_vs_per_row_save": round(import_rate / baseline_rate, 1),
                "database": connection.settings_dict["NAME"],
                "machine": facts,
            },
            args.json_out,
        )
    finally:
        scratch.drop()


if __name__ == "__main__":
    main()
