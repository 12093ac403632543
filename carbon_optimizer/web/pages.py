"""The pages a person reads: the forecast-and-window page at / and the API docs at /docs (Swagger
UI), and their static files. Both pages are fixed HTML with their own script files (the strict
Content-Security-Policy in headers.py allows no inline script); everything they show comes from the
API itself, fetched by the browser, so a person sees what a client gets."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static/"
# Vendored libraries live under a versioned folder (vendor/<name>-<version>/), so a file's content
# never changes under its path: browsers may keep it for a year. Our own files change with
# releases under the same name: they are revalidated (ETag) on every load.
_VENDOR_MAX_AGE = 365 * 24 * 3600

pages = Blueprint("pages", __name__)


def _page(name: str) -> Response:
    response = send_from_directory(STATIC_DIR, name, mimetype="text/html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@pages.get("/")
def index():
    return _page("page.html")


@pages.get("/docs")
def docs():
    return _page("docs.html")


@pages.get("/static/<path:filename>")
def static(filename: str):
    vendored = filename.startswith("vendor/")
    response = send_from_directory(STATIC_DIR, filename, max_age=_VENDOR_MAX_AGE if vendored else 0)
    response.headers["Cache-Control"] = (f"public, max-age={_VENDOR_MAX_AGE}, immutable" if vendored
                                         else "no-cache")
    return response
