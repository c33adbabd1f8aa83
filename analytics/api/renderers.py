"""CSV export for the analytics endpoints: `?format=csv` or `Accept: text/csv`."""
from __future__ import annotations

import csv
import io
from decimal import Decimal

from rest_framework.renderers import BaseRenderer

from core.csv_cells import csv_cell


class CSVRenderer(BaseRenderer):
    """Renders a list of flat dicts (or a page's `results`) as CSV with a header row. The columns are the view's
    `csv_columns` from the renderer context, so an empty export still says what it would hold."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        rows = data.get("results", []) if isinstance(data, dict) else (data or [])
        columns = (renderer_context or {}).get("csv_columns") or (list(rows[0]) if rows else [])
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column)) for column in columns])
        return out.getvalue().encode(self.charset)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")  # never 0E-8
    if isinstance(value, (int, float)):
        return str(value)
    return csv_cell(str(value))  # a conversation titled "=HYPERLINK(…)" arrives as text
