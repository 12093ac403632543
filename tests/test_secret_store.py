"""Secret backends against real wire formats on loopback: AWS Secrets Manager in moto's standalone
server (real HTTP, boto3 as in production), and a stand-in that speaks Vault's KV v2 and auth API.
Start-up failures stop the service with a message naming backend, location and key (never the
value); refreshes pick up rotations; a failed refresh keeps the last good values and is counted."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from moto.server import ThreadedMotoServer

from prometheus_client import REGISTRY

from carbon_optimizer.web.app import create_app
from carbon_optimizer.secret_store import (AwsSecretStore, RefreshingSecretStore, Secrets, SecretStore, VaultSecretStore,
                          build_secret_store, parse_secret)
from carbon_optimizer.errors import ConfigError
from carbon_optimizer.settings import load_settings
from tests import leak_guard
from tests.leak_guard import secret
from devkit.ports import free_port
from devkit.waiting import wait_for

EM_KEY = secret("FAKE-em-key-7d1e0b")
EM_KEY_2 = secret("FAKE-em-key-rotated-c4a9")
CLIENT_A = secret("FAKE-client-a-61f0e2d9")
CLIENT_B = secret("FAKE-client-b-93ac7710")
CLIENT_C = secret("FAKE-client-c-0b55e4aa")
VAULT_TOKEN = secret("FAKE-hvs-token-2b6f")
ROLE_SECRET = secret("FAKE-approle-secret-id-8e1d")
K8S_JWT = secret("FAKE-k8s-jwt-55aa")
WT_PASSWORD = secret("FAKE-watttime-password-3f9c1e")


@pytest.fixture(autouse=True)
def leak_scan():
    """What this test logs and records (answers, messages, Gunicorn logs) holds no secret value."""
    with leak_guard.Scan() as scan:
        yield scan
    scan.assert_clean()


def refreshes(backend: str, outcome: str) -> float:
    # Read as Prometheus collects it (the default registry holds the service's metrics).
    return REGISTRY.get_sample_value("carbon_secret_refreshes_total",
                                     {"backend": backend, "outcome": outcome}) or 0.0


# -- AWS Secrets Manager in moto's standalone server -----------------------------------------------

@pytest.fixture(scope="module")
def moto_url():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url, monkeypatch):
    # Fake credentials and boto3's standard endpoint variable: the service's own code path is used.
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_ENDPOINT_URL": moto_url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("secretsmanager", region_name="eu-west-1", endpoint_url=moto_url)
    name = f"carbon-optimizer/test-{uuid.uuid4().hex[:8]}"
    return client, name


def put(client, name: str, value: dict, create: bool = False) -> None:
    if create:
        client.create_secret(Name=name, SecretString=json.dumps(value))
    else:
        client.put_secret_value(SecretId=name, SecretString=json.dumps(value))


def test_aws_backend_loads_the_secret_at_start_up(aws):
    client, name = aws
    put(client, name, {"electricity_maps_api_key": EM_KEY, "api_keys": [CLIENT_A, CLIENT_B]}, create=True)
    settings = load_settings({"SECRETS_BACKEND": "aws", "AWS_SECRET_ID": name, "AWS_REGION": "eu-west-1",
                              "SECRETS_REFRESH_SECONDS": "0"})
    store = build_secret_store(settings)
    assert store.backend == "aws"
    assert store.current() == Secrets(EM_KEY, (CLIENT_A, CLIENT_B))
    assert store.status()["status"] == "ok"
    leak_guard.record_text(json.dumps(store.status()) + repr(store.current()) + repr(settings))


def test_aws_backend_reads_the_optional_watttime_login(aws):
    client, name = aws
    put(client, name, {"electricity_maps_api_key": EM_KEY, "api_keys": [CLIENT_A],
                       "watttime_username": " carbon-bot ", "watttime_password": WT_PASSWORD}, create=True)
    store = AwsSecretStore(name, "eu-west-1", refresh_seconds=0)
    assert store.current() == Secrets(EM_KEY, (CLIENT_A,), watttime_username="carbon-bot",
                                      watttime_password=WT_PASSWORD)
    # Without the WattTime keys the secret still loads (they are optional), and the Electricity
    # Maps key is required as before when the provider needs it.
    put(client, name, {"electricity_maps_api_key": EM_KEY, "api_keys": [CLIENT_A]})
    assert store.refresh() is True and store.current().watttime_password is None
    put(client, name, {"api_keys": [CLIENT_A], "watttime_username": "carbon-bot",
                       "watttime_password": WT_PASSWORD})
    assert store.refresh() is False
    assert "electricity_maps_api_key" in store.status()["detail"]
    leak_guard.record_text(json.dumps(store.status()) + repr(store.current()))


def test_aws_rotation_is_picked_up_by_the_background_refresh(aws):
    client, name = aws
    put(client, name, {"electricity_maps_api_key": EM_KEY, "api_keys": [CLIENT_A, CLIENT_B]}, create=True)
    store = AwsSecretStore(name, "eu-west-1", refresh_seconds=0.2)
    try:
        app = create_app(settings=load_settings({"CARBON_PROVIDER": "demo"}), secret_store=store)
        http = app.test_client()
        assert http.get("/api/v1/forecast?zone=DE", headers={"X-API-Key": CLIENT_A}).status_code == 200
        # Rotation: A is retired, C is added, the provider key changes; no restart.
        put(client, name, {"electricity_maps_api_key": EM_KEY_2, "api_keys": [CLIENT_B, CLIENT_C]})
        assert wait_for(lambda: store.current().api_keys == (CLIENT_B, CLIENT_C))
        assert store.current().electricity_maps_api_key == EM_KEY_2
        for key, status in ((CLIENT_A, 401), (CLIENT_B, 200), (CLIENT_C, 200)):
            answer = http.get("/api/v1/forecast?zone=DE", headers={"X-API-Key": key})
            leak_guard.record(answer)
            assert answer.status_code == status, key
    finally:
        store.close()


def test_aws_failed_refresh_keeps_last_good_values_counts_and_degrades_health(aws):
    client, name = aws
    put(client, name, {"electricity_maps_api_key": EM_KEY, "api_keys": [CLIENT_A]}, create=True)
    store = AwsSecretStore(name, "eu-west-1", refresh_seconds=0, start_thread=False)
    app = create_app(settings=load_settings({"CARBON_PROVIDER": "demo"}), secret_store=store)
    http = app.test_client()
    before = refreshes("aws", "error")

    client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    assert store.refresh() is False
    assert store.current() == Secrets(EM_KEY, (CLIENT_A,))           # last good values kept
    assert refreshes("aws", "error") == before + 1
    health = http.get("/health")
    leak_guard.record(health)
    assert health.json["status"] == "degraded"
    assert health.json["checks"]["secrets"]["status"] == "failing"
    assert "ResourceNotFoundException" in health.json["checks"]["secrets"]["detail"]
    scraped = http.get("/metrics", headers={"X-API-Key": CLIENT_A})
    leak_guard.record(scraped)
    assert 'carbon_secret_refreshes_total{backend="aws",outcome="error"}' in scraped.get_data(as_text=True)
    assert http.get("/api/v1/forecast?zone=DE", headers={"X-API-Key": CLIENT_A}).status_code == 200

    put(client, name, {"electricity_maps_api_key": EM_KEY, "api_keys": [CLIENT_A]}, create=True)
    assert store.refresh() is True
    assert http.get("/health").json["checks"]["secrets"]["status"] == "ok"


def test_aws_refresh_that_would_drop_every_client_key_is_refused(aws):
    client, name = aws
    put(client, name, {"electricity_maps_api_key": EM_KEY, "api_keys": [CLIENT_A]}, create=True)
    store = AwsSecretStore(name, "eu-west-1", refresh_seconds=0, start_thread=False)
    put(client, name, {"electricity_maps_api_key": EM_KEY, "api_keys": []})
    assert store.refresh() is False
    assert store.current().api_keys == (CLIENT_A,)


@pytest.mark.parametrize("stored, expected", [
    (None, "ResourceNotFoundException"),
    ({"api_keys": [CLIENT_A]}, "missing key 'electricity_maps_api_key'"),
    ({"electricity_maps_api_key": EM_KEY}, "missing key 'api_keys'"),
    ({"electricity_maps_api_key": EM_KEY, "api_keys": [" ", ""]}, "only blank keys"),
    ("not json " + CLIENT_A, "not JSON"),
])
def test_aws_unreadable_or_incomplete_secret_stops_start_up_naming_backend_path_and_key(aws, stored, expected):
    client, name = aws
    if isinstance(stored, dict):
        put(client, name, stored, create=True)
    elif isinstance(stored, str):
        client.create_secret(Name=name, SecretString=stored)
    settings = load_settings({"SECRETS_BACKEND": "aws", "AWS_SECRET_ID": name, "AWS_REGION": "eu-west-1"})
    with pytest.raises(ConfigError) as caught:
        create_app(settings=settings)
    message = str(caught.value)
    leak_guard.record_text(message)
    assert "aws backend" in message and name in message and expected in message, message


def test_aws_demo_provider_does_not_need_the_provider_key(aws):
    client, name = aws
    put(client, name, {"api_keys": [CLIENT_A]}, create=True)
    store = build_secret_store(load_settings({"SECRETS_BACKEND": "aws", "AWS_SECRET_ID": name,
                                              "AWS_REGION": "eu-west-1", "CARBON_PROVIDER": "demo",
                                              "SECRETS_REFRESH_SECONDS": "0"}))
    assert store.current() == Secrets(None, (CLIENT_A,))


def test_aws_backend_needs_a_secret_id():
    with pytest.raises(ConfigError, match="AWS_SECRET_ID"):
        build_secret_store(load_settings({"SECRETS_BACKEND": "aws"}))


# -- Vault KV v2 stand-in -------------------------------------------------------------------------

class VaultStandIn:
    """Vault's HTTP API as far as the service uses it: KV v2 reads, AppRole and Kubernetes login.

    `secrets[(mount, path)]` is the KV data; `tokens` the valid client tokens; `sealed` answers 503.
    """

    def __init__(self):
        self.secrets: dict[tuple[str, str], dict] = {}
        self.tokens: set[str] = {VAULT_TOKEN}
        self.approles = {"carbon-role-id": ROLE_SECRET}
        self.k8s = {("carbon-optimizer", K8S_JWT)}
        self.sealed = False
        self.lease = 3600
        self.reads = 0
        self.logins = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, body: dict) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                if stand_in.sealed:
                    return self.answer(503, {"errors": ["Vault is sealed"]})
                if self.headers.get("X-Vault-Token") not in stand_in.tokens:
                    return self.answer(403, {"errors": ["permission denied"]})
                parts = self.path.split("?")[0].split("/")  # /v1/<mount>/data/<path...>
                if len(parts) < 5 or parts[1] != "v1" or parts[3] != "data":
                    return self.answer(404, {"errors": []})
                stand_in.reads += 1
                data = stand_in.secrets.get((parts[2], "/".join(parts[4:])))
                if data is None:
                    return self.answer(404, {"errors": []})
                self.answer(200, {"request_id": "r", "lease_duration": 0, "renewable": False,
                                  "data": {"data": data, "metadata": {"version": 1, "destroyed": False,
                                                                      "deletion_time": ""}}})

            def do_POST(self):
                if stand_in.sealed:
                    return self.answer(503, {"errors": ["Vault is sealed"]})
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/v1/auth/approle/login":
                    ok = stand_in.approles.get(body.get("role_id")) == body.get("secret_id")
                elif self.path == "/v1/auth/kubernetes/login":
                    ok = (body.get("role"), body.get("jwt")) in stand_in.k8s
                else:
                    return self.answer(404, {"errors": []})
                if not ok:
                    return self.answer(400, {"errors": ["invalid role or secret ID"]})
                stand_in.logins += 1
                token = secret(f"FAKE-login-token-{uuid.uuid4().hex[:10]}")
                stand_in.tokens.add(token)
                self.answer(200, {"auth": {"client_token": token, "lease_duration": stand_in.lease,
                                           "renewable": True, "policies": ["carbon-optimizer"]}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def vault():
    server = VaultStandIn()
    server.secrets[("secret", "carbon-optimizer/prod")] = {
        "electricity_maps_api_key": EM_KEY, "api_keys": f"{CLIENT_A},{CLIENT_B}"}
    yield server
    server.close()


def vault_env(server: VaultStandIn, **extra) -> dict:
    return {"SECRETS_BACKEND": "vault", "VAULT_ADDR": server.url, "VAULT_PATH": "carbon-optimizer/prod",
            "VAULT_TOKEN": VAULT_TOKEN, "SECRETS_REFRESH_SECONDS": "0", **extra}


def test_vault_token_auth_reads_kv_v2(vault):
    store = build_secret_store(load_settings(vault_env(vault)))
    assert store.backend == "vault"
    assert store.current() == Secrets(EM_KEY, (CLIENT_A, CLIENT_B))
    leak_guard.record_text(json.dumps(store.status()))


def test_vault_reads_the_optional_watttime_login(vault):
    vault.secrets[("secret", "carbon-optimizer/prod")].update(
        {"watttime_username": "carbon-bot", "watttime_password": WT_PASSWORD})
    current = build_secret_store(load_settings(vault_env(vault))).current()
    assert (current.watttime_username, current.watttime_password) == ("carbon-bot", WT_PASSWORD)
    assert current.electricity_maps_api_key == EM_KEY
    leak_guard.record_text(repr(current))


def test_vault_approle_login_then_read_and_login_again_when_the_token_is_revoked(vault):
    env = vault_env(vault, VAULT_AUTH_METHOD="approle", VAULT_ROLE_ID="carbon-role-id",
                    VAULT_SECRET_ID=ROLE_SECRET, VAULT_TOKEN="")
    store = build_secret_store(load_settings(env))
    assert store.current().api_keys == (CLIENT_A, CLIENT_B) and vault.logins == 1
    vault.tokens = {VAULT_TOKEN}  # every login token revoked: the next read gets 403, then logs in
    vault.secrets[("secret", "carbon-optimizer/prod")]["api_keys"] = [CLIENT_C]
    assert store.refresh() is True
    assert store.current().api_keys == (CLIENT_C,) and vault.logins == 2


def test_vault_kubernetes_login(vault, tmp_path):
    jwt = tmp_path / "token"
    jwt.write_text(K8S_JWT + "\n")
    env = vault_env(vault, VAULT_AUTH_METHOD="kubernetes", VAULT_K8S_ROLE="carbon-optimizer",
                    VAULT_K8S_TOKEN_PATH=str(jwt), VAULT_TOKEN="")
    assert build_secret_store(load_settings(env)).current().electricity_maps_api_key == EM_KEY
    assert vault.logins == 1


@pytest.mark.parametrize("breakage, expected", [
    ("forbidden", "permission denied (HTTP 403)"),
    ("sealed", "sealed or down (HTTP 503)"),
    ("missing_path", "no secret at this path (HTTP 404)"),
    ("missing_key", "missing key 'api_keys'"),
    ("bad_approle", "Vault error InvalidRequest"),
])
def test_vault_start_up_failures_name_backend_path_and_reason_never_a_value(vault, breakage, expected):
    env = vault_env(vault)
    if breakage == "forbidden":
        vault.tokens = set()
    elif breakage == "sealed":
        vault.sealed = True
    elif breakage == "missing_path":
        vault.secrets.clear()
    elif breakage == "missing_key":
        vault.secrets[("secret", "carbon-optimizer/prod")] = {"electricity_maps_api_key": EM_KEY}
    else:
        env = vault_env(vault, VAULT_AUTH_METHOD="approle", VAULT_ROLE_ID="carbon-role-id",
                        VAULT_SECRET_ID=ROLE_SECRET + "-wrong", VAULT_TOKEN="")
        secret(ROLE_SECRET + "-wrong")
    with pytest.raises(ConfigError) as caught:
        create_app(settings=load_settings(env))
    message = str(caught.value)
    leak_guard.record_text(message)
    assert "vault backend" in message and "secret/data/carbon-optimizer/prod" in message, message
    assert expected in message, message


def test_vault_sealed_during_refresh_keeps_values_then_recovers(vault):
    store = VaultSecretStore(vault.url, "secret", "carbon-optimizer/prod", "token", refresh_seconds=0.2,
                             token=VAULT_TOKEN)
    try:
        reads = vault.reads
        vault.sealed = True
        assert wait_for(lambda: store.status()["status"] == "failing")
        assert store.current() == Secrets(EM_KEY, (CLIENT_A, CLIENT_B))
        assert "sealed" in store.status()["detail"]
        vault.secrets[("secret", "carbon-optimizer/prod")]["api_keys"] = [CLIENT_B]
        vault.sealed = False
        assert wait_for(lambda: store.current().api_keys == (CLIENT_B,))
        assert store.status()["status"] == "ok" and vault.reads > reads
    finally:
        store.close()


@pytest.mark.parametrize("env, missing", [
    ({}, "VAULT_ADDR, VAULT_PATH, VAULT_TOKEN"),
    ({"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_PATH": "p", "VAULT_AUTH_METHOD": "approle"},
     "VAULT_ROLE_ID, VAULT_SECRET_ID"),
    ({"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_PATH": "p", "VAULT_AUTH_METHOD": "kubernetes"},
     "VAULT_K8S_ROLE"),
])
def test_vault_configuration_names_what_is_missing(env, missing):
    with pytest.raises(ConfigError, match=missing):
        build_secret_store(load_settings({"SECRETS_BACKEND": "vault", **env}))


# -- the JSON shape and the env backend -----------------------------------------------------------

def test_secret_shape_and_repr_never_shows_values():
    parsed = parse_secret({"electricity_maps_api_key": f" {EM_KEY} ",
                           "api_keys": [f" {CLIENT_A}", CLIENT_A, CLIENT_B], "metrics_token": CLIENT_C})
    assert parsed == Secrets(EM_KEY, (CLIENT_A, CLIENT_B), CLIENT_C)
    shown = repr(parsed) + str(parsed) + repr(load_settings({"VAULT_TOKEN": VAULT_TOKEN,
                                                              "VAULT_SECRET_ID": ROLE_SECRET}))
    for value in (EM_KEY, CLIENT_A, CLIENT_B, CLIENT_C, VAULT_TOKEN, ROLE_SECRET):
        assert value not in shown


@pytest.mark.parametrize("stored, expected", [
    ({"api_keys": [], "watttime_password": 42}, "key 'watttime_password' must be a string"),
    ({"api_keys": [], "watttime_username": ["bot"]}, "key 'watttime_username' must be a string"),
])
def test_watttime_login_keys_must_be_strings_and_errors_name_the_key(stored, expected):
    from carbon_optimizer.errors import SecretError
    with pytest.raises(SecretError, match=expected):
        parse_secret(stored, require_provider_key=False)


def test_watttime_login_from_env_and_json_and_never_in_repr():
    from_env = SecretStore({"WATTTIME_USERNAME": " carbon-bot ", "WATTTIME_PASSWORD": WT_PASSWORD}).current()
    from_json = parse_secret({"api_keys": [], "watttime_username": "carbon-bot",
                              "watttime_password": f" {WT_PASSWORD} "}, require_provider_key=False)
    assert from_env == from_json == Secrets(watttime_username="carbon-bot", watttime_password=WT_PASSWORD)
    assert WT_PASSWORD not in repr(from_env) + str(from_json)
    assert "watttime_password=set" in repr(from_env)
    assert SecretStore({"WATTTIME_PASSWORD": "  "}).current().watttime_password is None
    # The Electricity Maps key stays required by the JSON backends unless the provider is local,
    # whatever WattTime keys the secret holds.
    with pytest.raises(Exception, match="electricity_maps_api_key"):
        parse_secret({"api_keys": [], "watttime_username": "carbon-bot", "watttime_password": WT_PASSWORD})


def test_env_backend_is_the_default_and_needs_no_configuration():
    store = build_secret_store(load_settings({}), environ={})
    assert type(store) is SecretStore and store.current() == Secrets()
    assert store.status() == {"backend": "env", "status": "ok"}
    with pytest.raises(ConfigError, match="API_KEYS is set but holds no key"):
        SecretStore({"API_KEYS": " , "})


def test_refreshing_store_survives_any_exception_from_fetch():
    answers = iter([Secrets(EM_KEY, (CLIENT_A,)), RuntimeError(EM_KEY)])

    def fetch():
        item = next(answers)
        if isinstance(item, Exception):
            raise item
        return item
    store = RefreshingSecretStore(fetch, "test", refresh_seconds=0, start_thread=False)
    assert store.refresh() is False and store.current().api_keys == (CLIENT_A,)
    assert EM_KEY not in json.dumps(store.status())  # the exception's text is never shown


# -- the whole service under Gunicorn, configured only by environment variables -------------------

def aws_service_env(moto_url: str, name: str, tmp_path) -> dict:
    return {"SECRETS_BACKEND": "aws", "AWS_SECRET_ID": name, "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "CARBON_PROVIDER": "demo", "SECRETS_REFRESH_SECONDS": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}


@pytest.mark.slow
def test_gunicorn_workers_pick_up_a_rotation_from_secrets_manager(aws, moto_url, tmp_path):
    import requests
    from devkit.service_process import GunicornProcess
    client, name = aws
    put(client, name, {"api_keys": [CLIENT_A, CLIENT_B]}, create=True)
    log = tmp_path / "gunicorn.log"
    leak_guard.record_file(log)
    leak_guard.record_file(tmp_path / "metrics")
    with GunicornProcess(aws_service_env(moto_url, name, tmp_path), workers=2, log_path=log) as service:
        url = f"{service.url}/api/v1/forecast?zone=DE"
        ask = lambda key: requests.get(url, headers={"X-API-Key": key}, timeout=10).status_code  # noqa: E731
        assert ask(CLIENT_A) == 200
        put(client, name, {"api_keys": [CLIENT_B, CLIENT_C]})
        # Every worker (several requests, new connections) refuses A and accepts C once refreshed.
        assert wait_for(lambda: all(ask(CLIENT_A) == 401 and ask(CLIENT_C) == 200 for _ in range(6)))
        assert ask(CLIENT_B) == 200
        health = requests.get(f"{service.url}/health", timeout=10)
        leak_guard.record(health)
        assert health.json()["checks"]["secrets"]["backend"] == "aws"
        leak_guard.record(requests.get(f"{service.url}/metrics", timeout=10))


@pytest.mark.slow
def test_gunicorn_does_not_start_without_its_secret_and_says_why(aws, moto_url, tmp_path):
    from devkit.service_process import GunicornProcess
    client, name = aws
    put(client, name, {"electricity_maps_api_key": EM_KEY}, create=True)  # no api_keys
    env = {**aws_service_env(moto_url, name, tmp_path), "CARBON_PROVIDER": "auto"}
    log = tmp_path / "gunicorn.log"
    leak_guard.record_file(log)
    with pytest.raises(RuntimeError, match="gunicorn exited"):
        with GunicornProcess(env, workers=1, log_path=log):
            pass
    text = log.read_text()
    assert f"secrets (aws backend, secret {name}): missing key 'api_keys'" in text, text[-2000:]


def test_no_secret_value_in_any_log_message_answer_health_or_metric_of_either_backend(aws, tmp_path):
    """Every way this file's secrets meet the service in-process, run here and scanned here: loads,
    rotations, failed refreshes (logged with their reason), start-up failures of each kind, Vault
    logins by token, AppRole and Kubernetes, and the answers, health and metrics around them."""
    client, name = aws
    vault = VaultStandIn()
    vault.secrets[("secret", "carbon-optimizer/prod")] = {"electricity_maps_api_key": EM_KEY,
                                                         "api_keys": f"{CLIENT_A},{CLIENT_B}"}
    try:
        with leak_guard.Scan() as scan:
            # AWS: load, serve, rotate, lose the secret (a failed refresh), refuse broken secrets.
            put(client, name, {"electricity_maps_api_key": EM_KEY, "api_keys": [CLIENT_A, CLIENT_B]}, create=True)
            aws_settings = load_settings({"SECRETS_BACKEND": "aws", "AWS_SECRET_ID": name,
                                          "AWS_REGION": "eu-west-1", "SECRETS_REFRESH_SECONDS": "0"})
            store = build_secret_store(aws_settings)
            http = create_app(load_settings({"CARBON_PROVIDER": "demo"}), secret_store=store).test_client()
            put(client, name, {"electricity_maps_api_key": EM_KEY_2, "api_keys": [CLIENT_B, CLIENT_C]})
            assert store.refresh()
            client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
            assert not store.refresh()
            for key in (CLIENT_A, CLIENT_B, CLIENT_C, EM_KEY):
                for path in ("/api/v1/forecast?zone=DE", "/health", "/metrics"):
                    leak_guard.record(http.get(path, headers={"X-API-Key": key}))
            leak_guard.record_text(repr(store.current()) + json.dumps(store.status()) + repr(aws_settings))
            for broken in ({"api_keys": [CLIENT_A]}, {"electricity_maps_api_key": EM_KEY, "api_keys": [" "]},
                           "not json " + CLIENT_A):
                broken_name = f"{name}-{uuid.uuid4().hex[:4]}"
                client.create_secret(Name=broken_name, SecretString=broken if isinstance(broken, str)
                                     else json.dumps(broken))
                with pytest.raises(ConfigError) as caught:
                    create_app(load_settings({"SECRETS_BACKEND": "aws", "AWS_SECRET_ID": broken_name,
                                              "AWS_REGION": "eu-west-1"}))
                leak_guard.record_text(str(caught.value))
            # Vault: token, AppRole (its login tokens are secrets too) and Kubernetes logins; sealed.
            vault_store = build_secret_store(load_settings(vault_env(vault)))
            approle = build_secret_store(load_settings(vault_env(
                vault, VAULT_AUTH_METHOD="approle", VAULT_ROLE_ID="carbon-role-id",
                VAULT_SECRET_ID=ROLE_SECRET, VAULT_TOKEN="")))
            jwt = tmp_path / "token"
            jwt.write_text(K8S_JWT + "\n")
            kubernetes = build_secret_store(load_settings(vault_env(
                vault, VAULT_AUTH_METHOD="kubernetes", VAULT_K8S_ROLE="carbon-optimizer",
                VAULT_K8S_TOKEN_PATH=str(jwt), VAULT_TOKEN="")))
            vault.tokens = {VAULT_TOKEN}  # login tokens revoked: the next read logs in again
            assert approle.refresh() and kubernetes.refresh()
            vault.sealed = True
            assert not vault_store.refresh() and not approle.refresh()
            vault_http = create_app(load_settings({"CARBON_PROVIDER": "demo"}), secret_store=approle).test_client()
            for path in ("/health", "/metrics", "/api/v1/forecast?zone=DE"):
                leak_guard.record(vault_http.get(path, headers={"X-API-Key": CLIENT_A}))
            vault.sealed = False
            for env in (vault_env(vault, VAULT_TOKEN="FAKE-not-a-token"),
                        vault_env(vault, VAULT_AUTH_METHOD="approle", VAULT_ROLE_ID="carbon-role-id",
                                  VAULT_SECRET_ID=secret(ROLE_SECRET + "-wrong"), VAULT_TOKEN=""),
                        vault_env(vault, VAULT_PATH="carbon-optimizer/nothing")):
                with pytest.raises(ConfigError) as caught:
                    create_app(load_settings(env))
                leak_guard.record_text(str(caught.value))
            leak_guard.record_text(json.dumps(vault_store.status()) + json.dumps(approle.status())
                                   + json.dumps(kubernetes.status()))
    finally:
        vault.close()
    assert scan.assert_clean() > 20
    assert vault.logins >= 4
    # The scan did see the logs: the failed refreshes were logged, with their reasons.
    assert sum("secret refresh failed" in text for text in scan.texts) >= 3
