"""The browser fixtures (see tests/browser.py): `browser`, the session's Chromium, and `new_page`, a page in a
browser context of the test's own. A test module that uses them names this plugin:
`pytest_plugins = ["tests.fixtures_browser"]`.

A test that fails leaves a screenshot of each page it still has open in test-artifacts/ (`<test name>-<n>.png`);
a test that passes leaves none (a full-page screenshot costs a few tenths of a second of CPU)."""
import re

import pytest

from tests.browser import ARTIFACTS, BrowserThread, Handle

FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(scope="session")
def browser():
    """The session's Chromium (launched at its first page)."""
    thread = BrowserThread()
    yield thread
    thread.stop()


@pytest.fixture
def new_page(browser, request):
    """`new_page(**context_options)`: a page in a browser context of its own (viewport, ...), closed after the test."""
    contexts: list[Handle] = []

    def open_page(**options) -> Handle:
        context = browser.new_context(**options)
        contexts.append(context)
        return context.new_page()

    yield open_page
    if request.node.stash.get(FAILED, False):
        screenshot_pages(contexts, re.sub(r"[^\w.-]+", "-", request.node.name))
    for context in contexts:
        context.close()


def screenshot_pages(contexts: list[Handle], name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pages = [page for context in contexts for page in context.pages if not page.is_closed()]
    for number, page in enumerate(pages, 1):
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}-{number}.png"), full_page=True)
        except Exception as exc:  # a page that crashed or hangs: the test's own failure is what matters
            print(f"no screenshot of {name}-{number}: {exc}")
