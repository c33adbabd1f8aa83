"""The README's shell examples, run as a reader pastes them, against a real server."""
import re
import subprocess

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.fixtures_server import ROOT

pytestmark = pytest.mark.timeout(120)


def readme_snippet(pattern: str) -> str:
    found = re.search(pattern, (ROOT / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    assert found, f"no {pattern!r} in README.md"
    return found.group(0)


def token_one_liner(api: str, password: str) -> subprocess.CompletedProcess:
    snippet = readme_snippet(r"^TOKEN=\$\(curl .*?'\)$")  # to the line that closes it
    script = f"API={api}\n{snippet.replace('<printed by make run>', password)}\nprintf 'TOKEN=%s' \"$TOKEN\"\n"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


@pytest.fixture
def api_url(daphne_server, alice):
    hasher = PBKDF2PasswordHasher()  # the server's hashers cannot check the tests' fast MD5 hash
    alice.password = hasher.encode("alice-password", hasher.salt())
    alice.username = "admin"
    alice.save(update_fields=["password", "username"])
    return f"{daphne_server().base_url}/api/v1"


@pytest.mark.django_db(transaction=True)
def test_the_token_one_liner_prints_the_apis_message_on_a_wrong_password(api_url):
    refused = token_one_liner(api_url, "wrong-password")

    assert refused.stderr == "invalid input; Unable to log in with provided credentials.\n"
    assert refused.stdout == "TOKEN="  # nothing taken for a token

    accepted = token_one_liner(api_url, "alice-password")
    assert accepted.stderr == "" and re.fullmatch(r"TOKEN=\S{40,}", accepted.stdout)


def test_the_readme_says_what_each_invariant_is_where_it_first_names_one():
    readme = (ROOT / "README.md").read_text()
    first_use = re.search(r"\bI[1-7]\b", readme).start()
    for number in range(1, 8):
        # "**I1** a conversation's…": named in bold, then said, within a paragraph of the first use.
        definition = re.search(rf"\*\*I{number}\*\* \w+", readme)
        assert definition and first_use <= definition.start() < first_use + 1500, f"I{number} is not defined"


def test_env_example_stands_on_its_own_without_citing_the_spec():
    text = (ROOT / ".env.example").read_text()
    assert "SPEC" not in text and "§" not in text
