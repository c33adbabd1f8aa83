"""manage.py run_experiment: create an experiment from a file and run it here, printing each item and the
totals; run a stopped one again (a resume) by id."""
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from experiments.models import Experiment, ExperimentResult
from tests.experiments.conftest import experiment_body

pytestmark = pytest.mark.django_db


def test_it_creates_and_runs_an_experiment_printing_the_totals(alice, qa, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(experiment_body(qa, evaluators=[{"type": "regex", "pattern": "."}])))
    out = StringIO()

    call_command("run_experiment", "--file", str(spec), "--user", "alice", stdout=out)

    experiment = Experiment.objects.get()
    assert experiment.status == "completed" and experiment.results.count() == 4
    lines = out.getvalue().splitlines()
    assert lines[0] == f"experiment {experiment.pk}: 1 target(s) × 4 item(s)"
    assert sum("universal_chat · item" in line and "regex=True" in line for line in lines) == 4
    assert any(line.startswith("total: 4 items (0 failed)") and "regex=1" in line for line in lines)
    assert lines[-1] == "status: completed"


def test_it_resumes_a_stopped_experiment_with_a_new_budget(alice, qa, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(experiment_body(qa, budget="0")))
    with pytest.raises(CommandError, match=r"budget_spent: budget of \$0.00000000 spent \(\$0.00000000\)"):
        call_command("run_experiment", "--file", str(spec), "--user", "alice", stdout=StringIO())
    experiment = Experiment.objects.get()
    assert experiment.status == "budget_spent" and not ExperimentResult.objects.exists()

    call_command("run_experiment", str(experiment.pk), "--budget", "1", "--user", "alice", stdout=StringIO())

    experiment.refresh_from_db()
    assert experiment.status == "completed" and experiment.results.count() == 4


def test_it_refuses_someone_elses_experiment_and_a_bad_file(alice, bob, qa, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(experiment_body(qa, start=False, targets=[{"template": "nope"}])))
    with pytest.raises(CommandError, match="targets\\[0\\]"):
        call_command("run_experiment", "--file", str(spec), "--user", "alice", stdout=StringIO())
    experiment = Experiment.objects.create(owner=alice, name="x", dataset=qa, targets=[])
    with pytest.raises(CommandError, match="no experiment"):
        call_command("run_experiment", str(experiment.pk), "--user", "bob", stdout=StringIO())
