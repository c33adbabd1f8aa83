"""Writes of datasets: items are added one by one, from a run, or by an import that adds all its lines or none."""
from __future__ import annotations

import csv
import io
import json

from django.db import IntegrityError, transaction
from rest_framework.exceptions import ParseError

from core.api.parsers import json_parse
from core.csv_cells import csv_cell, csv_cell_read
from core.errors import Conflict, InvalidInput
from datasets.models import Dataset, DatasetItem
from datasets.selectors import dataset_users
from workflows.models import WorkflowExecution

MAX_IMPORT_ITEMS = 10_000
CSV_COLUMNS = ("input", "expected_output", "metadata")


def dataset_create(*, owner, name: str, description: str = "", metadata: dict | None = None) -> Dataset:
    try:
        with transaction.atomic():
            return Dataset.objects.create(owner=owner, name=name, description=description, metadata=metadata or {})
    except IntegrityError:
        raise InvalidInput(f"you already have a dataset named {name!r}", details={"name": ["already exists"]}) from None


def dataset_update(*, dataset: Dataset, **changes) -> Dataset:
    for field, value in changes.items():
        setattr(dataset, field, value)
    try:
        with transaction.atomic():
            dataset.save()
    except IntegrityError:
        raise InvalidInput("you already have a dataset of that name", details={"name": ["already exists"]}) from None
    return dataset


def dataset_delete(*, dataset: Dataset) -> None:
    """The dataset and its items; a 409 while something reads them (an experiment in progress)."""
    with transaction.atomic():
        _not_in_use(dataset)
        dataset.delete()


def dataset_item_delete(*, dataset: Dataset, item_id) -> bool:
    """One item (False: the dataset has no such item); a 409 while something reads the dataset's items."""
    with transaction.atomic():
        _not_in_use(dataset)
        deleted, _ = dataset.items.filter(pk=item_id).delete()
    return bool(deleted)


def _not_in_use(dataset: Dataset) -> None:
    """Lock the dataset's row (an experiment starts or resumes on it under the same lock), then refuse while it is
    in use: an experiment's results would go with its items, and its runs on for nobody."""
    Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
    users = dataset_users(dataset_id=dataset.pk)
    if users:
        raise Conflict(f"the dataset is in use by {'; '.join(users)}: cancel it or wait for it to end, then delete",
                       code="dataset_in_use")


def dataset_item_create(*, dataset: Dataset, input, expected_output=None, metadata: dict | None = None,
                        source_execution_id=None) -> DatasetItem:
    return DatasetItem.objects.create(dataset=dataset, input=input, expected_output=expected_output,
                                      metadata=metadata or {}, source_execution_id=source_execution_id)


def dataset_item_from_run(*, dataset: Dataset, execution_id, metadata: dict | None = None) -> DatasetItem:
    """The run's input as the item's input and its output as the output expected (edit it, or keep it as a
    reference). A run that is not the dataset owner's is refused like a missing one."""
    execution = WorkflowExecution.objects.filter(pk=execution_id, owner_id=dataset.owner_id).values(
        "pk", "input_data", "output_data", "prompt_version_id", "status").first()
    if execution is None:
        raise InvalidInput("run not found", details={"execution": ["no such run of yours"]})
    return dataset_item_create(
        dataset=dataset, input=execution["input_data"], expected_output=execution["output_data"] or None,
        metadata={**(metadata or {}), "run_status": execution["status"]}, source_execution_id=execution["pk"])


def dataset_import(*, dataset: Dataset, format: str, content: str) -> list[DatasetItem]:
    """CSV (columns input, expected_output, metadata; a cell holding a JSON object or list is read as JSON, any
    other as text, less the quote an export puts before a formula: core.csv_cells) or JSONL ({"input", "expected_output", "metadata"} per line). All lines or none: a bad line is a
    400 naming it. A byte-order mark before the first line (Excel's "CSV UTF-8" writes one) is no part of it."""
    content = content.removeprefix("\ufeff")
    rows = _csv_rows(content) if format == "csv" else _jsonl_rows(content)
    if not rows:
        raise InvalidInput("nothing to import", details={"content": ["no items"]})
    if len(rows) > MAX_IMPORT_ITEMS:
        raise InvalidInput(f"at most {MAX_IMPORT_ITEMS} items at once", details={"content": ["too many items"]})
    items = [DatasetItem(dataset=dataset, input=row["input"], expected_output=row.get("expected_output"),
                         metadata=row.get("metadata") or {}) for row in rows]
    with transaction.atomic():
        DatasetItem.objects.bulk_create(items)
    return items


def _line_error(number: int, message: str) -> InvalidInput:
    return InvalidInput(f"line {number}: {message}", details=[{"path": f"content[{number}]", "code": "invalid",
                                                               "message": message}])


def _checked(row: dict, number: int) -> dict:
    unknown = sorted(set(row) - set(CSV_COLUMNS))
    if unknown:
        raise _line_error(number, f"unknown field(s) {', '.join(unknown)}: input, expected_output, metadata")
    if row.get("input") in (None, ""):
        raise _line_error(number, "input is required")
    if not isinstance(row.get("metadata") or {}, dict):
        raise _line_error(number, "metadata must be an object")
    return row


def _json_read(text: str, number: int):
    """A line's JSON as the API reads a body (core.api.parsers.json_parse): no NaN or Infinity, no number past a
    float's range, no key twice, no NUL (no database stores these)."""
    try:
        return json_parse(text.encode())
    except ParseError as exc:
        raise _line_error(number, f"not JSON: {exc.detail}") from None


def _cell(value: str, number: int):
    """A cell holding a JSON object or list is read as JSON, strictly as a line is; one that only a lenient reader
    takes (`[NaN]`, a key twice) is the line's 400, not text; any other cell is text."""
    value = csv_cell_read(value)
    text = value.strip()
    if text[:1] in ("{", "["):
        try:
            return _json_read(text, number)
        except InvalidInput as refused:
            try:
                json.loads(text)
            except (ValueError, RecursionError):
                return value
            raise refused from None
    return value if value != "" else None


def _csv_rows(content: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(content))
    if reader.fieldnames is None or "input" not in reader.fieldnames:
        raise _line_error(1, "the header must name an input column (and may name expected_output, metadata)")
    twice = sorted({name for name in reader.fieldnames if reader.fieldnames.count(name) > 1})
    if twice:  # a row would keep the last such cell: which one was meant is not ours to guess
        raise _line_error(1, f"the header names {', '.join(twice)} more than once")
    rows = []
    for number, row in enumerate(reader, start=2):
        if None in row:
            raise _line_error(number, "more cells than the header names")
        rows.append(_checked({key: _cell(value or "", number) for key, value in row.items()}, number))
    return rows


def _jsonl_rows(content: str) -> list[dict]:
    rows = []
    # Lines end at "\n" (a "\r" before it is JSON's whitespace): str.splitlines() also splits at U+2028, U+0085 and
    # others, which a JSON string may hold as they are (json.dumps(..., ensure_ascii=False) writes them so).
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        row = _json_read(line, number)
        if not isinstance(row, dict):
            raise _line_error(number, "each line is an object")
        rows.append(_checked(row, number))
    return rows


def dataset_export(*, dataset: Dataset, format: str) -> str:
    """Every item, as CSV (JSON values in their cells, formulas quoted: core.csv_cells) or JSONL, oldest first: what dataset_import reads back."""
    items = dataset.items.order_by("created_at", "id").values_list("input", "expected_output", "metadata")
    if format == "jsonl":
        return "".join(json.dumps({"input": i, "expected_output": e, "metadata": m}) + "\n" for i, e, m in items)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in items:
        writer.writerow(["" if value is None else csv_cell(value if isinstance(value, str) else json.dumps(value))
                         for value in row])
    return out.getvalue()
