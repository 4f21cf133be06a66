"""The crash drill, many times: randomised listener kills and broker restarts, every reading counted.

Each run streams QoS 1 messages (unique timestamps, six devices) through a Mosquitto with the project config into
the listener(s), SIGKILLs listeners at random points (start-up, just subscribed, mid
stream, between a commit and its acknowledgements), restarts them after a random delay under the same client id,
restarts the broker in some runs, then counts what was stored against what the broker acknowledged
(``tests/support/crash_drill.py`` has the method).

    python bench/crash_drill.py [--runs 200] [--messages 5000] [--seed 1] [--broker-restart-fraction 0.1]
                                [--listeners 1] [--group NAME] [--min-kills 0] [--max-kills 3] [--kill-points ...]

``--group`` puts the listeners in an MQTT 5 shared subscription group (``MQTT_SHARED_GROUP``); without it each
listener has a plain subscription (the default), so more than one listener without a group stores every message
once and counts the other copies as duplicates.

Uses a scratch database ``fieldwatch_drill`` (created and dropped). Prints a line per run on stderr and one JSON
object with the totals: runs, runs with a loss, readings lost, rows doubled, and the same per kill point.
"""

import collections
import os
import random
import subprocess
import sys

import _django  # before any import from the checkout: sys.path, DEBUG off
from _support import ScratchDatabase, argument_parser, log, result_print

DATABASE = "fieldwatch_drill"
PREFIX = "fwdrill"
DEVICES = [f"drill-hp-{n}" for n in range(1, 7)]
SETUP = """
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, MetricDefinitionFactory, SiteFactory
site = SiteFactory()
device_type = DeviceTypeFactory(organization=site.organization)
MetricDefinitionFactory(device_type=device_type, key="{metric}", min_value=-1e9, max_value=1e9)
for uid in {devices!r}:
    DeviceFactory(uid=uid, site=site, device_type=device_type)
"""


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--broker-restart-fraction", type=float, default=0.1)
    parser.add_argument("--listeners", type=int, default=1)
    parser.add_argument("--group", default="", help="Shared subscription group of the listeners (default: none).")
    parser.add_argument("--max-kills", type=int, default=3)
    parser.add_argument("--min-kills", type=int, default=0)
    parser.add_argument(
        "--kill-points", help="Comma-separated, from startup, subscribed, streaming, committed (default: all)."
    )
    args = parser.parse_args()
    _django.setup()
    # The drill's broker config is rendered from the project's models: imported once Django is set up.
    from tests.support.broker import Broker
    from tests.support.crash_drill import KILL_POINTS, METRIC, CrashDrill

    kill_points = tuple(args.kill_points.split(",")) if args.kill_points else KILL_POINTS

    scratch = ScratchDatabase(DATABASE, url=args.database_url)
    env = {
        **os.environ,
        "DATABASE_URL": scratch.url,
        "CACHE_KEY_PREFIX": f"fwdrill-{os.getpid()}",
        "MQTT_SHARED_GROUP": args.group,
    }
    choose = random.Random(args.seed)
    broker = Broker(prefix=PREFIX, load_generators=dict([_django.LOAD_GENERATOR]))
    drill = None
    results = []
    try:
        scratch.create(env)
        setup = SETUP.format(metric=METRIC, devices=DEVICES)
        subprocess.run([sys.executable, "manage.py", "shell", "-c", setup], cwd=_django.REPO_ROOT, env=env, check=True)
        broker.start()
        drill = CrashDrill(
            broker=broker,
            database_url=scratch.url,
            prefix=PREFIX,
            devices=DEVICES,
            publisher_login=_django.LOAD_GENERATOR,
            env=env,
            seed=args.seed,
            messages=args.messages,
        )
        for _ in range(args.runs):
            result = drill.run(
                listeners=args.listeners,
                kills=choose.randint(args.min_kills, args.max_kills),
                points=kill_points,
                broker_restart=choose.random() < args.broker_restart_fraction,
            )
            results.append(result)
            log(
                f"run {result.run}: published {result.published} stored {result.stored} lost {result.lost} "
                f"doubled {result.doubled} unrouted {result.unrouted} kills {','.join(result.kills) or '-'} "
                f"listeners {result.listeners}{' broker-restart' if result.broker_restarted else ''} "
                f"({result.seconds} s)"
            )
        exit_codes = drill.close()
    finally:
        if drill is not None:
            drill.close()
        broker.close()
        scratch.drop()

    by_point = collections.defaultdict(lambda: {"runs": 0, "runs_with_loss": 0, "lost": 0})
    for result in results:
        for point in set(result.kills) or {"none"}:
            by_point[point]["runs"] += 1
            by_point[point]["runs_with_loss"] += result.lost > 0
            by_point[point]["lost"] += result.lost
    restarted = [r for r in results if r.broker_restarted]
    result_print(
        {
            "runs": len(results),
            "messages_per_run": args.messages,
            "seed": args.seed,
            "published": sum(r.published for r in results),
            "stored": sum(r.stored for r in results),
            "lost": sum(r.lost for r in results),
            "doubled": sum(r.doubled for r in results),
            "runs_with_loss": sum(r.lost > 0 for r in results),
            "unrouted_by_broker": sum(r.unrouted for r in results),
            "kills": sum(len(r.kills) for r in results),
            "by_kill_point": {point: by_point[point] for point in (*KILL_POINTS, "none") if point in by_point},
            "broker_restarts": {"runs": len(restarted), "lost": sum(r.lost for r in restarted)},
            "listeners": args.listeners,
            "group": args.group or None,
            "final_listener_exit_codes": exit_codes,
        },
        args.json_out,
    )


if __name__ == "__main__":
    main()
