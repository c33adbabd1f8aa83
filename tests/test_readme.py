"""The README's and the docs' examples, run as a reader pastes them, against a real server; and what the pages
promise about themselves (every invariant said where it is named, every setting in the settings table)."""
import re
import shlex
import subprocess
import time

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.factories import ApiTokenFactory
from tests.fixtures_server import ROOT, server_env, start_worker, stop_process
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
def server(shared_daphne_server, alice):
    """A server as `make run` serves it out of the box (the `local` model only), shared by the module's tests, alice
    as its `admin`: a superuser, as `manage.py ensure_admin` makes it (the pages' staff-only steps, e.g. a tool's
    price, are the admin's)."""
    hasher = PBKDF2PasswordHasher()  # the server's hashers cannot check the tests' fast MD5 hash
    alice.password = hasher.encode("alice-password", hasher.salt())
    alice.username = "admin"
    alice.is_staff = alice.is_superuser = True
    alice.save(update_fields=["password", "username", "is_staff", "is_superuser"])
    return shared_daphne_server(OPENAI_API_KEY="", OPENAI_BASE_URL="", ANTHROPIC_API_KEY="",
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


def transcripts(text: str) -> list[tuple[str, list[str]]]:
    """A page's terminal sessions (```console blocks): each `$ command` with the lines it is shown printing."""
    sessions: list[tuple[str, list[str]]] = []
    for block in re.findall(r"^```console\n(.*?)^```$", text, flags=re.S | re.M):
        for line in block.splitlines():
            if line.startswith("$ "):
                sessions.append((line[2:], []))
            else:
                sessions[-1][1].append(line)
    return sessions


def as_script(block: str, kind: str) -> str:
    """A ```sh block as it is; a ```console block's commands, each after a `--- $ command` line and allowed to fail
    (a session shows refusals too), saying so (`[exited 1]`): what they print is checked against the page."""
    if kind == "sh":
        return block
    return "".join(f"printf '%s\\n' {shlex.quote('--- $ ' + command)}\n"
                   f"{{ {command}\n}} 2>&1 || printf '[exited %s]\\n' \"$?\"\n"
                   for command, _ in transcripts(f"```console\n{block}```\n"))


def transcript_matches(expected: list[str], printed: str) -> list[str]:
    """The lines a page shows a command printing that it did not print ("…" elides; numbers may differ)."""
    missing = []
    for line in expected:
        if line.strip() in ("…", ""):
            continue
        pattern = re.sub(r"\d+(?:\\\.\d+)?", r"\\d+(?:\\.\\d+)?", re.escape(line))
        if not re.search(rf"^{pattern}$", printed, re.M):
            missing.append(line)
    return missing


def walkthroughs() -> list[tuple[str, str]]:
    """Every page's shell walk-through (its ```sh blocks, and the commands of its ```console sessions, in order): the
    README's (but its two commands, `make run` and `make test`), then each page of docs/ that has one, in the order
    the README lists them (a page it does not link to last)."""
    listed = README.read_text()

    def order(page):
        at = listed.find(str(page.relative_to(ROOT)))
        return (at < 0, at, page)

    found = []
    for page in [README, *sorted(DOCS.rglob("*.md"), key=order)]:
        text = page.read_text()
        if page == README:
            text = text.replace(section("Two commands"), "")
        blocks = re.findall(r"^```(sh|console)\n(.*?)^```$", text, flags=re.S | re.M)
        if blocks:
            found.append((str(page.relative_to(ROOT)), "".join(as_script(block, kind) for kind, block in blocks)))
    return found


def experiments_ended(deadline_s: float = 120) -> list:
    from experiments.models import Experiment

    deadline = time.monotonic() + deadline_s
    while Experiment.objects.filter(status__in=("pending", "running")).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return list(Experiment.objects.order_by("created_at"))


# What the walk-throughs write where a reader pastes them (the checkout's top level): never linked, so always written
# into the test's own copy of the top level, even where a reader left one in the checkout.
WRITTEN_BY_PAGES = frozenset({"my-graph.json", "bad.json"})


def reader_checkout(tmp_path):
    """The checkout as a reader's shell sees it (a link to each of its top-level entries, `manage.py`, `.venv`,
    `examples/` among them) in a directory of the test's own: the files the pages write land there, so make test's
    two phases walk through at the same time, neither deleting the other's files nor waiting for the other's turn."""
    top = tmp_path / "checkout"
    top.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in WRITTEN_BY_PAGES | {"var"}:
            (top / entry.name).symlink_to(entry)
    return top


@pytest.mark.timeout(720)
@pytest.mark.django_db(transaction=True)
def test_item_21_the_readme_then_every_docs_walkthrough_run_in_one_shell(server, tmp_path):
    """As a new user would: the README's walk-through, then every page's of docs/, pasted one after the other into
    one shell (its variables and functions carry over), against one server and its worker as `make run` serves
    them. Each page sets what it needs beyond the README's (the admin's token where the README's key lacks a scope)
    and names what it makes apart from the pages before it."""
    pages = walkthroughs()
    assert [name for name, _ in pages][:2] == ["README.md", "docs/prompts.md"] and len(pages) >= 6, pages
    assert pages[0][1].startswith("API=http://127.0.0.1:8000/api/v1;") and PASSWORD_PLACEHOLDER in pages[0][1]
    script = "set -euo pipefail\n" + "".join(f"printf '\\n=== %s\\n' '{name}'\n{walk}" for name, walk in pages)
    script = script.replace("http://127.0.0.1:8000", server.base_url).replace(PASSWORD_PLACEHOLDER, "alice-password")
    checkout = reader_checkout(tmp_path)
    worker = start_worker(tmp_path)
    try:
        done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, cwd=checkout,
                              env=server_env(tmp_path))
        experiments = experiments_ended()
    finally:
        stop_process(worker)

    shown = dict(re.findall(r"^=== (\S+)\n(.*?)(?=^=== |\Z)", done.stdout, flags=re.S | re.M))
    said = [line for line in done.stderr.splitlines() if not TOKEN_NOTICE.fullmatch(line)]
    assert done.returncode == 0 and said == [], (list(shown)[-1:], done.stdout[-3000:], done.stderr)
    assert list(shown) == [name for name, _ in pages]
    assert WRITTEN_BY_PAGES <= {path.name for path in checkout.iterdir() if not path.is_symlink()}  # (not in ROOT)
    readme_says(shown["README.md"])
    for name, out in shown.items():  # a page's call that failed is a broken walk-through, but for what it shows
        refused = re.findall(r'"error":\{"code":"(\w+)"', out)
        assert refused == EXPECTED_REFUSALS.get(name, []), (name, out[-3000:])
    for name, out in shown.items():  # each terminal session printed what its page shows
        printed = dict(re.findall(r"^--- \$ (.*?)\n(.*?)(?=^--- \$ |\Z)", out, flags=re.S | re.M))
        for command, expected in transcripts((ROOT / name).read_text()):
            assert not transcript_matches(expected, printed[command]), (name, command, printed[command])
            refused = any(line.startswith("CommandError") for line in expected)
            assert ("[exited " in printed[command]) == refused, (name, command, printed[command])
    readme, loop = [e for e in experiments if e.name in ("v1 vs v2", "kettle v1 vs staging")]
    for experiment, items in ((readme, 1), (loop, 3)):  # judged offline by the local model (item 22)
        assert experiment.status == "completed", experiment.stop_reason
        assert experiment.results.count() == 2 * items and experiment.runs.filter(role="judge").count() == 2 * items
        assert all(isinstance(r.scores.get("quality"), float) and not r.evaluator_errors
                   for r in experiment.results.all())
    assert [t["name"] for t in readme.targets] == ["support@v1", "support@v2"]
    assert sorted(t["name"] for t in loop.targets) == ["kettle@staging", "kettle@v1"]


TOKEN_NOTICE = re.compile(r"API token \S+ for admin: shown once, store it now\.")  # create_api_token's, on stderr
# What a walk-through shows refused, on purpose: an answer that breaks its question's schema; a finished run's cancel.
EXPECTED_REFUSALS = {"docs/operations/durable-runs.md": ["validation_error"], "docs/api/rest.md": ["not_cancellable"]}


def readme_says(out: str) -> None:
    """What the README's walk-through printed, checked against what it wrote."""
    from datasets.models import DatasetItem
    from experiments.models import Experiment

    assert "84" in out  # the local model's calculator answers the first turn
    assert "91" in out and re.search(r"^workflow_completed \d+ tokens, \$\d+\.\d+$", out, re.M)  # the streamed turn
    run = WorkflowExecution.objects.filter(workflow_type="chat").order_by("created_at").first()
    assert run.status == "completed" and run.api_key.name == "first ten minutes"
    assert f"completed {run.total_tokens} tokens, ${run.cost}" in out
    assert re.search(r"^  node \w+ completed \d+ tokens$", out, re.M)
    assert re.search(rf"^  call local {re.escape(run.model)} \d+ tokens, \$\d+\.\d+$", out, re.M)
    assert f"\n{run.conversation.total_cost}\n" in out
    assert re.search(r"^1 workflow_started$", out, re.M) and re.search(r"^\d+ workflow_completed$", out, re.M)
    experiment = Experiment.objects.get(name="v1 vs v2")
    item = DatasetItem.objects.get(dataset=experiment.dataset)
    assert item.source_execution.definition.name == "Support"
    assert '"versions":' in out and f'"id":"{experiment.pk}"' in out


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
