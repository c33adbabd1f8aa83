"""A local webhook receiver (a real HTTP server on 127.0.0.1) that answers each POST with the next scripted status
(then 200), keeps what came, and checks signatures as a receiver would (X-Chatter-Signature over the raw body)."""
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SECRET = "whsec-test-not-a-real-secret"


class Receiver:
    def __init__(self, statuses=()):
        self.statuses, self.received = list(statuses), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/chatter"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self, secret: str = SECRET) -> list[dict]:
        """The payloads whose signature checks out, as a receiver would check them."""
        good = []
        for headers, body in self.received:
            expected = hmac.new(secret.encode(), headers["x-chatter-timestamp"].encode() + b"." + body,
                                hashlib.sha256).hexdigest()
            if hmac.compare_digest(headers["x-chatter-signature"], f"sha256={expected}"):
                good.append(json.loads(body))
        return good

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} webhook POSTs came"
            time.sleep(0.05)


@pytest.fixture
def receiver():
    made = []

    def make(statuses=()):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for each in made:
        each.server.shutdown()
