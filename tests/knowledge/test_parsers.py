"""A file's text by its type (issue 45, ingestion): real PDF, DOCX, HTML, CSV and text files made here, and each
bad file answered as the issue says: corrupt or encrypted PDF unreadable with the parser's reason, an unsupported
type 415, an oversize file 413."""
import io
import zipfile

import pytest

from core.errors import PayloadTooLarge
from knowledge.parsers import DOCX, FileUnreadable, UnsupportedFileType, text_from_file, upload_size_check
from tests.knowledge.files import docx_bytes, pdf_bytes

LINES = ["Kettle repairs", "A cracked seal lets water out of the appliance.", "Replace the seal (part 7)."]


def test_issue_45_a_pdf_gives_its_text_layer():
    text = text_from_file("manual.pdf", "application/pdf", pdf_bytes(LINES))
    assert text.splitlines() == LINES


def test_issue_45_a_pdf_encrypted_with_a_password_is_unreadable_with_the_reason():
    with pytest.raises(FileUnreadable) as refused:
        text_from_file("manual.pdf", "application/pdf", pdf_bytes(LINES, user_password="s3cret"))
    assert refused.value.message == "the PDF is encrypted: it needs a password to be read"
    assert refused.value.as_dict()["error"]["code"] == "file_unreadable"


def test_issue_45_a_pdf_encrypted_with_no_user_password_opens_as_any_reader_opens_it():
    assert text_from_file("manual.pdf", "application/pdf", pdf_bytes(LINES, user_password="")).splitlines() == LINES


@pytest.mark.parametrize("data", [b"%PDF-1.7\n1 0 obj << /Type /Catalog", pdf_bytes(LINES)[:200], b"not a pdf at all"])
def test_issue_45_a_corrupt_pdf_is_unreadable_with_the_parsers_reason(data):
    with pytest.raises(FileUnreadable) as refused:
        text_from_file("manual.pdf", "application/pdf", data)
    assert refused.value.message.startswith("the PDF cannot be read: ")
    assert len(refused.value.message) > len("the PDF cannot be read: ")


def test_issue_45_a_docx_gives_markdown_with_its_headings():
    text = text_from_file("notes.docx", DOCX, docx_bytes("Kettle repairs", LINES[1:] + ["x < y & z"]))
    assert text.splitlines() == ["# Kettle repairs", "", LINES[1], "", LINES[2], "", "x < y & z"]


def test_issue_45_a_docx_that_is_no_zip_or_has_no_document_is_unreadable():
    with pytest.raises(FileUnreadable, match="not a zip archive"):
        text_from_file("notes.docx", DOCX, b"PK\x03\x04 broken")
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("hello.txt", "no word document here")
    with pytest.raises(FileUnreadable, match="^the DOCX cannot be read: "):
        text_from_file("notes.docx", DOCX, empty.getvalue())


def test_issue_45_a_docx_that_unpacks_past_ten_times_the_limit_is_refused_unread(settings):
    settings.CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES = 4096
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", b"<" + b" " * 50_000)
    assert len(bomb.getvalue()) < 4096
    with pytest.raises(FileUnreadable, match="unpacks to 50\\d+ bytes, more than 10 times the upload limit"):
        text_from_file("notes.docx", DOCX, bomb.getvalue())


def test_issue_45_html_gives_markdown_without_scripts_in_its_declared_charset():
    page = ("<html><head><meta charset='iso-8859-1'><title>Kettles</title><style>p {color: red}</style>"
            "<script>alert('x')</script></head><body><h2>Repairs</h2><p>The <b>seal</b> costs 5 \xa3.</p>"
            "<table><tr><th>part</th><th>price</th></tr><tr><td>seal</td><td>5</td></tr></table></body></html>")
    text = text_from_file("page.html", "text/html", page.encode("iso-8859-1"))
    assert "alert" not in text and "color" not in text
    assert "## Repairs" in text
    assert "The **seal** costs 5 \xa3." in text
    assert "| part | price |\n| --- | --- |\n| seal | 5 |" in text


def test_issue_45_csv_gives_a_markdown_table():
    data = 'part,price,note\nseal,5,"fits model | 7"\nlid,12\n'.encode()
    assert text_from_file("parts.csv", "text/csv", data).splitlines() == [
        "| part | price | note |", "| --- | --- | --- |", "| seal | 5 | fits model \\| 7 |", "| lid | 12 |  |"]


def test_issue_45_markdown_and_text_are_kept_as_they_are_in_their_charset():
    assert text_from_file("a.md", "text/markdown", "\ufeff# Title\n\n- one\n".encode()) == "# Title\n\n- one"
    assert text_from_file("a.txt", "text/plain; charset=latin-1", "caf\xe9".encode("latin-1")) == "caf\xe9"
    with pytest.raises(FileUnreadable, match="not utf-8-sig text"):
        text_from_file("a.txt", "text/plain", b"caf\xe9")
    with pytest.raises(FileUnreadable, match="unknown charset"):
        text_from_file("a.txt", "text/plain; charset=klingon", b"abc")
    with pytest.raises(FileUnreadable, match="unknown charset"):  # a ValueError of Python's, not a LookupError
        text_from_file("a.txt", "text/plain; charset=utf\x00-8", b"abc")


def test_issue_45_a_generic_content_type_is_read_by_the_files_name():
    assert text_from_file("manual.PDF", "application/octet-stream", pdf_bytes(LINES)).splitlines() == LINES
    assert text_from_file("notes.md", None, b"# hi") == "# hi"


@pytest.mark.parametrize("name, content_type", [("photo.png", "image/png"), ("archive.zip", "application/zip"),
                                                ("no-extension", "application/octet-stream"), ("x.exe", "")])
def test_issue_45_an_unsupported_type_is_415(name, content_type):
    with pytest.raises(UnsupportedFileType) as refused:
        text_from_file(name, content_type, b"\x89PNG....")
    assert refused.value.status == 415
    assert refused.value.as_dict()["error"]["code"] == "unsupported_media_type"


def test_issue_45_a_file_over_the_upload_limit_is_413_before_it_is_read(settings):
    settings.CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES = 2048
    upload_size_check(2048)
    with pytest.raises(PayloadTooLarge) as refused:
        text_from_file("big.txt", "text/plain", b"x" * 2049)
    assert refused.value.status == 413
    assert refused.value.as_dict()["error"]["details"] == [{"path": "file", "code": "max_bytes", "message": "2048"}]
    with pytest.raises(PayloadTooLarge):  # what the type would be does not matter
        text_from_file("big.png", "image/png", b"x" * 2049)


def test_issue_45_a_file_with_no_text_is_unreadable():
    with pytest.raises(FileUnreadable, match=r"^scan.pdf has no text to read \(a scanned PDF needs OCR first\)$"):
        text_from_file("scan.pdf", "application/pdf", pdf_bytes([]))
    with pytest.raises(FileUnreadable, match=r"^blank.txt has no text to read$"):  # no word of PDFs for a text file
        text_from_file("blank.txt", "text/plain", b" \n\x00\n")
