"""Real servers for the agent's tests, each on a free loopback port: a pymodbus Modbus TCP server, a Mosquitto that
requires a login, an MQTT subscriber that records what the broker delivered, and an ingest endpoint stub.

Also the *independent* register encoder the decoding is checked against: it places the bytes by the letters of
the order's name (``CDAB``: register 0 holds bytes C and D), where the decoder swaps words and bytes by flags.
"""

import asyncio
import getpass
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wait_until(predicate, timeout: float = 20, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


# --- the independent encoder ----------------------------------------------------------------------------------------

_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f", "float64": ">d"}
# The order's letters for 64-bit values, extended the way vendors document them (ABCD -> ABCDEFGH, ...).
_LETTERS_64 = {"ABCD": "ABCDEFGH", "CDAB": "GHEFCDAB", "BADC": "BADCFEHG", "DCBA": "HGFEDCBA"}


def encode_registers(value, data_type: str, order: str) -> list[int]:
    """``value`` as the registers a meter laid out in ``order`` would hold: byte ``X`` of the big-endian value goes
    where the letter ``X`` stands in the order's name, two letters per register."""
    big_endian = struct.pack(_FORMATS[data_type], value)
    if len(big_endian) == 2:
        letters = "AB" if order in ("ABCD", "CDAB") else "BA"
    elif len(big_endian) == 4:
        letters = order
    else:
        letters = _LETTERS_64[order]
    by_letter = {chr(ord("A") + i): byte for i, byte in enumerate(big_endian)}
    placed = [by_letter[letter] for letter in letters]
    return [placed[i] << 8 | placed[i + 1] for i in range(0, len(placed), 2)]


# --- Modbus ---------------------------------------------------------------------------------------------------------

FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}


class CountingBlock(ModbusSequentialDataBlock):
    """A holding table whose registers 0-1 (uint32, ABCD) count the reads of them: every poll of a device sees a
    new number, so a test can tell exactly which polls the server served and check that each one arrived."""

    def __init__(self, size: int):
        super().__init__(0, [0] * size)
        self.reads = 0
        self.lock = threading.Lock()

    def getValues(self, address, count=1):
        if address == 1:  # protocol address 0: the device context adds one
            with self.lock:
                self.reads += 1
                super().setValues(1, [self.reads >> 16, self.reads & 0xFFFF])
        return super().getValues(address, count)


class ModbusServer:
    """pymodbus's TCP server in a thread of the test, serving unit ids ``units`` with 20,100 of each table."""

    SIZE = 20_100

    def __init__(self, units=(1,), port: int | None = None):
        self.port = port or free_port()
        self.devices = {unit: self._device() for unit in units}
        self.context = ModbusServerContext(devices=self.devices, single=False)
        self.loop = asyncio.new_event_loop()
        self.server: ModbusTcpServer | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def _device(self) -> ModbusDeviceContext:
        def block():
            return ModbusSequentialDataBlock(0, [0] * self.SIZE)

        return ModbusDeviceContext(di=block(), co=block(), hr=block(), ir=block())

    def start(self) -> "ModbusServer":
        self.thread.start()

        async def serve():
            self.server = ModbusTcpServer(self.context, address=("127.0.0.1", self.port))
            await self.server.serve_forever()

        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def counting(self, unit: int = 1) -> CountingBlock:
        """Make ``unit``'s holding registers 0-1 a read counter (see CountingBlock); returns it."""
        block = CountingBlock(self.SIZE)
        self.devices[unit].store["h"] = block
        return block

    def set(self, table: str, address: int, words: list[int], unit: int = 1) -> None:
        self.devices[unit].setValues(FUNCTION_CODES[table], address, list(words))

    def set_value(self, table: str, address: int, value, data_type: str, order: str, unit: int = 1) -> None:
        self.set(table, address, encode_registers(value, data_type, order), unit)


# --- MQTT -----------------------------------------------------------------------------------------------------------


class Mosquitto:
    """A Mosquitto of the test's own: ``allow_anonymous false`` and a password file, persistence in a temp dir."""

    def __init__(self, logins: dict[str, str], acl: str | None = None):
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="fwagent-mosquitto-"))
        self.password_file = self.directory / "passwd"
        for index, (username, password) in enumerate(logins.items()):
            create = ["-c"] if index == 0 else []
            subprocess.run(["mosquitto_passwd", "-b", *create, str(self.password_file), username, password], check=True)
        self.config = self.directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Run as whoever starts it: as root Mosquitto would switch to its own user, who cannot read this dir.
            f"user {getpass.getuser()}\n"
            "allow_anonymous false\n"
            f"password_file {self.password_file}\n"
            "persistence true\n"
            f"persistence_location {self.directory}/\n"
            "max_queued_messages 1000000\n"
            "max_inflight_messages 1000\n"
            f"log_dest file {self.directory}/mosquitto.log\n"
        )
        if acl is not None:
            (self.directory / "acl").write_text(acl)
            with self.config.open("a") as config:
                config.write(f"acl_file {self.directory}/acl\n")
        self.process: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class Recorder:
    """A subscriber with a persistent session (QoS 1, so the broker queues for it across its own restarts) that
    keeps every message it received, in arrival order."""

    def __init__(self, broker: Mosquitto, username: str, password: str, topic: str = "#"):
        self.messages: list[tuple[str, dict | list]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"recorder-{broker.port}", clean_session=False
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    def readings(self) -> list[tuple[str, int, dict]]:
        """(device, ts, values) of every reading in every gateway or device payload received."""
        out = []
        with self.lock:
            for topic, document in self.messages:
                if isinstance(document, dict):
                    for device, items in document.items():
                        out += [(device, item["ts"], item["values"]) for item in items]
                else:
                    device = topic.split("/")[-2]
                    out += [(device, item["ts"], item["values"]) for item in document]
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- an ingest endpoint -----------------------------------------------------------------------------------------


class IngestStub:
    """``POST /api/v1/ingest`` as the platform answers it; ``script`` is a list of (status, headers, body) answers
    used in turn before the default 202, so a test can stage 429s, 413s, 401s. Keeps the bodies it accepted."""

    def __init__(self, key: str = "fwk_test_secret"):
        self.key = key
        self.script: list[tuple[int, dict, dict]] = []
        self.accepted: list[dict] = []
        self.requests: list[tuple[int, int]] = []  # (status answered, readings in the body)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                readings = sum(len(v) for v in body.values()) if isinstance(body, dict) else len(body)
                if self.headers.get("X-API-Key") != stub.key:
                    status, headers, answer = 401, {}, {"reason": "unknown_api_key", "detail": "no such key"}
                elif stub.script:
                    status, headers, answer = stub.script.pop(0)
                    if callable(answer):
                        status, headers, answer = answer(body)
                else:
                    stub.accepted.append(body)
                    status, headers, answer = 202, {}, {"accepted": readings, "rejected": 0, "duplicates": 0}
                stub.requests.append((status, readings))
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/ingest"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def readings(self) -> list[tuple[str, int, dict]]:
        return [
            (device, item["ts"], item["values"])
            for body in self.accepted
            for device, items in body.items()
            for item in items
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the agent as a process -------------------------------------------------------------------------------------


class AgentProcess:
    """``fieldwatch-agent run --config <path>`` as systemd would start it; ``kill()`` is SIGKILL (no cleanup)."""

    def __init__(self, config_path: Path):
        self.config_path = config_path
        self.log_path = config_path.with_suffix(".log")
        self.process: subprocess.Popen | None = None

    def start(self) -> "AgentProcess":
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fieldwatch_agent", "run", "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        self.process.terminate()
        return self.process.wait(20)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
