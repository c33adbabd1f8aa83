import time
from tests.test_live_page import *  # noqa
from tests.test_live_page import logged_in_page, send, wait_until_finished, needs_chromium, live_server_url  # noqa


@needs_chromium
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("n", range(3))
def test_debug_sockets(live_server_url, n):
    t0 = time.monotonic()
    log = []
    with logged_in_page(live_server_url, name="dbg") as (page, errors):
        log.append((round(time.monotonic() - t0, 2), "logged in"))
        def on_ws(s):
            log.append((round(time.monotonic() - t0, 2), "open", s.url))
            s.on("close", lambda ws: log.append((round(time.monotonic() - t0, 2), "close", ws.url)))
        page.on("websocket", on_ws)
        page.evaluate("() => new Promise(r => setTimeout(r, 0))")
        log.append((round(time.monotonic() - t0, 2), "feed state", page.evaluate("document.getElementById('ingestion').dataset.feed")))
        send(page, "What is 12*7?")
        wait_until_finished(page)
    print(log)
    with open("/tmp/fl1/dbg-sockets.txt", "a") as f:
        f.write(repr(log) + "\n")
