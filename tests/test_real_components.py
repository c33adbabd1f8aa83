"""The end of a pytest run names the tests that were skipped for want of a real component (tests/real_components.py),
and fails the run when a component it must have (CHATTER_REQUIRE_COMPONENTS, set by `make test`) was skipped."""
import os
import subprocess
import sys

import pytest

from tests.fixtures_server import ROOT

pytestmark = pytest.mark.one_database  # pytest runs of their own, with no database

TESTS = '''
import pytest

@pytest.mark.skip(reason="needs Redis (make test's second phase)")
def test_fan_out(): pass

@pytest.mark.skip(reason="needs /usr/bin/chromium (make test installs Debian's chromium)")
def test_live_page(): pass

@pytest.mark.skip(reason="just not today")
def test_something_else(): pass

def test_plain(): pass
'''


def pytest_run(tmp_path, **env_vars) -> subprocess.CompletedProcess:
    (tmp_path / "test_sample.py").write_text(TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST") and not k.startswith("CHATTER_REQUIRE") and k != "CHATTER_SKIP_REPORT"}
    env.update({"PYTHONPATH": str(ROOT), **env_vars})
    return subprocess.run(
        # Only the plugin under test: the installed ones (hypothesis, faker, schemathesis, ...) would be loaded and
        # their asserts rewritten at every start, about 4 s of CPU, as the suite's own pytest.ini says.
        [sys.executable, "-m", "pytest", "--disable-plugin-autoload", "-p", "tests.real_components",
         "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path / "test_sample.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_it_lists_real_component_skips_loudly_at_the_end(tmp_path):
    result = pytest_run(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    section = result.stdout[result.stdout.index("NOT RUN: 2 tests that need a real component were skipped"):]
    assert "Redis: 1 skipped (not required in this run)" in section
    assert "browser (Chromium): 1 skipped (not required in this run)" in section
    assert "test_sample.py::test_live_page: needs /usr/bin/chromium" in section
    assert "just not today" not in section and "did not run" in section


def test_a_skipped_required_component_fails_the_run(tmp_path):
    result = pytest_run(tmp_path, CHATTER_REQUIRE_COMPONENTS="browser,postgresql")
    assert result.returncode == 1, result.stdout
    assert "browser (Chromium): 1 skipped (REQUIRED in this run: the run FAILS)" in result.stdout
    assert "Redis: 1 skipped (not required in this run)" in result.stdout


def test_a_required_component_that_ran_passes(tmp_path):
    assert pytest_run(tmp_path, CHATTER_REQUIRE_COMPONENTS="postgresql").returncode == 0


def test_it_writes_the_skips_per_component_for_the_make_test_summary(tmp_path):
    report = tmp_path / "skips.tsv"
    pytest_run(tmp_path, CHATTER_SKIP_REPORT=str(report))
    assert sorted(report.read_text().splitlines()) == ["browser\t1", "redis\t1"]


def test_an_unknown_required_component_is_a_usage_error(tmp_path):
    result = pytest_run(tmp_path, CHATTER_REQUIRE_COMPONENTS="chromium")
    assert result.returncode == 4 and "CHATTER_REQUIRE_COMPONENTS: unknown chromium" in result.stderr
