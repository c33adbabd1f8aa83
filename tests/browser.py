"""Headless Chromium for the tests that open pages: one Chromium per pytest process (so one per xdist worker), started
when a test first asks for it, and a fresh browser context (its own cookies and storage) for each test.

The fixtures are in tests/fixtures_browser.py: a test module that uses them names that plugin
(`pytest_plugins = ["tests.fixtures_browser"]`: the session's browser is then one fixture, not one per module that
imports it) and takes `new_page`.

Sync Playwright marks its event loop as running in the thread it is called from, and Django's ORM and asyncio refuse
to run in a thread with a running loop. So Playwright lives in a thread of its own here, for the whole session: the
test's thread drives it through `Handle`s, each call run in that thread, and goes on reading the ORM and running
asyncio code, between and around its page's calls, as in any other test."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1366, "height": 768}
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs /usr/bin/chromium (make test installs Debian's chromium)")


class BrowserThread:
    """Playwright and one Chromium, in a thread of their own; `call` runs a function there and returns its result
    (or raises its exception) in the caller's thread."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")  # one thread, kept
        self.playwright = self.browser = None

    def call(self, function, *args, **kwargs):
        return self.executor.submit(function, *args, **kwargs).result()

    def _launch(self) -> None:
        from playwright.sync_api import sync_playwright

        if self.playwright is None:
            self.playwright = sync_playwright().start()
        if self.browser is None or not self.browser.is_connected():  # e.g. Chromium crashed in an earlier test
            self.browser = self.playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)

    def new_context(self, **options) -> Handle:
        """A fresh browser context: no cookie, storage or cache of another test's."""
        self.call(self._launch)
        return Handle(self, self.call(self.browser.new_context, **options))

    def _stop(self) -> None:
        if self.browser is not None:
            self.browser.close()
        if self.playwright is not None:
            self.playwright.stop()

    def stop(self) -> None:
        try:
            self.call(self._stop)
        finally:
            self.executor.shutdown()


def _is_playwrights(value) -> bool:
    return type(value).__module__.startswith("playwright.")


class Handle:
    """A Playwright object (page, locator, context, ...) used from the test's thread: reading an attribute and calling
    a method happen in the browser's thread, and the Playwright objects they return come back as `Handle`s too.
    Callbacks (`page.on`, `page.route`) run in the browser's thread, with Playwright's own objects."""

    def __init__(self, thread: BrowserThread, target) -> None:
        self._thread, self._target = thread, target

    def __getattr__(self, name: str):
        value = self._thread.call(getattr, self._target, name)
        if callable(value) and not _is_playwrights(value):  # a method
            return partial(self._call, value)
        return self._wrap(value)

    def _call(self, method, *args, **kwargs):
        args = [self._unwrap(arg) for arg in args]
        kwargs = {name: self._unwrap(arg) for name, arg in kwargs.items()}
        return self._wrap(self._thread.call(method, *args, **kwargs))

    def _wrap(self, value):
        if isinstance(value, list):
            return [self._wrap(item) for item in value]
        return Handle(self._thread, value) if _is_playwrights(value) else value

    @staticmethod
    def _unwrap(value):
        return value._target if isinstance(value, Handle) else value

    def __repr__(self) -> str:
        return f"Handle({self._target!r})"


def collect_errors(page) -> list[str]:
    """The page's script errors and console errors, as they come."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and errors.append(f"console: {msg.text}"))
    return errors


@cache
def server_password(raw: str) -> str:
    """`raw` hashed for a server on the production settings, whose hashers cannot check the tests' fast MD5 hash:
    made once per process (a PBKDF2 hash at Django's work factor costs about a third of a second of CPU)."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    return hasher.encode(raw, hasher.salt())
