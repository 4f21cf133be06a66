"""Saved charts and dashboards: an operator's own views of the fleet, private or shared with the organization.

A chart names its series relationally (``ChartSeries``: a device and a metric key), so who may see a chart is one
SQL condition: no series on a device outside the user's sites (``apps.dashboard.chart_selectors``). A dashboard is
an ordered list of items, each a saved chart or a stat card (one series' latest value).
"""

import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.telemetry.queries import AGGREGATES, AUTO, INTERVALS

MAX_CHART_SERIES = settings.QUERY_MAX_SERIES  # what one series request may carry


class ChartRange(models.TextChoices):
    """The range presets of the device page (charts.js knows their lengths) and a fixed custom range."""

    HOUR = "1h", "1 h (live)"
    DAY = "24h", "24 h"
    WEEK = "7d", "7 d"
    MONTH = "30d", "30 d"
    YEAR = "1y", "1 y"
    CUSTOM = "custom", "Custom"


# The length of each relative range (the custom range has its own bounds).
RANGE_LENGTHS = {
    ChartRange.HOUR: datetime.timedelta(hours=1),
    ChartRange.DAY: datetime.timedelta(days=1),
    ChartRange.WEEK: datetime.timedelta(days=7),
    ChartRange.MONTH: datetime.timedelta(days=30),
    ChartRange.YEAR: datetime.timedelta(days=365),
}


class ChartStyle(models.TextChoices):
    LINE = "line", "Line"
    AREA = "area", "Area"
    BAR = "bar", "Bars"
    STEP = "step", "Steps"


class DashboardItemKind(models.TextChoices):
    CHART = "chart", "Chart"
    STAT = "stat", "Stat card"


class SavedChart(models.Model):
    """A chart configuration: up to 50 series of the owner's devices, a range, an aggregate, a resolution, a style.

    Series of the first unit are drawn on the left axis, of a second unit on the right one.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_charts")
    organization = models.ForeignKey("users.Organization", on_delete=models.CASCADE, related_name="saved_charts")
    title = models.CharField(max_length=200)
    shared = models.BooleanField(default=False, help_text="Shared with the organization (else private).")
    range = models.CharField(max_length=8, choices=ChartRange.choices, default=ChartRange.DAY)
    range_start = models.DateTimeField(null=True, blank=True)
    range_end = models.DateTimeField(null=True, blank=True)
    aggregate = models.CharField(max_length=8, choices=[(a, a) for a in AGGREGATES], default="avg")
    resolution = models.CharField(max_length=4, choices=[(i, i) for i in INTERVALS], default=AUTO)
    style = models.CharField(max_length=6, choices=ChartStyle.choices, default=ChartStyle.LINE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title", "id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(range="custom") | Q(range_start__isnull=False, range_end__isnull=False),
                name="saved_chart_custom_range_has_bounds",
            ),
            models.CheckConstraint(
                condition=Q(range_start__isnull=True)
                | Q(range_end__isnull=True)
                | Q(range_start__lt=models.F("range_end")),
                name="saved_chart_range_start_before_end",
            ),
        ]

    def __str__(self):
        return self.title

    def bounds(self, now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
        """The range the chart shows at ``now``: its fixed bounds, or the preset's length up to now."""
        if self.range == ChartRange.CUSTOM:
            return self.range_start, self.range_end
        return now - RANGE_LENGTHS[self.range], now


class ChartSeries(models.Model):
    """One series of a saved chart, in the order the builder listed them."""

    chart = models.ForeignKey(SavedChart, on_delete=models.CASCADE, related_name="series")
    position = models.PositiveSmallIntegerField()
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="+")
    metric_key = models.CharField(max_length=63)

    class Meta:
        ordering = ["chart", "position"]
        verbose_name_plural = "chart series"
        constraints = [
            models.UniqueConstraint(fields=["chart", "position"], name="chart_series_position_unique"),
            models.UniqueConstraint(fields=["chart", "device", "metric_key"], name="chart_series_unique"),
        ]

    def __str__(self):
        return f"{self.device_id}:{self.metric_key}"


class Dashboard(models.Model):
    """An ordered grid of saved charts and stat cards; only its owner edits it."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dashboards")
    organization = models.ForeignKey("users.Organization", on_delete=models.CASCADE, related_name="dashboards")
    title = models.CharField(max_length=200)
    shared = models.BooleanField(default=False, help_text="Shared with the organization (else private).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title", "id"]

    def __str__(self):
        return self.title


class DashboardItem(models.Model):
    """A cell of a dashboard: a saved chart, or a stat card showing one series' latest value live."""

    dashboard = models.ForeignKey(Dashboard, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=5, choices=DashboardItemKind.choices)
    chart = models.ForeignKey(SavedChart, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    device = models.ForeignKey("devices.Device", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    metric_key = models.CharField(max_length=63, blank=True)

    class Meta:
        ordering = ["dashboard", "position"]
        constraints = [
            models.UniqueConstraint(fields=["dashboard", "position"], name="dashboard_item_position_unique"),
            models.CheckConstraint(
                condition=(Q(kind="chart", chart__isnull=False, device__isnull=True))
                | (Q(kind="stat", chart__isnull=True, device__isnull=False) & ~Q(metric_key="")),
                name="dashboard_item_is_chart_or_stat",
            ),
        ]

    def __str__(self):
        return f"{self.dashboard_id}#{self.position} {self.kind}"
