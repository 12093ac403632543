"""The pages a person reads: the forecast-and-window page at / and the API docs at /docs (Swagger
UI), and their static files. Both pages are HTML with their own script files (the strict
Content-Security-Policy in headers.py allows no inline script); / is filled in with the default
zones and whether an API key is needed, nothing else. Everything they show comes from the API
itself, fetched by the browser, so a person sees what a client gets."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, render_template, request, send_from_directory

from carbon_optimizer.web.app_state import app_state

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static/"
# Vendored libraries live under a versioned folder (vendor/<name>-<version>/), so a file's content
# never changes under its path: browsers may keep it for a year. Our own files change with
# releases under the same name: they are revalidated (ETag) on every load.
_VENDOR_MAX_AGE = 365 * 24 * 3600

# page.html is a Jinja template (autoescaped) for the two things the page must know before it
# asks anything: the service's default zones, and whether a call needs an API key.
pages = Blueprint("pages", __name__, template_folder="static")


def _page(name: str) -> Response:
    response = send_from_directory(STATIC_DIR, name, mimetype="text/html", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response


@pages.get("/")
def index():
    state = app_state()
    # Read per request: keys can appear on a secret refresh (as the OpenAPI document does).
    keyed = bool(state.secrets.current().api_keys)
    response = Response(render_template("page.html",
                                        default_zones=", ".join(state.settings.default_zones),
                                        key_required="true" if keyed else "false"),
                        mimetype="text/html")
    response.headers["Cache-Control"] = "no-cache"
    response.add_etag()
    return response.make_conditional(request)


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
