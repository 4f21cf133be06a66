"""Login throttling: growing delays per (username, address) after a few free failures, a higher bound per address,
no way for a stranger to lock the owner out, a page that says it is throttled and for how long (dashboard and
admin alike), and no 500 when Redis is away."""

import types
import uuid

import pytest
from django.test import Client, RequestFactory

from apps.users.throttling import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm, pair_delay_seconds

PASSWORD = "correct horse battery staple"
HOME = "192.0.2.1"
STRANGER = "203.0.113.9"
LOGIN_PAGES = ["/login", "/admin/login/"]


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    """Failures are counted in Redis, which outlives a test; a key prefix per test keeps counts apart. The test
    settings raise the bounds for every other test; here they are the production defaults (the address bound
    lowered, so a test need not send a hundred requests to reach it)."""
    settings.LOGIN_FREE_FAILURES = 5
    settings.LOGIN_DELAY_MAX_SECONDS = 900
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 30
    settings.LOGIN_ADDRESS_WINDOW_MINUTES = 60
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"fw-test-{uuid.uuid4().hex}"}}


@pytest.fixture
def clock(monkeypatch):
    """The throttle's clock, moved by the test (Redis expiry only tidies up; the waits are compared to this)."""
    from apps.users import throttling

    now = types.SimpleNamespace(value=1_800_000_000.0)
    monkeypatch.setattr(throttling, "time", types.SimpleNamespace(time=lambda: now.value))

    def advance(seconds: float) -> None:
        now.value += seconds

    return advance


def login(username, password, ip=HOME, page="/admin/login/"):
    client = Client(REMOTE_ADDR=ip)
    response = client.post(page, {"username": username, "password": password})
    return client, response


def fail(username, times, ip=HOME):
    for _ in range(times):
        login(username, "wrong", ip)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_a_few_typos_cost_nothing(alice, settings):
    fail("alice", settings.LOGIN_FREE_FAILURES - 1)
    client, response = login("alice", PASSWORD)
    assert response.status_code == 302 and logged_in(client)


def test_delays_grow_after_the_free_failures_and_hold_even_against_the_right_password(alice, settings, clock):
    fail("alice", settings.LOGIN_FREE_FAILURES)
    waits = []
    for _ in range(4):
        client, response = login("alice", PASSWORD)
        assert not logged_in(client)
        waits.append(response.context["form"].errors.as_data()["__all__"][0].message)
        clock(pair_delay_seconds(settings.LOGIN_FREE_FAILURES + len(waits) - 1) + 0.1)
        fail("alice", 1)

    assert [wait.rsplit("Try again in ", 1)[1] for wait in waits] == [
        "1 second.",
        "2 seconds.",
        "4 seconds.",
        "8 seconds.",
    ]
    clock(16.1)
    client, _ = login("alice", PASSWORD)
    assert logged_in(client)
    # The right password cleared the pair: the next typo is free again.
    fail("alice", 1)
    client, _ = login("alice", PASSWORD)
    assert logged_in(client)


def test_delays_are_capped(settings, alice, clock):
    settings.LOGIN_DELAY_MAX_SECONDS = 120
    assert [pair_delay_seconds(n) for n in range(4, 14)] == [0, 1, 2, 4, 8, 16, 32, 64, 120, 120]
    assert pair_delay_seconds(10**9) == 120
    for _ in range(settings.LOGIN_FREE_FAILURES + 12):
        clock(121)
        login("alice", "wrong")
    _, response = login("alice", PASSWORD)
    assert "Try again in 2 minutes." in response.text


def test_attempts_refused_while_waiting_neither_count_nor_lengthen_the_wait(alice, settings, clock):
    fail("alice", settings.LOGIN_FREE_FAILURES)  # now 1 s
    fail("alice", 20)  # all refused unchecked
    _, response = login("alice", "wrong")
    assert "Try again in 1 second." in response.text
    clock(1.1)
    fail("alice", 1)  # the sixth checked failure: 2 s
    _, response = login("alice", PASSWORD)
    assert "Try again in 2 seconds." in response.text


def test_a_stranger_cannot_lock_the_owner_out(alice, settings, clock):
    # The old rule: five wrong passwords for "alice" from anywhere locked her out for 15 minutes.
    for _ in range(settings.LOGIN_FREE_FAILURES + 8):
        clock(pair_delay_seconds(settings.LOGIN_FREE_FAILURES + 8))  # every failure checked: the worst case
        fail("Alice", 1, ip=STRANGER)  # usernames are counted case-insensitively
    stranger, _ = login("alice", PASSWORD, ip=STRANGER)
    owner, _ = login("alice", PASSWORD, ip=HOME)

    assert not logged_in(stranger)  # the stranger's own pair waits ...
    assert logged_in(owner)  # ... the owner, elsewhere, logs in at once


def test_an_address_trying_many_usernames_is_refused_for_the_window(alice, settings):
    for n in range(settings.LOGIN_ADDRESS_FAILURE_LIMIT):
        login(f"guess{n}", "wrong", ip="198.51.100.50")

    sprayer, response = login("alice", PASSWORD, ip="198.51.100.50")
    elsewhere, _ = login("alice", PASSWORD, ip="198.51.100.51")

    assert not logged_in(sprayer)
    assert "Logins from your network address are throttled" in response.text
    assert "Try again in 60 minutes." in response.text
    assert logged_in(elsewhere)


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_the_login_pages_say_the_login_is_throttled_and_for_how_long(alice, settings, page):
    fail("alice", settings.LOGIN_FREE_FAILURES - 1)

    _, starting = login("alice", "wrong", page=page)  # the failure that starts the wait: both things are true
    _, refused = login("alice", PASSWORD, page=page)

    assert starting.status_code == 200
    starting_errors = [error.code for error in starting.context["form"].errors.as_data()["__all__"]]
    assert starting_errors == ["invalid_login", "throttled"]
    assert refused.status_code == 200
    assert "throttled after too many failed attempts. Try again in 1 second." in refused.text
    assert [error.code for error in refused.context["form"].errors.as_data()["__all__"]] == ["throttled"]
    if page == "/login":
        assert "didn&#x27;t match" in starting.text and "didn&#x27;t match" not in refused.text


@pytest.mark.parametrize("form_class", [ThrottledAuthenticationForm, ThrottledAdminAuthenticationForm])
def test_the_login_forms_tell_a_throttled_login_from_a_wrong_password(alice, settings, form_class):
    request = RequestFactory().post("/login", REMOTE_ADDR="192.0.2.77")
    form = form_class(request, data={"username": "alice", "password": "wrong"})
    assert not form.is_valid()
    assert "throttled" not in str(form.errors)

    fail("alice", settings.LOGIN_FREE_FAILURES, ip="192.0.2.77")
    request = RequestFactory().post("/login", REMOTE_ADDR="192.0.2.77")
    form = form_class(request, data={"username": "alice", "password": PASSWORD})
    assert not form.is_valid()
    assert form.errors.as_data()["__all__"][0].code == "throttled"


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_a_redis_outage_never_fails_a_login(alice, settings, page):
    # Nothing listens on port 1: every cache call raises. The throttle lets the password decide (fails open).
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}

    _, wrong = login("alice", "wrong", page=page)
    client, right = login("alice", PASSWORD, page=page)

    assert wrong.status_code == 200 and "throttled" not in wrong.text
    assert right.status_code == 302 and logged_in(client)
