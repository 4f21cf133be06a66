"""How every benchmark starts: from this checkout, Django with DEBUG off, here and in every process it starts.

The scripts run as ``python bench/<name>.py``, so Python puts this directory first on ``sys.path`` and each script's
``import _django`` runs this before anything from the checkout is imported.
"""

import os
import sys
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(REPO_ROOT))  # apps/, config/ and tests/support of this checkout
sys.path.insert(0, str(REPO_ROOT / "agent" / "src"))  # this checkout's edge agent, whatever pip installed
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
# Forced, not defaulted, and in the environment so the listener, uvicorn and migrate children inherit it: with
# DEBUG on every process keeps a log of its queries and the figures would include that cost.
os.environ["DJANGO_DEBUG"] = "0"
# The brokers benchmarks start (tests/support/broker.py) admit logins only, like production: the listener's, fixed
# here for every process, and one load generator that may publish to every topic, so a publisher process drives
# thousands of devices over one connection and the figures measure the broker and the listener, not CONNECTs.
# No benchmark commit may sync a broker of `make run` (its worker would otherwise be sent the task).
os.environ["MQTT_LISTENER_PASSWORD"] = "bench-listener-password"
os.environ["BROKER_AUTH_SYNC"] = "0"
LOAD_GENERATOR = ("bench-publisher", "bench-publisher-password")


def setup() -> None:
    import django
    from django.conf import settings

    # WhiteNoise (with DEBUG off) warns that collectstatic never ran; a checkout has no STATIC_ROOT, and no benchmark
    # serves static files.
    warnings.filterwarnings("ignore", message="No directory at: ")
    django.setup()
    if settings.DEBUG:
        raise SystemExit(f"{os.environ['DJANGO_SETTINGS_MODULE']} ignores DJANGO_DEBUG=0; benchmarks need DEBUG off")
