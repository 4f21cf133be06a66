"""For every test run from this checkout (``tests/`` and ``agent/tests/``): the edge agent under test is this
checkout's ``agent/src``, in the test process (``pythonpath`` in pyproject.toml) and in the agent processes tests
start (``PYTHONPATH`` here), whatever an editable install in the virtualenv points at (a shared virtualenv's may
point at another checkout)."""

import os
from pathlib import Path

AGENT_SRC = str(Path(__file__).resolve().parent / "agent" / "src")
os.environ["PYTHONPATH"] = os.pathsep.join(path for path in (AGENT_SRC, os.environ.get("PYTHONPATH")) if path)
