"""The demo catalogue as data: the organization, sites, device types, devices and users ``seed_demo`` creates.

Kept apart from the command so tests and the simulator can read the same facts. Natural keys (organization slug,
site name, device type name, metric key, gateway and device uid, username) are what makes seeding idempotent.
"""

import datetime
from dataclasses import dataclass, field
from decimal import Decimal

from apps.devices.choices import MetricKind, MetricRole
from apps.users.choices import Role

# ---------------------------------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricSpec:
    key: str
    display_name: str
    unit: str
    kind: MetricKind
    min_value: float | None
    max_value: float | None
    role: MetricRole = MetricRole.NONE


@dataclass(frozen=True)
class DeviceTypeSpec:
    name: str
    description: str
    metrics: tuple[MetricSpec, ...]


@dataclass(frozen=True)
class SiteSpec:
    name: str
    timezone: str
    address: str
    latitude: float
    longitude: float
    emission_factor_kg_per_kwh: Decimal
    gateway_uid: str
    gateway_name: str


@dataclass(frozen=True)
class DeviceSpec:
    uid: str
    name: str
    site: str  # SiteSpec.name
    device_type: str  # DeviceTypeSpec.name
    behind_gateway: bool
    metadata: dict = field(default_factory=dict)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserSpec:
    username: str
    password: str  # for the local demo only: printed by seed_demo, documented in the README
    first_name: str
    role: Role
    sites: tuple[tuple[str, bool], ...] = ()  # (site name, may operate)

    @property
    def email(self) -> str:
        return f"{self.username}@acme.example"


# ---------------------------------------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------------------------------------

ORGANIZATION_NAME = "Acme Heating"
ORGANIZATION_SLUG = "acme"

SITES = (
    SiteSpec(
        name="Site A",
        timezone="Europe/Berlin",
        address="Am Heizwerk 1, 10115 Berlin, Germany",
        latitude=52.5321,
        longitude=13.3849,
        emission_factor_kg_per_kwh=Decimal("0.3800"),
        gateway_uid="gw-site-a",
        gateway_name="Gateway Site A",
    ),
    SiteSpec(
        name="Site B",
        timezone="Europe/Vienna",
        address="Wärmestraße 2, 1100 Wien, Austria",
        latitude=48.1740,
        longitude=16.3775,
        emission_factor_kg_per_kwh=Decimal("0.1200"),
        gateway_uid="gw-site-b",
        gateway_name="Gateway Site B",
    ),
)

_GAUGE, _TOTALIZER, _STATE = MetricKind.GAUGE, MetricKind.TOTALIZER, MetricKind.STATE

HEAT_PUMP = DeviceTypeSpec(
    name="Heat pump",
    description="Air-to-water heat pump, 6-16 kW heating output, reporting through its own IoT module.",
    metrics=(
        MetricSpec("supply_temp", "Supply temperature", "°C", _GAUGE, 0.0, 95.0),
        MetricSpec("return_temp", "Return temperature", "°C", _GAUGE, 0.0, 90.0),
        MetricSpec("outdoor_temp", "Outdoor temperature", "°C", _GAUGE, -40.0, 50.0, MetricRole.OUTDOOR_TEMPERATURE),
        MetricSpec("power_kw", "Electrical power", "kW", _GAUGE, 0.0, 30.0),
        MetricSpec("cop", "Coefficient of performance", "", _GAUGE, 0.0, 10.0),
        MetricSpec("compressor_on", "Compressor running", "", _STATE, 0.0, 1.0),
        MetricSpec("energy_kwh", "Electrical energy", "kWh", _TOTALIZER, 0.0, 1e9, MetricRole.ELECTRICAL_INPUT),
        MetricSpec("heat_kwh", "Heat delivered", "kWh", _TOTALIZER, 0.0, 1e9, MetricRole.HEAT_OUTPUT),
    ),
)
FLOW_METER = DeviceTypeSpec(
    name="Flow meter",
    description="Electromagnetic water flow meter on Modbus RTU, read by the site gateway.",
    metrics=(
        MetricSpec("flow_rate", "Flow rate", "m³/h", _GAUGE, 0.0, 100.0),
        MetricSpec("volume_m3", "Volume", "m³", _TOTALIZER, 0.0, 1e9),
        MetricSpec("water_temp", "Water temperature", "°C", _GAUGE, 0.0, 95.0),
    ),
)
ENERGY_METER = DeviceTypeSpec(
    name="Energy meter",
    description="Three-phase electricity meter on Modbus RTU, read by the site gateway.",
    metrics=(
        MetricSpec("active_power_kw", "Active power", "kW", _GAUGE, 0.0, 500.0),
        MetricSpec("voltage_l1", "Voltage L1", "V", _GAUGE, 0.0, 300.0),
        MetricSpec("current_l1", "Current L1", "A", _GAUGE, 0.0, 1000.0),
        MetricSpec("energy_import_kwh", "Energy imported", "kWh", _TOTALIZER, 0.0, 1e10),
    ),
)
DEVICE_TYPES = (HEAT_PUMP, FLOW_METER, ENERGY_METER)

# (uid prefix, device type, name, vendor and model, tags, behind the gateway, count per site A / site B)
_FLEET = (
    ("hp", HEAT_PUMP, "Heat pump", "Stiebel Eltron WPL 25 AC", ("heating",), False, (6, 5)),
    ("fm", FLOW_METER, "Flow meter", "Siemens SITRANS FM MAG 5000", ("water",), True, (3, 4)),
    ("em", ENERGY_METER, "Energy meter", "Janitza UMG 604-PRO", ("electricity",), True, (3, 3)),
)


def _fleet() -> tuple[DeviceSpec, ...]:
    devices = []
    for prefix, device_type, name, model, tags, behind_gateway, counts in _FLEET:
        for site, count in zip(SITES, counts, strict=True):
            letter = site.name[-1].lower()
            for number in range(1, count + 1):
                uid = f"{prefix}-{letter}-{number:03d}"
                devices.append(
                    DeviceSpec(
                        uid=uid,
                        name=f"{name} {letter.upper()}{number}",
                        site=site.name,
                        device_type=device_type.name,
                        behind_gateway=behind_gateway,
                        metadata={"model": model, "serial": f"SN-{uid.upper()}", "demo": True},
                        tags=(*tags, "demo"),
                    )
                )
    return tuple(sorted(devices, key=lambda device: device.uid))


DEVICES = _fleet()

USERS = (
    UserSpec("alice", "fieldwatch-alice", "Alice", Role.ADMIN),
    UserSpec("bob", "fieldwatch-bob", "Bob", Role.OPERATOR, sites=(("Site A", True),)),
    UserSpec("carol", "fieldwatch-carol", "Carol", Role.VIEWER, sites=(("Site B", False),)),
)


# Alert rules seeded per site for the heat pumps: the simulator's spikes (84-88 °C, 2-5 minutes) each open one
# alert that clears when the temperature falls back under the hysteresis bound; a silent heat pump raises another.
ALERT_RULES = (
    {
        "name": "Supply temperature too high",
        "device_type": "Heat pump",
        "fields": {
            "kind": "threshold",
            "severity": "major",
            "metric_key": "supply_temp",
            "operator": "gt",
            "threshold": 80.0,
            "clear_threshold": 75.0,
        },
    },
    {
        "name": "Flow rate jump",
        "device_type": "Flow meter",
        "fields": {
            "kind": "rate_of_change",
            "severity": "minor",
            "metric_key": "flow_rate",
            "rate_direction": "either",
            "rate_delta": 4.0,
            "rate_window": datetime.timedelta(minutes=1),
        },
    },
    {
        "name": "Heat pump silent",
        "device_type": "Heat pump",
        "fields": {"kind": "no_data", "severity": "major", "metric_key": "", "silence": datetime.timedelta(minutes=5)},
    },
)

# Every seeded rule escalates by this policy: at once to the on-call address (the development email backend prints
# the message in make run's console), again after 2 minutes if nobody acknowledged.
ESCALATION_POLICY = "Demo on-call"
ESCALATION_CHANNEL = {"name": "Demo on-call email", "email_to": "oncall@acme.example"}
ESCALATION_DELAYS = (datetime.timedelta(0), datetime.timedelta(minutes=2))
