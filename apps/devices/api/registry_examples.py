"""The OpenAPI document's examples for the registry's endpoints (apps/devices/api/registry_views.py)."""

SITE = {
    "id": 1,
    "name": "Site A",
    "timezone": "Europe/Berlin",
    "address": "Werkstraße 1, Kassel",
    "latitude": 51.31,
    "longitude": 9.48,
    "emission_factor_kg_per_kwh": "0.4000",
    "tariff_currency": "EUR",
    "tariff_flat_price": "0.3200",
    "tariff_bands": [{"from": "00:00", "to": "06:00", "price": 0.12}],
    "discovery_policy": "reject",
    "created_at": "2026-03-01T08:00:00Z",
}
SITE_CREATE = {"name": "Site C", "timezone": "Europe/Vienna", "address": "Hauptplatz 3, Graz"}

DEVICE_TYPE = {
    "id": 1,
    "name": "Heat pump",
    "description": "Air-to-water heat pump, Modbus TCP",
    "unknown_metric_policy": "strict",
    "offline_after": "00:05:00",
    "raw_retention_days": None,
    "payload_schema": {},
    "metrics": [
        {
            "key": "supply_temp",
            "display_name": "Supply temperature",
            "unit": "°C",
            "kind": "gauge",
            "min_value": -40.0,
            "max_value": 120.0,
        },
        {
            "key": "heat",
            "display_name": "Heat",
            "unit": "kWh",
            "kind": "totalizer",
            "min_value": 0.0,
            "max_value": None,
        },
    ],
}
DEVICE_TYPE_CREATE = {
    "name": "Flow meter",
    "offline_after": "00:15:00",
    "metrics": [{"key": "flow", "display_name": "Flow", "unit": "m³/h", "kind": "gauge", "min_value": 0}],
}

GATEWAY = {"id": 1, "uid": "gw-a-01", "name": "Plant room A", "site": 1, "created_at": "2026-03-01T08:00:00Z"}

DEVICE = {
    "uid": "hp-a-001",
    "name": "Heat pump A1",
    "site": 1,
    "device_type": 1,
    "gateway": "gw-a-01",
    "tags": ["heating"],
    "metadata": {"serial": "HP-2231-0042", "vendor": "Acme"},
    "is_active": True,
    "status": "online",
    "last_seen": "2026-03-30T09:59:58Z",
    "created_at": "2026-03-01T08:00:00Z",
    "latest": [
        {
            "metric": "supply_temp",
            "value": 41.2,
            "ts": 1774864798000,
            "unit": "°C",
            "display_name": "Supply temperature",
        }
    ],
}
DEVICE_CREATE = {
    "uid": "hp-a-002",
    "name": "Heat pump A2",
    "site": 1,
    "device_type": 1,
    "gateway": "gw-a-01",
    "tags": ["heating"],
    "metadata": {"serial": "HP-2231-0043"},
}
DEVICE_PAGE = {
    "next": "http://127.0.0.1:8000/api/v1/devices?cursor=cD1ocC1hLTAwMQ%3D%3D",
    "previous": None,
    "results": [DEVICE],
}

IMPORT_CSV = (
    "uid,name,site,type,gateway,tags,metadata\n"
    'hp-a-002,Heat pump A2,Site A,Heat pump,gw-a-01,heating,"{""serial"": ""HP-2231-0043""}"\n'
    "fm-a-001,Flow meter A1,Site A,Flow meter,,,\n"
)
IMPORT_JSON = [
    {
        "uid": "hp-a-002",
        "name": "Heat pump A2",
        "site": "Site A",
        "type": "Heat pump",
        "gateway": "gw-a-01",
        "tags": ["heating"],
        "metadata": {"serial": "HP-2231-0043"},
    }
]
IMPORT_OK = {"mode": "upsert", "created": 2, "updated": 0, "unchanged": 0, "errors": [], "dry_run": False}
IMPORT_ERRORS = {
    "mode": "create",
    "created": 0,
    "updated": 0,
    "unchanged": 0,
    "errors": [
        {"row": 2, "field": "type", "reason": "No device type named 'Flow metre' in the site's organization."},
        {"row": 7, "field": "uid", "reason": "Device id 'hp-a-002' is already on row 1."},
    ],
    "dry_run": False,
}
