"""What the browser tests share: the test users' password, the widths every page is screenshot at, and logging in."""

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
