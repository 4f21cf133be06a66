"""Modbus sources: one poller thread per connection (a TCP host or a serial bus) running its devices' poll groups.

A serial bus has one master and one request on the wire at a time, and most TCP meters and gateways serve one
request at a time too, so a connection is polled by exactly one thread, group after group in due order. A group's
registers are read with the coalesced plan of its map (``registers.plan_reads``); each poll of a group is one
reading, stamped at the poll's start, committed to the buffer before the next poll.

A failed request costs only its own registers: the other spans of the group still make the reading, the failure
is counted for the device (heartbeat ``agent_poll_errors_<device>``) and the connection is reopened if it broke.
"""

import heapq
import logging
import math
import threading
import time
from dataclasses import dataclass

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from fieldwatch_agent.buffer import Buffer, Reading, now_millis
from fieldwatch_agent.config import ModbusDeviceConfig, ModbusRtuSourceConfig, ModbusTcpSourceConfig
from fieldwatch_agent.health import Health
from fieldwatch_agent.registers import PollGroup, ReadSpan, RegisterMap, RegisterTable, plan_reads

log = logging.getLogger(__name__)

ModbusClient = ModbusTcpClient | ModbusSerialClient


@dataclass(frozen=True)
class PlannedGroup:
    """A poll group of one device, with its read plan worked out once."""

    device: ModbusDeviceConfig
    register_map: RegisterMap
    group: PollGroup
    spans: tuple[ReadSpan, ...]


def plan_device(device: ModbusDeviceConfig, register_map: RegisterMap) -> list[PlannedGroup]:
    planned = []
    excluded = set(device.exclude_metrics)
    for group in register_map.poll_groups:
        registers = tuple(r for r in group.registers if r.metric not in excluded)
        if not registers:
            continue
        spans = plan_reads(registers, max_gap=register_map.max_gap, max_per_read=register_map.max_registers_per_read)
        planned.append(PlannedGroup(device, register_map, group, tuple(spans)))
    return planned


def make_client(source: ModbusTcpSourceConfig | ModbusRtuSourceConfig) -> ModbusClient:
    # reconnect_delay=0: reconnecting is this module's decision (on the next poll), not a background timer's.
    if isinstance(source, ModbusTcpSourceConfig):
        return ModbusTcpClient(
            source.host, port=source.port, timeout=source.timeout_s, retries=source.retries, reconnect_delay=0
        )
    return ModbusSerialClient(
        source.port,
        baudrate=source.baudrate,
        bytesize=source.bytesize,
        parity=source.parity,
        stopbits=source.stopbits,
        timeout=source.timeout_s,
        retries=source.retries,
        reconnect_delay=0,
    )


class ReadError(Exception):
    pass


def read_span(client: ModbusClient, span: ReadSpan, unit_id: int) -> list[int]:
    """One request; the registers (or bits, as 0/1) of the span, or ReadError."""
    readers = {
        RegisterTable.HOLDING: client.read_holding_registers,
        RegisterTable.INPUT: client.read_input_registers,
        RegisterTable.COIL: client.read_coils,
        RegisterTable.DISCRETE: client.read_discrete_inputs,
    }
    try:
        response = readers[span.table](span.start, count=span.count, device_id=unit_id)
    except ModbusException as exc:
        raise ReadError(f"{span.table} {span.start}+{span.count}: {exc}") from None
    if response.isError():
        raise ReadError(f"{span.table} {span.start}+{span.count}: device answered {response}")
    if span.table.is_bits:
        return [int(bit) for bit in response.bits[: span.count]]
    return list(response.registers)


def poll_group(client: ModbusClient, planned: PlannedGroup) -> tuple[dict, list[str]]:
    """Read and decode one poll group: the values that could be read, and what failed."""
    values: dict[str, float | int] = {}
    errors: list[str] = []
    for span in planned.spans:
        try:
            words = read_span(client, span, planned.device.unit_id)
        except ReadError as exc:
            errors.append(str(exc))
            continue
        for register in span.registers:
            value = register.decode(span.slice_for(register, words), planned.register_map.order)
            if isinstance(value, float) and not math.isfinite(value):
                # NaN/inf is how many meters say "no measurement"; the platform refuses it, so it is not sent.
                errors.append(f"{register.metric}: not a number ({value})")
                continue
            values[register.metric] = value
    return values, errors


class ModbusPoller(threading.Thread):
    def __init__(
        self,
        source: ModbusTcpSourceConfig | ModbusRtuSourceConfig,
        maps: dict[str, RegisterMap],
        buffer: Buffer,
        health: Health,
        stop: threading.Event,
    ):
        super().__init__(name=f"modbus-{source.name}", daemon=True)
        self.source = source
        self.buffer = buffer
        self.health = health
        self.stop_event = stop
        self.groups = [g for device in source.devices for g in plan_device(device, maps[device.map])]
        for device in source.devices:
            health.register_device(device.uid)
        self.client: ModbusClient | None = None

    def run(self) -> None:
        start = time.monotonic()
        # (due, index): every group is due at once on start, then every interval_s after its previous due time.
        schedule = [(start, index) for index in range(len(self.groups))]
        heapq.heapify(schedule)
        try:
            while schedule and not self.stop_event.is_set():
                due, index = heapq.heappop(schedule)
                if self.stop_event.wait(max(0.0, due - time.monotonic())):
                    break
                planned = self.groups[index]
                self.poll(planned)
                interval = planned.group.interval_s
                next_due = due + interval
                if next_due < time.monotonic():  # fell behind (slow bus, timeouts): skip, do not burst to catch up
                    next_due = time.monotonic() + interval
                heapq.heappush(schedule, (next_due, index))
        finally:
            if self.client is not None:
                self.client.close()

    def poll(self, planned: PlannedGroup) -> Reading | None:
        uid = planned.device.uid
        ts = now_millis()
        if not self._ensure_connected():
            self.health.record_poll(uid, len(planned.spans), f"cannot connect to {self._where()}")
            return None
        values, errors = poll_group(self.client, planned)
        if errors:
            log.warning("%s %s: %s", uid, planned.group.name, "; ".join(errors[:3]))
            if not self.client.connected:
                self.client.close()
        self.health.record_poll(uid, len(errors), errors[0] if errors else None)
        if not values:
            return None
        reading = Reading(uid, ts, values)
        self.buffer.append([reading])
        return reading

    def _ensure_connected(self) -> bool:
        if self.client is None:
            self.client = make_client(self.source)
        if self.client.connected:
            return True
        return bool(self.client.connect())

    def _where(self) -> str:
        source = self.source
        return f"{source.host}:{source.port}" if isinstance(source, ModbusTcpSourceConfig) else source.port
