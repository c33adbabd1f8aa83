"""manage.py prompt: create, version, label (a split too), show with variables filled, list."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from prompts.models import Prompt

pytestmark = pytest.mark.django_db


def prompt(*args) -> str:
    out = StringIO()
    call_command("prompt", "--user", "alice", *args, stdout=out)
    return out.getvalue()


def test_it_creates_versions_moves_labels_and_shows_a_version(alice):
    assert prompt("create", "support", "--text", "Help with {{product}}.", "--label", "production") == "support v1\n"
    assert prompt("version", "support", "--text", "Briefly help with {{product}}.",
                  "--config", '{"temperature": 0.1}') == "support v2\n"
    assert prompt("label", "support", "staging", "2") == "support staging → v2\n"
    assert prompt("label", "support", "production", "--split", "1=90,2=10") == \
        "support production → v1: 90, v2: 10\n"

    shown = prompt("show", "support", "--label", "staging", "--variables", '{"product": "kettles"}')

    assert shown.splitlines() == ["support v2 (staging)", 'config: {"temperature": 0.1}',
                                  "[system] Briefly help with kettles."]
    assert "support  v2" in prompt("list")


def test_bad_input_is_an_error_that_writes_nothing(alice):
    with pytest.raises(CommandError, match="does not match"):
        prompt("create", "bad name", "--text", "x")
    prompt("create", "ok", "--text", "x")
    with pytest.raises(CommandError, match="no version 4"):
        prompt("label", "ok", "production", "4")
    with pytest.raises(CommandError, match="split"):
        prompt("label", "ok", "production", "--split", "1=90")
    with pytest.raises(CommandError, match="not found"):
        prompt("show", "missing")
    assert list(Prompt.objects.values_list("name", flat=True)) == ["ok"]
