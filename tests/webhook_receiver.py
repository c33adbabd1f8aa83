"""A local webhook receiver (a real HTTP server on 127.0.0.1) that answers each POST with the next scripted status
(then 200), keeps what came, and checks signatures as a receiver would (X-Chatter-Signature over the raw body).
127.0.0.1 is not a public address: tests that deliver to it allow it as an operator would
(CHATTER_WEBHOOK_ALLOWED_NETWORKS=RECEIVER_NETWORK). And a fake name resolution for webhooks (`fake_dns`)."""
import hashlib
import hmac
import ipaddress
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

SECRET = "whsec-test-not-a-real-secret"
RECEIVER_NETWORK = "127.0.0.1/32"  # where receivers listen: the allow-list of tests that deliver to them
RECEIVER_NETWORKS = (ipaddress.ip_network(RECEIVER_NETWORK),)  # the same, as the setting holds it
# Webhook URLs no surface may save (none is a public destination), as an attacker tried them.
NON_PUBLIC_URLS = [
    "http://127.0.0.1:8000/hook", "http://localhost:6379/", "http://[::1]/hook", "http://0.0.0.0:5432/",
    "http://10.0.0.1/hook", "http://169.254.169.254/latest/meta-data/", "http://metadata.google.internal/",
    "http://user:pw@example.com/hook", "http://foo.localhost/hook", "http://[::ffff:127.0.0.1]/hook",
    "http://100.64.0.1/hook", "http://224.0.0.1/hook", "http://192.168.1.1:8080/hook", "http://[fe80::1]/hook",
]


class Receiver:
    """`statuses`: each a status code, or (status code, headers) such as (302, {"Location": …}). A slow or greedy
    receiver: `drip_s`, its answer's header lines sent one at a time this long apart (`drip_lines` of them);
    `body_size`, the size of the body of each answer (`sent`: how much of it got out before the client hung up)."""

    def __init__(self, statuses=(), host: str = "127.0.0.1", port: int = 0, *, drip_s: float = 0,
                 drip_lines: int = 0, body_size: int = 0):
        self.statuses, self.received, self.sent, self.answered = list(statuses), [], [], threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                status, headers = status if isinstance(status, tuple) else (status, {})
                sent, chunk = 0, b"x" * 65536
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    for line in range(drip_lines):
                        self.flush_headers()
                        time.sleep(drip_s)
                        self.send_header(f"X-Drip-{line}", "x")
                    if body_size:
                        self.send_header("Content-Length", str(body_size))
                    self.end_headers()
                    while sent < body_size:
                        self.wfile.write(chunk[:body_size - sent])
                        sent += min(len(chunk), body_size - sent)
                except OSError:  # the client hung up
                    pass
                finally:
                    if body_size:
                        receiver.sent.append(sent)
                    receiver.answered.set()

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}/hooks/chatter"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()  # a quick shutdown

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

    def make(statuses=(), **how):
        made.append(Receiver(statuses, **how))
        return made[-1]

    yield make
    for each in made:
        each.server.shutdown()


class FakeDNS:
    """Name resolution of webhook hosts, scripted: each name gives its answers in turn (the last one from then on),
    an unknown name does not resolve; every lookup is kept. Webhooks and MCP clients reach it through CHATTER_OUTBOUND_RESOLVER."""

    current = None

    def __init__(self):
        self.answers, self.lookups = {}, []

    def answer(self, name: str, *answers: list[str]) -> None:
        self.answers[name] = [list(each) for each in answers]

    def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        scripted = self.answers.get(host)
        if not scripted:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return scripted.pop(0) if len(scripted) > 1 else scripted[0]


def fake_resolve(host: str, port: int) -> list[str]:
    return FakeDNS.current.resolve(host, port)


@pytest.fixture
def fake_dns(settings):
    """Webhook hosts resolve as the test scripts them (in this process: deliveries run inline in tests)."""
    FakeDNS.current = FakeDNS()
    settings.CHATTER_OUTBOUND_RESOLVER = "tests.webhook_receiver.fake_resolve"
    yield FakeDNS.current
    FakeDNS.current = None
