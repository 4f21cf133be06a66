"""The account pages in a real browser (Debian's Chromium against a real uvicorn, as tests/dashboard/test_browser.py):
a password reset from the login page through a real SMTP server (aiosmtpd) to the dashboard, and an admin's
first login with two-factor authentication on, enrolling with a code computed from the device's key, after which
the page's live websocket connects. No page logs an error (the QR code is a data: image the CSP allows)."""

import re
import time

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from tests.support.local_servers import SmtpSink
from tests.support.processes import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"  # tests.users.factories.UserFactory's
NEW_PASSWORD = "a brand new pass phrase 42"
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"


@pytest.fixture
def web_server_env(smtp):
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(smtp.port),
        "FIELDWATCH_REQUIRE_ADMIN_2FA": "1",
    }


def first_message(smtp, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not smtp.messages:
        assert time.monotonic() < deadline, "no email arrived"
        time.sleep(0.05)
    return smtp.messages[0]


def test_a_forgotten_password_is_reset_by_email_from_the_login_page(open_page, smtp, bob):
    bob.email = "bob@example.com"
    bob.save(update_fields=["email"])
    page = open_page()

    page.goto("/login")
    page.click("text=Forgotten your password?")
    page.fill("input[name=email]", "bob@example.com")
    page.click("form button[type=submit]")
    expect(page.locator("h1")).to_have_text("Check your email")

    sent = first_message(smtp)
    assert sent["to"] == ["bob@example.com"]
    link = re.search(r"http://\S+/password-reset/\S+", SmtpSink.text_of(sent["message"])).group(0)
    page.goto(link)
    expect(page.locator("h1")).to_have_text("Choose a new password")
    page.fill("input[name=new_password1]", NEW_PASSWORD)
    page.fill("input[name=new_password2]", NEW_PASSWORD)
    page.click("form button[type=submit]")
    expect(page.locator("h1")).to_have_text("Password changed")

    page.get_by_role("link", name="Log in").click()
    page.fill("input[name=username]", "bob")
    page.fill("input[name=password]", NEW_PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
    expect(page.locator("#live-status")).to_have_text("Live")


def test_an_admin_enrols_an_authenticator_at_the_first_login_and_then_reaches_the_dashboard(open_page, alice):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = open_page()

    page.goto("/login")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(lambda url: "/account/two-factor/setup" in url)
    qr = page.locator("img.qr-code")
    expect(qr).to_be_visible()
    assert qr.evaluate("image => image.complete && image.naturalWidth > 0")
    page.screenshot(path=str(SCREENSHOTS / "two-factor-setup-1280.png"), full_page=True)

    device = TOTPDevice.objects.get(user=alice, confirmed=False)
    assert page.locator("[data-secret]").inner_text().replace(" ", "") in device.config_url
    page.fill("input[name=otp_token]", f"{totp(device.bin_key):06d}")
    page.click("form.login__form button[type=submit]")

    page.wait_for_url(lambda url: "/account/" not in url)
    expect(page.locator("#live-status")).to_have_text("Live")  # the websocket is no longer refused
    assert TOTPDevice.objects.get(pk=device.pk).confirmed
