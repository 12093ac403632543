"""The page at / and the docs at /docs in a real browser: Debian's headless Chromium driven by
Selenium through chromium-driver, against Gunicorn in demo mode. The page must draw each zone's
chart with the chosen window shaded, and say the saving the API answers for the same request
(fetched here with requests, independently of the page); /docs must be Swagger UI showing the
operations; neither may log a console error (a CSP violation shows up there). Screenshots go to
$CI_ARTIFACTS_DIR, else artifacts/ in the repository root.

CI installs chromium and chromium-driver (.ci/run); elsewhere this test skips, saying so, when
they are missing."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from devkit.paths import ROOT
from devkit.service_process import GunicornProcess
from devkit.waiting import HANG
from tests.support import LIMIT_REDIS

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("CI_ARTIFACTS_DIR") or ROOT / "artifacts")
# The README's picture: refreshed by a run with UPDATE_README_SCREENSHOT=1.
README_PICTURE = ROOT / "docs" / "page.png"

if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip("no headless browser here: install Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver; .ci/run does) to run the page tests",
                allow_module_level=True)

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402
# Every wait for the page is bounded by HANG: a hang fails, a slow or loaded machine does not.


@pytest.fixture(scope="module")
def service():
    with GunicornProcess({"CARBON_PROVIDER": "demo", "DEFAULT_ZONES": "DE"}, workers=1, threads=4) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's path is given, so Selenium Manager never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(HANG)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_console_log(request):
    """Each test reads only its own console messages: drop what earlier tests left in the log."""
    if "browser" in request.fixturenames:
        request.getfixturevalue("browser").get_log("browser")


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    # The whole page: as tall as its content.
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(driver.get_window_size()["width"], min(max(height + 40, 800), 4000))
    driver.save_screenshot(str(path))
    return path


def demo_hour(service) -> datetime:
    """The hour the demo's series start at, as the service states it (its forecast's start): the
    demo's data depend on nothing else."""
    known = requests.get(f"{service.url}/api/v1/forecast", params={"zone": "DE"}, timeout=HANG).json()
    return datetime.fromisoformat(known["provenance"]["forecast_start"].replace("Z", "+00:00"))


def grams_shown(text: str) -> float:
    """'Saves 123.4 g' or 'Saves 12.35 kg' as grams."""
    found = re.search(r"Saves ([0-9.]+) (k?g) CO", text)
    assert found, text
    return float(found.group(1)) * (1000 if found.group(2) == "kg" else 1)


def window_pixels(driver, figure) -> list[tuple[int, int, int]]:
    """The canvas colours at the middle of each drawn window, at five heights in the plot area."""
    drawn = figure.get_attribute("data-window-px")
    assert drawn, "no window drawn on this chart"
    canvas = figure.find_element(By.TAG_NAME, "canvas")
    colours = []
    for box in drawn.split(","):
        x0, x1, top, bottom = (int(v) for v in box.split())
        assert x1 - x0 >= 2
        for k in range(1, 6):
            y = top + (bottom - top) * k // 6
            colours.append(tuple(driver.execute_script(
                "const d = arguments[0].getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data;"
                "return [d[0], d[1], d[2]];", canvas, (x0 + x1) // 2, y)))
    return colours


def greenish(rgb: tuple[int, int, int]) -> bool:
    red, green, blue = rgb
    return green > red + 15 and green > blue + 5


def test_the_page_draws_the_forecast_and_the_chosen_window_and_says_the_apis_saving(service, browser):
    # The page's answers and this test's are compared only when all were made within one hour of
    # the demo's data (the hour the service states): an hour that turned meanwhile (once an hour at
    # most) has everything asked again. Fixed start and end, whole hours ahead of that hour.
    for _ in range(2):
        hour = demo_hour(service)
        start = hour + timedelta(hours=2)
        workload = {"id": "browser-check", "duration": 150, "zones": ["DE", "FR", "PL"],
                    "earliest_start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    # Past the demo's 72-hour forecast: the charts show estimated parts too.
                    "deadline": (start + timedelta(hours=84)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "power_kw": 3}
        expected = requests.post(f"{service.url}/api/v1/optimize", json=workload, timeout=10).json()
        assert expected["status"] == "scheduled", expected

        browser.get(f"{service.url}/")
        assert browser.find_element(By.CSS_SELECTOR, "a[href='/docs']")
        # Every form control has a label tied to it.
        for control in browser.find_elements(By.CSS_SELECTOR, "input, select, textarea"):
            ident = control.get_attribute("id")
            assert browser.find_elements(By.CSS_SELECTOR, f"label[for='{ident}']"), ident
        browser.find_element(By.CSS_SELECTOR, "#json-box summary").click()
        browser.find_element(By.ID, "workload-json").send_keys(json.dumps(workload))
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
        known = requests.get(f"{service.url}/api/v1/forecast", params={"zone": "DE", "history": "true"},
                             timeout=10).json()
        if demo_hour(service) == hour:
            break
    else:
        pytest.fail("the demo's hour turned during each of two page loads")

    figures = browser.find_elements(By.CSS_SELECTOR, "figure.zone")
    assert [f.get_attribute("data-zone") for f in figures] == ["DE", "FR", "PL"]
    for figure in figures:
        canvas = figure.find_element(By.TAG_NAME, "canvas")
        assert canvas.size["width"] > 200 and canvas.size["height"] > 100
    chosen = browser.find_element(By.CSS_SELECTOR, f"figure.zone[data-zone='{expected['zone']}']")
    colours = window_pixels(browser, chosen)
    assert sum(greenish(c) for c in colours) >= 3, colours
    for figure in figures:  # only the chosen zone's chart has a window
        if figure.get_attribute("data-zone") != expected["zone"]:
            assert not figure.get_attribute("data-window-px")

    saving = browser.find_element(By.ID, "saving").text
    # Shown rounded (0.1 g, or 0.01 kg from 10 kg on; percent to 0.1): at most half a unit off.
    half_unit = 0.05 if expected["saving_grams"] < 10_000 else 5
    assert abs(grams_shown(saving) - expected["saving_grams"]) <= half_unit + 1e-6, saving
    percent = re.search(r"\(([0-9.]+) %\)", saving)
    assert percent and abs(float(percent.group(1)) - expected["saving_percent"]) <= 0.05 + 1e-6, saving
    facts = browser.find_element(By.ID, "facts").text
    shown_start = datetime.fromisoformat(expected["start"].replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")
    assert f"Run in {expected['zone']} from {shown_start}" in facts
    # Each point is drawn as measured, forecast or estimated as the API says (`known`, asked in the
    # same hour): measured before the provider's forecast starts, estimated from where it ends.
    shown = lambda stamp: datetime.fromisoformat(stamp.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M UTC")  # noqa: E731
    starts_at, ends_at = (shown(known["provenance"][k]) for k in ("forecast_start", "forecast_end"))
    rows = [[cell.get_attribute("textContent") for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "figure.zone[data-zone='DE'] tr")[1:]]
    assert {kind for _, _, kind in rows} == {"measured", "forecast", "estimated"}
    assert [hour for hour, _, kind in rows if kind == "measured"] == [shown(p["datetime"]) for p in known["history"]]
    for hour, _, kind in rows:
        assert kind == ("measured" if hour < starts_at else "estimated" if hour >= ends_at else "forecast"), rows
    assert console_errors(browser) == []
    picture = screenshot(browser, "page.png")
    if os.environ.get("UPDATE_README_SCREENSHOT") == "1":
        shutil.copyfile(picture, README_PICTURE)


def test_on_load_the_default_zones_are_drawn_without_a_click(service, browser):
    browser.get(f"{service.url}/")
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    # The service's DEFAULT_ZONES (DE here), asked with the form's other defaults.
    assert browser.find_element(By.ID, "zones").get_attribute("value") == "DE"
    expected = requests.post(f"{service.url}/api/v1/optimize", timeout=10, json={
        "zones": ["DE"], "duration": 120, "max_delay": "PT24H", "power_kw": 1}).json()
    [figure] = browser.find_elements(By.CSS_SELECTOR, "figure.zone")
    assert figure.get_attribute("data-zone") == expected["zone"] == "DE"
    assert figure.find_element(By.TAG_NAME, "canvas").size["width"] > 200
    assert sum(greenish(c) for c in window_pixels(browser, figure)) >= 3
    assert browser.find_element(By.ID, "saving").text.startswith("Saves")
    assert console_errors(browser) == []


def test_the_form_and_an_interruptible_answer_show_the_chunks(service, browser):
    browser.set_window_size(1280, 1400)
    browser.get(f"{service.url}/")
    zones = browser.find_element(By.ID, "zones")
    zones.clear()
    zones.send_keys("GB")
    browser.find_element(By.ID, "duration").clear()
    browser.find_element(By.ID, "duration").send_keys("240")
    browser.find_element(By.ID, "max-delay").clear()
    browser.find_element(By.ID, "max-delay").send_keys("36")
    browser.find_element(By.ID, "interruptible").send_keys(Keys.SPACE)  # by keyboard: tick, then Enter
    assert browser.find_element(By.ID, "interruptible").is_selected()
    browser.find_element(By.ID, "max-delay").send_keys(Keys.ENTER)
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    chunks = browser.find_elements(By.CSS_SELECTOR, "#chunks li")
    assert chunks and browser.find_element(By.ID, "chunks-box").is_displayed()
    figure = browser.find_element(By.CSS_SELECTOR, "figure.zone[data-zone='GB']")
    drawn = figure.get_attribute("data-window-px").split(",")
    assert len(drawn) == len(chunks)  # one shaded band per chunk
    assert console_errors(browser) == []


def test_a_pasted_batch_lists_each_result_and_the_total(service, browser):
    document = requests.get(f"{service.url}/api/v1/openapi.json", timeout=10).json()
    batch = document["paths"]["/api/v1/optimize"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]["batch"]["value"]
    browser.get(f"{service.url}/")
    browser.find_element(By.CSS_SELECTOR, "#json-box summary").click()
    browser.find_element(By.ID, "workload-json").send_keys(json.dumps(batch))
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    summary = requests.post(f"{service.url}/api/v1/optimize", json=batch, timeout=10).json()["summary"]
    assert browser.find_element(By.ID, "saving").text.startswith(
        f"Batch: {summary['scheduled']} of {summary['workloads']} scheduled")
    assert browser.find_element(By.ID, "signal-used").text == "Signal: average (demo), intensities in gCO2eq/kWh."
    facts = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#facts li")]
    assert [f.split(":")[0] for f in facts] == [w["id"] for w in batch["workloads"]]
    # Every scheduled workload's window is shaded on the zone's chart.
    figure = browser.find_element(By.CSS_SELECTOR, "figure.zone[data-zone='SE']")
    assert len(figure.get_attribute("data-window-px").split(",")) == summary["scheduled"]
    assert console_errors(browser) == []


# Records what the page sends from here on (its calls go through the global fetch when made).
RECORD_FETCHES = """
window.sentCalls = [];
const original = window.fetch;
window.fetch = function (url, init) {
  window.sentCalls.push([String(url), (init && init.body) || null]);
  return original.apply(this, arguments);
};
"""


def sent_calls(driver) -> list[tuple[str, str | None]]:
    return [tuple(call) for call in driver.execute_script("return window.sentCalls")]


def shown_signal_options(driver) -> list[tuple[str, str, str, bool]]:
    """The signal list as a person sees it: value, text, title (the description) and whether chosen."""
    return [(o.get_attribute("value"), o.text, o.get_attribute("title"), o.is_selected())
            for o in driver.find_elements(By.CSS_SELECTOR, "#signal option")]


def test_the_signal_list_is_the_services_and_the_plan_shows_its_units(service, browser):
    browser.get(f"{service.url}/")
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    served = requests.get(f"{service.url}/api/v1/zones", timeout=10).json()["signals"]
    assert [s["name"] for s in served] == ["average"]  # the demo serves one signal
    # The list is filled from /zones in the background of the first question: wait for it.
    WebDriverWait(browser, HANG).until(lambda _: shown_signal_options(browser)[0][0] != "")
    assert shown_signal_options(browser) == [
        (s["name"], f"{s['name']} ({s['provider']})", s["description"], s["default"]) for s in served]
    assert browser.find_element(By.CSS_SELECTOR, "label[for='signal']").text == "Signal"

    # The service's default chosen: the request names no signal, and the charts are asked for the
    # signal the plan was made on.
    browser.execute_script(RECORD_FETCHES)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    calls = sent_calls(browser)
    [body] = [b for url, b in calls if url == "/api/v1/optimize"]
    assert "signal" not in json.loads(body)
    expected = requests.post(f"{service.url}/api/v1/optimize", timeout=10, json=json.loads(body)).json()
    source = expected["provenance"]
    assert (source["signal"], source["units"], source["attribution"]) == ("average", "gCO2eq/kWh", None)
    assert [url for url, _ in calls if url.startswith("/api/v1/forecast")] == [
        f"/api/v1/forecast?zone=DE&hours={hours}&history=true&signal=average"
        for hours in re.findall(r"hours=(\d+)", " ".join(url for url, _ in calls))]
    # The answer's units wherever an intensity is written: the plan's facts, the chart's axis
    # (drawn on the canvas: the page names the label it gave in data-units), its description and
    # its data table.
    facts = browser.find_element(By.ID, "facts").text
    assert re.search(r"Mean carbon intensity [0-9.]+ gCO2eq/kWh, against [0-9.]+ starting at once", facts), facts
    assert browser.find_element(By.ID, "signal-used").text == (
        f"Signal: average ({source['provider']}), intensities in gCO2eq/kWh.")
    figure = browser.find_element(By.CSS_SELECTOR, "figure.zone[data-zone='DE']")
    assert figure.get_attribute("data-units") == "gCO2eq/kWh"
    assert figure.find_element(By.CSS_SELECTOR, "[role=img]").get_attribute("aria-label").endswith(
        " gCO2eq/kWh; the chosen window is shaded green")
    assert figure.find_elements(By.CSS_SELECTOR, "th")[1].get_attribute("textContent") == "gCO2eq/kWh"
    assert browser.find_element(By.ID, "saving").text.startswith("Saves")
    assert " CO\u2082eq " in browser.find_element(By.ID, "saving").text
    # The demo's licence asks for no credit: no attribution line.
    attribution = browser.find_element(By.ID, "attribution")
    assert not attribution.is_displayed() and attribution.get_attribute("textContent") == ""
    assert console_errors(browser) == []


def test_a_chosen_signal_is_sent_and_the_services_refusal_shown(service, browser):
    """A signal other than the default goes into the request as `signal`: here one the demo does
    not serve (added to the list by the test, as a deployment serving it would list it), which
    the service refuses naming those it serves."""
    browser.get(f"{service.url}/")
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    WebDriverWait(browser, HANG).until(lambda _: shown_signal_options(browser)[0][0] == "average")
    browser.execute_script("const o = document.createElement('option'); o.value = 'marginal';"
                           "o.textContent = 'marginal (elsewhere)';"
                           "document.getElementById('signal').appendChild(o);")
    browser.find_element(By.CSS_SELECTOR, "#signal option[value='marginal']").click()
    browser.execute_script(RECORD_FETCHES)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, HANG).until(ec.visibility_of_element_located((By.ID, "error")))
    [(url, body)] = sent_calls(browser)
    assert url == "/api/v1/optimize" and json.loads(body)["signal"] == "marginal"
    refused = requests.post(f"{service.url}/api/v1/optimize", timeout=10, json=json.loads(body))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert f"HTTP 400 {error['code']}: {error['message']}" in browser.find_element(By.ID, "error").text
    assert browser.find_elements(By.CSS_SELECTOR, "#charts *") == []
    assert [m for m in console_errors(browser) if "status of 400" not in m] == []


CONTRAST_SCRIPT = """
function rgb(text) { return (text.match(/[\\d.]+/g) || []).map(Number); }
function background(el) {
  for (; el; el = el.parentElement) {
    const c = rgb(getComputedStyle(el).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.99)) return c.slice(0, 3);
  }
  return [255, 255, 255];
}
function luminance(c) {
  const [r, g, b] = c.map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
const out = [];
for (const el of document.querySelectorAll(arguments[0])) {
  if (!el.offsetParent || !el.textContent.trim()) continue;
  const fg = luminance(rgb(getComputedStyle(el).color).slice(0, 3)), bg = luminance(background(el));
  out.push([el.tagName + '#' + el.id + ' ' + el.textContent.trim().slice(0, 30),
            (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05)]);
}
return out;
"""


def test_text_has_enough_contrast(service, browser):
    browser.get(f"{service.url}/")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    # WCAG AA: 4.5:1 for text (the WCAG 2 relative-luminance formula, written out above).
    measured = browser.execute_script(CONTRAST_SCRIPT, "h1, h2, p, a, label, small, legend, summary, "
                                      "button, li, figcaption, .saving, .status")
    assert len(measured) > 20
    low = [(what, round(ratio, 2)) for what, ratio in measured if ratio < 4.5]
    assert low == [], low


def test_a_phone_width_screen_scrolls_only_down(service, browser):
    browser.set_window_size(400, 900)
    try:
        browser.get(f"{service.url}/")
        browser.find_element(By.ID, "submit").click()
        WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
        inner = browser.execute_script("return document.documentElement.clientWidth")
        assert browser.execute_script("return document.documentElement.scrollWidth") <= inner
        for canvas in browser.find_elements(By.CSS_SELECTOR, "figure.zone canvas"):
            assert canvas.size["width"] <= inner
        screenshot(browser, "page-phone.png")
    finally:
        browser.set_window_size(1280, 1400)


def test_the_services_error_message_is_shown_as_it_is(service, browser):
    browser.get(f"{service.url}/")
    zones = browser.find_element(By.ID, "zones")
    zones.clear()
    zones.send_keys("de, FR")
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, HANG).until(ec.visibility_of_element_located((By.ID, "error")))
    expected = requests.post(f"{service.url}/api/v1/optimize", timeout=10, json={
        "zones": ["de", "FR"], "duration": 120, "max_delay": "PT24H", "power_kw": 1}).json()["error"]
    shown = browser.find_element(By.ID, "error").text
    assert f"HTTP 400 {expected['code']}: {expected['message']}" in shown
    for detail in expected["details"]:
        assert f"{detail['field']}: {detail['message']}" in shown
    # A 400 answer is logged by the browser as a failed resource load; nothing else may be.
    assert [m for m in console_errors(browser) if "status of 400" not in m] == []


@pytest.fixture(scope="module")
def keyed_service():
    with GunicornProcess({"CARBON_PROVIDER": "demo", "API_KEYS": KEY}, workers=1, threads=4) as server:
        yield server


KEY = "FAKE-browser-key-71d2"


def test_with_keys_required_the_page_sends_the_key_field_and_shows_the_401(keyed_service, browser):
    browser.get(f"{keyed_service.url}/")
    # On load it asks nothing (it would only be refused): it says a key is needed, and waits.
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "API key"))
    assert browser.find_element(By.ID, "status").text == (
        "This service needs an API key: enter yours in the API key field and press "
        "\u201cFind the cleanest window\u201d.")
    assert browser.find_elements(By.CSS_SELECTOR, "#charts *") == []
    assert console_errors(browser) == []  # no refused call
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, HANG).until(ec.visibility_of_element_located((By.ID, "error")))
    refused = requests.post(f"{keyed_service.url}/api/v1/optimize", json={"duration": 120}, timeout=10).json()
    assert f"HTTP 401 {refused['error']['code']}: {refused['error']['message']}" in \
        browser.find_element(By.ID, "error").text
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    assert browser.find_element(By.ID, "saving").text.startswith("Saves")
    assert not browser.find_element(By.ID, "error").is_displayed()
    # The refused call is logged as a failed resource load; nothing else may be.
    assert [m for m in console_errors(browser) if "status of 401" not in m] == []


def test_with_keys_required_the_signal_list_waits_for_the_key(keyed_service, browser):
    browser.get(f"{keyed_service.url}/")
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "API key"))
    # Without a key /zones would be refused: the one option is the service's default, sending none.
    assert shown_signal_options(browser) == [
        ("", "service default", "the signal the service plans with when none is named", True)]
    browser.execute_script(RECORD_FETCHES)
    browser.find_element(By.ID, "api-key").send_keys(KEY)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    calls = sent_calls(browser)
    [body] = [b for url, b in calls if url == "/api/v1/optimize"]
    assert "signal" not in json.loads(body)
    assert ("/api/v1/zones", None) in calls
    # With the key, the list is the service's, for the next question.
    served = requests.get(f"{keyed_service.url}/api/v1/zones", headers={"X-API-Key": KEY}, timeout=10).json()
    WebDriverWait(browser, HANG).until(lambda _: shown_signal_options(browser)[0][0] != "")
    assert shown_signal_options(browser) == [
        (s["name"], f"{s['name']} ({s['provider']})", s["description"], s["default"]) for s in served["signals"]]
    assert console_errors(browser) == []


@pytest.fixture
def limited_service(limit_prefix):
    """Forecast calls spend RATE_LIMIT_DEFAULT, one call an hour: a page drawing two zones meets
    a 429 for at least one of them (for both while the page itself spends that budget too)."""
    with GunicornProcess({"CARBON_PROVIDER": "demo", "DEFAULT_ZONES": "DE,FR", "REDIS_URL": LIMIT_REDIS,
                          "CACHE_KEY_PREFIX": limit_prefix, "RATE_LIMIT_ENABLED": "true",
                          "RATE_LIMIT_DEFAULT": "1 per hour", "RATE_LIMIT_OPTIMIZE": "100 per minute"},
                         workers=1, threads=4) as server:
        yield server


def test_a_chart_whose_forecast_is_refused_says_so_in_the_status(limited_service, browser):
    browser.get(f"{limited_service.url}/")
    browser.find_element(By.ID, "submit").click()  # (as on load, which asks the same)
    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, HANG).until(lambda _: status.text == "Done." or "could be drawn" in status.text)
    refused = requests.get(f"{limited_service.url}/api/v1/forecast", params={"zone": "DE"}, timeout=10)
    assert refused.status_code == 429
    said = f"HTTP 429 {refused.json()['error']['code']}: {refused.json()['error']['message']}"
    assert said.startswith("HTTP 429 rate_limited: rate limit exceeded")
    text = status.text
    assert "Done." not in text and said in text, text
    assert text.startswith(("No chart could be drawn: ", "Not every chart could be drawn: ")), text
    # Each refused chart names its zone, in the status and on its own figure.
    failed = [f for f in browser.find_elements(By.CSS_SELECTOR, "figure.zone")
              if f.find_elements(By.CSS_SELECTOR, "p.error")]
    assert failed
    for figure in failed:
        assert f"{figure.get_attribute('data-zone')}: {said}" in text
        assert figure.find_element(By.CSS_SELECTOR, "p.error").text == said
    assert browser.find_element(By.ID, "saving").text.startswith("Saves")  # the answer itself came
    # The refused calls are logged as failed resource loads; nothing else may be.
    assert [m for m in console_errors(browser) if "status of 429" not in m] == []


def test_docs_try_it_sends_the_authorized_key(keyed_service, browser):
    browser.get(f"{keyed_service.url}/docs")
    wait = WebDriverWait(browser, HANG)
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".auth-wrapper .authorize"))).click()
    wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".dialog-ux input"))).send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, ".dialog-ux .auth-btn-wrapper .authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".dialog-ux .btn-done").click()
    browser.find_element(By.CSS_SELECTOR, "#operations-default-optimize .opblock-summary-control").click()
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-default-optimize .execute"))).click()
    status = wait.until(ec.visibility_of_element_located(
        (By.CSS_SELECTOR, "#operations-default-optimize .live-responses-table .response .response-col_status")))
    body = browser.find_element(By.CSS_SELECTOR, "#operations-default-optimize .live-responses-table "
                                                 ".response-col_description pre").text
    assert status.text.strip().startswith("200"), body
    assert json.loads(body)["id"] == "nightly-build"  # the document's first example, as sent
    assert console_errors(browser) == []
    screenshot(browser, "docs-try-it.png")


def test_docs_render_the_operations_with_swagger_ui(service, browser):
    browser.get(f"{service.url}/docs")
    WebDriverWait(browser, HANG).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    operations = {(e.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
                   e.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"))
                  for e in browser.find_elements(By.CSS_SELECTOR, ".opblock")}
    document = requests.get(f"{service.url}/api/v1/openapi.json", timeout=10).json()
    assert operations == {(method.upper(), path) for path, items in document["paths"].items()
                          for method in items}
    assert console_errors(browser) == []
    screenshot(browser, "docs.png")


@pytest.fixture(scope="module")
def neso_service():
    """The demo and NESO (its stand-in, the real wire format on loopback) in one deployment."""
    import math
    from devkit.neso_stand_in import NesoStandIn
    values = [150 + 60 * math.sin(i / 8) for i in range(96)]
    with NesoStandIn(national=values) as neso, GunicornProcess(
            {"CARBON_PROVIDERS": "demo,neso", "NESO_BASE_URL": neso.url, "UPSTREAM_RETRIES": "0",
             "DEFAULT_ZONES": "GB"}, workers=1, threads=4) as running:
        yield running


def test_choosing_neso_sends_its_signal_and_shows_its_units_and_credit(neso_service, browser):
    from selenium.webdriver.support.ui import Select
    browser.get(f"{neso_service.url}/")
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    WebDriverWait(browser, HANG).until(lambda _: len(shown_signal_options(browser)) > 1)
    served = requests.get(f"{neso_service.url}/api/v1/zones", timeout=10).json()["signals"]
    assert shown_signal_options(browser) == [
        (s["name"], f"{s['name']} ({s['provider']})", s["description"], s["default"]) for s in served]
    assert [o[1] for o in shown_signal_options(browser)] == ["average (demo)", "average_direct (neso)"]

    Select(browser.find_element(By.ID, "signal")).select_by_value("average_direct")
    browser.execute_script(RECORD_FETCHES)
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, HANG).until(ec.text_to_be_present_in_element((By.ID, "status"), "Done."))
    calls = sent_calls(browser)
    [body] = [b for url, b in calls if url == "/api/v1/optimize"]
    assert json.loads(body)["signal"] == "average_direct"
    charts = [url for url, _ in calls if url.startswith("/api/v1/forecast")]
    assert charts and all(url.endswith("&signal=average_direct") for url in charts)
    assert browser.find_element(By.ID, "signal-used").text == (
        "Signal: average_direct (neso), intensities in gCO2/kWh.")
    assert browser.find_element(By.CSS_SELECTOR, "figure.zone").get_attribute("data-units") == "gCO2/kWh"
    attribution = browser.find_element(By.ID, "attribution")
    assert attribution.is_displayed() and "CC BY 4.0" in attribution.text
    assert console_errors(browser) == []
