"""The backtest of a rule over the 1-minute rollups: hand-computed counts for each kind of rule, the same count as
the live evaluation gives for the same readings fed one per batch, and a constant number of statements."""

import datetime

import pytest
from django.utils import timezone

from apps.alerts.backtest import rule_backtest
from apps.alerts.choices import Operator, RateDirection, RuleKind
from apps.alerts.models import Alert
from apps.telemetry.models import Reading
from apps.telemetry.rollups import rollups_advance
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory
from tests.support.evaluation import Feed, evaluate, make_rule

pytestmark = pytest.mark.django_db

NOW = timezone.now().replace(second=0, microsecond=0)
BASE = NOW - datetime.timedelta(hours=3)
MIN = datetime.timedelta(minutes=1)


@pytest.fixture
def heat_pumps(site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization, name="Heat pump")
    MetricDefinitionFactory(device_type=device_type, key="supply_temp", unit="°C")
    return [DeviceFactory(uid=f"hp-{n}", site=site_a, device_type=device_type) for n in range(3)]


def minutes(values_by_minute: dict[int, list[float]]) -> list[tuple[datetime.datetime, float]]:
    """{minute after BASE: [values, 20 s apart]} -> (ts, value) in time order."""
    return [
        (BASE + minute * MIN + index * datetime.timedelta(seconds=20), value)
        for minute, values in sorted(values_by_minute.items())
        for index, value in enumerate(values)
    ]


def steady(first: int, last: int, value: float) -> dict[int, list[float]]:
    return {minute: [value, value, value] for minute in range(first, last)}


def store_and_roll_up(*devices_readings) -> None:
    """Store (device, readings) pairs, then roll up once: readings stored behind the watermark would need the
    ingest writer's dirty marks."""
    for device, readings in devices_readings:
        series_id = Feed().series_id(device, "supply_temp")
        Reading.objects.bulk_create(Reading(series_id=series_id, ts=ts, value=value) for ts, value in readings)
    rollups_advance(now=NOW, time_budget=120)


def alerts_opened_live(rule, device, readings) -> int:
    """What the live evaluation opens for the same readings, each in a batch of its own (one reading per flush, as
    a device reporting every 20 s arrives)."""
    feed = Feed()
    series_id = feed.series_id(device, "supply_temp")
    for ts, value in readings:
        seconds = (ts - BASE).total_seconds()
        batch = feed.batch((device, "supply_temp", 0, value))
        batch = [reading._replace(ts=BASE + datetime.timedelta(seconds=seconds)) for reading in batch]
        assert batch[0].series_id == series_id
        evaluate(batch)
    return Alert.objects.filter(rule=rule, device=device).count()


HYSTERESIS = minutes(
    {
        **steady(0, 10, 60),
        10: [85, 86, 85],  # opens (1)
        11: [84, 85, 84],
        12: [82, 83, 82],
        13: [78, 79, 78],  # between the clear threshold and the threshold: stays open
        14: [85, 85, 85],  # still the same alert
        15: [74, 70, 70],  # clears below 75
        **steady(16, 30, 60),
        30: [90, 91, 90],  # opens (2)
        31: [60, 60, 60],  # clears
        **steady(32, 45, 60),
        45: [60, 81, 60],  # opens (3) and clears within the minute
        **steady(46, 60, 60),
    }
)


def test_threshold_with_hysteresis_counts_each_opening_once(site_a, heat_pumps):
    store_and_roll_up((heat_pumps[0], HYSTERESIS))
    rule = make_rule(site_a.organization, site=site_a, operator=Operator.GT, threshold=80, clear_threshold=75)

    result = rule_backtest(rule=rule, now=NOW)

    assert result.count == 3
    assert [o.at for o in result.openings] == [BASE + 10 * MIN, BASE + 30 * MIN, BASE + 45 * MIN]
    assert [o.value for o in result.openings] == [86, 91, 81]
    assert {o.device_uid for o in result.openings} == {"hp-0"}
    assert result.devices == 3 and result.resolution == "1m"
    assert result.end <= NOW and result.end - result.start == datetime.timedelta(days=7)


def test_backtest_count_equals_what_the_live_evaluation_opens(site_a, heat_pumps):
    rule = make_rule(site_a.organization, site=site_a, operator=Operator.GT, threshold=80, clear_threshold=75)
    store_and_roll_up((heat_pumps[0], HYSTERESIS))
    assert rule_backtest(rule=rule, now=NOW).count == alerts_opened_live(rule, heat_pumps[0], HYSTERESIS) == 3


def test_without_hysteresis_a_reading_below_the_threshold_clears(site_a, heat_pumps):
    # The 78 at minute 13 now clears, so minute 14's 85 opens a fourth alert.
    rule = make_rule(site_a.organization, site=site_a, operator=Operator.GT, threshold=80)
    store_and_roll_up((heat_pumps[0], HYSTERESIS))
    assert rule_backtest(rule=rule, now=NOW).count == alerts_opened_live(rule, heat_pumps[0], HYSTERESIS) == 4


def test_a_for_duration_opens_only_after_the_condition_held_that_long(site_a, heat_pumps):
    readings = minutes(
        {
            **steady(0, 10, 60),
            **steady(10, 13, 85),  # 3 min: too short
            **steady(13, 20, 60),
            **steady(20, 29, 85),  # 9 min: opens 5 min after it began
            **steady(29, 40, 60),
        }
    )
    rule = make_rule(
        site_a.organization,
        site=site_a,
        operator=Operator.GT,
        threshold=80,
        for_duration=datetime.timedelta(minutes=5),
    )
    store_and_roll_up((heat_pumps[1], readings))

    result = rule_backtest(rule=rule, now=NOW)

    assert [(o.device_uid, o.at) for o in result.openings] == [("hp-1", BASE + 25 * MIN)]
    assert alerts_opened_live(rule, heat_pumps[1], readings) == 1


def test_rate_of_change_counts_a_jump_once_while_it_stays_within_the_window(site_a, heat_pumps):
    readings = minutes(
        {
            **steady(0, 20, 50),
            **steady(20, 40, 65),  # +15 within 5 min: opens; clears once the window holds only 65s
            **steady(40, 50, 40),  # -25: a falling change, not a rising one
            **steady(50, 60, 52),  # +12: opens again
        }
    )
    rule = make_rule(
        site_a.organization,
        site=site_a,
        kind=RuleKind.RATE_OF_CHANGE,
        rate_direction=RateDirection.RISING,
        rate_delta=10,
        rate_window=datetime.timedelta(minutes=5),
    )
    store_and_roll_up((heat_pumps[2], readings))

    result = rule_backtest(rule=rule, now=NOW)

    assert [o.at for o in result.openings] == [BASE + 20 * MIN, BASE + 50 * MIN]
    assert [o.value for o in result.openings] == [15, 12]
    assert alerts_opened_live(rule, heat_pumps[2], readings) == 2


def test_no_data_counts_each_silence_longer_than_the_rule_s(site_a, heat_pumps):
    heard = minutes({**steady(0, 20, 60), **steady(35, 50, 60)})  # silent 15 min in the middle
    store_and_roll_up((heat_pumps[0], heard))
    rule = make_rule(
        site_a.organization, site=site_a, kind=RuleKind.NO_DATA, metric_key="", silence=datetime.timedelta(minutes=10)
    )

    result = rule_backtest(rule=rule, now=NOW)

    last_heard = BASE + 19 * MIN + datetime.timedelta(seconds=40)
    by_device = {}
    for opening in result.openings:
        by_device.setdefault(opening.device_uid, []).append(opening.at)
    # hp-0: silent from the range's start to its first reading, in the middle, and from minute 49 to the end;
    # hp-1 and hp-2 never reported: silent from the range's start.
    assert by_device["hp-0"] == [
        result.start + 10 * MIN,
        last_heard + 10 * MIN,
        BASE + 49 * MIN + datetime.timedelta(seconds=40) + 10 * MIN,
    ]
    assert by_device["hp-1"] == by_device["hp-2"] == [result.start + 10 * MIN]
    assert result.count == 5


def test_a_device_scoped_rule_covers_that_device_only(site_a, heat_pumps):
    store_and_roll_up((heat_pumps[0], HYSTERESIS), (heat_pumps[1], HYSTERESIS))
    rule = make_rule(site_a.organization, device=heat_pumps[1], operator=Operator.GT, threshold=80, clear_threshold=75)
    result = rule_backtest(rule=rule, now=NOW)
    assert result.devices == 1 and {o.device_uid for o in result.openings} == {"hp-1"} and result.count == 3


def test_the_backtest_is_three_statements_whatever_the_fleet(site_a, heat_pumps, django_assert_num_queries):
    store_and_roll_up(*((device, HYSTERESIS) for device in heat_pumps))
    rule = make_rule(site_a.organization, site=site_a, operator=Operator.GT, threshold=80, clear_threshold=75)
    with django_assert_num_queries(3):  # the watermark, the covered devices, the decision
        result = rule_backtest(rule=rule, now=NOW)
    assert result.count == 9
