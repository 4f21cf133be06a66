"""Drill: PostgreSQL stopped and restarted during an HTTP ingest stream (issue 12).

A test-owned PostgreSQL cluster (tests/support/pgcluster.py), migrated and seeded by the real ``manage.py``, behind a
real uvicorn serving ``config.asgi`` as the Procfile runs it. Gateways POST readings to ``/api/v1/ingest`` without
pause; the cluster is stopped (``pg_ctl -m fast``) and started again mid-stream. While it is down every answer must be
``503`` with ``Retry-After`` (a gateway backs off and resends; a 500 says "bug", and most clients do not retry it),
and afterwards every reading that was answered ``202`` must be in the database, counted there.
"""

import json
import os
import threading
import time

import psycopg
import pytest
import requests

from tests.support.pgcluster import TestCluster
from tests.support.processes import manage, wait_until
from tests.support.web_server import WebServer

pytestmark = pytest.mark.e2e

CLIENTS = 3
READINGS_PER_POST = 5
DOWN_SECONDS = 5.0

SETUP = """
from apps.devices.services import api_key_issue
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.devices.factories import SiteFactory
site = SiteFactory()
device_type = DeviceTypeFactory(organization=site.organization)
MetricDefinitionFactory(device_type=device_type, key="t", min_value=-1e9, max_value=1e9)
gateway = GatewayFactory(site=site, uid="gw-pgdrill")
for n in range(CLIENTS):
    DeviceFactory(uid=f"hp-pgdrill-{n}", site=site, device_type=device_type, gateway=gateway)
print("KEY", api_key_issue(gateway=gateway, name="pg drill")[1])
""".replace("CLIENTS", str(CLIENTS))


class Gateway(threading.Thread):
    """POSTs READINGS_PER_POST readings of its device per request, each with a timestamp of its own, until told to
    stop; records every answer (status, Retry-After, body) and which timestamps a 202 acknowledged."""

    def __init__(self, url: str, key: str, device: str, first_ts: int):
        super().__init__(daemon=True)
        self.url, self.key, self.device, self.next_ts = url, key, device, first_ts
        self.answers: list[dict] = []
        self.acknowledged: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            timestamps = list(range(self.next_ts, self.next_ts + READINGS_PER_POST))
            self.next_ts += READINGS_PER_POST
            body = {self.device: [{"ts": ts, "values": {"t": float(ts % 1000)}} for ts in timestamps]}
            at = time.monotonic()
            try:
                response = session.post(self.url, data=json.dumps(body), headers={"X-API-Key": self.key}, timeout=30)
            except requests.RequestException as error:
                self.answers.append({"at": at, "status": None, "error": repr(error)})
                time.sleep(0.2)
                continue
            answer = {"at": at, "status": response.status_code, "retry_after": response.headers.get("Retry-After")}
            try:
                answer["body"] = response.json()
            except ValueError:
                answer["body"] = response.text[:300]
            self.answers.append(answer)
            if response.status_code == 202:
                # Only what the answer says it accepted counts as acknowledged (a record refused is not).
                if answer["body"].get("accepted") == READINGS_PER_POST:
                    self.acknowledged.extend(timestamps)
            elif response.status_code == 503:
                time.sleep(min(float(answer["retry_after"] or 1), 0.2))  # the drill retries sooner than told


def test_http_ingest_answers_503_with_retry_after_while_postgres_is_down_and_loses_no_202():
    cluster = TestCluster()
    cluster.start()
    cluster.create_database()
    server = gateways = None
    try:
        manage("migrate", "--noinput", database_url=cluster.url)
        key = manage("shell", "-c", SETUP, database_url=cluster.url).stdout.split("KEY ", 1)[1].strip()
        server = WebServer(
            {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": "config.settings.test",
                "DATABASE_URL": cluster.url,
                "INGEST_HTTP_RATE_PER_MINUTE": "1000000",
            }
        )
        server.start()
        first_ts = int(time.time() * 1000) - 86_400_000
        gateways = [
            Gateway(f"{server.url}/api/v1/ingest", key, f"hp-pgdrill-{n}", first_ts + n * 3_600_000)
            for n in range(CLIENTS)
        ]
        for gateway in gateways:
            gateway.start()
        assert wait_until(lambda: all(len(g.acknowledged) >= 20 * READINGS_PER_POST for g in gateways), timeout=30)

        cluster.stop()
        down_at = time.monotonic()
        time.sleep(DOWN_SECONDS)
        starting_at = time.monotonic()
        cluster.start()
        up_at = time.monotonic()
        acknowledged_at_restart = sum(len(g.acknowledged) for g in gateways)
        assert wait_until(
            lambda: sum(len(g.acknowledged) for g in gateways) >= acknowledged_at_restart + 50 * READINGS_PER_POST,
            timeout=60,
        ), server.output()[-3000:]
        for gateway in gateways:
            gateway.stop.set()
        for gateway in gateways:
            gateway.join(30)

        answers = [answer for gateway in gateways for answer in gateway.answers]
        during = [a for a in answers if down_at + 0.5 <= a["at"] <= starting_at]
        statuses = {}
        for answer in answers:
            statuses[answer["status"]] = statuses.get(answer["status"], 0) + 1
        refused = [a for a in answers if a["status"] == 503]
        recovered = next((a["at"] - up_at for a in answers if a["at"] > up_at and a["status"] == 202), None)
        acknowledged = sum(len(g.acknowledged) for g in gateways)
        with psycopg.connect(cluster.url, autocommit=True) as connection:
            rows = connection.execute("SELECT count(*) FROM telemetry_reading").fetchone()[0]
        print(
            f"\npostgres down {up_at - down_at:.1f} s during HTTP ingest ({CLIENTS} gateways): answers {statuses}; "
            f"503 while down {sum(a['status'] == 503 for a in during)} of {len(during)}; first 202 {recovered:.2f} s "
            f"after the restart; readings acknowledged 202: {acknowledged}, stored: {rows}"
        )
        print("first 503:", refused[0] if refused else None)

        assert during, "no request was answered while the database was down"
        assert {a["status"] for a in during} == {503}, [a for a in during if a["status"] != 503][:3]
        assert all(a["retry_after"] and a["retry_after"].isdigit() for a in refused)
        assert all(isinstance(a["body"], dict) and a["body"].get("reason") for a in refused)
        assert set(statuses) <= {202, 503}, statuses  # no 500, no dropped connection, no partial acceptance
        assert all(a["body"]["accepted"] == READINGS_PER_POST for a in answers if a["status"] == 202)
        assert rows == acknowledged  # every 202 is stored, and nothing else was: a 503 stored nothing
    finally:
        if gateways:
            for gateway in gateways:
                gateway.stop.set()
        if server is not None:
            server.close()
        cluster.close()
