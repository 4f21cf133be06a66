"""Login throttling: N failed logins per username or per IP within the window lock further attempts, even with
the right password, with a message that says so."""

import uuid

import pytest
from django.contrib import admin
from django.test import Client, RequestFactory

from apps.users.throttling import ThrottledAdminAuthenticationForm, ThrottledAuthenticationForm

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    """Failures are counted in Redis, which outlives a test; a key prefix per test keeps counts apart. The test
    settings raise the bound for every other test; here it is the production default."""
    settings.LOGIN_FAILURES_BEFORE_LOCK = 5
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"fw-test-{uuid.uuid4().hex}"}}


def admin_login(username, password, ip="192.0.2.1"):
    client = Client(REMOTE_ADDR=ip)
    response = client.post("/admin/login/", {"username": username, "password": password})
    return client, response


def fail(username, times, ip="192.0.2.1"):
    for _ in range(times):
        admin_login(username, "wrong", ip)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_fewer_failures_than_the_limit_still_allow_the_right_password(alice, settings):
    fail("alice", settings.LOGIN_FAILURES_BEFORE_LOCK - 1)
    client, response = admin_login("alice", PASSWORD)
    assert response.status_code == 302 and logged_in(client)


def test_the_username_is_locked_after_the_limit_even_with_the_right_password_from_elsewhere(alice, settings):
    fail("Alice", settings.LOGIN_FAILURES_BEFORE_LOCK)  # usernames are counted case-insensitively
    client, response = admin_login("alice", PASSWORD, ip="203.0.113.9")
    assert response.status_code == 200 and not logged_in(client)


def test_an_ip_is_locked_after_the_limit_across_usernames(alice, bob, settings):
    for n in range(settings.LOGIN_FAILURES_BEFORE_LOCK):
        admin_login(f"guess{n}", "wrong", ip="198.51.100.50")
    client, _ = admin_login("alice", PASSWORD, ip="198.51.100.50")
    assert not logged_in(client)
    client, _ = admin_login("alice", PASSWORD, ip="198.51.100.51")
    assert logged_in(client)


@pytest.mark.parametrize("form_class", [ThrottledAuthenticationForm, ThrottledAdminAuthenticationForm])
def test_the_login_forms_say_the_account_is_locked_instead_of_wrong_password(alice, settings, form_class):
    request = RequestFactory().post("/login", REMOTE_ADDR="192.0.2.77")
    form = form_class(request, data={"username": "alice", "password": "wrong"})
    assert not form.is_valid()
    assert "Too many failed login attempts" not in str(form.errors)

    fail("alice", settings.LOGIN_FAILURES_BEFORE_LOCK)
    form = form_class(request, data={"username": "alice", "password": PASSWORD})
    assert not form.is_valid()
    assert f"Wait {settings.LOGIN_LOCK_MINUTES} minutes" in str(form.errors)
    assert form.errors.as_data()["__all__"][0].code == "throttled"


def test_admin_login_page_shows_the_lock_message_once_its_form_is_the_throttled_one(alice, settings, monkeypatch):
    monkeypatch.setattr(admin.site, "login_form", ThrottledAdminAuthenticationForm)
    fail("alice", settings.LOGIN_FAILURES_BEFORE_LOCK)
    _, response = admin_login("alice", PASSWORD)
    assert "Too many failed login attempts" in response.text
