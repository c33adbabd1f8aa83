"""The browser fixtures (see tests/browser.py): `browser`, the session's Chromium, and `new_page`, a page in a
browser context of the test's own. A test module that uses them names this plugin:
`pytest_plugins = ["tests.fixtures_browser"]`."""
import pytest

from tests.browser import BrowserThread, Handle


@pytest.fixture(scope="session")
def browser():
    """The session's Chromium (launched at its first page)."""
    thread = BrowserThread()
    yield thread
    thread.stop()


@pytest.fixture
def new_page(browser):
    """`new_page(**context_options)`: a page in a browser context of its own (viewport, ...), closed after the test."""
    contexts: list[Handle] = []

    def open_page(**options) -> Handle:
        context = browser.new_context(**options)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()
