"""GET /: the web page that classifies a dropped, picked or pasted image; /static: its files;
/favicon.ico: its icon."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

# Next to this package's code, wherever it is installed: never relative to the working directory.
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# A page, not an API operation: kept out of the OpenAPI document.
router = APIRouter(tags=["page"], include_in_schema=False)


@router.get("/", response_class=FileResponse)
async def read_page() -> FileResponse:
    """The web page: drop, pick or paste an image and see what the model makes of it."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/favicon.ico", response_class=FileResponse)
async def read_favicon() -> FileResponse:
    """The site icon, where browsers and bookmarks look for it without reading the page."""
    # A PNG under the .ico name: every current browser reads it by its content.
    return FileResponse(STATIC_DIR / "favicon.png", media_type="image/png")


def static_files() -> StaticFiles:
    """The page's script and style sheet, for ``app.mount("/static", ...)``."""
    return StaticFiles(directory=STATIC_DIR)
