"""Discovery through the API (registering a server, refreshing its tools) against a server whose process is killed
while it lists its tools: the request ends as soon as the listing's stream breaks or its process's output ends (not
when its timeout ends), saying what a server that cannot be reached says; the server is kept unhealthy with that
reason, and nothing of the broken listing is stored (a new server has no tools, a refreshed one keeps the list it
gave before). Streamable HTTP (tests/mcp_process_server.py; one that gives its events ids is asked to resume first,
as the SDK does), the older HTTP+SSE (its one stream breaks) and stdio (a declared server, tests/mcp_stdio_server.py:
its process's output ends). Alive behind a connection that dropped mid-listing, a server that gives its events ids
resumes the listing's stream (the SDK's reconnection) and is registered with its tools."""
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.tools.test_declared_servers import STDIO_SERVER, declare
from tests.tools.test_server_killed_mid_call import DroppingProxy, ServerProcess
from tests.tools.test_servers_api import SERVERS, register
from tools.models import McpServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]
TIMEOUT_S = 30
UNREACHABLE = "could not reach the server"  # what discovery says of a server it cannot reach (its last_error)
# What it says of a stdio server whose process ended (one that exits as it starts, too).
ENDED = "could not reach the server (its process's output ended)"


class Killer(threading.Thread):
    """Kills a server once it has started listing its tools (`listing()` returns once it has), noting when."""

    def __init__(self, listing: Callable[[], None], kill: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.listing, self.kill = listing, kill
        self.killed_at: float | None = None
        self.start()

    def run(self) -> None:
        self.listing()
        self.kill()
        self.killed_at = time.monotonic()

    def since_kill(self) -> float:
        """Seconds from the kill to now (the request it interrupted has ended)."""
        self.join(timeout=5)
        assert self.killed_at is not None, "the server never started listing its tools"
        return time.monotonic() - self.killed_at


@pytest.fixture(params=[False, True], ids=["no_event_ids", "event_ids"])
def held_server(request, tmp_path):
    """tests/mcp_process_server.py whose listings hang while `held_server.hold` exists."""
    hold = tmp_path / "hold"
    server = ServerProcess("--listing-hold", str(hold), *(["--event-ids"] if request.param else []))
    server.hold = hold
    yield server
    server.kill()


def http_killer(server: ServerProcess) -> Killer:
    def listing() -> None:
        assert server.line(timeout_s=TIMEOUT_S) == "listing tools"

    return Killer(listing, server.kill)


def assert_unreachable(server: dict, said: str = UNREACHABLE) -> None:
    assert server["health"] == "unhealthy" and server["last_error"].startswith(said), server["last_error"]
    stored = McpServer.objects.get(pk=server["id"])
    assert (stored.health, stored.last_error, stored.tools) == ("unhealthy", server["last_error"], server["tools"])
    assert stored.checked_at is not None


def test_registering_a_server_killed_while_listing_its_tools_fails_at_once(alice_client, held_server, settings):
    settings.CHATTER_MCP_TIMEOUT_S = TIMEOUT_S
    held_server.hold.touch()
    killer = http_killer(held_server)

    response = register(alice_client, held_server.url)
    took_s = killer.since_kill()

    assert response.status_code == 201, response.content
    created = response.json()
    assert_unreachable(created)
    assert created["tools"] == [] and created["tools_refreshed_at"] is None
    assert took_s < TIMEOUT_S / 2  # a generous bound: it failed as the stream broke, not at its timeout (30 s)


def test_refreshing_a_server_killed_while_listing_its_tools_fails_at_once_and_keeps_its_last_list(
        alice_client, held_server, settings):
    settings.CHATTER_MCP_TIMEOUT_S = TIMEOUT_S
    created = register(alice_client, held_server.url).json()
    assert created["health"] == "healthy" and [tool["name"] for tool in created["tools"]] == ["sleep"], created
    held_server.hold.touch()
    killer = http_killer(held_server)

    response = alice_client.post(f"{SERVERS}{created['id']}/refresh/")
    took_s = killer.since_kill()

    assert response.status_code == 200, response.content
    refreshed = response.json()
    assert_unreachable(refreshed)
    assert (refreshed["tools"], refreshed["tools_refreshed_at"]) == (created["tools"], created["tools_refreshed_at"])
    assert took_s < TIMEOUT_S / 2


def test_registering_an_http_sse_server_killed_while_listing_its_tools_fails_at_once(alice_client, settings,
                                                                                    tmp_path):
    settings.CHATTER_MCP_TIMEOUT_S = TIMEOUT_S
    hold = tmp_path / "hold"
    hold.touch()
    server_process = ServerProcess("--sse", "--listing-hold", str(hold))
    try:
        killer = http_killer(server_process)
        response = register(alice_client, server_process.url, transport="sse")
        took_s = killer.since_kill()
    finally:
        server_process.kill()

    assert response.status_code == 201, response.content
    created = response.json()
    assert created["transport"] == "sse"
    assert_unreachable(created)  # its one stream broke: not an answer that could not be read
    assert created["tools"] == [] and created["tools_refreshed_at"] is None
    assert took_s < TIMEOUT_S / 2


def test_a_listing_whose_connection_dropped_is_resumed_and_the_server_registered_with_its_tools(
        alice_client, settings, tmp_path):
    settings.CHATTER_MCP_TIMEOUT_S = TIMEOUT_S
    hold = tmp_path / "hold"
    hold.touch()
    server_process = ServerProcess("--event-ids", "--listing-hold", str(hold))
    proxy = DroppingProxy(int(server_process.url.split(":")[2].split("/")[0]))

    dropped = []

    def drop() -> None:
        # the listing's stream has an event (with its id) in the client's hands: a stream the SDK can resume
        if proxy.relayed_wait(b'"listing"', timeout_s=TIMEOUT_S):
            proxy.drop()
            dropped.append(True)
        hold.unlink()  # the listing answers (on its stream, kept for the resumption)

    dropper = threading.Thread(target=drop, daemon=True)
    dropper.start()
    try:
        response = register(alice_client, f"http://127.0.0.1:{proxy.port}/mcp")
        dropper.join(timeout=5)
        listing = server_process.line()
    finally:
        proxy.close()
        server_process.kill()

    assert response.status_code == 201, response.content
    created = response.json()
    assert listing == "listing tools" and dropped == [True]
    assert (created["health"], created["last_error"]) == ("healthy", ""), created["last_error"]
    assert [tool["name"] for tool in created["tools"]] == ["sleep"]


def stdio_killer(hold: Path) -> Killer:
    """Kills the stdio server's process that wrote its id beside `hold` (tests/mcp_stdio_server.py)."""
    pid_file = Path(f"{hold}.pid")
    pid: list[int] = []

    def listing() -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not pid_file.exists():  # the process writes it whole (renamed into place) as its listing starts
            assert time.monotonic() < deadline, "the stdio server never started listing its tools"
            time.sleep(0.01)
        pid.append(int(pid_file.read_text()))

    return Killer(listing, lambda: os.kill(pid[0], signal.SIGKILL))


@pytest.mark.server  # the stdio server's process
@pytest.mark.parametrize("discovery", ["declared", "refreshed"])
def test_a_stdio_server_killed_while_listing_its_tools_fails_at_once(discovery, staff_client, settings, tmp_path):
    settings.CHATTER_MCP_TIMEOUT_S = TIMEOUT_S
    hold = tmp_path / "hold"
    before = None
    if discovery == "refreshed":
        declare(settings, tmp_path / "mcp.json", {"files": {"command": sys.executable, "args": [STDIO_SERVER],
                                                            "env": {"LISTING_HOLD": str(hold)}}})
        [before] = staff_client.get(SERVERS).json()["results"]  # declared: its tools listed
        assert before["health"] == "healthy" and len(before["tools"]) == 5, before
    hold.touch()
    killer = stdio_killer(hold)

    if discovery == "declared":  # the file read (by the request) asks the new server for its tools
        declare(settings, tmp_path / "mcp.json", {"files": {"command": sys.executable, "args": [STDIO_SERVER],
                                                            "env": {"LISTING_HOLD": str(hold)}}})
        response = staff_client.get(SERVERS)
        [server] = response.json()["results"]
    else:
        response = staff_client.post(f"{SERVERS}{before['id']}/refresh/")
        server = response.json()
    took_s = killer.since_kill()

    assert response.status_code == 200, response.content
    assert_unreachable(server, ENDED)
    assert server["tools"] == (before["tools"] if before else [])
    assert took_s < TIMEOUT_S / 2
