"""Sessions are read from Redis and written through to PostgreSQL (apps.users.sessions): with the cache's Redis (a
test-owned redis-server) stopped, a signed-in operator stays signed in, can sign out and sign in again, and every
skipped cache operation is counted."""

import pytest
from django.contrib.sessions.models import Session
from django.core.cache import caches
from prometheus_client import REGISTRY

from apps.users.sessions import SessionStore
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


def skipped(operation: str) -> float:
    return REGISTRY.get_sample_value("fieldwatch_session_cache_unavailable_total", {"operation": operation}) or 0.0


def test_a_session_is_stored_in_the_database_and_read_from_the_cache(client, redis_server, bob):
    client.force_login(bob)
    key = client.session.session_key

    assert Session.objects.filter(session_key=key).exists()
    assert caches["default"].get(SessionStore(key).cache_key) is not None
    Session.objects.filter(session_key=key).delete()  # the cached copy alone now carries the session
    assert client.get("/api/v1/devices").status_code == 200


def test_with_redis_down_a_signed_in_operator_stays_signed_in_and_can_sign_out_and_in(client, redis_server, bob):
    bob.set_password("pw-for-the-outage")
    bob.save()
    client.force_login(bob)
    assert client.get("/api/v1/devices").status_code == 200
    before = skipped("get")

    redis_server.stop()
    response = client.get("/api/v1/devices")

    assert response.status_code == 200, response.content
    assert skipped("get") > before  # read from the database instead
    logout = client.post("/logout")
    assert logout.status_code == 302
    assert client.get("/api/v1/devices").status_code == 401  # signed out: no credential
    login = client.post("/login", {"username": "bob", "password": "pw-for-the-outage"})
    assert login.status_code == 302, login.content[:500]
    assert client.get("/api/v1/devices").status_code == 200
