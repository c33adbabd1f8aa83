"""Text cells of every CSV export, safe to open in a spreadsheet (OWASP's CSV injection rule): a cell starting with
`=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel, LibreOffice and Google Sheets (a dataset item
"=HYPERLINK(…)" would run), so it is written after a single quote, which makes it text. A cell that already starts
with quotes before such a character gets one more, so reading an export back (csv_cell_read) gives every cell as
it was."""
from __future__ import annotations

import re

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTED_FORMULA = re.compile(r"'+[=+\-@\t\r]")


def csv_cell(text: str) -> str:
    """`text` as a CSV export writes it: after a single quote when a spreadsheet would read it as a formula."""
    if text.startswith(FORMULA_START) or _QUOTED_FORMULA.match(text):
        return "'" + text
    return text


def csv_cell_read(text: str) -> str:
    """A cell of a CSV export as it was before csv_cell (an import reads an export back)."""
    return text[1:] if _QUOTED_FORMULA.match(text) else text
