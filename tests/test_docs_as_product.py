"""The docs as part of the product (issue 48 item 5): the code cites docs/ (never a document outside the
repository), bench/RESULTS.md's tables stay readable, and the app import order drawn in docs/architecture.md is
the code's."""
import ast
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


def anchors_of(page: Path) -> set[str]:
    """The anchors a docs page has: its headings' slugs (as the toc extension makes them) and explicit `{ #id }`s."""
    text = page.read_text(encoding="utf-8")
    explicit = set(re.findall(r"\{ *#([\w-]+) *\}", text))
    headings = re.findall(r"^#{1,6} +(.+?)(?: *\{[^}]*\})? *$", text, re.M)
    return explicit | {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", heading.lower()).strip()) for heading in headings}


def test_item_05_every_docs_page_the_code_cites_is_there_with_its_anchor():
    cited = re.compile(r"\bdocs/([\w/-]+\.md)(?:#([\w-]+))?")
    broken = []
    for path in product_files(".py", ".js", ".html"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for page, anchor in cited.findall(line):
                target = ROOT / "docs" / page
                if not target.exists() or (anchor and anchor not in anchors_of(target)):
                    broken.append(f"{path.relative_to(ROOT)}:{number}: docs/{page}#{anchor}")
    assert broken == [], "the code cites docs that are not there:\n" + "\n".join(broken)


OUTSIDE_THE_DRAWING = {"bench", "examples", "scripts", "tests"}


def import_drawing() -> dict[str, int]:
    """docs/architecture.md's drawing of the packages: each package's line, counted from the bottom (core: 0)."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split("\n## Apps and the import order\n", 1)[1].split("\n## ", 1)[0]
    drawing = re.search(r"^```text\n(.*?)^```$", section, re.S | re.M).group(1)
    lines = [re.split(r" {2,}", line.strip(), maxsplit=1)[0] for line in drawing.splitlines() if line.strip()]
    return {package: rank for rank, line in enumerate(reversed(lines)) for package in line.split(", ")}


def package_of(module: str, packages: dict[str, int]) -> str | None:
    """The drawing's package a dotted module belongs to: the longest one that is the module or holds it."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in packages:
            return ".".join(parts[:end])
    return None


# An import statement at the start of a line (to its closing parenthesis or past its backslashes), at any depth: a
# function's own imports included. Parsing these alone is ten times quicker than parsing every module; a docstring's
# example import is read as one too.
IMPORT_STATEMENT = re.compile(r"^[ \t]*(?:from[ \t]+[\w.]+[ \t]+)?import[ \t]+(?:\([^)]*\)|(?:[^\n]*\\\n)*[^\n]*)",
                              re.M)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every absolute import of a module: (line, module), and (line, module.name) for each name imported from it."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in IMPORT_STATEMENT.finditer(text):
        try:
            statement = ast.parse(match.group(0).strip()).body[0]
        except SyntaxError:
            continue  # prose in a docstring that starts with "import" or "from"
        line = text.count("\n", 0, match.start()) + 1
        if isinstance(statement, ast.Import):
            found += [(line, alias.name) for alias in statement.names]
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0:
            found += [(line, statement.module)] + [(line, f"{statement.module}.{alias.name}")
                                                   for alias in statement.names]
    return found


def test_done_means_3_every_import_follows_the_drawing_in_architecture_md():
    packages = import_drawing()
    assert {"core", "workflows", "engine", "chatter_project"} <= set(packages)

    top_level = {path.relative_to(ROOT).parts[0] for path in product_files(".py")} - {"manage.py"}
    assert top_level - OUTSIDE_THE_DRAWING == {name for name in packages if "." not in name}, (
        "a package is missing from docs/architecture.md's drawing, or the drawing names one that is gone")

    upward = set()
    for path in product_files(".py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        importer = package_of(module, packages)
        if importer is None:
            continue  # outside the drawing
        for line, imported in imports_of(path):
            target = package_of(imported, packages)
            if target is not None and target != importer and packages[target] >= packages[importer]:
                upward.add(f"{path.relative_to(ROOT)}:{line}: {importer} imports {target}")
    assert not upward, "imports against docs/architecture.md's drawing:\n" + "\n".join(sorted(upward))


def table_cells(text: str) -> list[tuple[int, str]]:
    """Every cell of a Markdown page's tables: (line, cell), cells split at pipes not escaped."""
    cells = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("|"):
            row = line.strip().strip("|")
            cells += [(number, cell.strip()) for cell in re.split(r"(?<!\\)\|", row)]
    return cells


def test_item_05_bench_results_has_one_table_per_benchmark_and_no_cell_over_400_characters():
    text = (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")
    cells = table_cells(text)
    assert len(cells) > 100  # the tables were found
    long_cells = [f"line {number}: {len(cell)} characters: {cell[:80]}…" for number, cell in cells if len(cell) > 400]
    assert long_cells == [], "move the explanation under the table:\n" + "\n".join(long_cells)

    for table in re.findall(r"(?:^\|[^\n]*\n?)+", text, re.M):  # every row as many cells as its header
        widths = {len(re.split(r"(?<!\\)\|", row.strip().strip("|"))) for row in table.splitlines()}
        assert len(widths) == 1, f"a table whose rows differ in cells: {table.splitlines()[0]}"

    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        heading = section.splitlines()[0]
        if re.match(r"B\d+\b", heading):
            tables = re.findall(r"^\|[^\n]*\n\|[-| ]+\|$", section, re.M)  # a header row and its rule
            assert len(tables) == 1, f"{heading}: {len(tables)} tables, not one"


NOT_SIZED = {"bench", "examples", "scripts", "migrations"}
MAX_MODULE_LINES = 500


def test_item_04_no_product_module_over_500_lines():
    """A module that outgrows 500 lines is split by what it owns (docs/architecture.md#layout names each)."""
    engine = ROOT / "workflows" / "engine"
    sized = [path for path in product_files(".py")
             if not NOT_SIZED & set(path.relative_to(ROOT).parts) and engine not in path.parents]
    assert len(sized) > 100  # the walk found the product
    over = sorted(f"{path.relative_to(ROOT)}: {lines} lines" for path in sized
                  if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES)
    assert over == [], "split these by responsibility:\n" + "\n".join(over)
