"""A Streamable HTTP server whose process is killed while one of its tools is being called: the call fails as soon
as its answer's stream breaks (not when its timeout ends), recorded as a server that cannot be reached is (a ToolCall
row that is not ok, a `tool_called` event, the server marked unhealthy), and the run goes on. A server that gives
its events ids is asked to resume first (the SDK's reconnection), then fails the same way; alive behind a connection
that dropped, it resumes the stream and the call gets its answer. An HTTP+SSE server's call fails the same way, as
its one stream breaks."""
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures_mcp import kept_mcp_sessions_closed
from tests.tools.test_workflow_tools import chat_started, tool_messages
from tools.models import McpServer
from tools.services import mcp_server_create
from workflows.models import ExecutionEvent, ToolCall

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]
SERVER = str(Path(__file__).resolve().parents[1] / "mcp_process_server.py")
TIMEOUT_S = 30


class ServerProcess:
    """tests/mcp_process_server.py running, and the lines it prints."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, SERVER, *args], stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.transport = "sse" if "--sse" in args else "streamable_http"
        self.url = f"http://127.0.0.1:{int(self.line())}/{'sse' if '--sse' in args else 'mcp'}"

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def line(self, timeout_s: float = 20) -> str:
        return self.lines.get(timeout=timeout_s)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(params=[[], ["--event-ids"], ["--sse"]], ids=["no_event_ids", "event_ids", "sse"])
def server_process(request):
    server = ServerProcess(*request.param)
    yield server
    server.kill()


def test_a_call_whose_server_is_killed_fails_at_once_and_the_run_goes_on(alice, server_process, openai_server,
                                                                         settings):
    settings.CHATTER_MCP_TIMEOUT_S = TIMEOUT_S
    server = mcp_server_create(owner=alice, name="doomed", url=server_process.url, transport=server_process.transport)
    assert server.health == "healthy", server.last_error
    openai_server.reply(tool_calls=[{"name": "doomed__sleep", "arguments": {"seconds": 120}}])
    openai_server.reply(content="Recovered.")
    execution, ended = chat_started(alice, ["doomed__*"])
    assert server_process.line() == "called sleep"
    server_process.kill()
    killed = time.monotonic()
    assert ended.wait(TIMEOUT_S + 10)
    took_s = time.monotonic() - killed

    execution.refresh_from_db()
    assert execution.status == "completed", execution.error_message
    assert execution.output_data["content"] == "Recovered."
    row = ToolCall.objects.get(execution=execution)
    assert (row.tool, row.server_id, row.ok, row.result) == ("doomed__sleep", server.pk, False, "")
    # what a server that cannot be reached says, not the timeout's "no answer within 30 s"
    assert row.error.startswith("the MCP server 'doomed' could not be asked: could not reach the server"), row.error
    assert took_s < TIMEOUT_S / 2  # a generous bound: it failed as its stream broke, not at its timeout (30 s)
    [answer] = tool_messages(openai_server.requests[1])
    assert row.error in answer["content"]
    called = ExecutionEvent.objects.get(execution=execution, event="tool_called").data
    assert (called["tool"], called["ok"], called["error"]) == ("doomed__sleep", False, row.error)
    server = McpServer.objects.get(pk=server.pk)
    assert server.health == "unhealthy" and server.last_error.startswith("could not reach the server")


class DroppingProxy:
    """A TCP proxy on 127.0.0.1 to `port` whose connections can all be dropped at once (the network failed, the
    server is alive)."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.relayed = b""  # what the server sent, as relayed to the client
        self.relaying = threading.Condition(self.lock)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink, sink is client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, to_client: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if to_client:
                    with self.relaying:
                        self.relayed += data
                        self.relaying.notify_all()
        except OSError:
            pass
        for each in (source, sink):
            each.close()

    def relayed_wait(self, text: bytes, timeout_s: float = 20) -> bool:
        """Wait until the client has been sent `text` (it is in its socket's buffer before any drop's end)."""
        with self.relaying:
            return self.relaying.wait_for(lambda: text in self.relayed, timeout=timeout_s)

    def drop(self) -> None:
        with self.lock:
            dropped, self.open = self.open, []
        for each in dropped:
            try:
                each.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.drop()


def test_a_dropped_connection_to_a_server_that_gives_event_ids_is_resumed_and_the_call_answered(
        alice, openai_server, settings):
    settings.CHATTER_MCP_TIMEOUT_S = TIMEOUT_S
    server_process = ServerProcess("--event-ids")
    proxy = DroppingProxy(int(server_process.url.split(":")[2].split("/")[0]))
    try:
        server = mcp_server_create(owner=alice, name="resumed", url=f"http://127.0.0.1:{proxy.port}/mcp")
        assert server.health == "healthy", server.last_error
        openai_server.reply(tool_calls=[{"name": "resumed__sleep", "arguments": {"seconds": 3}}])
        openai_server.reply(content="Done.")
        execution, ended = chat_started(alice, ["resumed__*"])
        assert server_process.line() == "called sleep"
        # the call's stream has an event (with its id) in the client's hands: a stream the SDK can resume
        assert proxy.relayed_wait(b"sleeping")
        proxy.drop()
        assert ended.wait(TIMEOUT_S + 10)
    finally:
        kept_mcp_sessions_closed()  # (while its address is allowed)
        proxy.close()
        server_process.kill()

    execution.refresh_from_db()
    assert execution.status == "completed", execution.error_message
    row = ToolCall.objects.get(execution=execution)
    assert (row.tool, row.ok, row.result, row.error) == ("resumed__sleep", True, "slept", ""), row.error
    assert McpServer.objects.get(pk=server.pk).health == "healthy"
