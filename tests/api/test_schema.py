"""The OpenAPI schema is valid without warnings, documents the one error shape, and its UI works offline."""
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command


def test_spectacular_validates_the_schema_without_warnings(tmp_path):
    target = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert "/api/v1/workflows/definitions/validate/" in target.read_text()


@pytest.mark.django_db
def test_every_operation_documents_the_error_shape(api):
    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert {"400", "404", "429"} <= set(operation["responses"]), (method, path)


@pytest.mark.django_db
def test_the_docs_page_uses_only_assets_served_by_the_project(api):
    page = api.get("/api/v1/docs/").content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    assert "cdn" not in page.lower()
    bundle = [a for a in assets if a.endswith("swagger-ui-bundle.js")]
    assert bundle and finders.find(bundle[0].removeprefix("/static/"))
