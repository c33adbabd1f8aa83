"""The export's two file types, chosen by `?format=` (DRF's own suffix) or Accept. What a view answers before
the file (an error) is written as JSON."""
import json

from rest_framework.renderers import BaseRenderer


class TextFileRenderer(BaseRenderer):
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, str):
            return data
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"  # the one error shape, as every error is sent
        return json.dumps(data)


class JSONLRenderer(TextFileRenderer):
    media_type = "application/jsonl"
    format = "jsonl"


class CSVRenderer(TextFileRenderer):
    media_type = "text/csv"
    format = "csv"
