"""Realistic telemetry for the demo: plain functions over plain data, no ORM and no MQTT, so they unit-test.

A device is simulated by a *profile* recognised from its metric keys (those of ``apps/devices/demo.py``): a heat
pump, a flow meter or an energy meter, each a small physical model driven by the site's local time of day and
season. Metrics a profile does not know get a smooth generic signal inside their plausible range, so device types
an admin adds are simulated too. Per-device state (totalizers, compressor cycle, slow noise) lives in a
``DeviceState`` the caller keeps; totalizers start from a value derived from the uid and the current time, chosen
so that a restarted simulator never reports less than before.

``Simulation`` strings it together: one reading per ``tick``, a fraction of them deliberately bad (the garbage
ingest validation must refuse), a fraction routed through the device's gateway in batches, and returns
``(topic, payload)`` pairs for the caller to publish.
"""

import datetime
import enum
import hashlib
import json
import math
import random
import struct
import zoneinfo
from collections import Counter
from dataclasses import dataclass, field

GAUGE, COUNTER, TOTALIZER, STATE = "gauge", "counter", "totalizer", "state"
HEAT_PUMP, FLOW_METER, ENERGY_METER, GENERIC = "heat_pump", "flow_meter", "energy_meter", "generic"

# The metric whose presence identifies a profile.
PROFILE_SIGNATURES = {"supply_temp": HEAT_PUMP, "flow_rate": FLOW_METER, "active_power_kw": ENERGY_METER}

# Totalizers start at (rate bound) x (hours since this instant + a per-uid offset), see ``totalizer_start``.
TOTALIZER_EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC).timestamp()
# Longest gap between two readings of a device that the models integrate over (a paused simulator).
MAX_STEP_SECONDS = 600.0
STANDBY_KW = 0.03
MIN_COP = 1.8
# A flow meter now and then sees a burst (a flushing valve opens): +5 m³/h for 1-3 minutes, which the seeded
# "flow rate jump" rule (over 4 m³/h within a minute) catches.
FLOW_BURST_M3H = 5.0
# Demo events: one heat pump goes quiet this often, for longer than the seeded 5-minute "silent" rule, then reports
# again; the first supply-temperature spike and the first silence come soon after the start, so a fresh `make run`
# shows alerts opening, escalating and clearing within minutes.
SILENCE_EVERY_S = 600.0
SILENCE_S = (360.0, 480.0)
FIRST_SPIKE_AFTER_S = 30.0
FIRST_SILENCE_AFTER_S = 60.0


# ---------------------------------------------------------------------------------------------------------------------
# Devices and their state
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    key: str
    kind: str = GAUGE
    min_value: float | None = None
    max_value: float | None = None
    unit: str = ""

    def contains(self, value: float) -> bool:
        return (self.min_value is None or value >= self.min_value) and (
            self.max_value is None or value <= self.max_value
        )

    def clamp(self, value: float) -> float:
        if self.min_value is not None:
            value = max(value, self.min_value)
        if self.max_value is not None:
            value = min(value, self.max_value)
        return value


@dataclass(frozen=True)
class SimDevice:
    """What the simulator needs of a device: its wire id, its type's metrics, its site's timezone, its gateway."""

    uid: str
    metrics: tuple[Metric, ...]
    timezone: str = "UTC"
    gateway_uid: str | None = None

    @property
    def profile(self) -> str:
        keys = {metric.key for metric in self.metrics}
        return next((profile for key, profile in PROFILE_SIGNATURES.items() if key in keys), GENERIC)

    def metric(self, key: str) -> Metric | None:
        return next((metric for metric in self.metrics if metric.key == key), None)


@dataclass
class DeviceState:
    """What a device remembers between readings. ``walks`` are slow mean-reverting noises, one per quantity."""

    rng: random.Random
    last_ts_ms: int
    totals: dict[str, float] = field(default_factory=dict)
    walks: dict[str, float] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    compressor_on: bool = False
    compressor_until: float = 0.0  # epoch seconds of the next compressor switch
    supply_temp: float | None = None
    overheat_until: float = 0.0  # epoch seconds; a supply temperature spike for alert demos runs until then
    burst_until: float = 0.0  # epoch seconds; a flow meter's burst runs until then


def uid_fraction(uid: str, salt: str = "") -> float:
    """A stable number in [0, 1) for ``uid``: per-device constants that survive restarts (unlike ``hash()``)."""
    digest = hashlib.sha256(f"{uid}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _rated_heat_kw(uid: str) -> float:
    return 6.0 + 10.0 * uid_fraction(uid, "rated_heat_kw")


def _nominal_flow(uid: str) -> float:
    return 2.0 + 8.0 * uid_fraction(uid, "nominal_flow")


def _base_load_kw(uid: str) -> float:
    return 8.0 + 30.0 * uid_fraction(uid, "base_load_kw")


def totalizer_rate_bound(device: SimDevice, key: str) -> float:
    """The most a totalizer can grow per hour in this simulation (units of the metric per hour)."""
    if device.profile == HEAT_PUMP and key == "energy_kwh":
        return _rated_heat_kw(device.uid) / MIN_COP
    if device.profile == HEAT_PUMP and key == "heat_kwh":
        return _rated_heat_kw(device.uid) * 1.2
    if device.profile == FLOW_METER and key == "volume_m3":
        return _nominal_flow(device.uid) * 1.3
    if device.profile == ENERGY_METER and key == "energy_import_kwh":
        return _base_load_kw(device.uid) * 1.2
    return 2.0


def totalizer_start(device: SimDevice, key: str, ts_ms: int) -> float:
    """Where a totalizer stands at ``ts_ms`` when the simulator starts.

    It grows with time at the rate bound, faster than the simulation ever adds to it, so a restart lands at or
    above the last value sent: a meter that kept counting while the simulator was down, never one that went back.
    """
    hours = max(0.0, ts_ms / 1000 - TOTALIZER_EPOCH) / 3600
    offset_hours = 2000.0 * uid_fraction(device.uid, key)
    return round(totalizer_rate_bound(device, key) * (hours + offset_hours), 3)


def state_initial(device: SimDevice, *, ts_ms: int, seed: int | str | None = None) -> DeviceState:
    """The state of ``device`` when the simulator starts at ``ts_ms``; deterministic for a given seed."""
    rng = random.Random(f"{seed}:{device.uid}") if seed is not None else random.Random()
    state = DeviceState(rng=rng, last_ts_ms=ts_ms)
    for metric in device.metrics:
        if metric.kind in (TOTALIZER, COUNTER):
            state.totals[metric.key] = metric.clamp(totalizer_start(device, metric.key, ts_ms))
    return state


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------------


def local_time(ts_ms: int, timezone: str) -> tuple[float, int, int]:
    """(hour of day as a float, day of year, weekday 0=Monday) at the site."""
    local = datetime.datetime.fromtimestamp(ts_ms / 1000, zoneinfo.ZoneInfo(timezone))
    return local.hour + local.minute / 60 + local.second / 3600, local.timetuple().tm_yday, local.weekday()


def outdoor_temperature(hour: float, day_of_year: int) -> float:
    """Central European climate: about -1 °C in mid-January, 20 °C in mid-July, coldest at 03:00, warmest at 15:00."""
    seasonal = 9.5 - 10.5 * math.cos(2 * math.pi * (day_of_year - 20) / 365.25)
    daily = 4.5 * math.sin(2 * math.pi * (hour - 9) / 24)
    return seasonal + daily


def water_demand(hour: float) -> float:
    """Share of a flow meter's nominal flow in use: a morning peak, a smaller one at noon, an evening one."""
    morning = math.exp(-(((hour - 7.0) / 1.2) ** 2))
    noon = 0.45 * math.exp(-(((hour - 12.5) / 1.5) ** 2))
    evening = 0.8 * math.exp(-(((hour - 19.5) / 1.8) ** 2))
    return min(1.0, 0.05 + morning + noon + evening)


def building_occupancy(hour: float, weekday: int) -> float:
    """0 at night, 1 in office hours (07:00-19:00 with soft edges), halved at weekends."""
    occupied = 1 / (1 + math.exp(-1.5 * (hour - 7))) / (1 + math.exp(1.5 * (hour - 19)))
    return occupied * (0.5 if weekday >= 5 else 1.0)


def cop_estimate(supply_temp: float, outdoor_temp: float) -> float:
    """COP at 45 % of the Carnot limit between outdoor air and supply water, within what real units reach."""
    lift = max(supply_temp - outdoor_temp, 10.0)
    return min(max(0.45 * (supply_temp + 273.15) / lift, MIN_COP), 6.5)


def _walk(state: DeviceState, name: str, *, std: float, tau: float, dt: float) -> float:
    """Ornstein-Uhlenbeck noise with stationary deviation ``std`` and correlation time ``tau`` seconds."""
    value = state.walks.get(name)
    if value is None:
        value = state.rng.gauss(0, std)
    else:
        decay = math.exp(-dt / tau)
        value = value * decay + state.rng.gauss(0, std * math.sqrt(1 - decay**2))
    state.walks[name] = value
    return value


def _approach(current: float, target: float, *, tau: float, dt: float) -> float:
    return target + (current - target) * math.exp(-dt / tau)


# ---------------------------------------------------------------------------------------------------------------------
# Profiles: each returns every quantity it models; the caller keeps those the device type defines
# ---------------------------------------------------------------------------------------------------------------------


def _heat_pump(device, state, *, ts, dt, hour, day, weekday, spike_probability) -> dict[str, float]:
    rng = state.rng
    outdoor = outdoor_temperature(hour, day) + _walk(state, "outdoor", std=1.0, tau=1800, dt=dt)
    demand = min(max((16 - outdoor) / 26, 0.15), 1.0)  # share of time the compressor needs to run

    if ts >= state.overheat_until and rng.random() < spike_probability:
        state.overheat_until = ts + rng.uniform(120, 300)
    overheat = ts < state.overheat_until

    if state.supply_temp is None:  # first reading: somewhere inside a compressor cycle
        state.compressor_on = rng.random() < demand
        state.compressor_until = ts + rng.uniform(0, 600)
        state.supply_temp = 30 + 0.6 * (16 - outdoor) if state.compressor_on else 25.0
    if ts >= state.compressor_until:
        state.compressor_on = not state.compressor_on
        on_seconds = rng.uniform(360, 900)
        period = on_seconds if state.compressor_on else on_seconds * (1 - demand) / demand
        state.compressor_until = ts + min(max(period, 60), 3600)
    running = state.compressor_on or overheat

    setpoint = min(max(28 + 0.75 * (16 - outdoor), 28), 55) + 2.5 * math.sin(2 * math.pi * (hour - 5) / 24)
    if overheat:
        target, tau = 84 + 4 * rng.random(), 20
    elif running:
        target, tau = setpoint + 1.5, 180
    else:
        target, tau = 24.0, 900
    state.supply_temp = _approach(state.supply_temp, target, tau=tau, dt=dt)
    supply = state.supply_temp + rng.gauss(0, 0.15)

    modulation = min(max(0.4 + 0.6 * demand, 0.4), 1.0)
    cop = cop_estimate(supply, outdoor)
    power = _rated_heat_kw(device.uid) * modulation / cop if running else STANDBY_KW
    spread = 4 + 2 * modulation if running else 1.0
    state.totals["energy_kwh"] = state.totals.get("energy_kwh", 0.0) + power * dt / 3600
    # The heat meter: what the compressor delivers (electricity times COP), nothing in standby.
    heat = power * cop if running else 0.0
    state.totals["heat_kwh"] = state.totals.get("heat_kwh", 0.0) + heat * dt / 3600

    values = {
        "supply_temp": round(supply, 2),
        "return_temp": round(supply - spread + rng.gauss(0, 0.15), 2),
        "outdoor_temp": round(outdoor + rng.gauss(0, 0.1), 2),
        "power_kw": round(power * (1 + rng.gauss(0, 0.01)) if running else power, 3),
        "compressor_on": int(running),
        "energy_kwh": round(state.totals["energy_kwh"], 3),
        "heat_kwh": round(state.totals["heat_kwh"], 3),
    }
    if running:  # a COP means nothing while the compressor stands still; real controllers send none
        values["cop"] = round(cop + rng.gauss(0, 0.05), 2)
    return values


def _flow_meter(device, state, *, ts, dt, hour, day, weekday, spike_probability) -> dict[str, float]:
    nominal = _nominal_flow(device.uid)
    flow = nominal * water_demand(hour) * (1 + _walk(state, "flow", std=0.15, tau=120, dt=dt))
    flow = min(max(flow, 0.0), nominal * 1.3)
    if flow < 0.03 * nominal:  # nobody draws water: the meter reads exactly zero
        flow = 0.0
    if ts >= state.burst_until and state.rng.random() < spike_probability:
        state.burst_until = ts + state.rng.uniform(60, 180)
    if ts < state.burst_until:
        flow += FLOW_BURST_M3H
    state.totals["volume_m3"] = state.totals.get("volume_m3", 0.0) + flow * dt / 3600
    seasonal = -math.cos(2 * math.pi * (day - 20) / 365.25)
    return {
        "flow_rate": round(flow, 3),
        "volume_m3": round(state.totals["volume_m3"], 3),
        "water_temp": round(11 + 3 * seasonal + _walk(state, "water", std=0.3, tau=900, dt=dt), 2),
    }


def _energy_meter(device, state, *, ts, dt, hour, day, weekday, spike_probability) -> dict[str, float]:
    base = _base_load_kw(device.uid)
    load = base * (0.35 + 0.65 * building_occupancy(hour, weekday))
    power = min(max(load * (1 + _walk(state, "load", std=0.08, tau=300, dt=dt)), 0.1), base * 1.2)
    voltage = min(max(230 + _walk(state, "voltage", std=2.5, tau=300, dt=dt) + state.rng.gauss(0, 0.3), 207), 253)
    current = power * 1000 / (3 * voltage * 0.95)  # one phase of a balanced three-phase load, power factor 0.95
    state.totals["energy_import_kwh"] = state.totals.get("energy_import_kwh", 0.0) + power * dt / 3600
    return {
        "active_power_kw": round(power, 3),
        "voltage_l1": round(voltage, 1),
        "current_l1": round(current, 2),
        "energy_import_kwh": round(state.totals["energy_import_kwh"], 3),
    }


PROFILES = {HEAT_PUMP: _heat_pump, FLOW_METER: _flow_meter, ENERGY_METER: _energy_meter}
# What each profile models, reported or (a heat pump's COP with the compressor off) deliberately withheld.
PROFILE_KEYS = {
    HEAT_PUMP: {"supply_temp", "return_temp", "outdoor_temp", "power_kw", "cop", "compressor_on", "energy_kwh"},
    FLOW_METER: {"flow_rate", "volume_m3", "water_temp"},
    ENERGY_METER: {"active_power_kw", "voltage_l1", "current_l1", "energy_import_kwh"},
}


def _generic(metric: Metric, state: DeviceState, *, dt: float, hour: float) -> float:
    """A value for a metric no profile models: a daily swing plus noise inside the range, or a slow counter."""
    if metric.kind in (TOTALIZER, COUNTER):
        state.totals[metric.key] = state.totals.get(metric.key, 0.0) + state.rng.uniform(0, 2) * dt / 3600
        return round(state.totals[metric.key], 3)
    if metric.kind == STATE:
        current = state.states.get(metric.key, state.rng.randint(0, 1))
        if state.rng.random() < 0.02:
            current = 1 - current
        state.states[metric.key] = current
        return current
    low = metric.min_value if metric.min_value is not None else 0.0
    high = metric.max_value if metric.max_value is not None else low + 100.0
    middle, half = (low + high) / 2, (high - low) / 2
    phase = 2 * math.pi * uid_fraction(metric.key)
    swing = 0.3 * math.sin(2 * math.pi * hour / 24 + phase) + _walk(state, metric.key, std=0.05, tau=600, dt=dt)
    return round(middle + half * swing, 3)


def reading_next(
    device: SimDevice, state: DeviceState, *, ts_ms: int, spike_probability: float = 0.0
) -> tuple[int, dict[str, float | int]]:
    """The next good reading of ``device`` at ``ts_ms``: ``(ts_ms, values)``, advancing ``state``.

    Every value lies inside its metric's plausible range and totalizers never decrease. Timestamps are made
    strictly increasing per device (a repeated timestamp would be dropped by ingest as a duplicate). With
    ``spike_probability`` a heat pump may start a 2-5 minute supply temperature excursion above 80 °C: a valid
    reading that alert rules should catch.
    """
    ts_ms = max(int(ts_ms), state.last_ts_ms + 1)
    dt = min(max((ts_ms - state.last_ts_ms) / 1000, 0.0), MAX_STEP_SECONDS)
    state.last_ts_ms = ts_ms
    hour, day, weekday = local_time(ts_ms, device.timezone)

    modelled = {}
    profile = PROFILES.get(device.profile)
    if profile is not None:
        modelled = profile(
            device,
            state,
            ts=ts_ms / 1000,
            dt=dt,
            hour=hour,
            day=day,
            weekday=weekday,
            spike_probability=spike_probability,
        )
    values = {}
    for metric in device.metrics:
        if metric.key in modelled:
            value = modelled[metric.key]
        elif profile is not None and metric.key in PROFILE_KEYS[device.profile]:
            continue  # modelled but withheld this time (a heat pump's COP while the compressor is off)
        else:
            value = _generic(metric, state, dt=dt, hour=hour)
        values[metric.key] = value if isinstance(value, int) else metric.clamp(value)
    return ts_ms, values


# ---------------------------------------------------------------------------------------------------------------------
# Bad readings
# ---------------------------------------------------------------------------------------------------------------------


class BadKind(enum.StrEnum):
    """Faults seen in the field, each of which ingest validation must refuse (and dead-letter)."""

    WORD_ORDER = "word_order"  # a Modbus float read with its 16-bit words swapped: 3.9e-35 or 1.2e38 for 21.5
    OUT_OF_RANGE = "out_of_range"  # a sensor fault: 999 °C
    NON_NUMERIC = "non_numeric"  # a string where a number belongs: "ERR", "12,5"
    UNKNOWN_METRIC = "unknown_metric"  # a key the device type does not define
    UNKNOWN_DEVICE = "unknown_device"  # a uid nobody registered


UNKNOWN_METRIC_KEYS = ("fan_speed_rpm", "modbus_errors", "debug_counter", "firmware_build")
NON_NUMERIC_VALUES = ("ERR", "n/a", "--", "12,5", "overflow")


def word_swapped(value: float) -> float:
    """``value`` as a big-endian float32 with its two 16-bit registers swapped, as a misconfigured reader sees it."""
    raw = struct.pack(">f", value)
    return struct.unpack(">f", raw[2:] + raw[:2])[0]


def _word_order_garbage(metric: Metric, value: float, rng: random.Random) -> float:
    garbage = word_swapped(value)
    if not math.isfinite(garbage) or metric.contains(garbage):
        # Swapped small numbers become tiny ones (~1e-40) that pass a range check: real, but nothing for the demo
        # to catch. Use the other face of the same fault, a huge value such as 1.2e38.
        garbage = rng.uniform(1e37, 3.4e38)
    return float(f"{garbage:.7g}")  # float32 precision


def bad_reading(
    device: SimDevice, values: dict, rng: random.Random, kind: BadKind | None = None
) -> tuple[str, dict, BadKind]:
    """Spoil a good reading: return ``(uid, values, kind)`` with one fault of ``kind`` (random when None)."""
    kind = BadKind(kind) if kind is not None else rng.choice(list(BadKind))
    values = dict(values)
    numeric = [metric for metric in device.metrics if metric.key in values and metric.kind != STATE]
    if kind in (BadKind.WORD_ORDER, BadKind.OUT_OF_RANGE) and not any(
        metric.max_value is not None or metric.min_value is not None for metric in numeric
    ):
        kind = BadKind.NON_NUMERIC  # nothing here has a range to violate
    if kind in (BadKind.WORD_ORDER, BadKind.NON_NUMERIC) and not numeric:
        kind = BadKind.UNKNOWN_METRIC

    uid = device.uid
    if kind == BadKind.WORD_ORDER:
        metric = rng.choice(
            [metric for metric in numeric if metric.min_value is not None or metric.max_value is not None]
        )
        values[metric.key] = _word_order_garbage(metric, float(values[metric.key]), rng)
    elif kind == BadKind.OUT_OF_RANGE:
        bounded = [metric for metric in numeric if metric.max_value is not None or metric.min_value is not None]
        temperatures = [metric for metric in bounded if metric.unit == "°C"]
        metric = rng.choice(temperatures or bounded)
        if metric.unit == "°C" and not metric.contains(999.0):
            values[metric.key] = 999.0
        elif metric.max_value is not None:
            values[metric.key] = float(abs(metric.max_value) * 10 + 1000)
        else:
            values[metric.key] = float(metric.min_value - abs(metric.min_value) * 10 - 1000)
    elif kind == BadKind.NON_NUMERIC:
        values[rng.choice(numeric).key] = rng.choice(NON_NUMERIC_VALUES)
    elif kind == BadKind.UNKNOWN_METRIC:
        known = {metric.key for metric in device.metrics}
        values[rng.choice([key for key in UNKNOWN_METRIC_KEYS if key not in known])] = round(rng.uniform(0, 100), 1)
    else:
        # The catalogue has no site "x", so "hp-x-042" is never registered.
        uid = f"{device.uid.split('-', 1)[0]}-x-{rng.randint(1, 999):03d}"
    return uid, values, kind


# ---------------------------------------------------------------------------------------------------------------------
# Messages and the simulation loop's logic
# ---------------------------------------------------------------------------------------------------------------------


def device_topic(prefix: str, uid: str) -> str:
    return f"{prefix}/devices/{uid}/telemetry"


def gateway_topic(prefix: str, gateway_uid: str) -> str:
    return f"{prefix}/gateways/{gateway_uid}/telemetry"


def _encode(payload) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def device_message(prefix: str, uid: str, ts_ms: int, values: dict) -> tuple[str, bytes]:
    """One reading on the device's own topic: ``{"ts": <epoch ms>, "values": {...}}``."""
    return device_topic(prefix, uid), _encode({"ts": ts_ms, "values": values})


def gateway_message(prefix: str, gateway_uid: str, batch: dict[str, list[dict]]) -> tuple[str, bytes]:
    """Readings of several devices on the gateway's topic: ``{"<device uid>": [{"ts": ..., "values": {...}}]}``."""
    return gateway_topic(prefix, gateway_uid), _encode(batch)


def devices_pick(devices: list[SimDevice], count: int | None) -> list[SimDevice]:
    """The first ``count`` devices taking profiles in turn: three devices are one of each kind, not three heat pumps."""
    if count is None or count >= len(devices):
        return list(devices)
    groups: dict[str, list[SimDevice]] = {}
    for device in sorted(devices, key=lambda device: device.uid):
        groups.setdefault(device.profile, []).append(device)
    picked, queues = [], [list(group) for _, group in sorted(groups.items())]
    while len(picked) < count:
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked


class Simulation:
    """One reading per ``tick`` for the devices in turn; returns the messages due, publishing is the caller's job.

    Readings of devices behind a gateway go, at ``gateway_fraction``, into that gateway's batch instead of the
    device's topic; a batch is sent when it holds ``gateway_batch_size`` readings or its oldest is
    ``gateway_max_age_s`` old, and by ``flush`` at the end. Deterministic for a given ``seed`` and timestamps.
    """

    def __init__(
        self,
        devices: list[SimDevice],
        *,
        prefix: str,
        seed: int | None = None,
        bad_fraction: float = 0.02,
        gateway_fraction: float = 0.3,
        spike_probability: float = 0.0005,
        gateway_batch_size: int = 6,
        gateway_max_age_s: float = 5.0,
        silence_every_s: float = SILENCE_EVERY_S,
    ):
        if not devices:
            raise ValueError("Nothing to simulate: no devices.")
        self.devices = list(devices)
        self.prefix = prefix
        self.seed = seed
        self.bad_fraction = bad_fraction
        self.gateway_fraction = gateway_fraction
        self.spike_probability = spike_probability
        self.gateway_batch_size = gateway_batch_size
        self.gateway_max_age_ms = gateway_max_age_s * 1000
        self.rng = random.Random(seed)  # routing and faults; device physics has one generator per device
        self.states: dict[str, DeviceState] = {}
        self.batches: dict[str, tuple[int, dict[str, list[dict]]]] = {}  # gateway uid -> (opened at, batch)
        self.readings = 0
        self.via_gateway = 0
        self.bad: Counter[BadKind] = Counter()
        self._next = 0
        # Demo events (heat pumps only: the seeded rules are theirs). 0 disables the silences.
        self.silence_every_ms = silence_every_s * 1000
        self.silenced = 0  # readings not sent because their device was silent
        self.silences: list[tuple[str, int, int]] = []  # (uid, from ms, until ms)
        self._pumps = [device for device in self.devices if device.profile == HEAT_PUMP]
        self._started_ms: int | None = None
        self._first_spike_due = spike_probability > 0 and bool(self._pumps)

    def _state(self, device: SimDevice, now_ms: int) -> DeviceState:
        state = self.states.get(device.uid)
        if state is None:
            # As if the previous reading were a second ago, so the first one integrates a plausible step.
            state = self.states[device.uid] = state_initial(device, ts_ms=now_ms - 1000, seed=self.seed)
        return state

    def _demo_events(self, now_ms: int) -> None:
        """Start the first spike soon after the start, and a silence every ``silence_every_ms`` (heat pumps in
        turn)."""
        if self._started_ms is None:
            self._started_ms = now_ms
        elapsed_ms = now_ms - self._started_ms
        if self._first_spike_due and elapsed_ms >= FIRST_SPIKE_AFTER_S * 1000:
            self._first_spike_due = False
            self._state(self._pumps[0], now_ms).overheat_until = now_ms / 1000 + self.rng.uniform(150, 240)
        if not self.silence_every_ms or not self._pumps:
            return
        due = FIRST_SILENCE_AFTER_S * 1000 + len(self.silences) * self.silence_every_ms
        if elapsed_ms >= due:
            pump = self._pumps[(len(self.silences) + 1) % len(self._pumps)]
            until = now_ms + int(self.rng.uniform(*SILENCE_S) * 1000)
            self.silences.append((pump.uid, now_ms, until))

    def silent(self, uid: str, now_ms: int) -> bool:
        # Silences never overlap (each is shorter than the interval between them): only the latest can be running.
        return any(silent_uid == uid and start <= now_ms < until for silent_uid, start, until in self.silences[-1:])

    def tick(self, now_ms: int) -> list[tuple[str, bytes]]:
        device = self.devices[self._next % len(self.devices)]
        self._next += 1
        self._demo_events(now_ms)
        if self.silent(device.uid, now_ms):
            self.silenced += 1
            return self._old_batches(now_ms)
        state = self._state(device, now_ms)
        ts_ms, values = reading_next(device, state, ts_ms=now_ms, spike_probability=self.spike_probability)
        self.readings += 1

        uid = device.uid
        if self.rng.random() < self.bad_fraction:
            uid, values, kind = bad_reading(device, values, self.rng)
            self.bad[kind] += 1

        messages = []
        if device.gateway_uid and self.rng.random() < self.gateway_fraction:
            self.via_gateway += 1
            _, batch = self.batches.setdefault(device.gateway_uid, (now_ms, {}))
            batch.setdefault(uid, []).append({"ts": ts_ms, "values": values})
            if sum(len(records) for records in batch.values()) >= self.gateway_batch_size:
                messages.append(self._flush_gateway(device.gateway_uid))
        else:
            messages.append(device_message(self.prefix, uid, ts_ms, values))
        return messages + self._old_batches(now_ms)

    def _old_batches(self, now_ms: int) -> list[tuple[str, bytes]]:
        return [
            self._flush_gateway(gateway_uid)
            for gateway_uid, (opened_at, _) in list(self.batches.items())
            if now_ms - opened_at >= self.gateway_max_age_ms
        ]

    def flush(self) -> list[tuple[str, bytes]]:
        """The gateway batches still open (at shutdown)."""
        return [self._flush_gateway(gateway_uid) for gateway_uid in list(self.batches)]

    def _flush_gateway(self, gateway_uid: str) -> tuple[str, bytes]:
        _, batch = self.batches.pop(gateway_uid)
        return gateway_message(self.prefix, gateway_uid, batch)
