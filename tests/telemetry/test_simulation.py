import datetime
import io
import itertools
import json
import random
import re
import threading
import time
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from apps.core.mqtt import broker_address, listener_broker_address, mqtt_client
from apps.devices import demo
from apps.devices.broker_auth import mqtt_credential_issue
from apps.devices.models import Device
from apps.telemetry import simulation as sim
from tests.support.broker import Broker

SITE_GATEWAYS = {site.name: site.gateway_uid for site in demo.SITES}
SITE_TIMEZONES = {site.name: site.timezone for site in demo.SITES}
TYPES = {device_type.name: device_type for device_type in demo.DEVICE_TYPES}
WINTER_MORNING = int(datetime.datetime(2025, 1, 15, 5, 0, tzinfo=datetime.UTC).timestamp() * 1000)
SUMMER_NOON = int(datetime.datetime(2025, 7, 15, 11, 0, tzinfo=datetime.UTC).timestamp() * 1000)


def demo_devices() -> list[sim.SimDevice]:
    """The demo catalogue as the simulate command would load it from the database."""
    return [
        sim.SimDevice(
            uid=spec.uid,
            metrics=tuple(
                sim.Metric(metric.key, str(metric.kind), metric.min_value, metric.max_value, metric.unit)
                for metric in TYPES[spec.device_type].metrics
            ),
            timezone=SITE_TIMEZONES[spec.site],
            gateway_uid=SITE_GATEWAYS[spec.site] if spec.behind_gateway else None,
        )
        for spec in demo.DEVICES
    ]


def one_of_each_profile() -> dict[str, sim.SimDevice]:
    devices = {}
    for device in demo_devices():
        devices.setdefault(device.profile, device)
    return devices


def run(device, *, start_ms, steps, step_s, seed=1, spike_probability=0.0):
    state = sim.state_initial(device, ts_ms=start_ms, seed=seed)
    return [
        sim.reading_next(device, state, ts_ms=start_ms + i * int(step_s * 1000), spike_probability=spike_probability)
        for i in range(1, steps + 1)
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Good readings
# ---------------------------------------------------------------------------------------------------------------------


def test_every_demo_device_type_has_a_physical_profile():
    assert {device.profile for device in demo_devices()} == {sim.HEAT_PUMP, sim.FLOW_METER, sim.ENERGY_METER}


@pytest.mark.parametrize("start_ms", [WINTER_MORNING, SUMMER_NOON], ids=["winter", "summer"])
def test_good_readings_stay_within_the_plausible_range(start_ms):
    for device in demo_devices():
        metrics = {metric.key: metric for metric in device.metrics}
        # Two days in 5-minute steps, spikes included: they are valid readings too.
        for _, values in run(device, start_ms=start_ms, steps=576, step_s=300, spike_probability=0.02):
            assert values, device.uid
            for key, value in values.items():
                assert isinstance(value, int | float) and not isinstance(value, bool), (device.uid, key, value)
                assert metrics[key].contains(value), (device.uid, key, value)


def test_totalizers_never_decrease_across_steps_and_restarts():
    for device in one_of_each_profile().values():
        totalizers = [metric.key for metric in device.metrics if metric.kind == sim.TOTALIZER]
        readings = run(device, start_ms=WINTER_MORNING, steps=2000, step_s=7)
        # A restart an hour later starts from the uid-derived value: never below what was last sent.
        restart_ms = readings[-1][0] + 3_600_000
        readings += run(device, start_ms=restart_ms, steps=50, step_s=7, seed=2)
        for key in totalizers:
            series = [values[key] for _, values in readings]
            assert all(later >= earlier for earlier, later in itertools.pairwise(series)), key
            assert series[-1] > series[0], key


def test_timestamps_strictly_increase_even_when_the_clock_repeats():
    device = one_of_each_profile()[sim.FLOW_METER]
    state = sim.state_initial(device, ts_ms=WINTER_MORNING, seed=1)
    stamps = [sim.reading_next(device, state, ts_ms=WINTER_MORNING + 1000)[0] for _ in range(3)]
    assert stamps == [WINTER_MORNING + 1000, WINTER_MORNING + 1001, WINTER_MORNING + 1002]


def test_heat_pump_power_and_cop_follow_the_compressor():
    device = one_of_each_profile()[sim.HEAT_PUMP]
    readings = [values for _, values in run(device, start_ms=WINTER_MORNING, steps=1500, step_s=10)]
    running = [values for values in readings if values["compressor_on"] == 1]
    idle = [values for values in readings if values["compressor_on"] == 0]
    assert running and idle  # it cycles
    assert all(values["power_kw"] == sim.STANDBY_KW and "cop" not in values for values in idle)
    assert all(values["power_kw"] > 0.3 and sim.MIN_COP - 0.3 <= values["cop"] <= 6.8 for values in running)
    assert all(values["return_temp"] < values["supply_temp"] + 1 for values in readings)


def test_cop_drops_as_it_gets_colder():
    assert sim.cop_estimate(35, 10) > sim.cop_estimate(35, 0) > sim.cop_estimate(35, -10) >= sim.MIN_COP
    assert sim.cop_estimate(55, 0) < sim.cop_estimate(35, 0)


def test_daily_profiles_have_their_peaks_where_people_expect_them():
    assert sim.outdoor_temperature(15, 100) > sim.outdoor_temperature(3, 100)
    assert sim.outdoor_temperature(12, 200) > sim.outdoor_temperature(12, 20) + 15  # July vs January
    assert sim.water_demand(7) > 5 * sim.water_demand(3)
    assert sim.building_occupancy(11, 2) > 0.9 > 0.1 > sim.building_occupancy(2, 2)
    assert sim.building_occupancy(11, 6) < sim.building_occupancy(11, 2)


def test_spike_lifts_the_supply_temperature_above_80_within_its_range():
    device = one_of_each_profile()[sim.HEAT_PUMP]
    readings = run(device, start_ms=SUMMER_NOON, steps=30, step_s=5, spike_probability=1.0)
    supply = [values["supply_temp"] for _, values in readings]
    assert max(supply) > 80
    assert max(supply) <= device.metric("supply_temp").max_value


def test_no_spike_without_spike_probability():
    device = one_of_each_profile()[sim.HEAT_PUMP]
    readings = run(device, start_ms=WINTER_MORNING, steps=2000, step_s=5)
    assert max(values["supply_temp"] for _, values in readings) < 70


def test_metrics_no_profile_knows_get_values_inside_their_range():
    device = sim.SimDevice(
        uid="boiler-001",
        metrics=(
            sim.Metric("pressure_bar", sim.GAUGE, 0.5, 3.0, "bar"),
            sim.Metric("burner_on", sim.STATE, 0, 1),
            sim.Metric("starts", sim.COUNTER, 0, None),
            sim.Metric("unbounded", sim.GAUGE),
        ),
    )
    assert device.profile == sim.GENERIC
    readings = [values for _, values in run(device, start_ms=WINTER_MORNING, steps=500, step_s=30)]
    assert all(0.5 <= values["pressure_bar"] <= 3.0 and values["burner_on"] in (0, 1) for values in readings)
    starts = [values["starts"] for values in readings]
    assert starts == sorted(starts)


# ---------------------------------------------------------------------------------------------------------------------
# Bad readings
# ---------------------------------------------------------------------------------------------------------------------


def test_word_swap_is_the_modbus_register_order_mistake():
    assert sim.word_swapped(1.23) == pytest.approx(4.0666e29, rel=1e-4)
    assert sim.word_swapped(21.5) == pytest.approx(2.3559e-41, rel=1e-3)
    assert sim.word_swapped(sim.word_swapped(1.5)) == 1.5


@pytest.mark.parametrize("profile", [sim.HEAT_PUMP, sim.FLOW_METER, sim.ENERGY_METER])
@pytest.mark.parametrize("kind", list(sim.BadKind))
def test_forced_bad_kind_produces_that_fault(profile, kind):
    device = one_of_each_profile()[profile]
    metrics = {metric.key: metric for metric in device.metrics}
    _, good = run(device, start_ms=WINTER_MORNING, steps=1, step_s=1)[0]
    known_uids = {spec.uid for spec in demo.DEVICES}

    uid, bad, produced = sim.bad_reading(device, good, random.Random(3), kind)

    assert produced == kind
    changed = {key for key in bad if bad[key] != good.get(key)}
    if kind == sim.BadKind.UNKNOWN_DEVICE:
        assert uid not in known_uids and re.fullmatch(r"[a-z]{2}-x-\d{3}", uid)
        assert bad == good
        return
    assert uid == device.uid and len(changed) == 1
    key = changed.pop()
    if kind == sim.BadKind.WORD_ORDER:
        assert isinstance(bad[key], float) and not metrics[key].contains(bad[key])
    elif kind == sim.BadKind.OUT_OF_RANGE:
        assert not metrics[key].contains(bad[key])
        if metrics[key].unit == "°C":
            assert bad[key] == 999.0
    elif kind == sim.BadKind.NON_NUMERIC:
        assert isinstance(bad[key], str)
    elif kind == sim.BadKind.UNKNOWN_METRIC:
        assert key not in metrics


def test_random_bad_kinds_cover_every_fault():
    device = one_of_each_profile()[sim.HEAT_PUMP]
    _, good = run(device, start_ms=WINTER_MORNING, steps=1, step_s=1)[0]
    rng = random.Random(5)
    assert {sim.bad_reading(device, good, rng)[2] for _ in range(200)} == set(sim.BadKind)


def test_bad_fraction_spoils_about_that_share():
    simulation = sim.Simulation(demo_devices(), prefix="p", seed=4, bad_fraction=0.1)
    for i in range(2000):
        simulation.tick(WINTER_MORNING + i * 50)
    assert 140 < sum(simulation.bad.values()) < 260
    assert set(simulation.bad) == set(sim.BadKind)


# ---------------------------------------------------------------------------------------------------------------------
# Messages and the simulation
# ---------------------------------------------------------------------------------------------------------------------


def collect(simulation, ticks, start_ms=WINTER_MORNING, step_ms=50):
    messages = []
    for i in range(ticks):
        messages += simulation.tick(start_ms + i * step_ms)
    return messages + simulation.flush()


def test_same_seed_same_messages():
    first = collect(sim.Simulation(demo_devices(), prefix="p", seed=7, bad_fraction=0.2), 300)
    again = collect(sim.Simulation(demo_devices(), prefix="p", seed=7, bad_fraction=0.2), 300)
    other = collect(sim.Simulation(demo_devices(), prefix="p", seed=8, bad_fraction=0.2), 300)
    assert first == again
    assert first != other


def test_messages_have_the_documented_shapes_and_carry_every_reading():
    devices = demo_devices()
    gateway_of = {device.uid: device.gateway_uid for device in devices}
    simulation = sim.Simulation(devices, prefix="acme", seed=1, bad_fraction=0, gateway_fraction=0.5)
    readings = 0
    gateway_messages = 0
    for topic, payload in collect(simulation, 500):
        body = json.loads(payload)
        if match := re.fullmatch(r"acme/devices/([\w.:-]+)/telemetry", topic):
            assert set(body) == {"ts", "values"} and isinstance(body["ts"], int)
            assert match[1] in gateway_of
            readings += 1
        else:
            match = re.fullmatch(r"acme/gateways/([\w.:-]+)/telemetry", topic)
            assert match, topic
            gateway_messages += 1
            for uid, records in body.items():
                assert gateway_of[uid] == match[1]
                assert all(set(record) == {"ts", "values"} for record in records)
                readings += len(records)
    assert readings == simulation.readings == 500
    assert gateway_messages and simulation.via_gateway


def test_without_gateway_fraction_every_reading_goes_to_its_device_topic():
    simulation = sim.Simulation(demo_devices(), prefix="p", seed=1, gateway_fraction=0)
    assert all("/devices/" in topic for topic, _ in collect(simulation, 200))


def test_gateway_batches_are_sent_when_full_or_old():
    devices = [device for device in demo_devices() if device.gateway_uid == "gw-site-a"]
    simulation = sim.Simulation(devices, prefix="p", seed=1, bad_fraction=0, gateway_fraction=1, gateway_batch_size=4)
    sent = [simulation.tick(WINTER_MORNING + i) for i in range(4)]
    assert sent[:3] == [[], [], []] and len(sent[3]) == 1
    simulation.tick(WINTER_MORNING + 10)
    (_, payload), *_ = simulation.tick(WINTER_MORNING + 10 + 6000)  # the batch opened 6 s ago
    assert sum(len(records) for records in json.loads(payload).values()) == 2
    assert simulation.flush() == []


def test_devices_pick_takes_profiles_in_turn():
    picked = sim.devices_pick(demo_devices(), 3)
    assert sorted(device.profile for device in picked) == sorted([sim.HEAT_PUMP, sim.FLOW_METER, sim.ENERGY_METER])
    assert len(sim.devices_pick(demo_devices(), None)) == len(demo.DEVICES)


# ---------------------------------------------------------------------------------------------------------------------
# The command, end to end against a Mosquitto with the project config (logins only)
# ---------------------------------------------------------------------------------------------------------------------


class Subscriber:
    """Collects every message under ``prefix/#`` that the listener's login may read (all telemetry)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.messages: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.client = mqtt_client(listener_broker_address())
        self.client.on_connect = lambda client, *_: client.subscribe(f"{prefix}/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda client, userdata, message: self.messages.append(
            (message.topic, message.payload)
        )

    def __enter__(self):
        broker = broker_address()
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK from the broker"
        return self

    def __exit__(self, *exc):
        self.client.disconnect()
        self.client.loop_stop()

    def settle(self, seconds: float = 3.0) -> None:
        """Wait until no new message has arrived for half a second."""
        deadline, count = time.monotonic() + seconds, -1
        while time.monotonic() < deadline and count != len(self.messages):
            count = len(self.messages)
            time.sleep(0.5)


@pytest.fixture
def kept_passwords(settings, tmp_path):
    """Where seed_demo keeps the demo fleet's broker passwords for the simulator (none in the test settings)."""
    settings.DEMO_MQTT_PASSWORDS_PATH = str(tmp_path / "secrets" / "demo-mqtt-passwords.json")
    return tmp_path / "secrets" / "demo-mqtt-passwords.json"


@pytest.mark.e2e
@pytest.mark.django_db
def test_simulate_publishes_readings_of_seeded_devices_to_the_broker(broker, kept_passwords, settings):
    call_command("seed_demo", stdout=io.StringIO())
    prefix = f"fwtest-{uuid.uuid4().hex[:12]}"
    broker.sync(prefix)
    settings.MQTT_URL = broker.url
    with override_settings(MQTT_TOPIC_PREFIX=prefix), Subscriber(prefix) as subscriber:
        call_command("simulate", duration=2, devices=3, seed=1, bad_fraction=0, gateway_fraction=0.5)
        subscriber.settle()

    devices = {device.uid: device for device in Device.objects.select_related("gateway", "device_type")}
    now_ms = time.time() * 1000
    readings, kinds, uids = 0, set(), set()
    for topic, payload in subscriber.messages:
        body = json.loads(payload)
        kind, ident = re.fullmatch(rf"{prefix}/(devices|gateways)/([\w.:-]+)/telemetry", topic).groups()
        kinds.add(kind)
        batch = {ident: [body]} if kind == "devices" else body
        for uid, records in batch.items():
            assert uid in devices
            if kind == "gateways":
                assert devices[uid].gateway.uid == ident
            defined = set(devices[uid].device_type.metrics.values_list("key", flat=True))
            for record in records:
                assert set(record) == {"ts", "values"}
                assert now_ms - 10_000 < record["ts"] <= now_ms
                assert set(record["values"]) <= defined
            uids.add(uid)
            readings += len(records)
    assert readings >= 30  # 20 readings/s for 2 s
    assert kinds == {"devices", "gateways"}
    assert len(uids) == 3
    assert len({devices[uid].device_type_id for uid in uids}) == 3


@pytest.mark.django_db
def test_seed_demo_prints_the_broker_logins_once_and_keeps_them_for_the_simulator(kept_passwords):
    first, second = io.StringIO(), io.StringIO()
    call_command("seed_demo", stdout=first)
    call_command("seed_demo", stdout=second)

    kept = json.loads(kept_passwords.read_text())
    assert set(kept) == {spec.uid for spec in demo.DEVICES} | {site.gateway_uid for site in demo.SITES}
    assert oct(kept_passwords.stat().st_mode & 0o777) == "0o600"
    assert all(password in first.getvalue() for password in kept.values())
    assert not any(password in second.getvalue() for password in kept.values())  # issued once, printed once
    assert json.loads(kept_passwords.read_text()) == kept  # and not re-issued


@pytest.mark.django_db
def test_simulate_plays_only_devices_whose_password_it_knows(kept_passwords, caplog):
    call_command("seed_demo", stdout=io.StringIO())
    kept = json.loads(kept_passwords.read_text())
    mqtt_credential_issue(device=Device.objects.get(uid="hp-a-001"))  # re-issued in the admin: the kept one is void
    del kept["fm-a-001"]
    kept_passwords.write_text(json.dumps(kept))

    with override_settings(MQTT_URL="mqtt://127.0.0.1:1"), caplog.at_level("WARNING"):
        call_command("simulate", duration=0.5, seed=1)

    assert "No valid broker password kept for 2 of 26 logins (fm-a-001, hp-a-001): not simulated" in caplog.text


@pytest.mark.django_db
def test_simulate_without_kept_passwords_says_how_to_get_them():
    call_command("seed_demo", stdout=io.StringIO())
    with pytest.raises(CommandError, match="seed_demo"):
        call_command("simulate", duration=1)


@pytest.mark.django_db
def test_simulate_survives_an_unreachable_broker(kept_passwords):
    call_command("seed_demo", stdout=io.StringIO())
    with override_settings(MQTT_URL="mqtt://127.0.0.1:1"):
        call_command("simulate", duration=1, devices=2, seed=1)  # returns; nothing raised


@pytest.mark.django_db
def test_simulate_without_devices_says_how_to_get_some():
    with pytest.raises(CommandError, match="seed_demo"):
        call_command("simulate", duration=1)


@pytest.mark.e2e
@pytest.mark.django_db
def test_simulate_stops_promptly_while_one_of_its_logins_is_refused(broker, kept_passwords, settings):
    """A login the broker does not know yet (or any more) queues messages that are never acknowledged; the stop
    must not wait for them, or the process manager kills the simulator before it disconnects."""
    call_command("seed_demo", stdout=io.StringIO())
    prefix = f"fwtest-{uuid.uuid4().hex[:12]}"
    broker.sync(prefix)
    settings.MQTT_URL = broker.url
    _, password = mqtt_credential_issue(device=Device.objects.get(uid="hp-a-001"))  # not synced: refused
    kept_passwords.write_text(json.dumps({**json.loads(kept_passwords.read_text()), "hp-a-001": password}))

    started = time.monotonic()
    with override_settings(MQTT_TOPIC_PREFIX=prefix):
        call_command("simulate", duration=2, rate=50, seed=1)
    assert time.monotonic() - started < 2 + 2.5  # the drain is 5 s: only acknowledgements of connected logins count


@pytest.mark.e2e
@pytest.mark.django_db
def test_simulate_stops_promptly_after_losing_the_broker(kept_passwords, settings):
    """make run stops every process at once, the broker too: 26 network threads waiting to reconnect must be
    stopped together, not one after another, within the process manager's grace period."""
    call_command("seed_demo", stdout=io.StringIO())
    own = Broker()
    own.start()
    try:
        own.sync()
        settings.MQTT_URL = own.url
        threading.Timer(1.0, own.stop).start()
        started = time.monotonic()
        call_command("simulate", duration=2, seed=1)
        assert time.monotonic() - started < 2 + 2.5
    finally:
        own.close()


# ---------------------------------------------------------------------------------------------------------------------
# Demo events: the first spike soon after the start, heat pumps going silent now and then, flow bursts
# ---------------------------------------------------------------------------------------------------------------------


def _device_readings(messages) -> dict[str, list[int]]:
    """Reading timestamps per device uid, from device and gateway messages alike."""
    by_uid: dict[str, list[int]] = {}
    for topic, payload in messages:
        body = json.loads(payload)
        if "/devices/" in topic:
            by_uid.setdefault(topic.split("/")[2], []).append(body["ts"])
        else:
            for uid, records in body.items():
                by_uid.setdefault(uid, []).extend(record["ts"] for record in records)
    return by_uid


def test_a_heat_pump_goes_silent_for_longer_than_the_seeded_rule_then_reports_again():
    simulation = sim.Simulation(demo_devices(), prefix="p", seed=3, bad_fraction=0, silence_every_s=600)
    step_ms = 100  # 10 readings/s for 20 minutes of simulated time
    readings = _device_readings(collect(simulation, 12_000, step_ms=step_ms))
    assert len(simulation.silences) == 2  # at 60 s and at 660 s
    uid, start, until = simulation.silences[0]
    assert start == WINTER_MORNING + 60_000
    assert sim.SILENCE_S[0] * 1000 <= until - start <= sim.SILENCE_S[1] * 1000
    times = sorted(readings[uid])
    assert not [ts for ts in times if start <= ts < until]  # nothing while silent ...
    assert [ts for ts in times if ts >= until]  # ... and readings again afterwards
    # The silence is longer than the "heat pump silent" rule's 5 minutes.
    silence = next(rule for rule in demo.ALERT_RULES if rule["name"] == "Heat pump silent")["fields"]["silence"]
    assert until - start > silence.total_seconds() * 1000
    assert simulation.silenced > 0


def test_no_silences_when_switched_off():
    simulation = sim.Simulation(demo_devices(), prefix="p", seed=3, bad_fraction=0, silence_every_s=0)
    collect(simulation, 3000, step_ms=400)
    assert simulation.silences == [] and simulation.silenced == 0


def test_the_first_supply_temperature_spike_passes_80_within_90_s_of_the_start():
    pumps = [device for device in demo_devices() if device.profile == sim.HEAT_PUMP]
    simulation = sim.Simulation(pumps, prefix="p", seed=2, bad_fraction=0, gateway_fraction=0, silence_every_s=0)
    hot = [
        json.loads(payload)["ts"]
        for topic, payload in collect(simulation, 900, step_ms=100)
        if json.loads(payload)["values"]["supply_temp"] > 80
    ]
    # It starts at 30 s; the water heats towards 84-88 °C with a 20 s time constant.
    assert hot and min(hot) - WINTER_MORNING < 90_000


def test_a_flow_burst_jumps_the_flow_rate_by_more_than_the_seeded_rule_within_a_minute():
    device = one_of_each_profile()[sim.FLOW_METER]
    rule = next(rule for rule in demo.ALERT_RULES if rule["device_type"] == "Flow meter")["fields"]
    readings = run(device, start_ms=WINTER_MORNING, steps=120, step_s=5, spike_probability=0.05)
    flows = [values["flow_rate"] for _, values in readings]
    per_minute = 60 // 5
    assert max(abs(b - a) for a, b in zip(flows, flows[per_minute:], strict=False)) > rule["rate_delta"]
