"""Register maps: what to read from a device model, how to decode it, and how often; and the read plan.

A register map belongs to a device *model* (a Nivus-style flow transmitter, a three-phase energy meter, ...), not
to one device: the agent's config points each device at a map by name (one shipped in ``maps/``) or by path.
Its poll groups say how often each set of registers is read; within a group, registers of one table are coalesced
into as few Modbus requests as the gaps and the protocol's per-request limits allow.
"""

from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fieldwatch_agent.decoding import DataType, WordOrder, decode_registers

METRIC_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"  # Fieldwatch's metric keys (the platform rejects anything else)

# The protocol's ceilings per request (Modbus application protocol 1.1b3, 6.1-6.4).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


class RegisterTable(StrEnum):
    HOLDING = "holding"  # function 3
    INPUT = "input"  # function 4
    COIL = "coil"  # function 1
    DISCRETE = "discrete"  # function 2

    @property
    def is_bits(self) -> bool:
        return self in (RegisterTable.COIL, RegisterTable.DISCRETE)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Register(_Strict):
    """One metric of the device: where it lives, how it is laid out, and how raw counts become units."""

    metric: str = Field(pattern=METRIC_KEY_PATTERN)
    table: RegisterTable = RegisterTable.HOLDING
    address: int = Field(ge=0, le=0xFFFF, description="protocol address, 0-based (register 40001 is holding 0)")
    type: DataType = DataType.FLOAT32
    order: WordOrder | None = None  # None: the map's default order
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    # Plausible range of the metric, as the Fieldwatch device type defines it; the probe uses it to find the order.
    min: float | None = None
    max: float | None = None
    description: str = ""

    @model_validator(mode="after")
    def _type_fits_table(self) -> "Register":
        if self.table.is_bits != (self.type is DataType.BOOL):
            raise ValueError(
                f"{self.metric}: a {self.table} holds {'bits' if self.table.is_bits else 'registers'}, not {self.type}"
            )
        if self.address + self.count - 1 > 0xFFFF:
            raise ValueError(f"{self.metric}: {self.type} at {self.address} runs past address 65535")
        return self

    @property
    def count(self) -> int:
        """Registers (or bits) the value spans, from its data type."""
        return self.type.registers

    def decode(self, words: list[int], default_order: WordOrder) -> float | int:
        """Raw registers (or a one-element bit list) -> the value in the metric's unit (scale, then offset)."""
        if self.type is DataType.BOOL:
            raw: float | int = int(bool(words[0]))
        else:
            raw = decode_registers(words, self.type, self.order or default_order)
        if self.scale == 1.0 and self.offset == 0.0:
            return raw  # integers stay integers when unscaled (status words, counters)
        value = raw * self.scale + self.offset
        # Integer counts scaled by 0.1 or 0.01 pick up binary noise (455 * 0.1 = 45.50000000000001): the count is
        # exact, so rounding to far below its resolution gives back the number the device meant.
        return round(value, 9) if isinstance(raw, int) else value


class PollGroup(_Strict):
    """Registers read together at one interval: fast-moving values every second, totalizers every minute, ..."""

    name: str
    interval_s: float = Field(gt=0, le=86_400)
    registers: tuple[Register, ...] = Field(min_length=1)


class RegisterMap(_Strict):
    """The registers of a device model, in poll groups."""

    model: str
    description: str = ""
    order: WordOrder = WordOrder.ABCD  # default for the map's multi-register values
    # Unmapped registers between two mapped ones that may be read through to save a request. 0 by default: some
    # devices answer "illegal data address" for holes in their map, failing the whole coalesced read.
    max_gap: int = Field(default=0, ge=0, le=MAX_REGISTERS_PER_READ)
    max_registers_per_read: int = Field(default=MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ)
    poll_groups: tuple[PollGroup, ...] = Field(min_length=1)

    @field_validator("poll_groups")
    @classmethod
    def _unique_metrics(cls, groups: tuple[PollGroup, ...]) -> tuple[PollGroup, ...]:
        seen: set[str] = set()
        for group in groups:
            for register in group.registers:
                if register.metric in seen:
                    raise ValueError(f"metric {register.metric!r} is mapped twice")
                seen.add(register.metric)
        return groups

    def register(self, metric: str) -> Register:
        for group in self.poll_groups:
            for register in group.registers:
                if register.metric == metric:
                    return register
        raise KeyError(metric)

    def register_at(self, address: int, table: RegisterTable | None = None) -> Register:
        for group in self.poll_groups:
            for register in group.registers:
                if register.address == address and (table is None or register.table == table):
                    return register
        raise KeyError(address)


@dataclass(frozen=True)
class ReadSpan:
    """One Modbus request: ``count`` registers (or bits) of ``table`` from ``start``, covering ``registers``."""

    table: RegisterTable
    start: int
    count: int
    registers: tuple[Register, ...]

    def slice_for(self, register: Register, words: list[int]) -> list[int]:
        begin = register.address - self.start
        return words[begin : begin + register.count]


def plan_reads(registers: tuple[Register, ...], *, max_gap: int, max_per_read: int) -> list[ReadSpan]:
    """Coalesce ``registers`` into the fewest requests: per table, by address, merging neighbours whose gap is at
    most ``max_gap`` while the request stays within ``max_per_read`` registers (2000 bits for coil tables)."""
    spans: list[ReadSpan] = []
    for table in RegisterTable:
        members = sorted((r for r in registers if r.table == table), key=lambda r: (r.address, r.count))
        limit = MAX_BITS_PER_READ if table.is_bits else max_per_read
        current: list[Register] = []
        start = end = 0  # the current span covers [start, end)
        for register in members:
            reg_end = register.address + register.count
            fits = current and register.address - end <= max_gap and max(end, reg_end) - start <= limit
            if fits:
                current.append(register)
                end = max(end, reg_end)
                continue
            if current:
                spans.append(ReadSpan(table, start, end - start, tuple(current)))
            current, start, end = [register], register.address, reg_end
        if current:
            spans.append(ReadSpan(table, start, end - start, tuple(current)))
    return spans


def _maps_dir():
    return resources.files("fieldwatch_agent") / "maps"


def shipped_maps() -> list[str]:
    """Names of the register maps that come with the package (``maps/<name>.yaml``)."""
    return sorted(p.name.removesuffix(".yaml") for p in _maps_dir().iterdir() if p.name.endswith(".yaml"))


def load_register_map(name_or_path: str, *, base: Path | None = None) -> RegisterMap:
    """A shipped map by name (``nivus_flow``), or a YAML file by path (relative to ``base``, the config's folder)."""
    if name_or_path in shipped_maps():
        text = _maps_dir().joinpath(f"{name_or_path}.yaml").read_text("utf-8")
    else:
        path = Path(name_or_path)
        if not path.is_absolute() and base is not None:
            path = base / path
        if not path.is_file():
            raise FileNotFoundError(
                f"no register map {name_or_path!r}: not shipped ({', '.join(shipped_maps())}) and no file {path}"
            )
        text = path.read_text("utf-8")
    return RegisterMap.model_validate(yaml.safe_load(text))
