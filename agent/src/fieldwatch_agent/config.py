"""The agent's configuration (``agent.yaml``), validated as a whole before anything starts.

One YAML file says where the buffer lives and how big it may grow, where readings go (one sink: MQTT or HTTPS),
what to poll (Modbus TCP and RTU sources with their devices, and pass-through sources for local publishers) and
which device carries the agent's own heartbeat. Secrets may stay out of the file (``*_file`` keys).
"""

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fieldwatch_agent.registers import RegisterMap, load_register_map

UID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"  # Fieldwatch's device and gateway uids

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(value: int | str) -> int:
    """``268435456``, ``"256 MiB"`` or ``"1GB"`` -> bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"not a size: {value!r} (e.g. 256MiB)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _secret(inline: str | None, path: str | None) -> str | None:
    if path:
        return Path(path).read_text("utf-8").strip()
    return inline


# --- the buffer ---------------------------------------------------------------------------------------------------


class BufferConfig(_Config):
    path: Path = Path("/var/lib/fieldwatch-agent/buffer.sqlite3")
    # The disk bound: database pages in use. When a write passes it the oldest readings are dropped (counted,
    # reported in the heartbeat), so the newest data survives a long outage.
    max_bytes: int = 256 * 1024**2
    max_readings: int | None = Field(default=None, ge=1)
    # FULL: every commit is fsynced, nothing acknowledged to a poller is lost on power loss. NORMAL: faster on slow
    # SD cards, survives a crash of the agent (kill -9) but may lose the last commits on power loss.
    synchronous: Literal["full", "normal"] = "full"

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: int | str) -> int:
        size = parse_size(value)
        if size < 64 * 1024:
            raise ValueError("max_bytes below 64 KiB cannot hold the database's own pages")
        return size


# --- sinks --------------------------------------------------------------------------------------------------------


class MqttSinkConfig(_Config):
    """Readings published with QoS 1 to the platform's broker; a reading leaves the buffer only after its PUBACK."""

    kind: Literal["mqtt"]
    url: str = "mqtt://127.0.0.1:1884"  # mqtt:// or mqtts:// (TLS)
    topic_prefix: str = "fieldwatch"
    # gateway: <prefix>/gateways/<uid>/telemetry, any device of the gateway's site. device: <prefix>/devices/<uid>/
    # telemetry, the agent runs on one device and forwards only its readings.
    identity: Literal["gateway", "device"] = "gateway"
    uid: str = Field(pattern=UID_PATTERN)
    username: str | None = None  # the broker login is the uid unless said otherwise
    password: str | None = None
    password_file: str | None = None
    client_id: str | None = None
    ca_file: str | None = None
    keepalive_s: int = Field(default=30, ge=5)
    # Readings per MQTT message, and the payload bound (the platform refuses over 256 KiB per message).
    readings_per_message: int = Field(default=500, ge=1, le=10_000)
    max_payload_bytes: int = Field(default=200_000, ge=1024, le=256 * 1024)
    inflight_messages: int = Field(default=20, ge=1, le=1000)
    ack_timeout_s: float = Field(default=20, gt=0)

    @field_validator("url")
    @classmethod
    def _scheme(cls, url: str) -> str:
        if urlsplit(url).scheme not in ("mqtt", "mqtts"):
            raise ValueError("the MQTT url must start with mqtt:// or mqtts://")
        return url

    @property
    def topic(self) -> str:
        return f"{self.topic_prefix}/{self.identity}s/{self.uid}/telemetry"

    def resolved_password(self) -> str | None:
        return _secret(self.password, self.password_file)


class HttpSinkConfig(_Config):
    """Readings posted to ``/api/v1/ingest``; a batch leaves the buffer only after the platform's 202."""

    kind: Literal["http"]
    url: str  # https://fieldwatch.example.com/api/v1/ingest
    api_key: str | None = None
    api_key_file: str | None = None
    ca_file: str | None = None
    timeout_s: float = Field(default=30, gt=0)
    readings_per_request: int = Field(default=2000, ge=1, le=10_000)
    max_body_bytes: int = Field(default=4 * 1024**2, ge=1024)

    @model_validator(mode="after")
    def _has_key(self) -> "HttpSinkConfig":
        if not (self.api_key or self.api_key_file):
            raise ValueError("the HTTP sink needs api_key or api_key_file")
        return self

    def resolved_api_key(self) -> str:
        return _secret(self.api_key, self.api_key_file) or ""


SinkConfig = Annotated[MqttSinkConfig | HttpSinkConfig, Field(discriminator="kind")]


class ForwardingConfig(_Config):
    """How the buffer drains: live readings first, the backlog of an outage oldest first at a bounded rate."""

    # Readings buffered within this many seconds are live: sent first, whatever the backlog.
    live_window_s: float = Field(default=10, gt=0)
    # Backlog readings per second on reconnect: bounded so a long outage does not saturate a 4G uplink or the
    # platform's ingest when the whole fleet comes back at once.
    drain_rate: float = Field(default=2000, gt=0)
    # Waiting this long for more readings before sending a partial batch saves messages at low poll rates.
    linger_s: float = Field(default=0.2, ge=0)
    retry_min_s: float = Field(default=1, gt=0)
    retry_max_s: float = Field(default=60, gt=0)


# --- sources ------------------------------------------------------------------------------------------------------


class ModbusDeviceConfig(_Config):
    uid: str = Field(pattern=UID_PATTERN)
    unit_id: int = Field(default=1, ge=0, le=255)  # the Modbus slave/unit id
    map: str  # a shipped map name or a YAML path (relative to the config file)
    exclude_metrics: tuple[str, ...] = ()  # metrics of the map this device does not report (or the type lacks)


class _ModbusSource(_Config):
    name: str
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=1, ge=0, le=10)
    devices: tuple[ModbusDeviceConfig, ...] = Field(min_length=1)


class ModbusTcpSourceConfig(_ModbusSource):
    kind: Literal["modbus_tcp"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)


class ModbusRtuSourceConfig(_ModbusSource):
    kind: Literal["modbus_rtu"]
    port: str  # /dev/ttyUSB0, /dev/serial/by-id/...
    baudrate: int = 19200
    bytesize: Literal[7, 8] = 8
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class MqttPassThroughConfig(_Config):
    """Readings from a local MQTT broker (existing publishers on site), buffered and forwarded like polled ones.

    ``topic`` has one ``+`` level: the device uid. Payloads are Fieldwatch device payloads. A message is
    acknowledged to the local broker only after its readings are in the buffer.
    """

    kind: Literal["mqtt_passthrough"]
    name: str
    url: str = "mqtt://127.0.0.1:1883"
    topic: str = "local/devices/+/telemetry"
    username: str | None = None
    password: str | None = None
    password_file: str | None = None
    client_id: str = "fieldwatch-agent-passthrough"

    @field_validator("topic")
    @classmethod
    def _one_uid_level(cls, topic: str) -> str:
        if topic.split("/").count("+") != 1 or "#" in topic:
            raise ValueError("the pass-through topic needs exactly one '+' level (the device uid) and no '#'")
        return topic


class HttpPassThroughConfig(_Config):
    """A local HTTP endpoint taking the platform's ingest bodies; answers 202 once the readings are buffered."""

    kind: Literal["http_passthrough"]
    name: str
    listen: str = "127.0.0.1:8787"
    max_body_bytes: int = Field(default=1024**2, ge=1024)


SourceConfig = Annotated[
    ModbusTcpSourceConfig | ModbusRtuSourceConfig | MqttPassThroughConfig | HttpPassThroughConfig,
    Field(discriminator="kind"),
]


class HeartbeatConfig(_Config):
    """The agent's own health, sent as readings of ``device`` (a Fieldwatch device registered for the gateway)."""

    device: str = Field(pattern=UID_PATTERN)
    interval_s: float = Field(default=60, gt=0)
    # agent_poll_errors_<device> per polled device, besides the totals: the device's type must define them or be
    # lenient to store them.
    per_device_errors: bool = True


class AgentConfig(_Config):
    buffer: BufferConfig = BufferConfig()
    sink: SinkConfig
    forwarding: ForwardingConfig = ForwardingConfig()
    sources: tuple[SourceConfig, ...] = ()
    heartbeat: HeartbeatConfig | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Set by load_config: where relative map paths are resolved from.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _device_identity_forwards_itself_only(self) -> "AgentConfig":
        sink = self.sink
        if isinstance(sink, MqttSinkConfig) and sink.identity == "device":
            others = {d.uid for d in self.modbus_devices()} - {sink.uid}
            if others:
                raise ValueError(
                    f"a device-identity MQTT sink forwards only {sink.uid}'s readings; "
                    f"use a gateway identity for {', '.join(sorted(others))}"
                )
        uids = [d.uid for d in self.modbus_devices()]
        duplicates = {uid for uid in uids if uids.count(uid) > 1}
        if duplicates:
            raise ValueError(f"devices polled twice: {', '.join(sorted(duplicates))}")
        return self

    def modbus_devices(self) -> list[ModbusDeviceConfig]:
        return [
            d for s in self.sources if isinstance(s, ModbusTcpSourceConfig | ModbusRtuSourceConfig) for d in s.devices
        ]

    def register_maps(self) -> dict[str, RegisterMap]:
        """Every map the devices use, loaded and validated, by the name the config gives it."""
        return {d.map: load_register_map(d.map, base=self.base_dir) for d in self.modbus_devices()}


def load_config(path: str | Path) -> AgentConfig:
    path = Path(path)
    document = yaml.safe_load(path.read_text("utf-8")) or {}
    config = AgentConfig.model_validate(document)
    config.base_dir = path.resolve().parent
    if not config.buffer.path.is_absolute():
        config.buffer.path = config.base_dir / config.buffer.path
    config.register_maps()  # a missing or invalid map fails here, not on the first poll
    return config
