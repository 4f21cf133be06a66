"""The energy pages' custom range through the Django test client: the site's local days, both included, give the
figures the energy API gives for the same instants; a refused range is a 400 page saying why, never a 500."""

import datetime
import re
import zoneinfo

import pytest
from django.urls import reverse

from apps.devices.choices import MetricKind, MetricRole
from apps.telemetry import site_energy
from apps.telemetry.energy import LONGEST_DAY_RANGE, DayRange
from apps.telemetry.models import Reading, RollupDirtyBucket, RollupWatermark, Series, SiteEnergyState
from apps.telemetry.rollups import rollups_advance
from apps.telemetry.selectors import site_heat_pumps_for_user
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory

pytestmark = pytest.mark.django_db

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
FIRST, LAST = datetime.date(2025, 3, 3), datetime.date(2025, 3, 5)


@pytest.fixture
def meter(site_a, site_b):
    site_a.timezone = "Europe/Berlin"
    site_a.save()
    device_type = DeviceTypeFactory(organization=site_a.organization, name="Energy meter")
    MetricDefinitionFactory(
        device_type=device_type, key="import_kwh", unit="kWh", kind=MetricKind.TOTALIZER, min_value=None, max_value=None
    )
    device = DeviceFactory(uid="em-a-1", name="Meter A-1", site=site_a, device_type=device_type)
    series = Series.objects.create(device=device, metric_key="import_kwh")
    # +1 kWh every 15 minutes from two days before the range to two days after it (UTC), so the local midnights
    # the range starts and ends at decide what is counted.
    start = datetime.datetime(2025, 3, 1, tzinfo=datetime.UTC)
    Reading.objects.bulk_create(
        Reading(series=series, ts=start + datetime.timedelta(minutes=15 * i), value=100.0 + i) for i in range(7 * 96)
    )
    # The pages read hourly rollups up to the watermark (energy.REPORT_RESOLUTION): roll these days up.
    RollupWatermark.objects.all().delete()
    rollups_advance(now=start + datetime.timedelta(days=9), time_budget=60)
    return device


def _shown_kwh(response) -> float:
    return float(re.search(r'data-figure="kwh" data-value="([-0-9.]+)"', response.content.decode()).group(1))


def test_a_custom_range_shows_the_kwh_the_api_gives_for_the_same_local_days(client, bob, site_a, meter):
    client.force_login(bob)
    params = {"from": FIRST.isoformat(), "to": LAST.isoformat()}
    page = client.get(reverse("dashboard:site-energy", args=[site_a.id]), params)
    assert page.status_code == 200
    start = datetime.datetime.combine(FIRST, datetime.time(), BERLIN)
    end = datetime.datetime.combine(LAST + datetime.timedelta(days=1), datetime.time(), BERLIN)
    api = client.get(
        "/api/v1/devices/em-a-1/volume",
        {"metric": "import_kwh", "start": start.isoformat(), "end": end.isoformat(), "interval": "1d"},
    ).json()
    assert _shown_kwh(page) == pytest.approx(api["series"][0]["total"]["volume"]) == pytest.approx(3 * 96)
    assert "through 5 Mar 2025" in page.content.decode()
    device_page = client.get(reverse("dashboard:device-energy", args=["em-a-1"]), params)
    assert device_page.status_code == 200 and _shown_kwh(device_page) == pytest.approx(3 * 96)
    pumps = client.get(reverse("dashboard:heat-pumps", args=[site_a.id]), params)
    assert pumps.status_code == 200 and "through 5 Mar 2025" in pumps.content.decode()


def test_the_site_page_reads_the_sites_stored_hours_and_shows_the_live_figures_also_after_late_data(
    client, bob, site_a, meter
):
    client.force_login(bob)
    url, params = (
        reverse("dashboard:site-energy", args=[site_a.id]),
        {"from": FIRST.isoformat(), "to": LAST.isoformat()},
    )
    live = client.get(url, params)
    assert "stored hourly totals" not in live.content.decode()
    site_energy.site_energy_refresh(site_id=site_a.id)

    stored = client.get(url, params)

    assert "from the site's stored hourly totals" in stored.content.decode()
    assert _shown_kwh(stored) == pytest.approx(_shown_kwh(live)) == pytest.approx(3 * 96)
    # A late reading (a dip: counted as a reset) inside the range, recomputed by the rollup engine, then refreshed.
    series = Series.objects.get(device=meter)
    late = datetime.datetime(2025, 3, 4, 10, 7, tzinfo=datetime.UTC)
    Reading.objects.create(series=series, ts=late, value=1.0)
    RollupDirtyBucket.objects.create(series=series, bucket=late.replace(second=0))
    rollups_advance(now=datetime.datetime(2025, 3, 10, tzinfo=datetime.UTC))
    site_energy.site_energy_refresh(site_id=site_a.id)
    after = client.get(url, params)
    assert "from the site's stored hourly totals" in after.content.decode()
    SiteEnergyState.objects.filter(site=site_a).delete()
    live_after = client.get(url, params)
    assert _shown_kwh(after) == pytest.approx(_shown_kwh(live_after))
    assert _shown_kwh(after) > 3 * 96 + 100


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2025-03-05", "to": "2025-03-03"}, "The last day is before the first"),
        (
            {"from": "2024-01-01", "to": (datetime.date(2024, 1, 1) + datetime.timedelta(days=LONGEST_DAY_RANGE))},
            f"{LONGEST_DAY_RANGE + 1} days is too long a range: at most {LONGEST_DAY_RANGE} days",
        ),
        ({"from": "2025-03-01"}, "Give the last day of the range."),
        ({"from": "2025-02-30", "to": "2025-03-01"}, "Give a day as YYYY-MM-DD."),
        ({"from": "3/1/2025", "to": "2025-03-01"}, "Give a day as YYYY-MM-DD."),
        ({"from": "1969-12-31", "to": "1970-01-01"}, "Give a day from 1970 through 2200."),
        ({"from": "9999-12-30", "to": "9999-12-31"}, "Give a day from 1970 through 2200."),
        ({"from": "2025-03-01\x00", "to": "2025-03-02"}, "Give a day as YYYY-MM-DD."),
    ],
)
@pytest.mark.parametrize("page", ["site-energy", "device-energy", "heat-pumps"])
def test_a_refused_range_is_a_400_page_saying_why(client, bob, site_a, meter, page, params, message):
    client.force_login(bob)
    args = ["em-a-1"] if page == "device-energy" else [site_a.id]
    response = client.get(reverse(f"dashboard:{page}", args=args), params)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert 'data-figure="kwh"' not in response.content.decode()


def test_the_longest_range_is_accepted_and_covers_the_longest_preset(client, bob, site_a, meter):
    assert LONGEST_DAY_RANGE >= 366  # 12 months by month: at most 366 days and one
    client.force_login(bob)
    last = datetime.date(2024, 6, 1) + datetime.timedelta(days=LONGEST_DAY_RANGE - 1)
    response = client.get(reverse("dashboard:site-energy", args=[site_a.id]), {"from": "2024-06-01", "to": last})
    assert response.status_code == 200 and _shown_kwh(response) == pytest.approx(7 * 96 - 1)


def test_a_refused_range_on_another_users_site_is_still_404(client, carol, site_a, meter):
    client.force_login(carol)
    response = client.get(reverse("dashboard:site-energy", args=[site_a.id]), {"from": "2025-03-05", "to": "x"})
    assert response.status_code == 404


@pytest.fixture
def heat_pumps(site_a):
    """A heat pump with a heat-output kWh register (+3 kWh per 15 min) and an unmarked electrical kWh register
    (+1 kWh per 15 min), whose heat meter sorts first by key; and a heat meter with no electrical metric at all."""
    site_a.timezone = "Europe/Berlin"
    site_a.save()
    start = datetime.datetime(2025, 3, 1, tzinfo=datetime.UTC)

    def register(device, key, role, step):
        MetricDefinitionFactory(
            device_type=device.device_type,
            key=key,
            unit="kWh",
            kind=MetricKind.TOTALIZER,
            role=role,
            min_value=None,
            max_value=None,
        )
        series = Series.objects.create(device=device, metric_key=key)
        Reading.objects.bulk_create(
            Reading(series=series, ts=start + datetime.timedelta(minutes=15 * i), value=100.0 + step * i)
            for i in range(7 * 96)
        )

    pump = DeviceFactory(
        uid="hp-a-1", name="Pump A-1", site=site_a, device_type=DeviceTypeFactory(organization=site_a.organization)
    )
    register(pump, "heat_kwh", MetricRole.HEAT_OUTPUT, 3.0)
    register(pump, "meter_kwh", MetricRole.NONE, 1.0)
    heat_meter = DeviceFactory(
        uid="hm-a-1",
        name="Heat meter A-1",
        site=site_a,
        device_type=DeviceTypeFactory(organization=site_a.organization),
    )
    register(heat_meter, "heat_kwh", MetricRole.HEAT_OUTPUT, 5.0)
    RollupWatermark.objects.all().delete()
    rollups_advance(now=start + datetime.timedelta(days=9), time_budget=60)
    return pump, heat_meter


def test_a_heat_output_meter_is_never_counted_as_electricity(client, bob, site_a, heat_pumps):
    client.force_login(bob)
    params = {"from": FIRST.isoformat(), "to": LAST.isoformat()}
    page = client.get(reverse("dashboard:site-energy", args=[site_a.id]), params)
    assert page.status_code == 200
    # Only the pump's unmarked electrical register: 3 days of +1 kWh per 15 minutes; no heat from either device.
    assert _shown_kwh(page) == pytest.approx(3 * 96)
    assert "1 device with an energy metric" in page.content.decode()
    assert "1 measuring heat output only, not counted as electricity" in page.content.decode()
    heat_meter_page = client.get(reverse("dashboard:device-energy", args=["hm-a-1"]), params)
    assert heat_meter_page.status_code == 200 and _shown_kwh(heat_meter_page) == 0


def test_the_heat_pump_page_divides_heat_output_by_the_unmarked_electrical_register(bob, site_a, heat_pumps):
    now = datetime.datetime(2025, 3, 10, tzinfo=datetime.UTC)
    _, _, figures, _, _ = site_heat_pumps_for_user(
        user=bob, site_id=site_a.id, span=DayRange(first=FIRST, last=LAST), now=now
    )
    by_uid = {figure.device.uid: figure for figure in figures}
    assert by_uid["hp-a-1"].heat_kwh == pytest.approx(3 * 3 * 96)
    assert by_uid["hp-a-1"].electricity_kwh == pytest.approx(3 * 96)
    assert by_uid["hp-a-1"].spf == pytest.approx(3.0)
    assert by_uid["hm-a-1"].electricity_kwh is None and by_uid["hm-a-1"].spf is None


def test_the_heat_pump_table_shows_the_figures_and_a_dash_where_a_pump_has_none(client, bob, site_a, heat_pumps):
    client.force_login(bob)
    page = client.get(
        reverse("dashboard:heat-pumps", args=[site_a.id]), {"from": FIRST.isoformat(), "to": LAST.isoformat()}
    )
    assert page.status_code == 200
    rows = {
        row.split('"', 1)[0]: re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
        for row in page.content.decode().split('<tr data-device="')[1:]
    }
    pump, heat_meter = rows["hp-a-1"], rows["hm-a-1"]
    # SPF, heat kWh, electricity kWh, degree days (no outdoor metric), kWh per degree day, COP of the last days.
    assert pump[1:6] == ["3.00", "864.0", "288.0", "—", "—"]
    assert re.findall(r'<span title="(\d+ Mar)">([\d.]+)</span>', pump[6]) == [
        (f"{day} Mar", "3.0") for day in (3, 4, 5)
    ]
    assert heat_meter[1:7] == ["—", "1440.0", "—", "—", "—", "—"]
