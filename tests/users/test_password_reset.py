"""Password reset by email, end to end with Django's test outbox: linked from both login pages, the email's link
sets a new password once, and nothing tells a stranger whether an address has an account."""

import re
import uuid

import pytest
from django.core import mail
from django.test import Client

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a brand new pass phrase 42"


@pytest.fixture(autouse=True)
def own_cache_namespace(settings):
    """The per-address email bound counts in Redis: a key prefix per test keeps counts apart."""
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": f"fw-test-{uuid.uuid4().hex}"}}


@pytest.fixture
def bob_with_email(bob):
    bob.email = "bob@example.com"
    bob.save(update_fields=["email"])
    return bob


def link_in(message) -> str:
    return re.search(r"http://testserver(/password-reset/\S+)", message.body).group(1)


def test_both_login_pages_link_the_reset(client):
    dashboard = client.get("/login")
    admin = client.get("/admin/login/")

    assert 'href="/password-reset"' in dashboard.text
    assert 'href="/admin/password_reset/"' in admin.text
    assert client.get("/admin/password_reset/")["Location"] == "/password-reset"


def test_a_reset_by_email_sets_a_new_password_once(client, bob_with_email):
    page = client.get("/password-reset")
    assert page.status_code == 200 and "Reset your password" in page.text

    sent = client.post("/password-reset", {"email": "Bob@Example.com"}, follow=True)

    assert sent.status_code == 200 and "Check your email" in sent.text
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["bob@example.com"]
    assert message.subject == "Fieldwatch: choose a new password"
    assert "Your username is: bob" in message.body and "works once, for 1 day" in message.body

    form = client.get(link_in(message), follow=True)  # Django swaps the token for a session entry: one redirect
    assert form.status_code == 200 and "Choose a new password" in form.text
    done = client.post(
        form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}, follow=True
    )
    assert "Password changed" in done.text

    assert Client().login(username="bob", password=NEW_PASSWORD)
    assert not Client().login(username="bob", password=PASSWORD)
    again = Client().get(link_in(message), follow=True)
    assert "This link does not work any more" in again.text


def test_the_new_password_must_pass_the_validators(client, bob_with_email):
    client.post("/password-reset", {"email": "bob@example.com"})
    form = client.get(link_in(mail.outbox[0]), follow=True)

    refused = client.post(form.redirect_chain[-1][0], {"new_password1": "12345678", "new_password2": "12345678"})

    assert refused.status_code == 200
    assert "This password is too common." in refused.text
    assert Client().login(username="bob", password=PASSWORD)


def test_an_unknown_address_looks_the_same_and_sends_nothing(client, bob_with_email):
    unknown = client.post("/password-reset", {"email": "nobody@example.com"}, follow=True)
    known = Client().post("/password-reset", {"email": "bob@example.com"}, follow=True)

    assert unknown.redirect_chain == known.redirect_chain == [("/password-reset/sent", 302)]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["bob@example.com"]


def test_a_stranger_cannot_flood_a_mailbox(client, bob_with_email, settings):
    for _ in range(settings.PASSWORD_RESET_EMAILS_PER_HOUR + 3):
        response = client.post("/password-reset", {"email": "bob@example.com"})
        assert response.status_code == 302  # the same answer every time: the bound reveals nothing

    assert len(mail.outbox) == settings.PASSWORD_RESET_EMAILS_PER_HOUR


@pytest.mark.parametrize(
    ("email", "reason"),
    [("not an address", "Enter a valid email address."), ("bob\x00@example.com", "Null characters are not allowed.")],
)
def test_a_malformed_address_is_refused_with_a_reason(client, bob_with_email, email, reason):
    response = client.post("/password-reset", {"email": email})
    assert response.status_code == 200
    assert reason in response.text
    assert not mail.outbox


def test_a_redis_outage_still_sends_the_email(client, bob_with_email, settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    assert client.post("/password-reset", {"email": "bob@example.com"}).status_code == 302
    assert len(mail.outbox) == 1
