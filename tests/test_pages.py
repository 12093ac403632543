"""The pages (/ and /docs) and their static files, in process: the Content-Security-Policy they
are served with and that their HTML keeps to it (no inline script or style), the cache headers of
vendored and own files, that every referenced file is served, and that the vendored libraries are
the versions their folders and VENDORED.md name. tests/test_page_browser.py runs them in Chromium."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from devkit.paths import ROOT

STATIC = ROOT / "carbon_optimizer" / "web" / "static"
YEAR = 365 * 24 * 3600


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text found inside <script> and <style>."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.inline_code: list[str] = []
        self._inside: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._inside = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):
        self._inside = None

    def handle_data(self, data):
        if self._inside and data.strip():
            self.inline_code.append(data)


def parsed(html: bytes) -> Tags:
    tags = Tags()
    tags.feed(html.decode())
    return tags


def policy(response) -> dict[str, list[str]]:
    directives = [d.strip().split() for d in response.headers["Content-Security-Policy"].split(";")]
    return {d[0]: d[1:] for d in directives if d}


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_the_pages_are_served_under_a_strict_policy_and_keep_to_it(client, path):
    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = policy(page)
    assert csp["default-src"] == ["'none'"] and csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"] and csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert not any("unsafe" in value for values in csp.values() for value in values)
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    tags = parsed(page.data)
    assert tags.inline_code == []
    for tag, attrs in tags.tags:
        assert "style" not in attrs and not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "script":
            assert attrs.get("src", "").startswith("/static/"), attrs
        if tag == "link":
            assert attrs["href"].startswith("/static/"), attrs  # nothing from another host


def test_the_page_links_to_the_docs_and_labels_every_control(client):
    tags = parsed(client.get("/").data)
    assert any(tag == "a" and attrs.get("href") == "/docs" for tag, attrs in tags.tags)
    controls = {attrs["id"] for tag, attrs in tags.tags if tag in ("input", "textarea", "select")}
    labelled = {attrs.get("for") for tag, attrs in tags.tags if tag == "label"}
    assert controls and controls <= labelled
    assert any(tag == "meta" and attrs.get("name") == "viewport" for tag, attrs in tags.tags)


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_every_file_a_page_loads_is_served_with_its_cache_policy(client, path):
    tags = parsed(client.get(path).data)
    files = [attrs.get("src") or attrs.get("href") for tag, attrs in tags.tags if tag in ("script", "link")]
    assert files
    for url in files:
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert answer.data == (STATIC / url.removeprefix("/static/")).read_bytes()
        if url.startswith("/static/vendor/"):
            # A versioned folder: the content never changes under this path.
            assert re.search(r"/vendor/[a-z-]+-\d+\.\d+\.\d+/", url)
            assert answer.headers["Cache-Control"] == f"public, max-age={YEAR}, immutable"
        else:
            assert answer.headers["Cache-Control"] == "no-cache"  # revalidated: changes with releases
            again = client.get(url, headers={"If-None-Match": answer.headers["ETag"]})
            assert again.status_code == 304


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/%2e%2e/routes.py", "/static/vendor/",
                                  "/static/nothing.js", "/static//etc/passwd"])
def test_nothing_outside_the_static_folder_is_served(client, path):
    # (Werkzeug first redirects a doubled slash to its single-slash spelling: follow it.)
    assert client.get(path, follow_redirects=True).status_code == 404


def test_static_files_spend_no_rate_limit_budget(make_app):
    client = make_app({"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_DEFAULT": "2 per hour"}).test_client()
    for _ in range(4):
        assert client.get("/static/page.js").status_code == 200
        assert client.get("/static/vendor/uplot-1.6.32/uPlot.iife.min.js").status_code == 200
    statuses = [client.get("/api/v1/forecast?zone=DE").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_each_vendored_library_is_the_version_its_folder_and_record_name_with_its_licence():
    vendor = STATIC / "vendor"
    record = (vendor / "VENDORED.md").read_text()
    folders = sorted(p for p in vendor.iterdir() if p.is_dir())
    assert [f.name for f in folders] == ["swagger-ui-dist-5.35.0", "uplot-1.6.32"]
    for folder in folders:
        name, version = folder.name.rsplit("-", 1)
        assert re.search(rf"\| \[{re.escape(name)}\]\([^)]*\)[^|]*\| {re.escape(version)} \|", record), folder.name
        assert (folder / "LICENSE").stat().st_size > 500
    # The files themselves carry their version: uPlot in its banner, Swagger UI in its build info.
    assert "(v1.6.32)" in (vendor / "uplot-1.6.32" / "uPlot.iife.min.js").read_text()[:200]
    assert '"5.35.0"' in (vendor / "swagger-ui-dist-5.35.0" / "swagger-ui-bundle.js").read_text()
    assert "MIT License" in (vendor / "uplot-1.6.32" / "LICENSE").read_text()
    assert "Apache License" in (vendor / "swagger-ui-dist-5.35.0" / "LICENSE").read_text()


def test_the_api_keeps_its_own_stricter_policy(client):
    answer = client.get("/api/v1/forecast?zone=DE")
    assert policy(answer) == {"default-src": ["'none'"], "frame-ancestors": ["'none'"]}
    assert answer.headers["Cache-Control"] == "no-store"



def test_the_page_is_filled_in_with_the_default_zones_and_whether_a_key_is_needed(make_app):
    """What the page must know before it asks anything: it draws the default zones on load, or,
    when every call needs a key, says so and waits for one."""
    for env, required in (({"DEFAULT_ZONES": "FR,ES"}, "false"),
                          ({"DEFAULT_ZONES": "FR,ES", "API_KEYS": "FAKE-page-key-0c1f"}, "true")):
        client = make_app(env).test_client()
        page = client.get("/")
        tags = parsed(page.data)
        assert [attrs for tag, attrs in tags.tags if tag == "body"] == [{"data-api-key-required": required}]
        assert [attrs["value"] for tag, attrs in tags.tags if attrs.get("id") == "zones"] == ["FR, ES"]
        assert b"FAKE-page-key" not in page.data
        assert page.headers["Cache-Control"] == "no-cache"
        assert client.get("/", headers={"If-None-Match": page.headers["ETag"]}).status_code == 304


def test_the_signal_list_starts_as_the_services_default_alone(client):
    """Before GET /api/v1/zones answers (or when it cannot: a key is needed first), the page offers
    one choice, which sends no signal; page.js fills in the rest. The attribution line is empty
    and hidden until an answer brings one."""
    tags = parsed(client.get("/").data).tags
    at = next(i for i, (tag, attrs) in enumerate(tags) if tag == "select")
    assert tags[at][1]["id"] == "signal"
    assert [attrs for tag, attrs in tags[at + 1:] if tag == "option"] == [
        {"value": "", "data-default": "true", "title": "the signal the service plans with when none is named"}]
    assert re.search(rb'<label for="signal">Signal</label>', client.get("/").data)
    assert [attrs for tag, attrs in tags if attrs.get("id") == "attribution"] == [
        {"id": "attribution", "class": "attribution", "hidden": None}]
