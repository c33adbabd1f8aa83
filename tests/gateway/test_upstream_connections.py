"""The gateway keeps its upstream connections: calls one after another, whole or streamed, go over kept-alive
connections (one for the whole calls, one for the streams) to an upstream that keeps connections open (as OpenAI's
servers do), and each is still a run billed exactly as the upstream reported."""
import http.client
import http.server
import socket
import struct
import threading
import time
from contextlib import contextmanager

import pytest

from gateway.upstream import upstream_post_whole
from tests.factories import ApiTokenFactory
from tests.gateway.conftest import client
from tests.invariants import assert_all
from tests.openai_stub import OpenAIStub
from workflows.models import WorkflowExecution

USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
ASK = [{"role": "user", "content": "What is 12*7?"}]


@pytest.fixture
def kept_alive_gateway(daphne_server, alice):
    with OpenAIStub(keep_alive=True) as upstream:
        server = daphne_server(OPENAI_BASE_URL=upstream.base_url, OPENAI_API_KEY="sk-upstream-not-a-real-key",
                               CHATTER_PROVIDER_MAX_RETRIES="0")
        server.key = ApiTokenFactory(user=alice, name="gateway", scopes=["gateway"]).key
        server.v1 = f"{server.base_url}/v1"
        server.upstream = upstream
        yield server


def test_calls_in_a_row_share_one_upstream_connection_and_each_is_billed(kept_alive_gateway):
    upstream = kept_alive_gateway.upstream
    upstream.always(content="84.", usage=USAGE)
    gateway = client(kept_alive_gateway)

    ids = []
    for _ in range(3):
        raw = gateway.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
        assert raw.parse().choices[0].message.content == "84."
        ids.append(raw.headers["x-chatter-execution"])
        with gateway.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}) as streamed:
            chunks = list(streamed.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "84."
        assert chunks[-1].usage.total_tokens == 30
        ids.append(streamed.headers["x-chatter-execution"])

    # one connection for the whole calls (gateway.upstream's kept ones), one for the streamed ones (the pass-through's
    # pool), one for the listing of the models the upstream serves (read once a minute, by the provider adapters)
    assert upstream.connections == 3
    assert len(upstream.requests) == 6
    for execution in WorkflowExecution.objects.filter(pk__in=ids):
        assert execution.status == "completed", execution.error_message
        assert (execution.prompt_tokens, execution.completion_tokens, execution.total_tokens) == (21, 9, 30)
        assert_all(execution)
    assert WorkflowExecution.objects.filter(pk__in=ids).count() == 6


class _Upstream(http.server.BaseHTTPRequestHandler):
    """A kept-alive (HTTP/1.1) upstream's request handler: `taken()` reads a request and notes its client's port (in
    the subclass's own `served`), `answer()` writes the one JSON answer."""

    protocol_version = "HTTP/1.1"
    served: list[int]
    BODY = b'{"ok": true}'

    def taken(self) -> int:
        """Read the request; how many this handler's class has served, this one included."""
        self.rfile.read(int(self.headers["Content-Length"]))
        self.served.append(self.client_address[1])
        return len(self.served)

    def answer(self, *, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.BODY) if length is None else length))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, *args):
        pass


@contextmanager
def _serving(handler: type[_Upstream], server: type = http.server.ThreadingHTTPServer):
    """A server of `handler` on loopback, in a thread, while the block runs: its chat completions URL."""
    running = server(("127.0.0.1", 0), handler)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{running.server_port}/v1/chat/completions"
    finally:
        running.shutdown()
        running.server_close()


class _ClosesWhenIdle(_Upstream):
    """Answers each request kept-alive (no `Connection: close`), then closes the connection anyway, as an upstream
    does with a connection that sat idle past its timeout."""

    served: list[int] = []

    def do_POST(self):
        self.taken()
        self.answer()
        self.close_connection = True


class _HalfCloses(http.server.ThreadingHTTPServer):
    """A server that ends its side of a connection it is done with (its FIN sent) and keeps the socket open until it
    stops, as a server that lingers on close does: a request written to it is taken by its kernel, never answered."""

    closed = 0
    lingering: list = []

    def shutdown_request(self, request):
        request.shutdown(socket.SHUT_WR)
        self.lingering.append(request)
        type(self).closed += 1

    def server_close(self):
        super().server_close()
        for request in self.lingering:
            request.close()


def test_a_kept_connection_the_upstream_closed_is_not_sent_on_and_the_call_made(settings):
    """A whole call takes an idle kept connection; one the upstream has ended meanwhile carries nothing (a request
    written to it would never be answered): the call goes on a new one, sent once, and every call is answered."""
    settings.CHATTER_PROVIDER_TIMEOUT_S = 5
    answers = []
    with _serving(_ClosesWhenIdle, _HalfCloses) as url:
        for number in range(3):
            deadline = time.monotonic() + 5
            while _HalfCloses.closed < number and time.monotonic() < deadline:  # the upstream closed the last one
                time.sleep(0.01)
            time.sleep(0.05)  # (its end reaches this side of the loopback)
            answers.append(upstream_post_whole(url, data=b"{}", headers={"Content-Type": "application/json"}))
    assert [(status, body) for status, _, body in answers] == [(200, b'{"ok": true}')] * 3
    assert len(_ClosesWhenIdle.served) == 3 == len(set(_ClosesWhenIdle.served))  # each on a connection of its own


class _HangsUpUnanswered(_Upstream):
    """Answers the first request kept-alive; takes every later one and hangs up without a word (an upstream that
    crashed, or a proxy that gave up, after the request arrived)."""

    served: list[int] = []

    def do_POST(self):
        if self.taken() > 1:
            self.close_connection = True
            return
        self.answer()


def test_an_upstream_that_took_the_call_and_hung_up_unanswered_is_raised_not_asked_again(settings):
    """On a kept connection, the upstream took the request and closed without answering: it may have made the call,
    so the call fails and is not sent again on a new connection."""
    settings.CHATTER_PROVIDER_TIMEOUT_S = 5
    with _serving(_HangsUpUnanswered) as url:
        assert upstream_post_whole(url, data=b"{}", headers={})[0] == 200
        with pytest.raises(http.client.RemoteDisconnected):
            upstream_post_whole(url, data=b"{}", headers={})
    assert len(_HangsUpUnanswered.served) == 2  # the call was asked once


class _ResetsTheSecondAnswer(_Upstream):
    """Answers the first request whole, kept alive; the second with its head and part of its body, then (once the
    client reads that body) resets the connection."""

    served: list[int] = []

    def do_POST(self):
        if self.taken() != 2:
            self.answer()
            return
        self.answer(length=len(self.BODY) + 100)
        self.wfile.flush()
        time.sleep(0.3)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()  # (with no linger: a reset, not an end)
        self.close_connection = True


def test_an_answer_cut_short_on_a_kept_connection_is_raised_not_asked_again(settings):
    """The upstream took the request and began its answer: a reset while its body is read is the call's failure,
    and the call is not sent again on a new connection (it could be made twice)."""
    settings.CHATTER_PROVIDER_TIMEOUT_S = 5
    with _serving(_ResetsTheSecondAnswer) as url:
        assert upstream_post_whole(url, data=b"{}", headers={})[0] == 200
        with pytest.raises(ConnectionResetError):
            upstream_post_whole(url, data=b"{}", headers={})
    assert len(_ResetsTheSecondAnswer.served) == 2  # the cut call was asked once


class _KeepsAlive(_Upstream):
    """Answers every request kept-alive; the first three slowly (so that they are made at once, each on a connection
    of its own). Notes the client's port of each request, and of each connection the client ended."""

    served: list[int] = []
    ended: list[int] = []

    def do_POST(self):
        if self.taken() <= 3:
            time.sleep(0.3)
        self.answer()

    def finish(self):
        super().finish()
        self.ended.append(self.client_address[1])  # (handle() returns once the client has ended the connection)


def test_connections_idle_past_their_time_are_closed_while_one_goes_on_serving(settings, monkeypatch):
    """After a burst of three calls at once, calls one at a time need one connection: it goes on serving, and the two
    others, idle past KEEP_IDLE_S, are closed (not left open on both sides until the upstream ends them)."""
    from gateway import upstream

    settings.CHATTER_PROVIDER_TIMEOUT_S = 5
    monkeypatch.setattr(upstream, "KEEP_IDLE_S", 0.4)
    with _serving(_KeepsAlive) as url:
        burst = [threading.Thread(target=upstream_post_whole, args=(url,), kwargs={"data": b"{}", "headers": {}})
                 for _ in range(3)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join()
        assert len(set(_KeepsAlive.served)) == 3
        for _ in range(8):  # 0.8 s of calls one at a time, each on the most recently used connection
            assert upstream_post_whole(url, data=b"{}", headers={})[0] == 200
            time.sleep(0.1)
        deadline = time.monotonic() + 5
        while len(_KeepsAlive.ended) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    one_at_a_time = _KeepsAlive.served[3:]
    assert len(set(one_at_a_time)) == 1  # one connection served them all
    assert sorted(_KeepsAlive.ended) == sorted(set(_KeepsAlive.served[:3]) - set(one_at_a_time))
