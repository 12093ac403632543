"""Issues 23.9 and 24.8, in-process: what the page and /docs spend of a client's budgets, and the
limit on wrong /metrics tokens per client IP. (Retry-After, the window's last second and Redis
coming back are tested against Gunicorn in tests/test_rate_limit_live.py.)"""

from __future__ import annotations

import re

import pytest

from carbon_optimizer.secret_store import SecretStore
from carbon_optimizer.settings import load_settings
from carbon_optimizer.web.app import create_app
from tests.conftest import FIXED_NOW
from tests.support import LIMIT_REDIS

KEY = "k-7f3e9a1c5d2b8e4f6a0c"
TOKEN = "metrics-token-3b9f1e7d5c2a8604"


def build(env: dict):
    env = {"CARBON_PROVIDER": "demo", "RATE_LIMIT_ENABLED": "true", **env}
    return create_app(settings=load_settings(env), secret_store=SecretStore(env), clock=lambda: FIXED_NOW)


def remaining(client, headers=None) -> int:
    """The default budget left, read by spending one request of it (GET /zones)."""
    answer = client.get("/api/v1/zones", headers=headers or {})
    assert answer.status_code == 200, answer.get_json()
    return int(answer.headers["X-RateLimit-Remaining"])


def page_resources(client, headers: dict) -> list[str]:
    """Every URL the page and /docs load by themselves (their HTML's src/href on this origin, and
    the OpenAPI document Swagger UI fetches), read from the pages as served."""
    urls = []
    for page in ("/", "/docs"):
        html = client.get(page, headers=headers).get_data(as_text=True)
        urls += [page] + re.findall(r'(?:src|href|data-openapi-url)="(/[^"]*)"', html)
    return sorted(set(urls))


@pytest.mark.parametrize("env, headers", [
    ({}, {}),                                                        # the demo: no keys, docs public
    ({"API_KEYS": KEY}, {"X-API-Key": KEY}),                          # keys, docs public
    ({"API_KEYS": KEY, "DOCS_ACCESS": "api_key"}, {"X-API-Key": KEY}),  # docs behind the key
], ids=["open", "keyed", "docs-keyed"])
def test_the_page_s_and_docs_documents_spend_no_budget(env, headers):
    client = build({**env, "RATE_LIMIT_DEFAULT": "50 per hour"}).test_client()
    resources = page_resources(client, headers)
    assert {"/", "/docs", "/api/v1/openapi.json", "/static/page.js", "/static/docs.js"} <= set(resources)
    before = remaining(client, headers)
    for _ in range(3):
        for url in resources:
            answer = client.get(url, headers=headers)
            assert answer.status_code == 200, (url, answer.status_code)
            assert "X-RateLimit-Remaining" not in answer.headers, url
    assert remaining(client, headers) == before - 1  # only the reading request itself


def test_the_page_s_api_calls_spend_what_the_readme_says(make_app):
    """One optimize from its budget, then one forecast per zone drawn from the default budget: the
    calls page.js makes (on load and on "Find") for zones DE, FR, as DEPLOYMENT.md, "Rate limits", says."""
    client = build({"RATE_LIMIT_DEFAULT": "50 per hour", "RATE_LIMIT_OPTIMIZE": "20 per minute"}).test_client()
    default_before = remaining(client)
    request = {"zones": ["DE", "FR"], "duration": 120, "max_delay": "PT24H", "power_kw": 1}
    answer = client.post("/api/v1/optimize", json=request)
    assert answer.status_code == 200 and answer.headers["X-RateLimit-Remaining"] == "19"
    drawn = list(dict.fromkeys(request["zones"] + [answer.get_json()["zone"]]))
    for zone in drawn:
        chart = client.get(f"/api/v1/forecast?zone={zone}&hours=27&history=true")
        assert chart.status_code == 200
    assert remaining(client) == default_before - len(drawn) - 1  # the charts, then this reading


def test_docs_behind_the_key_still_count_wrong_keys():
    # Exempt only with a valid key: otherwise keys could be guessed through /docs unlimited.
    client = build({"API_KEYS": KEY, "DOCS_ACCESS": "api_key", "RATE_LIMIT_DEFAULT": "3 per hour"}).test_client()
    statuses = [client.get(path, headers={"X-API-Key": f"guess-{i}"}).status_code
                for i, path in enumerate(["/docs", "/api/v1/openapi.json"] * 3)]
    assert statuses == [401, 401, 401, 429, 429, 429]
    assert client.get("/docs", headers={"X-API-Key": KEY}).status_code == 200


@pytest.mark.parametrize("storage", ["memory", "redis", "limits-off"])
def test_wrong_metrics_tokens_are_limited_per_address_and_prometheus_never(storage, limit_prefix):
    env = {"METRICS_TOKEN": TOKEN}
    if storage == "redis":
        env |= {"REDIS_URL": LIMIT_REDIS, "CACHE_KEY_PREFIX": limit_prefix}
    if storage == "limits-off":
        env |= {"RATE_LIMIT_ENABLED": "false"}
    # Two apps on one store stand for two workers: with Redis the failures add up across them.
    apps = [build(env), build(env)] if storage == "redis" else [build(env)]
    clients = [app.test_client() for app in apps]
    attacker, prometheus = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "10.9.8.7"}
    right = {"Authorization": f"Bearer {TOKEN}"}

    def scrape(k: int, headers: dict, where: dict):
        return clients[k % len(clients)].get("/metrics", headers=headers, environ_base=where)

    for k in range(25):  # successes are never counted
        assert scrape(k, right, prometheus).status_code == 200
    guesses = [scrape(k, {"Authorization": f"Bearer {TOKEN[:-1]}{'abcdefghij'[k]}"}, attacker) for k in range(10)]
    assert [g.status_code for g in guesses] == [401] * 10
    # Spent: refused with the same answer whatever the token (a near miss, a far one, the right one).
    refused = [scrape(k, headers, attacker) for k, headers in enumerate(
        [{"Authorization": f"Bearer {TOKEN[:-1]}x"}, {"Authorization": "Bearer nothing-like-it"}, right, {}])]
    assert {r.status_code for r in refused} == {429}
    assert len({r.get_data() for r in refused}) == 1
    assert all(1 <= int(r.headers["Retry-After"]) <= 300 for r in refused)
    assert refused[0].get_json()["error"]["code"] == "rate_limited"
    # Prometheus, on its own address, is never refused.
    assert all(scrape(k, right, prometheus).status_code == 200 for k in range(5))
    # ... and an address that has failed fewer times than the limit keeps going.
    assert scrape(0, {"Authorization": "Bearer wrong"}, prometheus).status_code == 401
    assert scrape(1, right, prometheus).status_code == 200
