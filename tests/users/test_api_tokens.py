"""Personal API tokens: shown once, stored hashed, Bearer authentication, expiry, revocation, scope and rate limit."""

import datetime
import types

import pytest
from django.test import override_settings
from django.utils import timezone

from apps.users.models import ApiToken
from apps.users.services import api_token_create, api_token_revoke

URL = "/api/v1/tokens"


def bearer(plaintext: str) -> dict:
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
def alice_token(alice):
    return api_token_create(user=alice, name="export script")


@pytest.fixture
def fixed_clock(monkeypatch):
    """Pin the rate limiter's clock so a test's requests never straddle a window boundary."""
    from apps.core import ratelimit

    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(time=lambda: 1_800_000_030.0))


def test_create_answers_the_plaintext_once_and_stores_only_its_hash(client, alice):
    client.force_login(alice)

    response = client.post(URL, {"name": "nightly export"}, content_type="application/json")

    assert response.status_code == 201
    plaintext = response.json()["token"]
    token = ApiToken.objects.get(pk=response.json()["id"])
    assert plaintext.startswith(f"fwt_{token.prefix}_")
    assert token.key_hash == ApiToken.hash_secret(plaintext)
    for row in ApiToken.objects.values_list():
        assert not any(plaintext.split("_", 2)[2] in str(value) for value in row)
    listed = client.get(URL).json()["results"]
    assert [item["key"] for item in listed] == [f"fwt_{token.prefix}…"]
    assert "token" not in listed[0]


def test_create_refuses_an_expiry_in_the_past(client, alice):
    client.force_login(alice)
    past = (timezone.now() - datetime.timedelta(minutes=1)).isoformat()
    response = client.post(URL, {"name": "x", "expires_at": past}, content_type="application/json")
    assert response.status_code == 400
    assert not ApiToken.objects.exists()


def test_bearer_token_authenticates_as_its_user_and_records_use(client, alice_token, alice):
    token, plaintext = alice_token

    response = client.get(URL, headers=bearer(plaintext))

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [token.pk]
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_last_used_is_written_at_most_once_a_minute(client, alice_token, django_assert_num_queries):
    token, plaintext = alice_token
    client.get(URL, headers=bearer(plaintext))
    token.refresh_from_db()
    first_use = token.last_used_at

    # token + user (one join), the conditional touch UPDATE (matches no row now), count, page.
    with django_assert_num_queries(4):
        assert client.get(URL, headers=bearer(plaintext)).status_code == 200

    token.refresh_from_db()
    assert token.last_used_at == first_use


@pytest.mark.parametrize(
    "make_header",
    [
        lambda plaintext: plaintext[:-2] + "xx",
        lambda plaintext: "fwt_00000000_nothing",
        lambda plaintext: "fwk_" + plaintext[4:],
        lambda plaintext: f"{plaintext} extra",
    ],
    ids=["wrong-secret", "unknown-prefix", "gateway-key-shape", "two-words"],
)
def test_invalid_bearer_token_is_401_with_a_challenge(client, alice_token, make_header):
    _, plaintext = alice_token
    response = client.get(URL, headers=bearer(make_header(plaintext)))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_token_is_401(client, alice):
    token, plaintext = api_token_create(user=alice, name="short", expires_at=timezone.now() + datetime.timedelta(1))
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))

    response = client.get(URL, headers=bearer(plaintext))

    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_revoked_token_is_401_on_the_very_next_request(client, alice_token, alice):
    token, plaintext = alice_token
    assert client.get(URL, headers=bearer(plaintext)).status_code == 200

    client.force_login(alice)
    assert client.delete(f"{URL}/{token.pk}").status_code == 204
    client.logout()

    response = client.get(URL, headers=bearer(plaintext))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_token_of_an_inactive_user_is_401(client, alice_token, alice):
    _, plaintext = alice_token
    alice.is_active = False
    alice.save(update_fields=["is_active"])
    assert client.get(URL, headers=bearer(plaintext)).status_code == 401


def test_anonymous_requests_answer_401_with_the_bearer_challenge(client):
    # The token class comes first in DEFAULT_AUTHENTICATION_CLASSES, so DRF has a challenge to send.
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_user_cannot_list_or_revoke_another_users_token(client, alice_token, bob):
    token, plaintext = alice_token
    _, bob_plaintext = api_token_create(user=bob, name="bob's", scopes=["read", "write"])

    listed = client.get(URL, headers=bearer(bob_plaintext)).json()["results"]
    response = client.delete(f"{URL}/{token.pk}", headers=bearer(bob_plaintext))

    assert token.pk not in [item["id"] for item in listed]
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None
    assert client.get(URL, headers=bearer(plaintext)).status_code == 200


def test_revoke_service_refuses_anyone_but_the_owner_an_admin_of_theirs_or_a_superuser(
    alice_token, bob, mallory, superuser
):
    from django.core.exceptions import PermissionDenied

    token, _ = alice_token
    for stranger in (bob, mallory):  # an operator of alice's organization, an admin of another one
        with pytest.raises(PermissionDenied):
            api_token_revoke(token=token, by=stranger)
    assert api_token_revoke(token=token, by=superuser) is True
    assert api_token_revoke(token=token, by=superuser) is False


@override_settings(API_TOKEN_RATE_PER_MINUTE=2)
def test_token_over_its_rate_is_429_with_retry_after(client, alice_token, alice, fixed_clock):
    _, plaintext = alice_token
    _, other_plaintext = api_token_create(user=alice, name="other script")

    statuses = [client.get(URL, headers=bearer(plaintext)).status_code for _ in range(2)]
    refused = client.get(URL, headers=bearer(plaintext))

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "30"
    # The limit is per token, and sessions are not counted against it.
    assert client.get(URL, headers=bearer(other_plaintext)).status_code == 200
    client.force_login(alice)
    assert client.get(URL).status_code == 200


def test_openapi_documents_session_and_bearer_authentication(client):
    schema = client.get("/api/schema", {"format": "json"}).json()

    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiToken"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "fwt_<prefix>_<secret>",
        "description": "A personal API token, created at POST /api/v1/tokens and shown once.",
    }
    assert schemes["cookieAuth"]["in"] == "cookie"
    security = schema["paths"]["/api/v1/tokens"]["get"]["security"]
    assert {"apiToken": []} in security and {"cookieAuth": []} in security
