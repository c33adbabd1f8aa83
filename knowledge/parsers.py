"""A file's text, by its type, for a collection's documents (docs/knowledge.md#ingestion): PDF with pypdf, DOCX with
mammoth (to HTML, then Markdown), HTML with markdownify, CSV as a Markdown table, Markdown and plain text as they
are. Besides the text, each an error of the one hierarchy: PayloadTooLarge (413) before anything is read,
UnsupportedFileType (415), and FileUnreadable for a readable type that cannot be read (its message is the parser's
reason, with which ingestion marks the document `failed`).
"""
from __future__ import annotations

import codecs
import csv
import io
import unicodedata
import zipfile
from pathlib import PurePosixPath

from typing import TYPE_CHECKING

from django.conf import settings

from core.errors import ChatterError, PayloadTooLarge

if TYPE_CHECKING:
    from bs4 import BeautifulSoup

# The parsers (pypdf, mammoth, BeautifulSoup, markdownify: a quarter of a second of imports) are imported where a
# file of their type is read: the API and the admin import this module at every process's start.

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML = "text/html"
MARKDOWN = "text/markdown"
CSV = "text/csv"
TEXT = "text/plain"

CONTENT_TYPES = {PDF: PDF, DOCX: DOCX, HTML: HTML, "application/xhtml+xml": HTML, MARKDOWN: MARKDOWN,
                 "text/x-markdown": MARKDOWN, CSV: CSV, "application/csv": CSV, TEXT: TEXT}
EXTENSIONS = {".pdf": PDF, ".docx": DOCX, ".html": HTML, ".htm": HTML, ".xhtml": HTML, ".md": MARKDOWN,
              ".markdown": MARKDOWN, ".csv": CSV, ".txt": TEXT, ".text": TEXT}
# What a client sends when it does not know: the file's name decides.
UNKNOWN_CONTENT_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
# A DOCX is a zip: its parts may unpack to at most this many times the upload limit (a zip bomb is refused).
UNPACKED_RATIO = 10


class UnsupportedFileType(ChatterError):
    code = "unsupported_media_type"
    status = 415


class FileUnreadable(ChatterError):
    """A file of a type we read that could not be read; the message is the parser's reason."""

    code = "file_unreadable"
    status = 422


def upload_size_check(size: int) -> None:
    """PayloadTooLarge when a file of `size` bytes is over the upload limit (call it before reading an upload)."""
    limit = settings.CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES
    if size > limit:
        raise PayloadTooLarge(f"file larger than {limit} bytes",
                              details=[{"path": "file", "code": "max_bytes", "message": str(limit)}])


def file_type(name: str, content_type: str | None) -> str:
    """The type this module reads a file as: its content type's, or, when the client sent none or a generic one,
    its name's extension's. UnsupportedFileType otherwise."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in UNKNOWN_CONTENT_TYPES:
        if media_type in CONTENT_TYPES:
            return CONTENT_TYPES[media_type]
        raise UnsupportedFileType(f"files of type {media_type!r} cannot be added; supported: "
                                  f"{', '.join(sorted(set(CONTENT_TYPES)))}")
    extension = PurePosixPath(name or "").suffix.lower()
    if extension in EXTENSIONS:
        return EXTENSIONS[extension]
    raise UnsupportedFileType(f"the type of {name!r} is unknown: send its content type, or a name ending in one of "
                              f"{', '.join(sorted(EXTENSIONS))}")


def text_blank(text: str) -> bool:
    """Whether `text` has nothing to search: only whitespace and invisible format characters (zero-width spaces and
    joiners, byte-order marks). A document's text, sent as JSON or read from a file, must have more."""
    return all(char.isspace() or unicodedata.category(char) == "Cf" for char in text)


def text_from_file(name: str, content_type: str | None, data: bytes) -> str:
    """The text of a file named `name`, sent as `content_type` (its parameters may name a charset), whose bytes
    are `data`. Raises PayloadTooLarge, UnsupportedFileType or FileUnreadable (see the module's docstring)."""
    upload_size_check(len(data))
    kind = file_type(name, content_type)
    if kind == PDF:
        text = _pdf_text(data)
    elif kind == DOCX:
        text = _docx_text(data)
    elif kind == HTML:
        text = _html_markdown(_soup(data))
    elif kind == CSV:
        text = _csv_markdown(_decoded(data, content_type))
    else:
        text = _decoded(data, content_type)
    text = text.replace("\x00", "").strip()  # PostgreSQL's text holds no NUL; PDFs' text layers sometimes do
    if text_blank(text):  # the rule a document's JSON text is held to (knowledge.services.document_add)
        hint = " (a scanned PDF needs OCR first)" if kind == PDF else ""
        raise FileUnreadable(f"{name or 'the file'} has no text to read{hint}")
    return text


def _soup(markup: bytes | str) -> BeautifulSoup:
    from bs4 import BeautifulSoup

    return BeautifulSoup(markup, "html.parser")


def _pdf_text(data: bytes) -> str:
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))  # an encrypted file with no user password opens as is
        if reader.is_encrypted and not reader.decrypt(""):
            raise FileUnreadable("the PDF is encrypted: it needs a password to be read")
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except FileUnreadable:
        raise
    except pypdf.errors.FileNotDecryptedError:
        raise FileUnreadable("the PDF is encrypted: it needs a password to be read") from None
    except Exception as exc:  # pypdf raises what its readers meet on a damaged file, not only PdfReadError
        raise FileUnreadable(f"the PDF cannot be read: {exc or type(exc).__name__}") from None


def _docx_text(data: bytes) -> str:
    import mammoth

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(member.file_size for member in archive.infolist())
        if unpacked > UNPACKED_RATIO * settings.CHATTER_KNOWLEDGE_MAX_UPLOAD_BYTES:
            raise FileUnreadable(f"the DOCX unpacks to {unpacked} bytes, more than {UNPACKED_RATIO} times the "
                                 "upload limit")
        html = mammoth.convert_to_html(io.BytesIO(data)).value
    except FileUnreadable:
        raise
    except zipfile.BadZipFile:
        raise FileUnreadable("the DOCX cannot be read: it is not a zip archive") from None
    except Exception as exc:  # a zip without word/document.xml (KeyError), XML that does not parse, ...
        raise FileUnreadable(f"the DOCX cannot be read: {exc or type(exc).__name__}") from None
    return _html_markdown(_soup(html))


def _html_markdown(soup: BeautifulSoup) -> str:
    from markdownify import MarkdownConverter

    for hidden in soup(["script", "style", "template", "noscript"]):
        hidden.decompose()
    return MarkdownConverter(heading_style="ATX").convert_soup(soup)


# A byte-order mark names the file's encoding whatever its upload declared, as browsers read it (WHATWG's
# "BOM sniffing"): Excel's "Unicode text" and Windows tools write UTF-16 with one. UTF-32's marks first (UTF-32LE's
# starts with UTF-16LE's).
BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
                    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _decoded(data: bytes, content_type: str | None) -> str:
    charset = "utf-8-sig"  # UTF-8, a byte-order mark dropped
    for parameter in (content_type or "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    charset = next((encoding for mark, encoding in BYTE_ORDER_MARKS if data.startswith(mark)), charset)
    try:
        return data.decode(charset)
    except UnicodeDecodeError as exc:
        raise FileUnreadable(f"the file is not {charset} text ({exc.reason} at byte {exc.start})") from None
    except (LookupError, ValueError):  # ValueError: a name Python cannot look up at all (a NUL in it)
        raise FileUnreadable(f"unknown charset {charset!r}") from None


def _csv_markdown(text: str) -> str:
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise FileUnreadable(f"the CSV cannot be read: {exc}") from None
    if not rows:
        return ""
    width = max(len(row) for row in rows)

    def line(cells: list[str]) -> str:
        cells = [cell.replace("|", "\\|").replace("\r", " ").replace("\n", " ") for cell in cells]
        return "| " + " | ".join(cells + [""] * (width - len(cells))) + " |"

    return "\n".join([line(rows[0]), "|" + " --- |" * width, *(line(row) for row in rows[1:])])
