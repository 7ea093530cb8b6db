"""GET / and /static/*: the web page and its files, without a browser (see tests/app/test_page.py)."""

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.routes.page import STATIC_DIR
from app.settings import Settings


def test_the_page_is_served_at_the_root(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    # Neutral until the script has asked /classes what the served model knows.
    assert "<title>Image classifier</title>" in response.text
    assert " ten " not in response.text


def test_every_file_the_page_links_is_served_from_the_app_itself(client: TestClient) -> None:
    page = client.get("/").text
    links = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert {"static/style.css", "static/app.js", "static/favicon.png", "docs"} <= set(links)
    for link in links:
        # Relative and local: no CDN, and it still works under a proxy's path prefix.
        assert not link.startswith(("http:", "https:", "//", "/")), link
        assert client.get("/" + link).status_code == 200, link
    # The About panel is a panel on the page, not a link to raw JSON.
    assert 'href="model"' not in page
    script_type = client.get("/static/app.js").headers["content-type"]
    assert script_type.startswith(("text/javascript", "application/javascript"))
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")


def test_the_script_asks_for_all_ten_classes_and_the_model_input(client: TestClient) -> None:
    script = client.get("/static/app.js").text
    assert '"predict?top_k=10&include_input=true"' in script


def test_the_favicon_is_served_where_browsers_look_for_it(client: TestClient) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert (
        response.content.startswith(b"\x89PNG")
        and response.content == (STATIC_DIR / "favicon.png").read_bytes()
    )


def test_the_script_reads_the_classes_and_keeps_the_key_in_memory_only(client: TestClient) -> None:
    script = client.get("/static/app.js").text
    assert 'fetch(forModel("classes"))' in script
    assert 'fetch(forModel("model"), { headers: authHeaders() })' in script
    assert 'fetch("models", { headers: authHeaders() })' in script
    assert "headers: authHeaders()" in script.split("forModel(PREDICT_URL), {", 1)[1].split("}", 1)[0]
    for storage in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
        assert storage not in script


def test_a_missing_static_file_is_a_404(client: TestClient) -> None:
    assert client.get("/static/nothing.js").status_code == 404
    assert client.get("/static/../main.py").status_code == 404


def test_the_static_folder_is_found_from_any_working_directory(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert STATIC_DIR.is_absolute()
    with TestClient(create_app(settings)) as client:
        assert client.get("/").status_code == 200
        assert client.get("/static/app.js").status_code == 200


def test_the_page_is_not_an_api_operation(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/favicon.ico" not in paths
    assert not any(path.startswith("/static") for path in paths)
