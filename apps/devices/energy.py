"""What a site and a device type say about energy: the units energy is read from, the roles metrics play for heat
pumps, and the site's tariff (a flat price per kWh, optionally overridden by time-of-use bands in the site's zone).

Pure data and functions (no ORM), so the model validators and the energy computations in ``apps.telemetry`` read one
definition.
"""

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError

# Power units energy is integrated from -> factor to kW.
POWER_UNITS = {"W": 0.001, "kW": 1.0, "MW": 1000.0}
# Energy registers (totalizers) energy is differenced from -> factor to kWh.
ENERGY_UNITS = {"Wh": 0.001, "kWh": 1.0, "MWh": 1000.0}
TEMPERATURE_UNITS = {"°C"}

_HOUR_RE = re.compile(r"^([01][0-9]|2[0-4]):00$")
WEEKDAYS = range(7)  # Monday = 0, as datetime.weekday()
MAX_BANDS = 48
MAX_PRICE = Decimal("1000")


@dataclass(frozen=True)
class Band:
    """A time-of-use price from hour ``start`` up to (not including) hour ``end`` on ``weekdays``, local time."""

    start: int
    end: int
    price: float
    weekdays: frozenset[int]

    def covers(self, *, hour: int, weekday: int) -> bool:
        return weekday in self.weekdays and self.start <= hour < self.end


def _band_error(index: int, message: str) -> ValidationError:
    return ValidationError(f"Band {index + 1}: {message}", code="invalid_tariff_band")


def _hour(index: int, band: dict, name: str) -> int:
    value = band.get(name)
    if not isinstance(value, str) or not _HOUR_RE.match(value):
        raise _band_error(index, f"{name!r} must be a whole hour 'HH:00' from 00:00 to 24:00, not {value!r}.")
    return int(value[:2])


def tariff_bands_parse(value) -> list[Band]:
    """The bands of a site's ``tariff_bands`` JSON: ``[{"from": "07:00", "to": "22:00", "price": 0.32, "weekdays":
    [0, 1, 2, 3, 4]}, ...]`` (``weekdays`` optional, every day by default). Whole hours only, because costs are
    priced per hourly energy bucket. Raises ``ValidationError`` naming the band and what to fix; overlapping bands on
    one day are refused, since which price applies would be a guess."""
    if value in (None, []):
        return []
    if not isinstance(value, list):
        raise ValidationError("Time-of-use bands must be a JSON list of bands.", code="invalid_tariff_bands")
    if len(value) > MAX_BANDS:
        raise ValidationError(f"At most {MAX_BANDS} time-of-use bands.", code="invalid_tariff_bands")
    bands = []
    for index, band in enumerate(value):
        if not isinstance(band, dict):
            raise _band_error(index, 'a band is an object {"from": "HH:00", "to": "HH:00", "price": number}.')
        unknown = set(band) - {"from", "to", "price", "weekdays"}
        if unknown:
            raise _band_error(index, f"unknown key(s) {', '.join(sorted(unknown))}.")
        start, end = _hour(index, band, "from"), _hour(index, band, "to")
        if start >= end:
            raise _band_error(index, "'from' must be before 'to' (split a band across midnight in two).")
        price = band.get("price")
        try:
            if isinstance(price, bool) or not isinstance(price, int | float | str):
                raise TypeError
            decimal_price = Decimal(str(price))
        except (TypeError, InvalidOperation):
            raise _band_error(index, f"'price' must be a number, not {price!r}.") from None
        if not decimal_price.is_finite() or not (0 <= decimal_price <= MAX_PRICE):
            raise _band_error(index, f"'price' must be between 0 and {MAX_PRICE} per kWh.")
        weekdays = band.get("weekdays", list(WEEKDAYS))
        if (
            not isinstance(weekdays, list)
            or not weekdays
            or any(isinstance(day, bool) or day not in WEEKDAYS for day in weekdays)
        ):
            raise _band_error(index, "'weekdays' must be a non-empty list of 0 (Monday) to 6 (Sunday).")
        bands.append(Band(start=start, end=end, price=float(decimal_price), weekdays=frozenset(weekdays)))
    for i, first in enumerate(bands):
        for second in bands[i + 1 :]:
            if first.weekdays & second.weekdays and first.start < second.end and second.start < first.end:
                raise ValidationError(
                    f"Bands {bands.index(first) + 1} and {bands.index(second) + 1} overlap.",
                    code="invalid_tariff_bands",
                )
    return bands


@dataclass(frozen=True)
class Tariff:
    """A site's price per kWh: the band covering a local hour, else the flat price."""

    flat: float | None
    bands: tuple[Band, ...]
    currency: str

    def price(self, *, hour: int, weekday: int) -> float | None:
        for band in self.bands:
            if band.covers(hour=hour, weekday=weekday):
                return band.price
        return self.flat

    @property
    def time_of_use(self) -> bool:
        return bool(self.bands)

    def week_prices(self) -> tuple[tuple[float | None, ...], ...]:
        """``price`` for every weekday (0 = Monday) and local hour, as ``[weekday][hour]``: a fold over a year of
        hours looks each one up instead of testing every band."""
        return tuple(tuple(self.price(hour=hour, weekday=weekday) for hour in range(24)) for weekday in range(7))


def site_tariff(site) -> Tariff | None:
    """The site's tariff, or None when it has no prices (cost is then not shown)."""
    flat = None if site.tariff_flat_price is None else float(site.tariff_flat_price)
    bands = tuple(tariff_bands_parse(site.tariff_bands))
    if flat is None and not bands:
        return None
    return Tariff(flat=flat, bands=bands, currency=site.tariff_currency)
