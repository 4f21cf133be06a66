from django.db import models


class MetricKind(models.TextChoices):
    """How a metric's values behave, which decides how rollups and derived figures treat them."""

    GAUGE = "gauge", "Gauge (instantaneous value: temperature, power)"
    COUNTER = "counter", "Counter (monotonic, may reset: pulses, starts)"
    TOTALIZER = "totalizer", "Totalizer (cumulative register: kWh, m³)"
    STATE = "state", "State (discrete: on/off, mode)"


class UnknownMetricPolicy(models.TextChoices):
    """What ingest does with a metric the device type does not define."""

    STRICT = "strict", "Strict: reject readings of undefined metrics"
    LENIENT = "lenient", "Lenient: accept them as new series without range checks"


class DeviceStatus(models.TextChoices):
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    NEVER_SEEN = "never_seen", "Never seen"
    INACTIVE = "inactive", "Inactive"


class MetricNaming(models.TextChoices):
    """How a gateway's InfluxDB line protocol names metrics (apps.telemetry.ingest.dialects.line_protocol)."""

    FIELD = "field", "The field key (cpu,device=x usage=1 -> usage)"
    MEASUREMENT_FIELD = "measurement_field", "Measurement and field key (cpu,device=x usage=1 -> cpu_usage)"


class DiscoveryPolicy(models.TextChoices):
    """What ingest does with readings a gateway sends for a device nobody registered (apps.telemetry.services)."""

    REJECT = "reject", "Reject: dead-letter them as unknown_device"
    DISCOVER = "discover", "Discover: dead-letter them and list the device under Discovered devices"
    AUTO_REGISTER = "auto_register", "Auto-register: create the device with the gateway's type and store them"


class MetricRole(models.TextChoices):
    """What a metric measures for the heat-pump efficiency figures (COP over time, seasonal performance factor and
    degree days); at most one metric of a device type plays each role."""

    NONE = "", "—"
    HEAT_OUTPUT = "heat_output", "Heat output (power or heat meter register)"
    ELECTRICAL_INPUT = "electrical_input", "Electrical input (power or energy register)"
    OUTDOOR_TEMPERATURE = "outdoor_temperature", "Outdoor temperature (°C, for degree days)"
