"""Loopback ports for the servers tests and benchmarks start: a free one to listen on, and waiting until one listens.

Imports nothing from Django, so the TimescaleDB test server and the benchmarks can use it before settings exist.
"""

import random
import socket
import time

# Below Linux's ephemeral range (32768-60999 by default), from which the kernel picks the source port of outgoing
# connections. A test that stops a server and starts it again on its port (a database outage, a broker restart)
# keeps connecting to that port meanwhile; with the port in the ephemeral range one such connect can be given the
# same port as its source and connect to itself (TCP simultaneous open), holding the port: the server cannot bind
# it again, and the client waits for an answer from itself.
_PORTS = range(20000, 32768)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, outside the ephemeral range; the caller's server binds it soon after (a race we
    accept on loopback)."""
    for _ in range(100):
        port = random.choice(_PORTS)
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS.start}-{_PORTS.stop - 1} on {host}")


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")
