"""GET /docs and /redoc: the interactive documentation, served whole by the app itself
(a browser check that nothing is fetched from elsewhere is in tests/app/test_page.py)."""

import re

from fastapi.testclient import TestClient

ASSET = re.compile(r'(?:href|src)="([^"]+)"|url: *\'([^\']+)\'')


def linked_urls(html: str) -> list[str]:
    return [a or b for a, b in ASSET.findall(html)]


def test_swagger_ui_loads_its_files_from_the_service(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    urls = linked_urls(page.text)
    assert "/static-offline-docs/swagger-ui-bundle.js" in urls
    assert "/static-offline-docs/swagger-ui.css" in urls
    assert "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/"), f"{url} is not served by the app"
        assert client.get(url).status_code == 200, url
    assert "cdn.jsdelivr.net" not in page.text and "unpkg.com" not in page.text
    # The validator badge would send the document's address to swagger.io.
    assert '"validatorUrl": null' in page.text


def test_redoc_loads_its_files_from_the_service(client: TestClient) -> None:
    page = client.get("/redoc")
    assert page.status_code == 200
    urls = linked_urls(page.text)
    assert "/static-offline-docs/redoc.standalone.js" in urls
    for url in urls:
        assert url.startswith("/") and client.get(url).status_code == 200, url
    assert "fonts.googleapis.com" not in page.text


def test_the_bundled_script_is_swagger_ui_5_which_reads_openapi_3_1(client: TestClient) -> None:
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    script = client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 500_000
    assert b"SwaggerUIBundle" in script.content
