"""Two-factor authentication (TOTP) for everyone who can configure the platform, with real codes computed from the
device's key: enrolment before the dashboard or the admin, a code at every login, throttled wrong codes, codes that
work once, no websocket for a half-logged-in session, and device removal by an organization admin."""

import base64
import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from apps.audit.models import AuditEvent
from apps.core.audit import AuditAction
from apps.users.services import api_token_create

PASSWORD = "correct horse battery staple"
SETUP = "/account/two-factor/setup"
VERIFY = "/account/two-factor/verify"


@pytest.fixture
def required(settings):
    settings.FIELDWATCH_REQUIRE_ADMIN_2FA = True
    return settings


@pytest.fixture
def unthrottled(settings):
    """django-otp makes a device wait 1, 2, 4 ... s after each wrong code; tests of other things switch that off."""
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


def code(device: TOTPDevice, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now (or ``steps_ahead`` 30-second steps later), from the device's key."""
    device.refresh_from_db()
    value = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift + steps_ahead)
    return f"{value:06d}"


def wrong(device: TOTPDevice) -> str:
    """A code that matches no step the device accepts (now, one before, one after)."""
    accepted = {code(device, step) for step in (-1, 0, 1)}
    return next(candidate for candidate in (f"{n:06d}" for n in range(1_000_000)) if candidate not in accepted)


def enrolled(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="phone", confirmed=True)


def password_login(user, page="/login") -> Client:
    client = Client()
    response = client.post(page, {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302, response.content[:300]
    return client


def redirected_to(response, path: str) -> bool:
    return response.status_code == 302 and response["Location"].startswith(path)


# ---------------------------------------------------------------------------------------------------------------------
# Enrolment
# ---------------------------------------------------------------------------------------------------------------------
def test_an_admin_without_a_device_must_enrol_before_the_dashboard_the_admin_or_the_api(required, alice):
    client = password_login(alice)

    assert redirected_to(client.get("/"), f"{SETUP}?next=%2F")
    assert redirected_to(client.get("/admin/"), f"{SETUP}?next=%2Fadmin%2F")
    api = client.get("/api/v1/alerts")
    assert api.status_code == 403 and "two-factor" in api.json()["detail"]
    assert client.post("/api/v1/tokens", {"name": "sneaky"}, content_type="application/json").status_code == 403


def test_enrolment_shows_the_qr_code_and_the_secret_and_a_first_code_confirms_it(required, unthrottled, alice):
    client = password_login(alice)

    page = client.get(f"{SETUP}?next=/admin/")
    device = TOTPDevice.objects.get(user=alice, confirmed=False)
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    assert page.status_code == 200
    assert 'src="data:image/svg+xml' in page.text
    assert " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)) in page.text
    assert client.get(SETUP).status_code == 200 and TOTPDevice.objects.filter(user=alice).count() == 1  # same secret

    refused = client.post(SETUP, {"otp_token": wrong(device), "next": "/admin/"})
    assert refused.status_code == 400 and "did not match" in refused.text
    assert redirected_to(client.get("/"), SETUP)

    confirmed = client.post(SETUP, {"otp_token": code(device), "next": "/admin/"})

    assert redirected_to(confirmed, "/admin/")
    assert client.get("/admin/").status_code == 200 and client.get("/").status_code == 200
    device.refresh_from_db()
    assert device.confirmed
    assert AuditEvent.objects.filter(action=AuditAction.TWO_FACTOR_ENROL, actor=alice).count() == 1


def test_a_superuser_must_enrol_too(required, superuser):
    client = password_login(superuser, page="/admin/login/")
    assert redirected_to(client.get("/admin/"), SETUP)


def test_an_enrolled_account_cannot_enrol_a_second_device_with_the_password_alone(required, alice):
    enrolled(alice)
    client = password_login(alice)

    assert redirected_to(client.get(SETUP), VERIFY)
    assert TOTPDevice.objects.filter(user=alice).count() == 1


# ---------------------------------------------------------------------------------------------------------------------
# Logging in with a code
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", ["/login", "/admin/login/"])
def test_an_enrolled_admin_enters_a_code_after_the_password(required, unthrottled, alice, page):
    device = enrolled(alice)
    client = password_login(alice, page=page)
    pending_session = client.session.session_key

    assert redirected_to(client.get("/admin/"), f"{VERIFY}?next=%2Fadmin%2F")
    assert client.get(VERIFY).status_code == 200
    refused = client.post(VERIFY, {"otp_token": wrong(device), "next": "/admin/"})
    assert refused.status_code == 400 and "did not match" in refused.text
    malformed = client.post(VERIFY, {"otp_token": "12ab56", "next": "/admin/"})
    assert malformed.status_code == 400 and "Enter the 6 digits" in malformed.text

    verified = client.post(VERIFY, {"otp_token": code(device), "next": "/admin/"})

    assert redirected_to(verified, "/admin/")
    assert client.get("/admin/").status_code == 200
    assert client.session.session_key != pending_session  # a new session id for the new privilege
    assert AuditEvent.objects.filter(action=AuditAction.TWO_FACTOR_FAILED, actor=alice).count() == 1


def test_a_code_works_only_once(required, unthrottled, alice):
    device = enrolled(alice)
    first = password_login(alice)
    used = code(device)
    assert redirected_to(first.post(VERIFY, {"otp_token": used}), "/")

    second = password_login(alice)
    replayed = second.post(VERIFY, {"otp_token": used})
    assert replayed.status_code == 400
    assert redirected_to(second.post(VERIFY, {"otp_token": code(device, steps_ahead=1)}), "/")


def test_wrong_codes_are_throttled_with_the_time_to_wait(required, alice):
    device = enrolled(alice)
    client = password_login(alice)

    client.post(VERIFY, {"otp_token": wrong(device)})
    throttled = client.post(VERIFY, {"otp_token": code(device)})

    assert throttled.status_code == 429
    assert "Too many wrong codes. Try again in 1 second." in throttled.text
    time.sleep(1.1)
    assert redirected_to(client.post(VERIFY, {"otp_token": code(device)}), "/")


def test_next_never_leads_off_site(required, unthrottled, alice):
    device = enrolled(alice)
    client = password_login(alice)
    response = client.post(VERIFY, {"otp_token": code(device), "next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_people_who_configure_nothing_log_in_with_the_password_alone(required, bob):
    client = password_login(bob)
    assert client.get("/").status_code == 200


def test_without_the_setting_admins_log_in_with_the_password_alone(settings, alice):
    assert settings.FIELDWATCH_REQUIRE_ADMIN_2FA is False  # local and test settings
    client = password_login(alice)
    assert client.get("/admin/").status_code == 200


def test_anyone_who_enrolled_is_asked_for_a_code_even_without_the_setting(unthrottled, bob):
    device = enrolled(bob)
    client = password_login(bob)

    assert redirected_to(client.get("/"), VERIFY)
    assert redirected_to(client.post(VERIFY, {"otp_token": code(device)}), "/")
    assert client.get("/").status_code == 200


def test_a_session_opened_before_the_setting_is_caught_for_staff(settings, alice):
    client = password_login(alice)
    assert client.get("/admin/").status_code == 200
    settings.FIELDWATCH_REQUIRE_ADMIN_2FA = True
    assert redirected_to(client.get("/admin/"), SETUP)


def test_api_tokens_need_no_code(required, alice):
    # A token comes from a verified session (or another token) and is bounded by its scopes; scripts have no phone.
    _, plaintext = api_token_create(user=alice, name="script")
    enrolled(alice)
    assert Client().get("/api/v1/tokens", headers={"Authorization": f"Bearer {plaintext}"}).status_code == 200


# ---------------------------------------------------------------------------------------------------------------------
# The websocket
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_session_owing_its_code_gets_no_websocket(required, unthrottled, alice):
    from config.asgi import application

    device = enrolled(alice)
    client = password_login(alice)

    def connects() -> bool:
        cookie = f"{django_settings.SESSION_COOKIE_NAME}={client.cookies[django_settings.SESSION_COOKIE_NAME].value}"
        headers = [(b"origin", b"http://localhost"), (b"cookie", cookie.encode())]

        async def scenario():
            communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
            ok, _ = await communicator.connect()
            await communicator.disconnect()
            return ok

        return async_to_sync(scenario)()

    assert not connects()
    client.post(VERIFY, {"otp_token": code(device)})
    assert connects()


# ---------------------------------------------------------------------------------------------------------------------
# Devices in the admin
# ---------------------------------------------------------------------------------------------------------------------
DEVICES = "/admin/otp_totp/totpdevice/"


def verified_admin(user) -> Client:
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or enrolled(user)
    client = password_login(user)
    assert redirected_to(client.post(VERIFY, {"otp_token": code(device)}), "/")
    return client


def test_an_admin_removes_a_members_lost_device_who_then_enrols_anew(required, unthrottled, alice, bob, mallory):
    bob_device = enrolled(bob)
    mallory_device = enrolled(mallory)
    client = verified_admin(alice)

    listing = client.get(DEVICES)
    assert listing.status_code == 200
    assert "bob" in listing.text and "mallory" not in listing.text
    detail = client.get(f"{DEVICES}{bob_device.pk}/change/")
    assert bob_device.key not in listing.text + detail.text
    assert client.get(f"{DEVICES}{mallory_device.pk}/change/").status_code == 302  # not in her organization

    removed = client.post(DEVICES, {"action": "remove_devices", "_selected_action": [bob_device.pk, mallory_device.pk]})

    assert removed.status_code == 302
    assert not TOTPDevice.objects.filter(pk=bob_device.pk).exists()
    assert TOTPDevice.objects.filter(pk=mallory_device.pk).exists()
    event = AuditEvent.objects.get(action=AuditAction.TWO_FACTOR_REMOVE)
    assert (event.actor, event.before) == (alice, {"user": "bob"})
    bob_client = password_login(bob)
    assert bob_client.get("/").status_code == 200  # bob configures nothing: the password is enough again
