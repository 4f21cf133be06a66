"""``fieldwatch-agent run | check | status | probe``."""

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from fieldwatch_agent.agent import Agent
from fieldwatch_agent.buffer import Buffer
from fieldwatch_agent.config import AgentConfig, ModbusRtuSourceConfig, ModbusTcpSourceConfig, load_config
from fieldwatch_agent.decoding import DataType
from fieldwatch_agent.modbus import ReadError, make_client, plan_device, read_span
from fieldwatch_agent.probe import decode_all_orders, metric_range_from_platform, verdict
from fieldwatch_agent.registers import ReadSpan, RegisterTable
from fieldwatch_agent.sinks import SinkError, make_sink


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fieldwatch-agent", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="poll, buffer and forward until SIGTERM")
    run.add_argument("--config", required=True)

    check = commands.add_parser("check", help="validate the config, try every connection, print the poll plan")
    check.add_argument("--config", required=True)
    check.add_argument("--offline", action="store_true", help="validate and print the plan only, connect to nothing")

    status = commands.add_parser("status", help="buffer depth, oldest unsent reading, last send")
    status.add_argument("--config", help="the agent's config (for the buffer's path)")
    status.add_argument("--buffer", help="the buffer file itself")
    status.add_argument("--json", action="store_true")

    probe = commands.add_parser("probe", help="decode a register in all four word orders, mark the plausible one")
    probe.add_argument("--config", required=True)
    probe.add_argument("--device", required=True, help="the device uid in the config")
    probe.add_argument("--register", required=True, type=int, help="protocol address (0-based)")
    probe.add_argument("--table", choices=[t.value for t in RegisterTable if not t.is_bits])
    probe.add_argument("--type", choices=["int32", "uint32", "float32", "float64"])
    probe.add_argument("--min", type=float, help="plausible minimum (default: Fieldwatch's, else the register map's)")
    probe.add_argument("--max", type=float, help="plausible maximum (default: Fieldwatch's, else the register map's)")
    probe.add_argument("--platform", help="Fieldwatch's address (https://...): take the range from the device's type")
    probe.add_argument("--token-file", help="a file holding a personal API token (fwt_..., read scope) for --platform")
    probe.add_argument("--metric", help="the metric to take the range of (default: the register map's at --register)")
    probe.add_argument("--ca-file", help="CA bundle for an https --platform")

    args = parser.parse_args(argv)
    try:
        return {"run": _run, "check": _check, "status": _status, "probe": _probe}[args.command](args)
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        print(f"fieldwatch-agent {args.command}: {exc}", file=sys.stderr)
        return 2


def _config(path: str) -> AgentConfig:
    return load_config(path)


def _run(args) -> int:
    config = _config(args.config)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    Agent(config).run_until_signalled()
    return 0


def _check(args) -> int:
    config = _config(args.config)
    maps = config.register_maps()
    print(f"config {args.config}: valid")
    print(
        f"buffer {config.buffer.path}: bound {config.buffer.max_bytes} bytes, synchronous={config.buffer.synchronous}"
    )
    failures = 0
    for source in config.sources:
        if not isinstance(source, ModbusTcpSourceConfig | ModbusRtuSourceConfig):
            print(f"source {source.name} ({source.kind})")
            continue
        where = f"{source.host}:{source.port}" if isinstance(source, ModbusTcpSourceConfig) else source.port
        print(f"source {source.name} ({source.kind} {where})")
        client = None if args.offline else make_client(source)
        if client is not None and not client.connect():
            print(f"  FAILED: cannot connect to {where}")
            failures += 1
            client = None
        for device in source.devices:
            print(f"  device {device.uid} (unit {device.unit_id}, map {device.map})")
            for planned in plan_device(device, maps[device.map]):
                metrics = ", ".join(r.metric for s in planned.spans for r in s.registers)
                requests = f"{len(planned.spans)} request{'s' if len(planned.spans) != 1 else ''}"
                print(f"    every {planned.group.interval_s:g} s, {requests}: {metrics}")
                for span in planned.spans:
                    line = f"      {span.table} {span.start}..{span.start + span.count - 1}"
                    if client is not None:
                        try:
                            read_span(client, span, device.unit_id)
                            line += "  ok"
                        except ReadError as exc:
                            line += f"  FAILED: {exc}"
                            failures += 1
                    print(line)
        if client is not None:
            client.close()
    if config.heartbeat:
        print(f"heartbeat: device {config.heartbeat.device} every {config.heartbeat.interval_s:g} s")
    if not args.offline:
        try:
            print(make_sink(config.sink).check())
        except SinkError as exc:
            print(f"sink FAILED: {exc}")
            failures += 1
    print("check passed" if not failures else f"check FAILED: {failures} problems")
    return 0 if not failures else 1


def _status(args) -> int:
    if args.buffer:
        path = Path(args.buffer)
    elif args.config:
        path = _config(args.config).buffer.path
    else:
        raise ValueError("give --config or --buffer")
    if not path.exists():
        raise FileNotFoundError(f"no buffer at {path}")
    buffer = Buffer(path, read_only=True)
    stats = buffer.stats()
    buffer.close()
    now_ms = time.time_ns() // 1_000_000
    report = {
        "buffer": str(path),
        "depth": stats.depth,
        "oldest_buffered": _iso(stats.oldest_buffered_ms),
        "oldest_reading_ts": _iso(stats.oldest_ts),
        "oldest_age_s": round(stats.oldest_age_s(now_ms), 1),
        "last_send": _iso(stats.last_send_ms),
        "sent_total": stats.sent_total,
        "dropped_total": stats.dropped_total,
        "refused_total": stats.refused_total,
        "bytes_in_use": stats.bytes_in_use,
        "file_bytes": stats.file_bytes,
    }
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:18} {value if value is not None else '-'}")
    return 0


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def _probe(args) -> int:
    config = _config(args.config)
    maps = config.register_maps()
    for source in config.sources:
        if not isinstance(source, ModbusTcpSourceConfig | ModbusRtuSourceConfig):
            continue
        device = next((d for d in source.devices if d.uid == args.device), None)
        if device is not None:
            break
    else:
        raise ValueError(f"no Modbus device {args.device!r} in the config")
    register_map = maps[device.map]
    try:
        known = register_map.register_at(args.register, RegisterTable(args.table) if args.table else None)
    except KeyError:
        known = None
    data_type = DataType(args.type or (known.type if known else "float32"))
    if data_type.registers < 2:
        raise ValueError(f"{data_type} has no word order to probe; give --type")
    table = RegisterTable(args.table or (known.table if known else "holding"))
    low, high, source_of_range = (known.min, known.max, "the register map") if known else (None, None, "none")
    metric = args.metric or (known.metric if known else None)
    if args.platform:
        if not args.token_file or not metric:
            raise ValueError("--platform needs --token-file, and --metric for a register the map does not name")
        token = Path(args.token_file).read_text().strip()
        low, high = metric_range_from_platform(args.platform, token, args.device, metric, ca_file=args.ca_file)
        source_of_range = f"Fieldwatch's device type of {args.device}"
    if args.min is not None or args.max is not None:
        low, high, source_of_range = args.min, args.max, "the command line"
    scale, offset = (known.scale, known.offset) if known else (1.0, 0.0)
    client = make_client(source)
    if not client.connect():
        print(f"cannot connect to {source.name}", file=sys.stderr)
        return 1
    try:
        words = read_span(client, ReadSpan(table, args.register, data_type.registers, ()), device.unit_id)
    except ReadError as exc:
        print(f"read failed: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    label = f" ({known.metric})" if known else ""
    print(f"{args.device} {table} {args.register}{label} as {data_type}: registers {[f'0x{w:04X}' for w in words]}")
    print(
        f"plausible range: {low if low is not None else '-inf'} .. {high if high is not None else '+inf'}"
        f" (from {source_of_range})"
    )
    results = decode_all_orders(words, data_type, low=low, high=high, scale=scale, offset=offset)
    for result in results:
        print(f"  {result.order}  {result.value!r:>26}  {'<- plausible' if result.plausible else ''}")
    print(verdict(results))
    return 0 if sum(r.plausible for r in results) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
