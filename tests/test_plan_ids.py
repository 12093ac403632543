"""Plans in the answers and in the ledger (issue 29): every scheduled workload gets a plan_id, and
the ledger is handed exactly one record per scheduled workload, once per request, holding what
the answer said; re-asks name the plan they revise; runs are reported by plan id; the ledger
records a client's name (API_KEYS `name=key`), never its key; /health shows the ledger without
letting it take the service out of the load balancer."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from carbon_optimizer.errors import ConfigError, SecretError
from carbon_optimizer.ledger.records import PlanRecord, RunStarted
from carbon_optimizer.secret_store import SecretStore, Secrets, parse_secret
from carbon_optimizer.settings import load_settings
from carbon_optimizer.web.app import close_app
from tests.conftest import FIXED_NOW

KEY_CI = "FAKE-ledger-ci-key-7d1e4b"
KEY_UNNAMED = "FAKE-ledger-plain-key-93ac"
NAMED = {"API_KEYS": f"ci={KEY_CI},{KEY_UNNAMED}"}
PLAN_ID = re.compile(r"[0-9a-f]{32}")


class RecordingLedger:
    """The Ledger protocol, keeping what it is handed."""

    def __init__(self, health: dict | None = None, fail: bool = False):
        self.submitted: list[list[PlanRecord]] = []
        self.reports: list[RunStarted] = []
        self.closed: list[float] = []
        self._health, self._fail = health or {"status": "ok", "queued": 0, "dropped": 0}, fail

    def submit(self, records: list[PlanRecord]) -> None:
        if self._fail:
            raise RuntimeError("database gone")
        self.submitted.append(list(records))

    def started(self, report: RunStarted) -> None:
        if self._fail:
            raise RuntimeError("database gone")
        self.reports.append(report)

    def health(self) -> dict:
        if self._fail:
            raise RuntimeError("database gone")
        return self._health

    def close(self, timeout: float = 5.0) -> None:
        self.closed.append(timeout)


@pytest.fixture
def ledger():
    return RecordingLedger()


@pytest.fixture
def client(make_app, ledger):
    return make_app({"CARBON_PROVIDER": "demo"}, ledger=ledger).test_client()


def epoch(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def assert_record_says_what_the_answer_said(record: PlanRecord, answer: dict, asked: dict) -> None:
    """Each field of the record against the answer's JSON (and the request, for the window)."""
    provenance = answer["provenance"]
    assert record.plan_id == answer["plan_id"]
    assert record.created_at == int(FIXED_NOW.timestamp())
    assert record.workload_id == answer["id"]
    assert (record.zone, record.location) == (answer["zone"], answer["location"])
    runs = [(c["start"], c["end"]) for c in answer["chunks"]] if "chunks" in answer \
        else [(answer["start"], answer["end"])]
    assert record.intervals == tuple((epoch(a), epoch(b)) for a, b in runs)
    earliest = max(epoch(asked["earliest_start"]) if "earliest_start" in asked else 0,
                   int(FIXED_NOW.timestamp()))
    assert record.earliest_start == earliest
    assert record.latest_end == earliest + int(asked["window"].total_seconds())
    assert record.duration == answer["duration_minutes"] * 60
    assert record.interruptible is ("chunks" in answer)
    assert (record.power_kw, record.energy_kwh) == (asked.get("power_kw"), asked.get("energy_kwh"))
    # The answer rounds for display (3 decimals); the record keeps the scheduler's value.
    assert record.mean_intensity == pytest.approx(answer["carbon_intensity"], abs=5e-4)
    baseline = answer["baseline"]
    assert (record.baseline_zone, record.baseline_start) == (baseline["zone"], epoch(baseline["start"]))
    assert record.baseline_mean_intensity == pytest.approx(baseline["carbon_intensity"], abs=5e-4)
    for mine, theirs in ((record.emissions_grams, answer["emissions_grams"]),
                         (record.baseline_emissions_grams, answer["baseline_emissions_grams"])):
        assert (mine is None and theirs is None) or mine == pytest.approx(theirs, abs=5e-4)
    assert (record.provider, record.signal, record.units, record.estimated) == (
        provenance["provider"], provenance["signal"], provenance["units"], provenance["estimated"])


# -- answers and records --------------------------------------------------------------------------

def test_a_scheduled_answer_carries_a_plan_id_and_the_ledger_gets_its_record(client, ledger):
    body = {"id": "nightly", "duration": "PT1H30M", "zones": ["aws:eu-central-1", "FR"],
            "max_delay": "PT12H", "power_kw": 2.5}
    answer = client.post("/api/v1/optimize", json=body).get_json()
    assert answer["status"] == "scheduled" and PLAN_ID.fullmatch(answer["plan_id"])
    assert len(ledger.submitted) == 1 and len(ledger.submitted[0]) == 1
    record = ledger.submitted[0][0]
    assert_record_says_what_the_answer_said(
        record, answer, {"power_kw": 2.5, "window": timedelta(hours=12, minutes=90)})
    assert record.client is None and record.replan_of is None  # an open API; a first ask


def test_an_interruptible_plan_is_recorded_chunk_by_chunk(client, ledger):
    body = {"id": "reindex", "duration": "PT4H22M", "zones": ["DE"], "max_delay": "P1D",
            "interruptible": True, "min_chunk": "PT30M", "energy_kwh": 12}
    answer = client.post("/api/v1/optimize", json=body).get_json()
    assert len(answer["chunks"]) >= 2, answer
    [[record]] = ledger.submitted
    assert_record_says_what_the_answer_said(
        record, answer, {"energy_kwh": 12, "window": timedelta(days=1, hours=4, minutes=22)})


def test_the_same_question_twice_gets_two_plan_ids(client, ledger):
    body = {"duration": "PT1H", "zones": ["DE"]}
    first, second = (client.post("/api/v1/optimize", json=body).get_json() for _ in range(2))
    assert (first["start"], first["zone"]) == (second["start"], second["zone"])
    assert first["plan_id"] != second["plan_id"]
    assert [[r.plan_id for r in call] for call in ledger.submitted] == [[first["plan_id"]], [second["plan_id"]]]
    assert ledger.submitted[0][0].emissions_grams is None  # no power: no grams, as the answer says


def test_a_batch_is_one_call_with_a_record_per_scheduled_workload_and_none_for_the_rest(client, ledger):
    """Three one-hour jobs that must start now in SE, one at a time: one is placed, two are
    unschedulable (no plan, plan_id null); a fourth elsewhere is placed too."""
    revised = "0123456789abcdef0123456789abcdef"
    body = {"workloads": [
        {"id": f"train-{n}", "duration": 60, "zones": ["SE"], "max_delay": "PT0M", "power_kw": 8}
        for n in range(3)] + [{"id": "lint", "duration": "PT10M", "zones": ["FR"], "replan_of": revised}],
        "capacity": {"max_concurrent": {"SE": 1}}}
    answer = client.post("/api/v1/optimize", json=body).get_json()
    results = answer["results"]
    scheduled = [r for r in results if r["status"] == "scheduled"]
    assert answer["summary"]["scheduled"] == 2 and len(scheduled) == 2
    assert all(r["plan_id"] is None for r in results if r["status"] == "unschedulable")
    assert len({r["plan_id"] for r in scheduled}) == 2
    assert len(ledger.submitted) == 1  # one call for the request
    [records] = ledger.submitted
    assert [r.plan_id for r in records] == [r["plan_id"] for r in scheduled]
    windows = {"lint": timedelta(hours=24), **{f"train-{n}": timedelta(minutes=60) for n in range(3)}}
    for record, result in zip(records, scheduled):
        assert_record_says_what_the_answer_said(
            record, result, {"power_kw": 8 if result["id"] != "lint" else None,
                             "window": windows[result["id"]]})
    assert {r.workload_id: r.replan_of for r in records}["lint"] == revised


def test_an_unschedulable_single_workload_is_refused_and_recorded_nowhere(client, ledger):
    far = (FIXED_NOW + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    answer = client.post("/api/v1/optimize", json={"duration": "PT1H", "zones": ["DE"], "earliest_start": far,
                                                   "max_delay": "PT1H", "extend_horizon": False})
    assert answer.status_code == 422, answer.get_json()
    assert ledger.submitted == []


def test_replan_of_is_stored_and_a_malformed_one_is_refused_naming_its_field(client, ledger):
    first = client.post("/api/v1/optimize", json={"duration": "PT1H", "zones": ["DE"]}).get_json()
    again = client.post("/api/v1/optimize", json={"duration": "PT1H", "zones": ["DE"],
                                                  "replan_of": first["plan_id"]}).get_json()
    assert ledger.submitted[1][0].replan_of == first["plan_id"] != again["plan_id"]
    for bad in ("not-a-plan", first["plan_id"].upper(), first["plan_id"] + "0", 42):
        single = client.post("/api/v1/optimize", json={"duration": "PT1H", "replan_of": bad})
        assert single.status_code == 400
        assert [d["field"] for d in single.get_json()["error"]["details"]] == ["replan_of"]
    batch = client.post("/api/v1/optimize", json={"workloads": [
        {"duration": "PT1H"}, {"duration": "PT1H", "replan_of": "xyz"}]})
    assert batch.status_code == 400
    assert [d["field"] for d in batch.get_json()["error"]["details"]] == ["workloads[1].replan_of"]
    assert len(ledger.submitted) == 2  # nothing from the refused requests


def test_a_ledger_that_fails_never_fails_the_answer(make_app):
    broken = RecordingLedger(fail=True)
    client = make_app({"CARBON_PROVIDER": "demo"}, ledger=broken).test_client()
    answer = client.post("/api/v1/optimize", json={"duration": "PT1H", "zones": ["DE"]})
    assert answer.status_code == 200 and PLAN_ID.fullmatch(answer.get_json()["plan_id"])
    started = client.post(f"/api/v1/plans/{answer.get_json()['plan_id']}/started")
    assert started.status_code == 202
    health = client.get("/health").get_json()
    assert health["status"] == "ok" and health["checks"]["ledger"]["status"] == "unknown"


# -- runs reported --------------------------------------------------------------------------------

def test_a_reported_start_is_accepted_and_handed_to_the_ledger(client, ledger):
    plan_id = client.post("/api/v1/optimize", json={"duration": "PT1H", "zones": ["DE"]}).get_json()["plan_id"]
    now = client.post(f"/api/v1/plans/{plan_id}/started")
    assert now.status_code == 202
    assert now.get_json() == {"status": "accepted", "plan_id": plan_id, "started_at": "2026-11-23T10:17:30Z"}
    earlier = client.post(f"/api/v1/plans/{plan_id}/started", json={"started_at": "2026-11-23T11:17:30+01:00"})
    assert earlier.status_code == 202 and earlier.get_json()["started_at"] == "2026-11-23T10:17:30Z"
    stamp = int(FIXED_NOW.timestamp())
    assert ledger.reports == [RunStarted(plan_id, None, stamp, stamp)] * 2


@pytest.mark.parametrize("path, body, field", [
    ("/api/v1/plans/not-a-plan/started", None, "plan_id"),
    ("/api/v1/plans/0123456789ABCDEF0123456789ABCDEF/started", None, "plan_id"),
    ("/api/v1/plans/0123456789abcdef0123456789abcdef/started", {"started_at": "yesterday"}, "started_at"),
    ("/api/v1/plans/0123456789abcdef0123456789abcdef/started", {"started_at": "2026-11-23T10:17:30"}, "started_at"),
    ("/api/v1/plans/0123456789abcdef0123456789abcdef/started", {"started_at": "2026-11-23T10:30:00Z"}, "started_at"),
    ("/api/v1/plans/0123456789abcdef0123456789abcdef/started", {"finished_at": "2026-11-23T10:00:00Z"}, "finished_at"),
])
def test_a_bad_start_report_is_refused_naming_the_field(client, ledger, path, body, field):
    answer = client.post(path, json=body) if body is not None else client.post(path)
    assert answer.status_code == 400, answer.get_json()
    assert [d["field"] for d in answer.get_json()["error"]["details"]] == [field]
    assert ledger.reports == []


def test_start_reports_need_a_key_like_optimize_and_have_a_budget_of_optimizes_size(make_app, ledger):
    env = {"CARBON_PROVIDER": "demo", **NAMED, "RATE_LIMIT_ENABLED": "true",
           "RATE_LIMIT_OPTIMIZE": "2 per minute", "RATE_LIMIT_DEFAULT": "100 per hour"}
    client = make_app(env, ledger=ledger).test_client()
    path = "/api/v1/plans/0123456789abcdef0123456789abcdef/started"
    assert client.post(path).status_code == 401
    assert client.post(path, headers={"X-API-Key": "FAKE-wrong"}).status_code == 401
    statuses = [client.post(path, headers={"X-API-Key": KEY_CI}).status_code for _ in range(3)]
    assert statuses == [202, 202, 429]
    # Its own budget: optimize's is untouched.
    optimize = client.post("/api/v1/optimize", json={"duration": "PT1H"}, headers={"X-API-Key": KEY_CI})
    assert optimize.status_code == 200
    assert [r.client for r in ledger.reports] == ["ci", "ci"]


# -- the client's name, never its key -------------------------------------------------------------

def test_the_ledger_records_the_clients_name_and_never_its_key(make_app, ledger):
    client = make_app({"CARBON_PROVIDER": "demo", **NAMED}, ledger=ledger).test_client()
    named = client.post("/api/v1/optimize", json={"duration": "PT1H"}, headers={"X-API-Key": KEY_CI}).get_json()
    unnamed = client.post("/api/v1/optimize", json={"workloads": [{"duration": "PT1H"}]},
                          headers={"X-API-Key": KEY_UNNAMED}).get_json()
    client.post(f"/api/v1/plans/{named['plan_id']}/started", headers={"X-API-Key": KEY_CI})
    client.post(f"/api/v1/plans/{unnamed['results'][0]['plan_id']}/started", headers={"X-API-Key": KEY_UNNAMED})
    assert [r.client for call in ledger.submitted for r in call] == ["ci", "key-2"]
    assert [r.client for r in ledger.reports] == ["ci", "key-2"]
    kept = repr(ledger.submitted) + repr(ledger.reports)
    assert KEY_CI not in kept and KEY_UNNAMED not in kept


def test_named_keys_from_the_environment_and_from_a_secret():
    env = SecretStore({"API_KEYS": f" ci={KEY_CI} ,platform.team=b64key==,{KEY_UNNAMED}, "}).current()
    assert env.api_keys == (KEY_CI, "b64key==", KEY_UNNAMED)
    assert env.api_key_names == ("ci", "platform.team", "key-3")
    # A bare base64 key keeps working: its padding is no name.
    padded = "c2VjcmV0LWtleS1ieXRlcw=="
    assert SecretStore({"API_KEYS": padded}).current().api_keys == (padded,)
    for raw in ([f"ci={KEY_CI}", KEY_UNNAMED], f"ci={KEY_CI},{KEY_UNNAMED}"):
        secret = parse_secret({"api_keys": raw}, require_provider_key=False)
        assert (secret.api_keys, secret.api_key_names) == ((KEY_CI, KEY_UNNAMED), ("ci", "key-2"))
    # Keys without names work exactly as before: the same Secrets, named by position.
    assert SecretStore({"API_KEYS": f"{KEY_CI},{KEY_UNNAMED}"}).current() == Secrets(
        api_keys=(KEY_CI, KEY_UNNAMED))
    assert Secrets(api_keys=(KEY_CI, KEY_UNNAMED)).client_name(1) == "key-2"


@pytest.mark.parametrize("entries, message", [
    (f"ci={KEY_CI},ci={KEY_UNNAMED}", "entries 1 and 2 have the same name"),
    (f"key-2={KEY_CI},{KEY_UNNAMED}", "entries 1 and 2 have the same name"),
    (f"my ci={KEY_CI}", "entry 1: the name before '=' must be 1 to 64"),
    (f"{'n' * 65}={KEY_CI}", "entry 1: the name before '=' must be 1 to 64"),
    (f"={KEY_CI}", "entry 1: the name before '=' must be 1 to 64"),
    (f"ci={KEY_CI},platform={KEY_CI}", "entry 2 repeats the key of an earlier entry under another name"),
    (f"{KEY_UNNAMED},ci=", "entry 2 ends in '=' with no key after it"),
])
def test_bad_named_keys_are_refused_by_position_without_showing_a_key(entries, message):
    with pytest.raises(ConfigError) as env_error:
        SecretStore({"API_KEYS": entries})
    with pytest.raises(SecretError) as secret_error:
        parse_secret({"api_keys": entries.split(",")}, require_provider_key=False)
    for error in (env_error, secret_error):
        text = str(error.value)
        assert message in text, text
        assert KEY_CI not in text and KEY_UNNAMED not in text
        assert KEY_CI[:12] not in text and "FAKE" not in text


def test_ledger_admin_clients_are_parsed_and_checked():
    assert load_settings({"LEDGER_ADMIN_CLIENTS": " ops, finance.team ,ops"}).ledger_admin_clients == [
        "ops", "finance.team"]
    assert load_settings({}).ledger_admin_clients == []
    with pytest.raises(ConfigError, match="LEDGER_ADMIN_CLIENTS: .*'the ops team' is not a client name"):
        load_settings({"LEDGER_ADMIN_CLIENTS": "the ops team"})


# -- health and shutdown --------------------------------------------------------------------------

def test_health_shows_the_ledger_and_a_degraded_ledger_leaves_the_service_ok(make_app):
    off = make_app({"CARBON_PROVIDER": "demo"}).test_client().get("/health").get_json()
    assert off["checks"]["ledger"] == {"status": "off"} and off["status"] == "ok"
    degraded = RecordingLedger(health={"status": "degraded", "queued": 1200, "dropped": 3,
                                       "detail": "database unreachable; records spooled"})
    answer = make_app({"CARBON_PROVIDER": "demo"}, ledger=degraded).test_client().get("/health")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["status"] == "ok" and body["checks"]["ledger"]["dropped"] == 3


def test_closing_the_app_closes_its_ledger(make_app, ledger):
    app = make_app({"CARBON_PROVIDER": "demo"}, ledger=ledger)
    close_app(app, timeout=2.5)
    assert ledger.closed == [2.5]


def test_the_openapi_document_gives_plan_id_and_replan_of(client):
    schemas = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    assert "plan_id" in schemas["ScheduledWorkload"]["required"]
    assert schemas["ScheduledWorkload"]["properties"]["plan_id"]["type"] == "string"
    assert schemas["UnschedulableWorkload"]["properties"]["plan_id"]["type"] == "null"
    assert schemas["Workload"]["properties"]["replan_of"]["anyOf"][0]["pattern"] == "^[0-9a-f]{32}$"
