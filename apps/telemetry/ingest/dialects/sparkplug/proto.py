"""The Sparkplug B protobuf module, generated from ``sparkplug_b.proto`` (committed) at install time, not committed.

``make proto`` (a dependency of ``make setup`` and ``make test``) runs protoc from the pinned ``grpcio-tools``. A
checkout that skipped it (a worktree, a bare ``pytest``, the Docker build) still works: the first import generates
the module the same way, in this process, into this directory, and replaces it atomically, so concurrent first
imports (pytest-xdist workers) cannot read half a file. The generated code checks at import that the installed
protobuf runtime is at least as new as the protoc that wrote it; both are pinned in requirements/base.txt.
"""

import importlib
import os
import tempfile
from pathlib import Path

PROTO = Path(__file__).with_name("sparkplug_b.proto")
MODULE = "apps.telemetry.ingest.dialects.sparkplug.sparkplug_b_pb2"
# protoc names the descriptor after the .proto's path below this root: a name no other Sparkplug library uses.
ROOT = PROTO.parents[5]


def generate() -> Path:
    """Run protoc on ``sparkplug_b.proto``; return the generated module's path."""
    from grpc_tools import protoc  # build-time tool: imported only when generating

    relative = PROTO.relative_to(ROOT)
    target = PROTO.with_name("sparkplug_b_pb2.py")
    with tempfile.TemporaryDirectory(dir=PROTO.parent) as scratch:
        status = protoc.main(["protoc", f"-I{ROOT}", f"--python_out={scratch}", str(relative)])
        if status != 0:
            raise RuntimeError(f"protoc failed ({status}) on {PROTO}")
        os.replace(Path(scratch) / relative.with_name("sparkplug_b_pb2.py"), target)
    return target


def load():
    """The generated module, generating it first when it is missing or older than the .proto."""
    target = PROTO.with_name("sparkplug_b_pb2.py")
    if not target.exists() or target.stat().st_mtime < PROTO.stat().st_mtime:
        generate()
        importlib.invalidate_caches()
    return importlib.import_module(MODULE)
