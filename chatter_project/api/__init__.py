"""Shared REST API plumbing (SPEC §7): the error handler, pagination, SSE responses and the /api/v1/ URLconf.
Each app keeps its own endpoints in `<app>/api/` (serializers, views, urls)."""
