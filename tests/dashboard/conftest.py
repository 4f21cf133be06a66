"""Browser-test fixtures: a real uvicorn serving config.asgi, a real Mosquitto (project config), the real listener,
and Debian's Chromium driven by Playwright. Everything talks to the test database and a private Redis key space."""

import os
import uuid
from pathlib import Path

import pytest

from tests.support.processes import database_url
from tests.support.web_server import WebServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
BROWSER_SETTINGS = "tests.support.settings_browser"


@pytest.fixture(scope="module")
def live_env(django_db_setup, django_db_blocker):
    """The environment of the server and listener processes: the test database, private Redis prefixes."""
    with django_db_blocker.unblock():
        url = database_url()
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": BROWSER_SETTINGS,
        "DATABASE_URL": url,
        "CHANNELS_PREFIX": f"fw-browser-{uuid.uuid4().hex[:8]}",
        "CACHE_KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "fw-test"),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def web_server_env():
    """More environment for the server of a test module's tests (a module overrides this fixture: an SMTP server
    to send to, a setting switched on)."""
    return {}


@pytest.fixture
def web_server(live_env, web_server_env, transactional_db):
    """One server per test: the flush that ends a transactional test recreates content types and permissions with
    new ids, which a longer-lived server would still hold in its caches."""
    server = WebServer({**live_env, **web_server_env})
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the test's own ORM calls are still
    # synchronous code, which Django would otherwise refuse as "called from an async context".
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class PageErrors(list):
    """Console errors and uncaught page errors of every page opened in a test."""

    def watch(self, page, allow: tuple[str, ...] = ()) -> None:
        def on_console(message):
            source = (message.location or {}).get("url") or page.url
            if message.type == "error" and not any(text in message.text or text in source for text in allow):
                self.append(f"console: {message.text} ({source})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.append(f"pageerror: {error} ({page.url})"))
        # The console names a failed resource without its address; record which one it was.
        page.on(
            "response",
            lambda response: response.status >= 400
            and not any(text in response.url for text in allow)
            and self.append(f"HTTP {response.status}: {response.request.method} {response.url}"),
        )


@pytest.fixture
def page_errors():
    errors = PageErrors()
    yield errors
    assert list(errors) == [], "the browser reported errors"


@pytest.fixture
def open_page(browser, web_server, page_errors):
    """``open_page(width=1280)``: a fresh browser context (own cookies) and page, watched for errors."""
    contexts = []

    def make(width: int = 1280, height: int = 900, allow: tuple[str, ...] = ()):
        context = browser.new_context(viewport={"width": width, "height": height}, base_url=web_server.url)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page_errors.watch(page, allow)
        return page

    yield make
    for context in contexts:
        context.close()
