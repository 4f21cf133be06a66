"""What the browser tests share: logging in through the login page, polling the page's state through the DevTools
protocol, and where screenshots go (at the widths every page is checked at)."""

import time

from tests.support.processes import REPO_ROOT

PASSWORD = "correct horse battery staple"  # tests.users.factories.UserFactory's
WIDTHS = (1280, 390)
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"


def log_in(page, username: str) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit], form input[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)


def wait_js(page, expression: str, arg=None, timeout: float = 10.0) -> float:
    """Poll ``expression`` (a JS expression or function of ``arg``) until truthy; return the seconds it took.

    Not ``page.wait_for_function``: its in-page polling compiles the predicate with eval, which the dashboard's
    Content-Security-Policy (script-src 'self') rightly forbids; ``page.evaluate`` goes through the DevTools
    protocol instead.
    """
    started = time.monotonic()
    while True:
        if page.evaluate(expression, arg):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s: {expression}")
        time.sleep(0.02)


def wait_live(page) -> None:
    wait_js(page, "document.getElementById('live-status').textContent === 'Live'")
    # The subscription is answered before any group message can arrive: wait for it, not for a sleep.
    wait_js(page, "window.fieldwatchLive && window.fieldwatchLive.received.some(m => m.type === 'subscribed')")


def text_of(page, selector: str) -> str:
    return page.locator(selector).first.inner_text().strip()


def screenshot(page, name: str, width: int) -> None:
    """The page as it is, full length, into SCREENSHOTS as ``<name>-<width>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)
