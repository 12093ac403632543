"""The WattTime v3 client against its wire format: `responses` for request shapes and status
mapping, the loopback stand-in (devkit/watttime_stand_in.py) where real HTTP and concurrency matter,
and real Redis for the token every worker shares. Ends with the engine's choice over a WattTime
forecast checked against a brute force over every whole-minute start."""

from __future__ import annotations

import base64
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import redis
import responses
from responses import matchers

from carbon_optimizer.data.cache import ForecastCache
from carbon_optimizer.data.providers.watttime import G_PER_KWH_PER_LBS_PER_MWH, WattTimeProvider
from carbon_optimizer.data.providers.watttime_token import WattTimeTokens
from carbon_optimizer.engine import CarbonEngine
from carbon_optimizer.errors import InvalidToken, UpstreamUnavailable, ZoneNotEntitled, ZoneNotFound
from carbon_optimizer.scheduling.model import Job, Schedule
from carbon_optimizer.timeseries import to_epoch
from devkit.watttime_stand_in import WattTimeStandIn, forecast_body, historical_body
from tests import leak_guard
from tests.leak_guard import secret
from tests.support import TEST_REDIS_URL

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "watttime"
BASE = "https://api.watttime.test"
LOGIN_URL, FORECAST_URL = f"{BASE}/login", f"{BASE}/v3/forecast"
HISTORICAL_URL, ACCESS_URL, LOCATE_URL = f"{BASE}/v3/historical", f"{BASE}/v3/my-access", f"{BASE}/v3/region-from-loc"
NOW = datetime(2026, 11, 23, 10, 17, 30, tzinfo=timezone.utc)
USER = "carbon-bot"
PASSWORD = secret("FAKE-watttime-password-a81f3c")
TOKEN = secret(json.loads((FIXTURES / "login.json").read_text())["token"])
TOKEN_2 = secret("FAKE-watttime-token-second-5e27d0")


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def leak_scan():
    """Nothing logged or recorded while a test runs holds the password or a token."""
    with leak_guard.Scan() as scan:
        yield scan
    scan.assert_clean()


class Clock:
    """Wall and monotonic time that a test moves on by hand."""

    def __init__(self) -> None:
        self.wall, self.mono = NOW.timestamp(), 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def local_tokens(clock: Clock, **kwargs) -> WattTimeTokens:
    return WattTimeTokens(clock=lambda: clock.wall, monotonic=lambda: clock.mono,
                          sleep=lambda s: clock.advance(s), **kwargs)


def make_provider(tokens: WattTimeTokens | None = None, calls: list | None = None, password=PASSWORD,
                  **kwargs) -> WattTimeProvider:
    observer = (lambda endpoint, outcome, seconds: calls.append((endpoint, outcome))) if calls is not None else None
    return WattTimeProvider(BASE, username=lambda: USER, password=lambda: password, retries=0,
                            observer=observer, tokens=tokens or local_tokens(Clock()), **kwargs)


def login_answers(*tokens: str) -> None:
    """/login answers each token in turn, asked with HTTP Basic of USER and PASSWORD."""
    basic = matchers.header_matcher({"Authorization": "Basic " + base64.b64encode(
        f"{USER}:{PASSWORD}".encode()).decode()})
    for token in tokens:
        responses.get(LOGIN_URL, json={"token": token}, match=[basic])


def calls_to(url: str) -> list:
    return [c for c in responses.calls if c.request.url.split("?")[0] == url]


def bearer(call) -> str:
    return call.request.headers["Authorization"]


# -- request shapes, parsing, units -----------------------------------------------------------------

@responses.activate
@pytest.mark.parametrize("asked, sent", [(48, "48"), (72, "72"), (168, "72")])
def test_forecast_request_shapes_and_conversion_to_grams_per_kwh(asked, sent):
    login_answers(TOKEN)
    body = fixture("forecast_caiso_north")
    responses.get(FORECAST_URL, json=body, match=[
        matchers.query_param_matcher({"region": "CAISO_NORTH", "signal_type": "co2_moer", "horizon_hours": sent}),
        matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})])
    calls = []
    series = make_provider(calls=calls, horizon_hours=asked).forecast("CAISO_NORTH", NOW)
    assert series.zone == "CAISO_NORTH" and series.provider == "watttime"
    assert series.start == datetime(2026, 11, 23, 10, 15, tzinfo=timezone.utc)
    assert series.step_seconds == 300 and series.estimated is None
    lbs = [p["value"] for p in body["data"]]
    assert np.allclose(series.values, [v * 0.45359237 for v in lbs], rtol=1e-12)
    assert series.values[0] == pytest.approx(463.3, abs=0.05)  # 1021.4 lbs/MWh
    assert series.updated_at == datetime(2026, 11, 23, 10, 15, tzinfo=timezone.utc)
    assert calls == [("login", "200"), ("v3/forecast", "200")]
    login = calls_to(LOGIN_URL)[0].request
    assert "Bearer" not in login.headers["Authorization"] and login.url == LOGIN_URL


def test_the_provider_says_what_it_serves():
    provider = make_provider()
    assert (provider.name, provider.signal, provider.units, provider.shared_cache) == (
        "watttime", "marginal", "gCO2/kWh", True)
    assert G_PER_KWH_PER_LBS_PER_MWH == 0.45359237


@responses.activate
def test_null_points_hold_the_previous_value_on_the_five_minute_grid():
    login_answers(TOKEN)
    start = datetime(2026, 11, 23, 10, 15, tzinfo=timezone.utc)
    body = forecast_body("CAISO_NORTH", start, [None, 1000, None, 500, 800])
    del body["data"][3]  # a missing point: 10:30
    responses.get(FORECAST_URL, json=body)
    series = make_provider().forecast("CAISO_NORTH", NOW)
    assert series.start == start + timedelta(minutes=5) and series.step_seconds == 300
    assert np.allclose(series.values, np.array([1000, 1000, 1000, 800]) * G_PER_KWH_PER_LBS_PER_MWH)
    assert list(series.estimated) == [False, True, True, False]


@responses.activate
def test_a_one_point_forecast_keeps_the_five_minute_step():
    login_answers(TOKEN)
    responses.get(FORECAST_URL, json=forecast_body("CAISO_NORTH", NOW.replace(minute=15, second=0), [900]))
    assert make_provider().forecast("CAISO_NORTH", NOW).step_seconds == 300


@responses.activate
@pytest.mark.parametrize("change, words", [
    (lambda b: b["meta"].update(units="kg_co2_per_mwh"), "'kg_co2_per_mwh'; only lbs_co2_per_mwh"),
    (lambda b: b["meta"].pop("units"), "None; only lbs_co2_per_mwh"),
    (lambda b: b["meta"].update(signal_type="health_damage"), "'health_damage' forecast"),
    (lambda b: b.update(data="soon"), "malformed forecast"),
    (lambda b: b.pop("meta"), "malformed forecast"),
    (lambda b: b.update(data=[]), "empty forecast"),
    (lambda b: b["data"][0].update(point_time="not a time"), "malformed forecast"),
    (lambda b: b["data"][0].update(value="lots"), "malformed forecast"),
    (lambda b: b["meta"].update(data_point_period_seconds=900), "300 s apart; its meta says 900 s"),
])
def test_answers_in_other_units_or_shapes_are_refused_naming_the_region(change, words):
    login_answers(TOKEN)
    body = fixture("forecast_caiso_north")
    change(body)
    responses.get(FORECAST_URL, json=body)
    with pytest.raises(UpstreamUnavailable) as raised:
        make_provider().forecast("CAISO_NORTH", NOW)
    assert words in raised.value.message and "CAISO_NORTH" in raised.value.message
    assert raised.value.zone == "CAISO_NORTH"


# -- statuses ---------------------------------------------------------------------------------------

@responses.activate
@pytest.mark.parametrize("status, error, words", [
    (403, ZoneNotEntitled, "plan does not cover region PJM_NJ"),
    (400, ZoneNotFound, "no co2_moer region PJM_NJ"),
    (404, ZoneNotFound, "no co2_moer region PJM_NJ"),
    (500, UpstreamUnavailable, "HTTP 500 for region PJM_NJ"),
    (502, UpstreamUnavailable, "HTTP 502 for region PJM_NJ"),
    (503, UpstreamUnavailable, "HTTP 503 for region PJM_NJ"),
    (429, UpstreamUnavailable, "pause (HTTP 429)"),
])
def test_statuses_map_to_typed_errors_naming_the_region(status, error, words):
    login_answers(TOKEN)
    responses.get(FORECAST_URL, json={"error": "refused"}, status=status)
    with pytest.raises(error) as raised:
        make_provider().forecast("PJM_NJ", NOW)
    assert words in raised.value.message and raised.value.zone == "PJM_NJ"
    assert type(raised.value) is error
    leak_guard.record_text(raised.value.message)


@responses.activate
def test_5xx_is_retried_within_the_call_and_429_is_not():
    login_answers(TOKEN)
    responses.get(FORECAST_URL, status=503)
    responses.get(FORECAST_URL, json=fixture("forecast_caiso_north"))
    provider = WattTimeProvider(BASE, username=lambda: USER, password=lambda: PASSWORD, retries=2,
                                tokens=local_tokens(Clock()))
    provider._http._session.adapters["https://"].max_retries.backoff_factor = 0  # keep the test fast
    assert len(provider.forecast("CAISO_NORTH", NOW).values) == 12
    assert len(calls_to(FORECAST_URL)) == 2


@responses.activate
def test_an_unreachable_api_is_unavailable():
    # Nothing registered: `responses` refuses the connection.
    with pytest.raises(UpstreamUnavailable, match="could not be reached"):
        make_provider().forecast("CAISO_NORTH", NOW)


def test_no_username_or_password_is_invalid_token_without_a_call():
    for provider in (make_provider(password=None), WattTimeProvider(
            BASE, username=lambda: "", password=lambda: PASSWORD, tokens=local_tokens(Clock()))):
        with pytest.raises(InvalidToken, match="no WattTime username and password"):
            provider.forecast("CAISO_NORTH", NOW)


# -- the token: one login, shared, refreshed --------------------------------------------------------

@responses.activate
def test_one_login_serves_every_call_of_the_token_s_life():
    login_answers(TOKEN, TOKEN_2)
    responses.get(FORECAST_URL, json=fixture("forecast_caiso_north"))
    clock = Clock()
    provider = make_provider(tokens=local_tokens(clock))
    for _ in range(3):
        provider.forecast("CAISO_NORTH", NOW)
        clock.advance(8 * 60)
    assert len(calls_to(LOGIN_URL)) == 1
    assert {bearer(c) for c in calls_to(FORECAST_URL)} == {f"Bearer {TOKEN}"}
    clock.advance(2 * 60)  # 26 minutes: past the kept life (25), before WattTime's (30)
    provider.forecast("CAISO_NORTH", NOW)
    assert len(calls_to(LOGIN_URL)) == 2 and bearer(calls_to(FORECAST_URL)[-1]) == f"Bearer {TOKEN_2}"


@responses.activate
def test_two_workers_share_one_token_through_redis(redis_prefix, redis_client):
    login_answers(TOKEN, TOKEN_2)
    responses.get(FORECAST_URL, json=fixture("forecast_caiso_north"))
    # Two providers, each with its own store object, as two workers have.
    first = make_provider(tokens=WattTimeTokens(TEST_REDIS_URL, redis_prefix))
    second = make_provider(tokens=WattTimeTokens(TEST_REDIS_URL, redis_prefix))
    first.forecast("CAISO_NORTH", NOW)
    second.forecast("CAISO_NORTH", NOW)
    assert len(calls_to(LOGIN_URL)) == 1
    assert [bearer(c) for c in calls_to(FORECAST_URL)] == [f"Bearer {TOKEN}"] * 2

    keys = sorted(redis_client.scan_iter(match=f"{redis_prefix}*"))
    assert f"{redis_prefix}watttime:token" in keys
    assert not any(TOKEN in k or PASSWORD in k or USER in k for k in keys)  # no secret in a key name
    life = redis_client.pttl(f"{redis_prefix}watttime:token") / 1000
    assert 24 * 60 < life <= 25 * 60  # replaced before WattTime's 30 minutes run out

    # The TTL passes (Redis drops the key): the next worker to call logs in, once, for both.
    redis_client.delete(f"{redis_prefix}watttime:token", f"{redis_prefix}watttime:login-lock")
    second.forecast("CAISO_NORTH", NOW)
    first.forecast("CAISO_NORTH", NOW)
    assert len(calls_to(LOGIN_URL)) == 2
    assert [bearer(c) for c in calls_to(FORECAST_URL)[2:]] == [f"Bearer {TOKEN_2}"] * 2


def test_concurrent_workers_over_real_http_log_in_once(redis_prefix):
    with WattTimeStandIn(USER, PASSWORD, login_delay=0.3) as stand_in:
        start = NOW.replace(minute=15, second=0)
        stand_in.forecasts["CAISO_NORTH"] = forecast_body("CAISO_NORTH", start, [900, 950, 1000])
        stand_in.entitled = {"CAISO_NORTH"}
        workers = [WattTimeProvider(stand_in.url, username=lambda: USER, password=lambda: PASSWORD, retries=0,
                                    redis_url=TEST_REDIS_URL, key_prefix=redis_prefix) for _ in range(2)]
        results, errors = [], []
        barrier = threading.Barrier(8)

        def ask(provider):
            barrier.wait()
            try:
                results.append(provider.forecast("CAISO_NORTH", NOW))
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=ask, args=(workers[i % 2],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert errors == [] and len(results) == 8, [(type(e).__name__, str(e)) for e in errors]
        assert stand_in.logins == 1 and stand_in.calls["v3/forecast"] == 8

        # WattTime revokes the token: the next call logs in again, once, and every worker follows.
        stand_in.revoke_tokens()
        redis.Redis.from_url(TEST_REDIS_URL).delete(f"{redis_prefix}watttime:login-lock")  # its 20 s passed
        workers[0].forecast("CAISO_NORTH", NOW)
        workers[1].forecast("CAISO_NORTH", NOW)
        assert stand_in.logins == 2


def test_a_worker_that_finds_the_last_login_done_reads_the_token_again():
    """The race the concurrent test can hit: the token is read (none yet), the lock is taken
    (another worker's), and by the time its state is read the login is done and the token stored."""
    tokens = local_tokens(Clock())
    assert tokens.obtain(USER, lambda: TOKEN) == TOKEN  # the other worker's login
    stored, reads = tokens.current, []

    def current(user):
        reads.append(user)
        return None if len(reads) == 1 else stored(user)

    def no_login():
        raise AssertionError("a second login within the login interval")

    tokens.current = current
    assert tokens.obtain(USER, no_login) == TOKEN and len(reads) == 2


@responses.activate
def test_without_redis_answering_the_token_is_kept_in_the_process(caplog):
    login_answers(TOKEN, TOKEN_2)
    responses.get(FORECAST_URL, json=fixture("forecast_caiso_north"))
    provider = make_provider(tokens=WattTimeTokens("redis://127.0.0.1:1/0"))  # nothing listens there
    for _ in range(2):
        assert len(provider.forecast("CAISO_NORTH", NOW).values) == 12
    assert len(calls_to(LOGIN_URL)) == 1
    assert "kept in this process" in caplog.text


@responses.activate
def test_a_401_logs_in_again_once_and_retries_once():
    login_answers(TOKEN, TOKEN_2)
    responses.get(FORECAST_URL, json=fixture("forecast_caiso_north"))
    responses.get(FORECAST_URL, status=401)  # WattTime dropped the first token
    responses.get(FORECAST_URL, json=fixture("forecast_caiso_north"))
    clock = Clock()
    provider = make_provider(tokens=local_tokens(clock))
    provider.forecast("CAISO_NORTH", NOW)
    clock.advance(60)
    assert len(provider.forecast("CAISO_NORTH", NOW).values) == 12
    assert len(calls_to(LOGIN_URL)) == 2
    assert [bearer(c) for c in calls_to(FORECAST_URL)] == [f"Bearer {TOKEN}"] * 2 + [f"Bearer {TOKEN_2}"]


@responses.activate
def test_a_401_with_a_new_token_is_invalid_token_after_one_more_login_at_most():
    login_answers(TOKEN, TOKEN_2)
    responses.get(FORECAST_URL, json=fixture("forecast_caiso_north"))
    responses.get(FORECAST_URL, status=401)
    clock = Clock()
    provider = make_provider(tokens=local_tokens(clock))
    provider.forecast("CAISO_NORTH", NOW)
    clock.advance(60)
    with pytest.raises(InvalidToken, match="refused a new login token for region CAISO_NORTH"):
        provider.forecast("CAISO_NORTH", NOW)
    assert len(calls_to(LOGIN_URL)) == 2 and len(calls_to(FORECAST_URL)) == 3
    # Refused just after a login: no login at all this time (none within 20 s of the last).
    with pytest.raises(InvalidToken, match="refused a token it issued moments ago"):
        provider.forecast("CAISO_NORTH", NOW)
    assert len(calls_to(LOGIN_URL)) == 2 and len(calls_to(FORECAST_URL)) == 4


@responses.activate
def test_a_refused_login_is_not_tried_again_for_a_minute():
    responses.get(LOGIN_URL, json={"error": "invalid credentials"}, status=403)
    clock = Clock()
    provider = make_provider(tokens=local_tokens(clock))
    for _ in range(5):
        with pytest.raises(InvalidToken) as raised:
            provider.forecast("CAISO_NORTH", NOW)
        leak_guard.record_text(raised.value.message)
        clock.advance(5)
    assert len(calls_to(LOGIN_URL)) == 1 and calls_to(FORECAST_URL) == []
    clock.advance(60)
    with pytest.raises(InvalidToken, match="refused the configured username and password"):
        provider.forecast("CAISO_NORTH", NOW)
    assert len(calls_to(LOGIN_URL)) == 2


@responses.activate
def test_logins_that_fail_are_at_least_twenty_seconds_apart_across_workers(redis_prefix):
    responses.get(LOGIN_URL, status=502)
    workers = [make_provider(tokens=WattTimeTokens(TEST_REDIS_URL, redis_prefix)) for _ in range(3)]
    for worker in workers * 4:
        with pytest.raises(UpstreamUnavailable):
            worker.forecast("CAISO_NORTH", NOW)
    assert len(calls_to(LOGIN_URL)) == 1


# -- 429: a pause every worker keeps ----------------------------------------------------------------

@responses.activate
def test_after_a_429_no_call_is_made_until_its_retry_after_has_passed():
    login_answers(TOKEN)
    responses.get(FORECAST_URL, status=429, headers={"Retry-After": "120"})
    responses.get(FORECAST_URL, json=fixture("forecast_caiso_north"))
    clock = Clock()
    provider = make_provider(tokens=local_tokens(clock))
    with pytest.raises(UpstreamUnavailable, match=r"next call is at 2026-11-23T10:19:30Z \(in 120 s\)"):
        provider.forecast("CAISO_NORTH", NOW)
    made = len(responses.calls)
    clock.advance(100)
    for ask in (lambda: provider.forecast("PJM_NJ", NOW), provider.zones,
                lambda: provider.history("CAISO_NORTH", NOW), lambda: provider.locate(42.4, -72.5)):
        with pytest.raises(UpstreamUnavailable, match=r"at 2026-11-23T10:19:30Z \(in 20 s\)"):
            ask()
    assert len(responses.calls) == made  # not one call in the pause
    clock.advance(21)
    assert len(provider.forecast("CAISO_NORTH", NOW).values) == 12


@responses.activate
def test_a_429_without_retry_after_pauses_a_minute_for_every_worker(redis_prefix):
    login_answers(TOKEN)
    responses.get(FORECAST_URL, status=429)
    first = make_provider(tokens=WattTimeTokens(TEST_REDIS_URL, redis_prefix))
    second = make_provider(tokens=WattTimeTokens(TEST_REDIS_URL, redis_prefix))
    with pytest.raises(UpstreamUnavailable, match=r"\(in 60 s\)"):
        first.forecast("CAISO_NORTH", NOW)
    made = len(responses.calls)
    with pytest.raises(UpstreamUnavailable, match="pause"):
        second.forecast("CAISO_NORTH", NOW)
    assert len(responses.calls) == made


@responses.activate
def test_a_429_on_login_pauses_too():
    responses.get(LOGIN_URL, status=429, headers={"Retry-After": "90"})
    provider = make_provider()
    with pytest.raises(UpstreamUnavailable, match=r"\(in 90 s\)"):
        provider.forecast("CAISO_NORTH", NOW)
    with pytest.raises(UpstreamUnavailable, match="pause"):
        provider.forecast("CAISO_NORTH", NOW)
    assert len(responses.calls) == 1


# -- my-access, region-from-loc, history ------------------------------------------------------------

@responses.activate
def test_zones_are_the_regions_with_a_co2_moer_forecast_in_my_access():
    login_answers(TOKEN)
    responses.get(ACCESS_URL, json=fixture("my_access"), match=[
        matchers.query_param_matcher({}), matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})])
    # ERCOT_EASTTX has history only, MISO_INDIANAPOLIS only another signal.
    assert make_provider().zones() == ["CAISO_NORTH", "PJM_NJ"]


@responses.activate
@pytest.mark.parametrize("body, error", [
    ({"signal_types": "all"}, UpstreamUnavailable),
    ({"regions": []}, UpstreamUnavailable),
    ({"signal_types": [{"signal_type": "co2_moer", "regions": [
        {"region": "CAISO_NORTH", "endpoints": [{"endpoint": "v3/historical"}]}]}]}, InvalidToken),
])
def test_a_malformed_or_empty_my_access_is_an_error(body, error):
    login_answers(TOKEN)
    responses.get(ACCESS_URL, json=body)
    with pytest.raises(error):
        make_provider().zones()


def test_a_region_the_account_may_not_use():
    with WattTimeStandIn(USER, PASSWORD) as stand_in:
        start = NOW.replace(minute=15, second=0)
        for region in ("CAISO_NORTH", "PJM_NJ"):
            stand_in.forecasts[region] = forecast_body(region, start, [900, 950])
        stand_in.entitled = {"CAISO_NORTH"}
        provider = WattTimeProvider(stand_in.url, username=lambda: USER, password=lambda: PASSWORD,
                                    retries=0, tokens=local_tokens(Clock()))
        assert provider.zones() == ["CAISO_NORTH"]
        assert len(provider.forecast("CAISO_NORTH", NOW).values) == 2
        with pytest.raises(ZoneNotEntitled) as raised:
            provider.forecast("PJM_NJ", NOW)
        assert raised.value.zone == "PJM_NJ" and "region PJM_NJ" in raised.value.message
        with pytest.raises(ZoneNotFound, match="no co2_moer region XX_NOWHERE"):
            provider.forecast("XX_NOWHERE", NOW)
        assert stand_in.logins == 1


@responses.activate
def test_locate_asks_region_from_loc():
    login_answers(TOKEN)
    responses.get(LOCATE_URL, json=fixture("region_from_loc"), match=[
        matchers.query_param_matcher({"latitude": "42.372", "longitude": "-72.519", "signal_type": "co2_moer"}),
        matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})])
    assert make_provider().locate(42.372, -72.519) == "ISONE_WCMA"


@responses.activate
def test_locate_where_watttime_covers_nothing():
    login_answers(TOKEN)
    responses.get(LOCATE_URL, json={"error": "no region"}, status=404)
    provider = make_provider()
    with pytest.raises(ZoneNotFound, match="covers no region at latitude 0, longitude -160"):
        provider.locate(0.0, -160.0)
    made = len(responses.calls)
    with pytest.raises(ZoneNotFound, match="not a place on Earth"):
        provider.locate(91.0, 0.0)
    assert len(responses.calls) == made


@responses.activate
def test_history_is_one_call_for_ten_days_in_grams_per_kwh():
    login_answers(TOKEN)
    responses.get(HISTORICAL_URL, json=fixture("historical_caiso_north"), match=[
        matchers.query_param_matcher({"region": "CAISO_NORTH", "signal_type": "co2_moer",
                                      "start": "2026-11-13T10:15:00+00:00", "end": "2026-11-23T10:15:00+00:00"}),
        matchers.header_matcher({"Authorization": f"Bearer {TOKEN}"})])
    series = make_provider().history("CAISO_NORTH", NOW)
    assert series.step_seconds == 300 and series.start == datetime(2026, 11, 22, 9, tzinfo=timezone.utc)
    lbs = [p["value"] for p in fixture("historical_caiso_north")["data"]]
    assert np.allclose(series.values, np.array(lbs) * G_PER_KWH_PER_LBS_PER_MWH)


@responses.activate
def test_history_over_32_days_is_split_into_calls_of_at_most_32_days():
    login_answers(TOKEN)
    end = datetime(2026, 11, 23, 10, 15, tzinfo=timezone.utc)

    def answer(request):
        start = datetime.fromisoformat(request.params["start"])
        until = datetime.fromisoformat(request.params["end"])
        count = int((until - start) / timedelta(minutes=5)) + 1  # both ends inclusive
        return 200, {}, json.dumps(historical_body("CAISO_NORTH", start, [800 + (i % 7) for i in range(count)]))

    responses.add_callback(responses.GET, HISTORICAL_URL, callback=answer)
    series = make_provider(history_days=75).history("CAISO_NORTH", NOW)
    spans = [(datetime.fromisoformat(c.request.params["start"]), datetime.fromisoformat(c.request.params["end"]))
             for c in calls_to(HISTORICAL_URL)]
    assert len(spans) == 3 and all(until - start <= timedelta(days=32) for start, until in spans)
    assert spans[0][0] == end - timedelta(days=75) and spans[-1][1] == end
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous
    assert series.start == end - timedelta(days=75) and series.end_epoch == to_epoch(end) + 300
    assert series.estimated is None  # every 5 minutes present, the shared ends counted once


@responses.activate
def test_history_outside_the_plan_is_none():
    login_answers(TOKEN)
    responses.get(HISTORICAL_URL, status=403)
    assert make_provider().history("CAISO_NORTH", NOW) is None


# -- the engine over a WattTime forecast: the brute-force optimum -----------------------------------

def held_mean(start_epoch: int, step: int, values: np.ndarray, start: int, end: int) -> float:
    """The exact mean of the piecewise-constant series over [start, end)."""
    total = 0.0
    for i, value in enumerate(values):
        a, b = start_epoch + i * step, start_epoch + (i + 1) * step
        total += value * max(0, min(end, b) - max(start, a))
    return total / (end - start)


@pytest.fixture(scope="module")
def moer_lbs():
    rng = np.random.default_rng(27)
    # A day of 5-minute MOERs: a daily swing plus noise, the way marginal rates jump.
    minutes = np.arange(288) * 5
    return np.round(1000 + 250 * np.sin(minutes / 1440 * 2 * np.pi) + rng.normal(0, 120, 288), 1)


@responses.activate
@pytest.mark.parametrize("minutes, offset, window", [
    (37, 437, 300), (83, 1, 720), (131, 59, 1000), (7, 2999, 45), (1, 61, 30),
    (241, 3541, 600), (59, 30, 1), (13, 299, 1300), (97, 7, 2),
])
def test_engine_run_over_a_watttime_forecast_is_the_whole_minute_optimum(moer_lbs, minutes, offset, window):
    login_answers(TOKEN)
    first = NOW.replace(minute=15, second=0)
    responses.get(FORECAST_URL, json=forecast_body("CAISO_NORTH", first, list(moer_lbs)))
    responses.get(ACCESS_URL, json=fixture("my_access"))
    engine = CarbonEngine(make_provider(), ForecastCache(redis_url=None, ttl=300, stale_ttl=3600,
                                                         lock_seconds=5, failure_backoff=30))
    try:
        at = to_epoch(NOW)
        job = Job(duration=minutes * 60, zones=("CAISO_NORTH",), earliest_start=at + offset,
                  latest_start=at + offset + window * 60, energy_kwh=2.5, extend_horizon=False)
        schedule = engine.optimize([job], NOW)[0]
    finally:
        engine.close()
    assert isinstance(schedule, Schedule), schedule

    series_start, step = to_epoch(first), 300
    grams_per_kwh = moer_lbs * 0.45359237
    series_end = series_start + step * len(grams_per_kwh)
    lowest = None
    first_minute = -(-job.earliest_start // 60) * 60
    for start in range(first_minute, job.latest_start + 1, 60):
        if start + job.duration <= series_end:
            mean = held_mean(series_start, step, grams_per_kwh, start, start + job.duration)
            lowest = mean if lowest is None else min(lowest, mean)
    assert lowest is not None
    assert schedule.start % 60 == 0 and first_minute <= schedule.start <= job.latest_start
    assert schedule.end - schedule.start == job.duration
    chosen = held_mean(series_start, step, grams_per_kwh, schedule.start, schedule.end)
    assert chosen == pytest.approx(lowest, rel=1e-9)
    assert schedule.mean_intensity == pytest.approx(lowest, rel=1e-9)
    assert schedule.emissions_grams == pytest.approx(lowest * 2.5, rel=1e-9)
