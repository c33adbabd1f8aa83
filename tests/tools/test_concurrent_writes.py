"""A team's clients writing one MCP server at once through /api/v1/tools/servers/ (released together by a barrier):
changes, deletes and users' own credentials take turns on the server's row, so none deadlocks (PostgreSQL killed
some of them with a 500 while a delete held the audit chain and waited for a row another writer held while it
waited for the chain), a server deleted meanwhile is a 404 and stays deleted, and the audit trail says each write
once; a refresh whose server was deleted while it listed the tools is a 404 too, and writes nothing. On SQLite (one
writer at a time) and PostgreSQL (writers in parallel)."""
import pytest

from audit.models import AuditEvent
from tests.together import at_once
from tests.tools.conftest import client_with_key
from tests.tools.test_server_killed_mid_call import ServerProcess
from tools.models import McpCredential, McpServer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("loopback_allowed")]
SERVERS = "/api/v1/tools/servers/"
CLIENTS = 12


def actions(server_id: str) -> list[str]:
    return list(AuditEvent.objects.filter(target_id=server_id).order_by("id").values_list("action", flat=True))


def test_a_server_changed_and_deleted_at_once_is_deleted_once_and_never_a_500(alice, mcp_server):
    client = client_with_key(alice)
    for round_ in range(3):  # each round a server of its own, changed and deleted by clients released together
        server = client.post(SERVERS, {"name": f"tracker{round_}", "url": mcp_server.url}, format="json").json()
        url = f"{SERVERS}{server['id']}/"

        def write(index: int, url=url, round_=round_):
            if index % 2:
                return client_with_key(alice).delete(url)
            return client_with_key(alice).patch(url, {"name": f"renamed{round_}x{index}"}, format="json")

        answers = at_once(CLIENTS // 2 * 2, write)

        deletes = [answer for index, answer in enumerate(answers) if index % 2]
        changes = [answer for index, answer in enumerate(answers) if not index % 2]
        assert sorted(answer.status_code for answer in deletes) == [204] + [404] * (len(deletes) - 1), [
            answer.content[:200] for answer in deletes]
        assert {answer.status_code for answer in changes} <= {200, 404}, [answer.content[:200] for answer in changes]
        for answer in answers:
            if answer.status_code == 404:
                assert answer.json()["error"]["code"] == "not_found"
        assert not McpServer.objects.filter(pk=server["id"]).exists()  # deleted, and not written back by a change
        trail = actions(server["id"])
        assert trail.count("mcp_server.deleted") == 1 and trail[-1] == "mcp_server.deleted", trail
        assert trail.count("mcp_server.changed") == sum(answer.status_code == 200 for answer in changes)


def test_credentials_set_while_the_server_is_deleted_are_gone_with_it(alice, bob, staff, mcp_server):
    server = client_with_key(staff).post(SERVERS, {"name": "tracker", "url": mcp_server.url, "shared": True,
                                                   "per_user_headers": ["Authorization"]}, format="json").json()
    url = f"{SERVERS}{server['id']}/"

    def write(index: int):
        if index == 0:
            return client_with_key(staff).delete(url)
        return client_with_key(alice if index % 2 else bob).put(
            f"{url}credentials/", {"headers": {"Authorization": f"Bearer token-{index}"}}, format="json")

    answers = at_once(CLIENTS, write)

    assert answers[0].status_code == 204, answers[0].content
    assert {answer.status_code for answer in answers[1:]} <= {200, 404}, [answer.content[:200] for answer in answers]
    assert not McpServer.objects.filter(pk=server["id"]).exists()
    assert not McpCredential.objects.exists()
    trail = actions(server["id"])
    assert trail[-1] == "mcp_server.deleted"
    assert trail.count("mcp_credential.set") == sum(answer.status_code == 200 for answer in answers[1:])


def test_one_users_credentials_put_at_once_are_one_row(alice, staff, mcp_server):
    server = client_with_key(staff).post(SERVERS, {"name": "tracker", "url": mcp_server.url, "shared": True,
                                                   "per_user_headers": ["Authorization"]}, format="json").json()

    answers = at_once(CLIENTS, lambda index: client_with_key(alice).put(
        f"{SERVERS}{server['id']}/credentials/", {"headers": {"Authorization": f"Bearer {index}"}}, format="json"))

    assert [answer.status_code for answer in answers] == [200] * CLIENTS
    assert McpCredential.objects.filter(user=alice).count() == 1
    assert actions(server["id"]).count("mcp_credential.set") == CLIENTS


def test_one_name_registered_at_once_is_one_server_and_clear_400s(alice, mcp_server):
    answers = at_once(CLIENTS, lambda index: client_with_key(alice).post(
        SERVERS, {"name": "tracker", "url": mcp_server.url}, format="json"))

    assert sorted(answer.status_code for answer in answers) == [201] + [400] * (CLIENTS - 1)
    for answer in answers:
        if answer.status_code == 400:
            assert answer.json()["error"]["details"] == [{"path": "name", "code": "unique",
                                                          "message": "you already have a server with this name"}]
    assert McpServer.objects.filter(owner=alice).count() == 1
    assert AuditEvent.objects.filter(action="mcp_server.registered").count() == 1


@pytest.fixture
def held_listing(tmp_path):
    """tests/mcp_process_server.py, whose listings of its tools hang while `held_listing.hold` exists."""
    hold = tmp_path / "hold"
    server = ServerProcess("--listing-hold", str(hold))
    server.hold = hold
    yield server
    hold.unlink(missing_ok=True)
    server.kill()


def test_a_refresh_that_ends_after_its_server_was_deleted_is_a_404_and_writes_nothing(alice, held_listing):
    client = client_with_key(alice)
    server = client.post(SERVERS, {"name": "tracker", "url": held_listing.url}, format="json").json()
    assert (server["health"], [tool["name"] for tool in server["tools"]]) == ("healthy", ["sleep"])
    url = f"{SERVERS}{server['id']}/"
    held_listing.hold.touch()

    def write(index: int):
        if index == 0:
            return client_with_key(alice).post(f"{url}refresh/")
        try:  # the refresh is listing the tools: the server is deleted, then the listing answered
            assert held_listing.line(timeout_s=30) == "listing tools"
            return client_with_key(alice).delete(url)
        finally:
            held_listing.hold.unlink(missing_ok=True)

    refreshed, deleted = at_once(2, write)

    assert deleted.status_code == 204, deleted.content
    assert refreshed.status_code == 404, refreshed.content
    assert refreshed.json()["error"]["code"] == "not_found"
    assert not McpServer.objects.exists()  # not written back
    assert "tracker__sleep" not in {tool["name"] for tool in client.get("/api/v1/tools/").json()}
    assert actions(server["id"]) == ["mcp_server.registered", "mcp_server.deleted"]
