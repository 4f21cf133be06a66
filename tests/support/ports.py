"""Loopback ports for the servers tests and benchmarks start: a free one to listen on, and waiting until one listens.

Imports nothing from Django, so the TimescaleDB test server and the benchmarks can use it before settings exist.
"""

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now; the caller's server binds it soon after (a race we accept on loopback)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")
