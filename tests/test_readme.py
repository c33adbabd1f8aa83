"""The README's and the docs' examples, run as a reader pastes them, against a real server; and what the pages
promise about themselves (every invariant said where it is named, every setting in the settings table)."""
import re
import subprocess

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.factories import ApiTokenFactory
from tests.fixtures_server import ROOT
from workflows.models import WorkflowExecution

pytestmark = pytest.mark.timeout(120)

README = ROOT / "README.md"
DOCS = ROOT / "docs"
GATEWAY_PAGE = DOCS / "api" / "gateway.md"
PASSWORD_PLACEHOLDER = "<printed by make run>"


def snippet(pattern: str, path=README) -> str:
    found = re.search(pattern, path.read_text(), re.MULTILINE | re.DOTALL)
    assert found, f"no {pattern!r} in {path.relative_to(ROOT)}"
    return found.group(0)


def section(heading: str, path=README) -> str:
    """The text under a `## heading`, up to the next one."""
    return path.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def bash(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=90, cwd=ROOT)


def token_one_liner(api: str, password: str, path=README) -> subprocess.CompletedProcess:
    one_liner = snippet(r"^TOKEN=\$\(curl .*?'\)$", path)  # to the line that closes it
    return bash(f"API={api}\n{one_liner.replace(PASSWORD_PLACEHOLDER, password)}\nprintf 'TOKEN=%s' \"$TOKEN\"\n")


@pytest.fixture
def server(daphne_server, alice):
    """A server as `make run` serves it out of the box (the `local` model only), alice as its `admin`."""
    hasher = PBKDF2PasswordHasher()  # the server's hashers cannot check the tests' fast MD5 hash
    alice.password = hasher.encode("alice-password", hasher.salt())
    alice.username = "admin"
    alice.save(update_fields=["password", "username"])
    return daphne_server(OPENAI_API_KEY="", OPENAI_BASE_URL="", ANTHROPIC_API_KEY="",
                         CHATTER_DEFAULT_PROVIDER="local", CHATTER_DEFAULT_MODEL="")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("page", [README, DOCS / "api" / "rest.md"], ids=["README", "rest"])
def test_the_token_one_liner_prints_the_apis_message_on_a_wrong_password(server, page):
    api = f"{server.base_url}/api/v1"
    refused = token_one_liner(api, "wrong-password", page)

    assert refused.stderr == "invalid input; Unable to log in with provided credentials.\n"
    assert refused.stdout == "TOKEN="  # nothing taken for a token

    accepted = token_one_liner(api, "alice-password", page)
    assert accepted.stderr == "" and re.fullmatch(r"TOKEN=\S{40,}", accepted.stdout)


@pytest.mark.django_db(transaction=True)
def test_the_first_ten_minutes_run_as_written(server):
    (walk,) = re.findall(r"```sh\n(.*?)```", section("The first ten minutes"), flags=re.S)
    assert walk.startswith("API=http://127.0.0.1:8000/api/v1;") and PASSWORD_PLACEHOLDER in walk
    script = walk.replace("http://127.0.0.1:8000", server.base_url).replace(PASSWORD_PLACEHOLDER, "alice-password")

    done = bash("set -euo pipefail\n" + script)

    assert done.returncode == 0 and done.stderr == "", done.stderr
    out = done.stdout
    assert "84" in out  # the local model's calculator answers the first turn
    assert "91" in out and re.search(r"^workflow_completed \d+ tokens, \$\d+\.\d+$", out, re.M)  # the streamed turn
    run = WorkflowExecution.objects.filter(workflow_type="chat").order_by("created_at").first()
    assert run.status == "completed" and run.api_key.name == "first ten minutes"
    assert f"completed {run.total_tokens} tokens, ${run.cost}" in out
    assert re.search(r"^  node \w+ completed \d+ tokens$", out, re.M)
    assert re.search(rf"^  call local {re.escape(run.model)} \d+ tokens, \$\d+\.\d+$", out, re.M)
    assert f"\n{run.conversation.total_cost}\n" in out
    assert re.search(r"^1 workflow_started$", out, re.M) and re.search(r"^\d+ workflow_completed$", out, re.M)


@pytest.mark.django_db(transaction=True)
def test_the_prompts_section_goes_on_from_the_first_ten_minutes_as_written(server):
    (walk,) = re.findall(r"```sh\n(.*?)```", section("The first ten minutes"), flags=re.S)
    (prompts,) = re.findall(r"```sh\n(.*?)```", section("Prompts: change one without a deploy, split traffic, score"),
                            flags=re.S)
    script = (walk + prompts).replace("http://127.0.0.1:8000", server.base_url).replace(
        PASSWORD_PLACEHOLDER, "alice-password")

    done = bash("set -euo pipefail\n" + script)

    assert done.returncode == 0 and done.stderr == "", done.stderr
    from datasets.models import DatasetItem
    from experiments.models import Experiment

    experiment = Experiment.objects.get()
    item = DatasetItem.objects.get(dataset=experiment.dataset)
    assert item.source_execution.definition.name == "Support"
    assert [t["name"] for t in experiment.targets] == ["support@v1", "support@v2"]
    assert '"versions":' in done.stdout and f'"id":"{experiment.pk}"' in done.stdout


@pytest.mark.django_db(transaction=True)
def test_the_gateway_example_runs_out_of_the_box(server, alice):
    """The gateway page's example, as written; only its base URL (another port) and its key (a new one) change."""
    base_url, key_placeholder = "http://127.0.0.1:8000/v1", "<a key with the gateway scope>"
    (code,) = re.findall(r"```python\n(.*?)```", section("A first call", GATEWAY_PAGE), flags=re.S)
    assert base_url in code and key_placeholder in code, "the example's base URL and key changed: update this test"
    key = ApiTokenFactory(user=alice, name="readme", scopes=["gateway"]).key
    names: dict = {}

    exec(compile(code.replace(base_url, f"{server.base_url}/v1").replace(key_placeholder, key),  # noqa: S102
                 str(GATEWAY_PAGE), "exec"), names)

    reply, last = names["reply"], names["chunk"]
    assert reply.choices[0].message.content and reply.choices[0].finish_reason == "stop"
    assert last.choices == [] and last.usage.total_tokens > 0
    runs = WorkflowExecution.objects.filter(workflow_type="gateway", status="completed").order_by("created_at")
    assert [(run.provider, run.total_tokens) for run in runs] == [
        ("local", reply.usage.total_tokens), ("local", last.usage.total_tokens)]


def test_the_architecture_page_defines_every_invariant_and_other_pages_point_there():
    architecture = (DOCS / "architecture.md").read_text()
    for number in range(1, 8):
        assert re.search(rf"^- \*\*I{number}\*\* \w+", architecture, re.M), f"I{number} is not defined"
    for page in [README, *DOCS.rglob("*.md")]:
        text = page.read_text()
        if page.name == "architecture.md" or not re.search(r"\bI[1-7]\b", text):
            continue
        assert "architecture.md#invariants" in text, f"{page.relative_to(ROOT)} names an invariant without a link"


def test_every_setting_of_env_example_is_in_the_settings_table():
    table = section("Settings", DOCS / "operations" / "configuration.md")
    named = set(re.findall(r"^# ?([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert named and not {name for name in named if f"`{name}`" not in table}


def test_the_readmes_links_lead_to_files():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text()):
        assert target.startswith("http") or (ROOT / target).exists(), target


def test_env_example_stands_on_its_own_without_citing_the_spec():
    text = (ROOT / ".env.example").read_text()
    assert "SPEC" not in text and "§" not in text


def test_item_23_mkdocs_serve_and_make_run_want_different_ports():
    """`mkdocs serve` (its `dev_addr`, 127.0.0.1:8000 when unset) and `make run` (scripts/run.sh's default PORT) run
    side by side, and the README says where the docs are served."""
    dev_addr = re.search(r"^dev_addr: *(\S+)$", (ROOT / "mkdocs.yml").read_text(), re.M)
    docs_port = int((dev_addr.group(1) if dev_addr else "127.0.0.1:8000").rsplit(":", 1)[1])
    run_port = int(re.search(r'^PORT="\$\{PORT:-(\d+)\}"$', (ROOT / "scripts" / "run.sh").read_text(), re.M).group(1))

    assert docs_port != run_port
    assert f"http://127.0.0.1:{docs_port}/" in section("Documentation")
