import datetime
import decimal

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models, router
from django.db.models import Q
from django.utils import timezone

from apps.core.credentials import SecretCredential
from apps.core.validators import DurationRangeValidator
from apps.devices.choices import (
    DeviceStatus,
    DiscoveryPolicy,
    MetricKind,
    MetricNaming,
    MetricRole,
    UnknownMetricPolicy,
)
from apps.devices.energy import ENERGY_UNITS, POWER_UNITS, TEMPERATURE_UNITS, WEEKDAYS, tariff_bands_parse
from apps.devices.validators import (
    validate_external_id,
    validate_json_schema,
    validate_metric_key,
    validate_tags,
    validate_timezone,
)

OFFLINE_AFTER_MIN = datetime.timedelta(seconds=1)
OFFLINE_AFTER_MAX = datetime.timedelta(days=365)
MAX_PRECISION = 9  # decimal places of a metric; float64 resolves about 15 significant digits


class ConstraintErrorsOnFields:
    """Report a constraint's violation on the field it is about (``constraint_fields``: constraint name -> field),
    so the admin's forms and the API answer "name: already exists" rather than an error about the whole object.

    Django's ``validate_constraints`` with that one change; a constraint not listed reports as Django's does.
    """

    constraint_fields: dict[str, str] = {}

    def validate_constraints(self, exclude=None):
        using = router.db_for_write(type(self), instance=self)
        errors = {}
        for model_class, constraints in self.get_constraints():
            for constraint in constraints:
                try:
                    constraint.validate(model_class, self, exclude=exclude, using=using)
                except ValidationError as error:
                    field = self.constraint_fields.get(constraint.name)
                    if field is None and error.code == "unique" and len(getattr(constraint, "fields", ())) == 1:
                        field = constraint.fields[0]
                    errors.setdefault(field or NON_FIELD_ERRORS, []).extend(error.error_list)
        if errors:
            raise ValidationError(errors)


class Site(ConstraintErrorsOnFields, models.Model):
    """A place where equipment is installed; the unit of access control (users are granted sites)."""

    organization = models.ForeignKey("users.Organization", on_delete=models.PROTECT, related_name="sites")
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    address = models.CharField(max_length=300, blank=True)
    latitude = models.FloatField(null=True, blank=True)
    longitude = models.FloatField(null=True, blank=True)
    emission_factor_kg_per_kwh = models.DecimalField(
        "CO₂e emission factor (kg/kWh)",
        max_digits=6,
        decimal_places=4,
        default=decimal.Decimal("0.4"),  # a Decimal: the float 0.4 has more than 4 places for full_clean()
        help_text="Grid carbon intensity used to turn energy into CO₂e.",
    )
    discovery_policy = models.CharField(
        "unknown devices",
        max_length=16,
        choices=DiscoveryPolicy.choices,
        default=DiscoveryPolicy.REJECT,
        help_text="What readings for an unregistered device do, for gateways of the site that do not say otherwise.",
    )
    tariff_currency = models.CharField(
        "tariff currency",
        max_length=3,
        default="EUR",
        validators=[RegexValidator(r"^[A-Z]{3}$", "An ISO 4217 code such as EUR, GBP or USD.")],
    )
    tariff_flat_price = models.DecimalField(
        "flat price per kWh",
        max_digits=8,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Energy cost per kWh; empty: the energy pages show no cost (unless bands cover every hour).",
    )
    tariff_bands = models.JSONField(
        "time-of-use bands",
        default=list,
        blank=True,
        validators=[tariff_bands_parse],
        help_text='Prices by local hour in the site\'s time zone, overriding the flat price: [{"from": "07:00", '
        '"to": "22:00", "price": 0.32, "weekdays": [0, 1, 2, 3, 4]}] (whole hours; weekdays 0 = Monday, '
        "optional).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="site_name_unique_per_organization"),
            models.CheckConstraint(
                condition=Q(latitude__isnull=True) | Q(latitude__gte=-90, latitude__lte=90),
                name="site_latitude_range",
                violation_error_message="Latitude must be between -90 and 90.",
            ),
            models.CheckConstraint(
                condition=Q(longitude__isnull=True) | Q(longitude__gte=-180, longitude__lte=180),
                name="site_longitude_range",
                violation_error_message="Longitude must be between -180 and 180.",
            ),
            models.CheckConstraint(
                condition=Q(emission_factor_kg_per_kwh__gte=0),
                name="site_emission_factor_not_negative",
                violation_error_message="The emission factor cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(tariff_flat_price__isnull=True) | Q(tariff_flat_price__gte=0),
                name="site_tariff_flat_price_not_negative",
                violation_error_message="The flat price cannot be negative.",
            ),
        ]
        permissions = [("operate_site", "Can acknowledge alerts and manage alert rules on the site")]

    constraint_fields = {
        "site_name_unique_per_organization": "name",
        "site_latitude_range": "latitude",
        "site_longitude_range": "longitude",
        "site_emission_factor_not_negative": "emission_factor_kg_per_kwh",
        "site_tariff_flat_price_not_negative": "tariff_flat_price",
    }

    def __str__(self):
        return self.name

    def clean(self):
        super().clean()
        if self.tariff_flat_price is not None:
            return
        try:
            bands = tariff_bands_parse(self.tariff_bands)
        except ValidationError:
            return  # the field's own validator reports it
        covered = {(day, hour) for band in bands for day in band.weekdays for hour in range(band.start, band.end)}
        if bands and len(covered) < len(WEEKDAYS) * 24:
            raise ValidationError(
                {"tariff_flat_price": "Time-of-use bands that leave hours uncovered need a flat price for those hours."}
            )


class DeviceType(ConstraintErrorsOnFields, models.Model):
    """A model of equipment: which metrics it reports, in which units, and what values are plausible."""

    organization = models.ForeignKey("users.Organization", on_delete=models.PROTECT, related_name="device_types")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    payload_schema = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_json_schema],
        help_text="Optional JSON Schema the 'values' object of each reading must satisfy.",
    )
    unknown_metric_policy = models.CharField(
        max_length=10, choices=UnknownMetricPolicy.choices, default=UnknownMetricPolicy.STRICT
    )
    offline_after = models.DurationField(
        default=datetime.timedelta(minutes=5),
        # Bounded so that "now - offline_after", computed in SQL for every device list, cannot overflow.
        validators=[DurationRangeValidator(OFFLINE_AFTER_MIN, OFFLINE_AFTER_MAX)],
        help_text="A device is offline when it has sent nothing for this long (1 s to 365 days).",
    )
    raw_retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Overrides the platform's raw retention for this type's readings."
    )

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="device_type_name_unique_per_organization"),
            models.CheckConstraint(
                condition=Q(offline_after__gt=datetime.timedelta(0)),
                name="device_type_offline_after_positive",
                violation_error_message="The offline timeout must be positive.",
            ),
        ]

    constraint_fields = {
        "device_type_name_unique_per_organization": "name",
        "device_type_offline_after_positive": "offline_after",
    }

    def __str__(self):
        return self.name


class MetricDefinition(ConstraintErrorsOnFields, models.Model):
    """One metric a device type reports, with its unit, kind and plausible range."""

    device_type = models.ForeignKey(DeviceType, on_delete=models.CASCADE, related_name="metrics")
    key = models.CharField(max_length=63, validators=[validate_metric_key])
    display_name = models.CharField(max_length=100)
    unit = models.CharField(max_length=20, blank=True)
    kind = models.CharField(max_length=10, choices=MetricKind.choices, default=MetricKind.GAUGE)
    # Plausible range: readings outside it are rejected at ingest (catches Modbus word-order garbage).
    min_value = models.FloatField(null=True, blank=True)
    max_value = models.FloatField(null=True, blank=True)
    role = models.CharField(
        max_length=20,
        choices=MetricRole.choices,
        default=MetricRole.NONE,
        blank=True,
        help_text="For heat-pump efficiency: heat output and electrical input (a power metric in W/kW/MW or an energy "
        "totalizer in Wh/kWh/MWh), outdoor temperature (°C).",
    )
    # What the sensor resolves, in decimal places (3: 0.001). Series responses in the columnar layout send a
    # column as float32 only when that keeps every value within half a unit of this last place.
    precision = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MaxValueValidator(MAX_PRECISION)],
        help_text="Decimal places the sensor resolves (e.g. 1 for 0.1 °C); empty if unknown.",
    )

    class Meta:
        ordering = ["device_type", "key"]
        constraints = [
            models.UniqueConstraint(fields=["device_type", "key"], name="metric_key_unique_per_device_type"),
            models.UniqueConstraint(
                fields=["device_type", "role"], condition=~Q(role=""), name="metric_role_unique_per_device_type"
            ),
            models.CheckConstraint(
                condition=Q(min_value__isnull=True)
                | Q(max_value__isnull=True)
                | Q(min_value__lte=models.F("max_value")),
                name="metric_min_not_above_max",
                violation_error_message="The plausible minimum cannot be greater than the maximum.",
            ),
            models.CheckConstraint(
                condition=Q(precision__isnull=True) | Q(precision__lte=MAX_PRECISION),
                name="metric_precision_bounded",
                violation_error_message=f"Precision is at most {MAX_PRECISION} decimal places.",
            ),
        ]

    constraint_fields = {
        "metric_key_unique_per_device_type": "key",
        "metric_min_not_above_max": "min_value",
        "metric_role_unique_per_device_type": "role",
        "metric_precision_bounded": "precision",
    }

    def __str__(self):
        return f"{self.key} ({self.unit})" if self.unit else self.key

    def clean(self):
        super().clean()
        if self.role in (MetricRole.HEAT_OUTPUT, MetricRole.ELECTRICAL_INPUT) and not self.is_energy_source:
            raise ValidationError(
                {
                    "role": "Heat output and electrical input need a power gauge in W, kW or MW, or an energy "
                    "totalizer in Wh, kWh or MWh."
                }
            )
        if self.role == MetricRole.OUTDOOR_TEMPERATURE and self.unit not in TEMPERATURE_UNITS:
            raise ValidationError({"role": "Outdoor temperature needs a metric in °C."})

    @property
    def is_power(self) -> bool:
        return self.kind == MetricKind.GAUGE and self.unit in POWER_UNITS

    @property
    def is_energy_register(self) -> bool:
        return self.kind == MetricKind.TOTALIZER and self.unit in ENERGY_UNITS

    @property
    def is_energy_source(self) -> bool:
        """Energy can be derived from it: integrated from power, or differenced from a register."""
        return self.is_power or self.is_energy_register


class Gateway(models.Model):
    """An edge box on a site that forwards readings for many devices under one identity and API key."""

    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="gateways")
    uid = models.CharField("gateway id", max_length=128, unique=True, validators=[validate_external_id])
    name = models.CharField(max_length=200)
    # InfluxDB line protocol (Telegraf): which tag names the device, and how fields become metric keys.
    line_protocol_device_tag = models.CharField(
        "line protocol device tag",
        max_length=64,
        default="device",
        validators=[RegexValidator(r"^[^\s,=\\]+$", "A tag key without spaces, commas, '=' or backslashes.")],
        help_text="The tag whose value is the device uid; lines without it fall back to the 'host' tag.",
    )
    line_protocol_metric_naming = models.CharField(
        "line protocol metric naming", max_length=20, choices=MetricNaming.choices, default=MetricNaming.FIELD
    )
    discovery_policy = models.CharField(
        "unknown devices",
        max_length=16,
        choices=DiscoveryPolicy.choices,
        blank=True,
        help_text="What readings for an unregistered device do; blank: the site's policy.",
    )
    auto_register_type = models.ForeignKey(
        DeviceType,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The type auto-registered devices get. Without one, auto-register acts as discover.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    # The fields dialect_options reads: what the ingest directory loads of every gateway.
    DIALECT_OPTION_FIELDS = ("line_protocol_device_tag", "line_protocol_metric_naming")

    class Meta:
        ordering = ["site", "name"]

    def __str__(self):
        return self.name

    def clean(self):
        if (
            self.auto_register_type_id
            and self.site_id
            and self.auto_register_type.organization_id != self.site.organization_id
        ):
            raise ValidationError({"auto_register_type": "This device type belongs to another organization."})

    @property
    def effective_discovery_policy(self) -> str:
        """The gateway's own policy, else its site's (what the ingest directory computes in bulk)."""
        return self.discovery_policy or self.site.discovery_policy

    def dialect_options(self) -> dict[str, str]:
        """The gateway's settings for the ingest dialects' parsers (``Sender.options``), over MQTT and HTTP alike."""
        return {"device_tag": self.line_protocol_device_tag, "metric_naming": self.line_protocol_metric_naming}


class Device(models.Model):
    """A piece of equipment that reports readings, identified on the wire by its stable external ``uid``."""

    uid = models.CharField("device id", max_length=128, unique=True, validators=[validate_external_id])
    name = models.CharField(max_length=200)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="devices")
    device_type = models.ForeignKey(DeviceType, on_delete=models.PROTECT, related_name="devices")
    gateway = models.ForeignKey(Gateway, null=True, blank=True, on_delete=models.SET_NULL, related_name="devices")
    metadata = models.JSONField(default=dict, blank=True, help_text="Free-form facts: serial number, vendor, ...")
    tags = ArrayField(models.CharField(max_length=50), default=list, blank=True, validators=[validate_tags])
    is_active = models.BooleanField(
        default=True, help_text="Inactive devices keep their history but their new readings are rejected."
    )
    # Advanced by the ingest writer once per flush, never per reading.
    last_seen = models.DateTimeField(null=True, blank=True, editable=False)
    # Set when the device announced its own end (a Sparkplug NDEATH/DDEATH): offline at once rather than after the
    # type's timeout. Cleared by its next birth or reading.
    offline_since = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["site", "name"]
        indexes = [GinIndex(fields=["tags"], name="device_tags_gin")]

    def __str__(self):
        return f"{self.name} ({self.uid})"

    def clean(self):
        errors = {}
        if self.site_id and self.device_type_id and self.device_type.organization_id != self.site.organization_id:
            errors["device_type"] = "This device type belongs to another organization than the site."
        if self.gateway_id and self.site_id and self.gateway.site_id != self.site_id:
            errors["gateway"] = "The gateway is on another site than the device."
        if self.metadata is not None and not isinstance(self.metadata, dict):
            errors["metadata"] = "Metadata must be a JSON object."
        if errors:
            raise ValidationError(errors)

    def status(self, now: datetime.datetime | None = None) -> DeviceStatus:
        """Online/offline derived from ``last_seen`` and the type's timeout, unless the device said it went offline
        (``offline_since``). The same rule in SQL: apps.dashboard.selectors._status_q."""
        if not self.is_active:
            return DeviceStatus.INACTIVE
        if self.last_seen is None:
            return DeviceStatus.NEVER_SEEN
        if self.offline_since is not None:
            return DeviceStatus.OFFLINE
        now = now or timezone.now()
        return DeviceStatus.ONLINE if now - self.last_seen <= self.device_type.offline_after else DeviceStatus.OFFLINE


class ApiKey(SecretCredential):
    """A gateway's credential for the HTTPS API (``X-API-Key: fwk_<prefix>_<secret>``), shown once, stored hashed
    (see apps.core.credentials)."""

    TAG = "fwk"

    gateway = models.ForeignKey(Gateway, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    replaces = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaced_by", editable=False
    )
    # Set by the rotation job when the key passed its age and the organization's admins were told to rotate it;
    # the job never issues the successor itself, since nobody could read the plaintext (apps/devices/key_rotation).
    rotation_due_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.masked} ({self.gateway})"


class AccessToken(SecretCredential):
    """A ThingsBoard-style access token (``fwa_<prefix>_<secret>``) of one device or one gateway: firmware written for
    ThingsBoard logs in to the broker with it as the MQTT username and no password, and posts to
    ``/api/v1/<token>/telemetry``, unchanged. Shown once, stored as a SHA-256 (apps.core.credentials); the broker's
    plugin (docker/mosquitto/plugin) checks it against the hashes ``broker_sync`` renders. One active per owner:
    issuing another revokes the previous one (rotation).
    """

    TAG = "fwa"

    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.CASCADE, related_name="access_tokens")
    gateway = models.ForeignKey(Gateway, null=True, blank=True, on_delete=models.CASCADE, related_name="access_tokens")

    class Meta:
        verbose_name = "access token (ThingsBoard)"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(device__isnull=False, gateway__isnull=True) | Q(device__isnull=True, gateway__isnull=False),
                name="access_token_device_xor_gateway",
                violation_error_message="An access token belongs to exactly one device or one gateway.",
            ),
        ]

    def __str__(self):
        return f"{self.masked} ({self.owner})"

    @property
    def owner(self):
        return self.device or self.gateway


class MqttCredential(models.Model):
    """A device's or a gateway's login at the MQTT broker (Mosquitto), rendered into its password and ACL files.

    The username is the device or gateway uid, so the ACL can bind it to its own topic. The password is kept only
    as Mosquitto's own PBKDF2-SHA512 line (``$7$<iterations>$<salt>$<hash>``), written verbatim into the password
    file by ``manage.py broker_sync``; the plaintext is shown once at issue. One active credential per username.
    """

    device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.CASCADE, related_name="mqtt_credentials")
    gateway = models.ForeignKey(
        Gateway, null=True, blank=True, on_delete=models.CASCADE, related_name="mqtt_credentials"
    )
    username = models.CharField(max_length=128, editable=False)
    password_hash = models.CharField(max_length=255, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "MQTT credential"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(device__isnull=False, gateway__isnull=True) | Q(device__isnull=True, gateway__isnull=False),
                name="mqtt_credential_device_xor_gateway",
                violation_error_message="A broker credential belongs to exactly one device or one gateway.",
            ),
            # The password file is keyed by username: two active lines for one name would make Mosquitto pick one.
            models.UniqueConstraint(
                fields=["username"], condition=Q(revoked_at__isnull=True), name="mqtt_credential_username_unique_active"
            ),
        ]

    def __str__(self):
        return self.username

    @property
    def owner(self):
        return self.device or self.gateway


class DiscoveredDevice(models.Model):
    """A uid a gateway sent readings for while nobody had registered it, under the ``discover`` policy: what an
    admin needs to adopt it (first and last seen, how much it sent, the metric keys, a sample). Written by ingest in
    the flush that dead-lettered the readings (one statement per flush); adopting it creates the device."""

    METRIC_KEYS_MAX = 64
    SAMPLE_MAX_BYTES = 2048

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="discovered_devices")
    gateway = models.ForeignKey(Gateway, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    uid = models.CharField("device id", max_length=128)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    message_count = models.BigIntegerField(default=0, help_text="Messages that carried readings for it.")
    metric_keys = ArrayField(models.CharField(max_length=63), default=list, blank=True)
    sample_payload = models.BinaryField(default=bytes, help_text="The latest message that named it, truncated.")
    adopted_device = models.ForeignKey(Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    adopted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen"]
        verbose_name = "discovered device"
        constraints = [models.UniqueConstraint(fields=["site", "uid"], name="discovered_device_unique_per_site")]

    def __str__(self):
        return f"{self.uid} (discovered on {self.site})"
