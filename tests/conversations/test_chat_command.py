import os
import pty
import re
import subprocess
import sys
import threading
import time
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from conversations.models import Conversation, Message
from tests.fixtures_server import ROOT, refusing_port, server_env
from tests.invariants import assert_all
from workflows.management.commands.chat import TERMINAL_TOKEN_DELAY_MS
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.django_db(transaction=True)


def chat(*args):
    out = StringIO()
    call_command("chat", *args, stdout=out)
    return out.getvalue()


def test_it_streams_an_answer_that_used_the_calculator_and_ends_with_tokens_and_cost(alice):
    output = chat("What is 12*7?", "--user", "alice")

    execution = WorkflowExecution.objects.get()
    reply = Message.objects.get(execution=execution, role="assistant")
    assert "⚙ calculator ok" in output
    assert reply.content in output and "84" in reply.content
    summary = next(line for line in output.splitlines() if line.startswith("tokens:"))
    assert (f"prompt {execution.prompt_tokens}, completion {execution.completion_tokens}, "
            f"total {execution.total_tokens}") in summary
    assert f"cost ${execution.cost}" in summary and execution.cost > Decimal("0")
    assert_all(execution)


def test_it_continues_a_conversation(alice):
    chat("hello", "--user", "alice")
    conversation = Conversation.objects.get()
    chat("again", "--user", "alice", "--conversation", str(conversation.pk))
    conversation.refresh_from_db()
    assert conversation.message_count == 4


def test_it_refuses_an_unknown_provider_without_writing_anything(alice):
    with pytest.raises(CommandError) as refused:
        chat("hi", "--user", "alice", "--provider", "nope")
    assert str(refused.value) == ("invalid run configuration\n"
                                  "config.provider: invalid_choice: provider must be one of local, openai, anthropic")
    assert WorkflowExecution.objects.count() == 0 and Conversation.objects.count() == 0


def test_its_errors_are_sentences_with_one_detail_a_line_never_python_reprs(alice):
    with pytest.raises(CommandError) as refused:
        chat("", "--user", "alice")
    assert str(refused.value) == "a chat turn needs a message\nmessage: required: message is required"
    assert not re.search(r"[\[\]{}]", str(refused.value))


def run_in_a_terminal(tmp_path, *args) -> str:
    """`manage.py chat …` with its stdout on a pseudo-terminal, as a person runs it; what the terminal showed."""
    leader, follower = pty.openpty()
    env = server_env(tmp_path)
    env.pop("CHATTER_LOCAL_TOKEN_DELAY_MS", None)
    process = subprocess.Popen([sys.executable, "manage.py", "chat", *args], cwd=ROOT, env=env,
                               stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    shown, arrivals = b"", []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        shown += chunk
        arrivals.append((time.monotonic(), len(shown)))
    os.close(leader)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 0, errors.decode()
    return shown.decode(), arrivals


def test_in_a_terminal_the_local_model_streams_at_a_visible_pace(alice, tmp_path):
    # Some forty words at 25 ms each: a reader woken over half a second late by a loaded machine still finds ten
    # or more of them arriving after its first read (twenty words: a quarter of a second late failed).
    text = ("please repeat these words back to me one by one, slowly, so that a person who watches the terminal "
            "can see every single word of the answer arrive on its own")
    shown, arrivals = run_in_a_terminal(tmp_path, text, "--user", "alice")

    reply = Message.objects.get(role="assistant")
    assert reply.content in shown and text in reply.content
    # The terminal received the reply word by word, paused between words (a lower bound: the pauses after the
    # first read of it, less one, as that read itself may come late into the pause after it; a reader woken late
    # reads several words at once, and their pauses are behind it).
    start = shown.encode().index(reply.content.encode())
    ends = [start + match.end() for match in re.finditer(rb"\S+", reply.content.encode())]
    first, first_received = next((at, received) for at, received in arrivals if received > start)
    last = next(at for at, received in arrivals if received >= ends[-1])
    read_at_once = max(1, sum(end <= first_received for end in ends))
    assert len(ends) - read_at_once >= 10, arrivals  # most words came after the first read
    assert (last - first) * 1000 >= (len(ends) - read_at_once - 1) * TERMINAL_TOKEN_DELAY_MS


def test_captured_output_gets_no_delay(alice, monkeypatch):
    # Only the command's own thread's pauses count: time.sleep is global, and other threads (the heartbeat, the
    # hub) sleep too while the command runs.
    pauses, command_thread, sleep = [], threading.current_thread(), time.sleep
    monkeypatch.setattr("workflows.cli.time.sleep", lambda s: pauses.append(s)
                        if threading.current_thread() is command_thread else sleep(s))
    chat("hello there", "--user", "alice")
    assert Message.objects.filter(role="assistant").count() == 1 and pauses == []


def test_it_refuses_an_unknown_user(alice):
    with pytest.raises(CommandError, match="no user named"):
        chat("hi", "--user", "mallory")


def openai_unreachable(settings) -> None:
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{refusing_port()}/v1"  # the connection is refused
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.CHATTER_PROVIDER_MAX_RETRIES = 0


def test_a_turn_whose_provider_cannot_be_reached_leaves_no_conversation_and_no_message(alice, settings):
    openai_unreachable(settings)
    out = StringIO()
    with pytest.raises(CommandError, match="failed: provider_error: openai call to .* connection refused"):
        call_command("chat", "hello", "--provider", "openai", "--model", "gpt-4o-mini", "--user", "alice", stdout=out)

    assert "nothing saved" in out.getvalue()
    assert not Conversation.objects.exists() and not Message.objects.exists()
    execution = WorkflowExecution.objects.get()  # the failed run stays, with its error
    assert execution.status == "failed" and execution.conversation_id is None
    assert_all(execution)


def test_a_failed_turn_in_a_conversation_given_keeps_that_conversation(alice, settings):
    conversation_id = re.search(r"conversation (\S+)", chat("hi", "--user", "alice")).group(1)
    openai_unreachable(settings)
    with pytest.raises(CommandError):
        chat("hello", "--conversation", conversation_id, "--provider", "openai", "--model", "gpt-4o-mini",
             "--user", "alice")

    assert Conversation.objects.filter(pk=conversation_id).exists()
