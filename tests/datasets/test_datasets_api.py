"""/api/v1/datasets/: items typed in, imported from CSV or JSONL (all lines or none), exported back, or taken from
a past run; another user's dataset is a 404 and another user's run cannot be added."""
import csv
import io
import json

import pytest

from datasets.models import Dataset, DatasetItem
from tests.api.conftest import assert_error
from tests.datasets.factories import DatasetFactory, DatasetItemFactory

pytestmark = pytest.mark.django_db
BASE = "/api/v1/datasets/"


@pytest.fixture
def dataset(alice) -> Dataset:
    return DatasetFactory(owner=alice, name="support questions")


def test_it_creates_a_dataset_and_adds_items(api, alice):
    created = api.post(BASE, {"name": "qa", "description": "questions", "metadata": {"team": "a"}}, format="json")
    assert created.status_code == 201 and created.json()["item_count"] == 0
    url = f"{BASE}{created.json()['id']}/items/"

    item = api.post(url, {"input": {"message": "What is 2+2?"}, "expected_output": "4",
                          "metadata": {"difficulty": "easy"}}, format="json")

    assert item.status_code == 201
    assert api.get(url).json()["results"][0]["input"] == {"message": "What is 2+2?"}
    assert api.get(f"{BASE}{created.json()['id']}/").json()["item_count"] == 1


def test_a_run_becomes_an_item_with_its_input_and_output(api, dataset):
    run = api.post("/api/v1/chat/", {"message": "What is 12*7?"}, format="json").json()["execution"]

    item = api.post(f"{BASE}{dataset.pk}/items/", {"execution": run["id"]}, format="json")

    assert item.status_code == 201
    body = item.json()
    assert body["source_execution"] == run["id"] and body["input"] == run["input_data"]
    assert body["expected_output"] == run["output_data"] and body["metadata"] == {"run_status": "completed"}


def test_jsonl_and_csv_imports_round_trip_through_their_exports(api, dataset):
    lines = [{"input": {"message": "hi"}, "expected_output": "hello", "metadata": {"n": 1}},
             {"input": "plain text", "expected_output": None, "metadata": {}}]
    content = "".join(json.dumps(line) + "\n" for line in lines)

    imported = api.post(f"{BASE}{dataset.pk}/import/", {"format": "jsonl", "content": content}, format="json")
    assert imported.status_code == 201 and imported.json() == {"imported": 2}
    jsonl = api.get(f"{BASE}{dataset.pk}/export/?format=jsonl")
    exported_csv = api.get(f"{BASE}{dataset.pk}/export/?format=csv")

    assert jsonl["Content-Type"].startswith("application/jsonl")
    assert [json.loads(line) for line in jsonl.content.decode().splitlines()] == lines
    rows = list(csv.DictReader(io.StringIO(exported_csv.content.decode())))
    assert rows[0] == {"input": '{"message": "hi"}', "expected_output": "hello", "metadata": '{"n": 1}'}
    copy = DatasetFactory(owner=dataset.owner, name="copy")
    assert api.post(f"{BASE}{copy.pk}/import/", {"format": "csv", "content": exported_csv.content.decode()},
                    format="json").status_code == 201
    assert api.get(f"{BASE}{copy.pk}/export/?format=jsonl").content == jsonl.content


FORMULAS = ["=HYPERLINK(\"http://evil.example\")", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "'=already quoted",
            "''+twice", "'plain quote", "plain"]


def test_item_14_a_csv_export_writes_formulas_as_text_and_reads_them_back(api, dataset):
    for text in FORMULAS:
        DatasetItemFactory(dataset=dataset, input=text, expected_output=text, metadata={})

    exported = api.get(f"{BASE}{dataset.pk}/export/?format=csv").content.decode()

    rows = list(csv.DictReader(io.StringIO(exported, newline="")))
    cells = [row[column] for row in rows for column in ("input", "expected_output")]
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))], cells
    assert [row["input"] for row in rows] == ["'" + text if text != "'plain quote" and text != "plain" else text
                                             for text in FORMULAS]
    copy = DatasetFactory(owner=dataset.owner, name="copy")
    assert api.post(f"{BASE}{copy.pk}/import/", {"format": "csv", "content": exported},
                    format="json").status_code == 201
    assert list(copy.items.order_by("created_at", "id").values_list("input", "expected_output")) == [
        (text, text) for text in FORMULAS]


@pytest.mark.parametrize("body", [
    {"format": "jsonl", "content": '{"input": "a"}\nnot json\n'},
    {"format": "jsonl", "content": '{"input": "a"}\n[1, 2]\n'},
    {"format": "jsonl", "content": '{"expected_output": "no input"}\n'},
    {"format": "jsonl", "content": '{"input": "a", "colour": "blue"}\n'},
    {"format": "jsonl", "content": '{"input": "a", "metadata": [1]}\n'},
    {"format": "jsonl", "content": "\n\n"},
    {"format": "csv", "content": "question,answer\nq,a\n"},
    {"format": "csv", "content": "input,expected_output\nq,a,extra\n"},
    {"format": "csv", "content": "input,input\nfirst,second\n"},
    {"format": "csv", "content": "input,expected_output,expected_output\nq,a,b\n"},
    {"format": "xml", "content": "<items/>"},
    {"format": "csv"},
])
def test_a_bad_import_is_a_400_and_adds_no_item(api, dataset, body):
    DatasetItemFactory(dataset=dataset)

    assert_error(api.post(f"{BASE}{dataset.pk}/import/", body, format="json"), 400, "validation_error")

    assert DatasetItem.objects.count() == 1


@pytest.mark.parametrize("format, bad_line", [
    ("jsonl", '{"input": "q", "expected_output": NaN}'),
    ("jsonl", '{"input": "q", "expected_output": 1e999}'),
    ("jsonl", '{"input": {"x": -Infinity}}'),
    ("jsonl", '{"input": "a\\u0000b"}'),
    ("jsonl", '{"input": "a", "input": "b"}'),
    ("csv", 'q,[NaN]'),
    ("csv", 'q,"{""x"": 1e999}"'),
    ("csv", 'q,"[""a\\u0000b""]"'),
])
def test_json_no_database_stores_is_a_400_naming_its_line(api, dataset, format, bad_line):
    """As the API's own parser reads a body: Python's json reads NaN, Infinity and 1e999, which neither database
    stores (a 500), and a NUL escape, which PostgreSQL refuses (a 500) and SQLite kept."""
    before = "input,expected_output\nfine,ok" if format == "csv" else '{"input": "fine"}'
    content = f"{before}\n{bad_line}\n"

    details = assert_error(api.post(f"{BASE}{dataset.pk}/import/", {"format": format, "content": content},
                                    format="json"), 400, "validation_error")

    assert [item["path"] for item in details] == [f"content[{content.count(chr(10))}]"]  # the last line
    assert DatasetItem.objects.count() == 0


@pytest.mark.parametrize("format, content", [("csv", "\ufeffinput,expected_output\nhello,world\n"),
                                             ("jsonl", '\ufeff{"input": "hello", "expected_output": "world"}\n')])
def test_a_file_starting_with_a_byte_order_mark_imports_as_without_one(api, dataset, format, content):
    """Excel's "CSV UTF-8" starts with one: its first column was read as "\ufeffinput", so the header had no input."""
    response = api.post(f"{BASE}{dataset.pk}/import/", {"format": format, "content": content}, format="json")

    assert response.status_code == 201, response.content
    assert list(dataset.items.values_list("input", "expected_output")) == [("hello", "world")]


@pytest.mark.parametrize("format, content", [
    ("jsonl", '{"input": "one\u2028two"}\r\n{"input": "three\x85four\u2029five"}\n'),
    ("csv", 'input\r\n"[""one\u2028two""]"\r\nthree\x85four\u2029five\r\n'),
])
def test_a_line_separator_inside_a_json_string_is_no_end_of_line(api, dataset, format, content):
    """JSON may hold U+2028, U+2029 and U+0085 as they are (json.dumps(ensure_ascii=False) writes them so); JSONL
    lines end at a newline only."""
    response = api.post(f"{BASE}{dataset.pk}/import/", {"format": format, "content": content}, format="json")

    assert response.status_code == 201, response.content
    inputs = sorted(dataset.items.values_list("input", flat=True), key=json.dumps)
    assert inputs == sorted(["one\u2028two" if format == "jsonl" else ["one\u2028two"], "three\x85four\u2029five"],
                            key=json.dumps)


def test_a_csv_header_naming_a_column_twice_is_a_400_naming_it(api, dataset):
    details = assert_error(api.post(f"{BASE}{dataset.pk}/import/", {"format": "csv", "content": "input,input\na,b\n"},
                                    format="json"), 400, "validation_error")

    assert details[0]["path"] == "content[1]" and "input" in details[0]["message"]
    assert DatasetItem.objects.count() == 0


def test_a_csv_cell_that_is_no_json_at_all_stays_text(api, dataset):
    content = "input,expected_output\nq,[not json\n"

    assert api.post(f"{BASE}{dataset.pk}/import/", {"format": "csv", "content": content},
                    format="json").status_code == 201

    assert list(dataset.items.values_list("input", "expected_output")) == [("q", "[not json")]


@pytest.mark.parametrize("body", [{}, {"input": ""}, {"expected_output": "x"},
                                  {"input": "x", "execution": "00000000-0000-0000-0000-000000000000"},
                                  {"execution": "00000000-0000-0000-0000-000000000000"},
                                  {"input": "x", "metadata": "not an object"}, {"input": "x", "id": "mine"}])
def test_a_bad_item_is_a_400_and_writes_nothing(api, dataset, body):
    assert_error(api.post(f"{BASE}{dataset.pk}/items/", body, format="json"), 400, "validation_error")

    assert DatasetItem.objects.count() == 0


def test_a_name_already_used_is_a_400(api, dataset):
    assert_error(api.post(BASE, {"name": "support questions"}, format="json"), 400, "validation_error")
    assert Dataset.objects.count() == 1


def test_bob_gets_404s_for_alices_dataset_and_cannot_add_her_run(api, bob_api, bob, dataset):
    item = DatasetItemFactory(dataset=dataset)
    run = api.post("/api/v1/chat/", {"message": "hi"}, format="json").json()["execution"]
    mine = DatasetFactory(owner=bob, name="bob's")

    for response in (bob_api.get(f"{BASE}{dataset.pk}/"), bob_api.get(f"{BASE}{dataset.pk}/items/"),
                     bob_api.post(f"{BASE}{dataset.pk}/items/", {"input": "x"}, format="json"),
                     bob_api.post(f"{BASE}{dataset.pk}/import/", {"format": "jsonl", "content": '{"input": 1}'},
                                  format="json"),
                     bob_api.get(f"{BASE}{dataset.pk}/export/"),
                     bob_api.delete(f"{BASE}{dataset.pk}/items/{item.pk}/"),
                     bob_api.patch(f"{BASE}{dataset.pk}/", {"name": "x"}, format="json"),
                     bob_api.delete(f"{BASE}{dataset.pk}/")):
        assert_error(response, 404, "not_found")
    assert_error(bob_api.post(f"{BASE}{mine.pk}/items/", {"execution": run["id"]}, format="json"), 400,
                 "validation_error")
    assert [d["name"] for d in bob_api.get(BASE).json()["results"]] == ["bob's"]
    assert DatasetItem.objects.count() == 1 and Dataset.objects.get(pk=dataset.pk).name == "support questions"


@pytest.mark.parametrize("malformed", ["-" * 36, "0123456789abcdef" * 2 + "0123", "0" * 35 + "g"])
def test_item_13_an_item_id_of_a_uuids_length_that_is_not_one_is_a_404(api, dataset, malformed):
    item = DatasetItemFactory(dataset=dataset)

    details = assert_error(api.delete(f"{BASE}{dataset.pk}/items/{malformed}/"), 404, "not_found")

    assert details == [] and DatasetItem.objects.filter(pk=item.pk).exists()


def test_items_and_datasets_are_deleted_by_their_owner(api, dataset):
    item = DatasetItemFactory(dataset=dataset)

    assert api.delete(f"{BASE}{dataset.pk}/items/{item.pk}/").status_code == 204
    assert_error(api.delete(f"{BASE}{dataset.pk}/items/{item.pk}/"), 404, "not_found")
    assert api.delete(f"{BASE}{dataset.pk}/").status_code == 204
    assert Dataset.objects.count() == 0
