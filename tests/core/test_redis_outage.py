"""Ingest does not depend on Redis: with the cache's Redis (a test-owned redis-server) stopped mid-test, HTTP ingest
still stores and answers 202, and the rate limit it could not enforce is logged and counted."""

import json
import time

import pytest
from django.core.cache import caches
from prometheus_client import REGISTRY

from apps.devices.services import api_key_issue
from apps.telemetry.models import Reading
from tests.devices.factories import DeviceFactory, DeviceTypeFactory, GatewayFactory, MetricDefinitionFactory
from tests.support.redis_server import RedisServer


@pytest.fixture
def redis_server(settings):
    server = RedisServer().start()
    settings.CACHES = {
        "default": {
            "BACKEND": "apps.core.cache.RedisCache",
            "LOCATION": server.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    yield server
    server.close()
    caches["default"].close()


@pytest.fixture
def gateway_key(site_a):
    device_type = DeviceTypeFactory(organization=site_a.organization)
    MetricDefinitionFactory(device_type=device_type, key="t", min_value=-1e9, max_value=1e9)
    gateway = GatewayFactory(site=site_a, uid="gw-redis")
    DeviceFactory(uid="hp-redis", site=site_a, device_type=device_type, gateway=gateway)
    return api_key_issue(gateway=gateway, name="redis outage")[1]


def unavailable() -> float:
    return REGISTRY.get_sample_value("fieldwatch_rate_limit_unavailable_total", {"scope": "ingest-key"}) or 0.0


def post(client, key, ts):
    body = json.dumps({"hp-redis": [{"ts": ts, "values": {"t": 1.0}}]})
    return client.post("/api/v1/ingest", body, content_type="application/json", headers={"X-API-Key": key})


def test_http_ingest_stores_while_redis_is_down_and_counts_the_unenforced_limit(client, redis_server, gateway_key):
    now_ms = int(time.time() * 1000)
    assert post(client, gateway_key, now_ms - 2000).status_code == 202
    before = unavailable()

    redis_server.stop()
    response = post(client, gateway_key, now_ms - 1000)

    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    assert Reading.objects.count() == 2
    assert unavailable() == before + 1
