"""The loop of docs/prompts.md (a prompt, a label, a split, scores, a dataset from past runs, an experiment, the
comparison), run as a reader pastes it against a real server and a real django-q2 worker."""
import re
import time

import pytest

from experiments.models import Experiment
from tests.factories import ApiTokenFactory
from tests.fixtures_server import ROOT, start_worker, stop_process
from tests.test_readme import bash, section, server  # noqa: F401 - a fixture too

PAGE = ROOT / "docs" / "prompts.md"


@pytest.mark.django_db(transaction=True)
def test_the_loop_runs_as_written(server, alice, tmp_path):  # noqa: F811 - the fixture imported above
    (loop,) = re.findall(r"```sh\n(.*?)```", section("The loop in a few commands", PAGE), flags=re.S)
    key = ApiTokenFactory(user=alice, name="docs").key
    head = (f'API={server.base_url}/api/v1\nJSON="Content-Type: application/json"\n'
            f'AUTH="Authorization: Token {key}"\nset -euo pipefail\n')
    worker = start_worker(tmp_path)
    try:
        done = bash(head + loop)
        assert done.returncode == 0 and done.stderr == "", (done.stdout[-3000:], done.stderr)
        experiment = Experiment.objects.get()
        deadline = time.monotonic() + 60
        while experiment.status in ("pending", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            experiment.refresh_from_db()
    finally:
        stop_process(worker)

    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert experiment.status == "completed", experiment.stop_reason
    assert experiment.results.count() == 6 and experiment.runs.filter(role="judge").count() == 6
    assert sorted(t["name"] for t in experiment.targets) == ["support@staging", "support@v1"]
    assert '"name":"helpful"' in done.stdout and '"summary":' in done.stdout and '"versions":' in done.stdout
