"""The docs as part of the product (issue 48 item 5): the code cites docs/ (never a document outside the
repository), bench/RESULTS.md's tables stay readable, and the app import order drawn in docs/architecture.md is
the code's."""
import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.one_database

ROOT = Path(__file__).resolve().parent.parent
NOT_PRODUCT = {"tests", ".venv", "var", "node_modules", ".git", "__pycache__", "site"}


def product_files(*suffixes: str) -> list[Path]:
    """The product's files with these suffixes: everything in the repository but the tests and local state."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = sorted(name for name in subfolders if name not in NOT_PRODUCT and not name.startswith("."))
        found += [Path(folder, name) for name in sorted(files) if name.endswith(suffixes)]
    return found


def test_item_05_the_code_cites_the_docs_never_a_spec_outside_the_repository():
    cited = re.compile(r"\bSPEC\b|§")
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for path in product_files(".py", ".js", ".html")
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if cited.search(line)]
    assert len(product_files(".py")) > 100  # the walk found the product
    assert offenders == [], "cite the docs page instead:\n" + "\n".join(offenders)
