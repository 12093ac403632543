"""examples/kubernetes-carbon-intensity-exporter: the manifests parse, and every name, port and path
they use for carbon-optimizer is the one k8s/ and the service define."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from carbon_optimizer.data.cloud_regions import read_table
from carbon_optimizer.web.auth import API_KEY_HEADER
from devkit.paths import ROOT

EXAMPLE = ROOT / "examples" / "kubernetes-carbon-intensity-exporter"
K8S = ROOT / "k8s"
# The exporter's client dials this name in its own namespace, on port 80 (its configuration.go).
EXPORTER_DIALS = ("api-server-svc", 80)
NAMESPACE = "default"  # where k8s/ runs carbon-optimizer (its manifests name none)


def documents(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path.name} is empty"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), (path.name, doc)
        assert doc["metadata"].get("name"), (path.name, doc)
    return docs


def one(path: Path, kind: str, name: str | None = None) -> dict:
    found = [d for d in documents(path) if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{path.name}: {len(found)} {kind} {name or ''}"
    return found[0]


@pytest.fixture(scope="module")
def service_host_port() -> tuple[str, int, int]:
    """carbon-optimizer's Service as k8s/ defines it: (cluster DNS name, its port, the pod port)."""
    service = one(K8S / "service.yaml", "Service")
    port = service["spec"]["ports"][0]
    deployment = one(K8S / "deployment.yaml", "Deployment")
    container_ports = {p["name"]: p["containerPort"]
                       for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
    pod_port = container_ports[port["targetPort"]] if isinstance(port["targetPort"], str) else port["targetPort"]
    host = f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    return host, port["port"], pod_port


def test_every_file_parses_and_every_object_is_complete():
    files = sorted(EXAMPLE.glob("*.yaml"))
    assert [f.name for f in files] == ["api-server-svc-keyed.yaml", "api-server-svc-open.yaml",
                                       "exporter.yaml", "networkpolicy.yaml"]
    for path in files:
        documents(path)
    assert (EXAMPLE / "README.md").is_file()


def test_both_variants_answer_where_the_exporter_dials():
    name, port = EXPORTER_DIALS
    exporter = one(EXAMPLE / "exporter.yaml", "Deployment")
    namespace = exporter["metadata"]["namespace"]
    for variant in ("api-server-svc-open.yaml", "api-server-svc-keyed.yaml"):
        service = one(EXAMPLE / variant, "Service", name)
        assert service["metadata"]["namespace"] == namespace, variant
        assert [p["port"] for p in service["spec"]["ports"]] == [port], variant


def test_the_alias_points_at_carbon_optimizers_service_on_the_port_it_listens_on(service_host_port):
    host, port, _ = service_host_port
    alias = one(EXAMPLE / "api-server-svc-open.yaml", "Service", EXPORTER_DIALS[0])
    assert alias["spec"]["type"] == "ExternalName"
    assert alias["spec"]["externalName"] == host
    # An ExternalName is only a CNAME: the exporter's port 80 must be carbon-optimizer's Service port.
    assert port == EXPORTER_DIALS[1]


def test_the_key_proxy_forwards_to_carbon_optimizer_with_the_header_it_reads(service_host_port):
    host, port, _ = service_host_port
    path = EXAMPLE / "api-server-svc-keyed.yaml"
    template = one(path, "ConfigMap")["data"]["default.conf.template"]
    assert re.search(rf"proxy_pass http://{re.escape(host)}:{port};", template), template
    assert f'proxy_set_header {API_KEY_HEADER} "${{CARBON_OPTIMIZER_API_KEY}}";' in template
    # Only the Carbon Aware SDK routes, read-only: the proxy holds a key.
    assert "location /emissions/ {" in template and "limit_except GET { deny all; }" in template
    assert re.search(r"location / \{ return 404; \}", template)
    listen = int(re.search(r"listen (\d+);", template).group(1))

    deployment = one(path, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": listen}
    env = {e["name"]: e for e in container["env"]}
    secret = one(path, "Secret")
    assert env["CARBON_OPTIMIZER_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"], "key": "api-key"}
    assert secret["stringData"] == {"api-key": "REPLACE_ME"}  # a placeholder, never a key
    service = one(path, "Service", EXPORTER_DIALS[0])
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    # Only the exporter's Pods reach the proxy.
    policy = one(path, "NetworkPolicy")
    exporter_labels = one(EXAMPLE / "exporter.yaml", "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["ingress"][0]["from"] == [{"podSelector": {"matchLabels": exporter_labels}}]
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": listen}]


def test_the_network_policy_opens_carbon_optimizers_pod_port_to_both_callers(service_host_port):
    _, _, pod_port = service_host_port
    policy = one(EXAMPLE / "networkpolicy.yaml", "NetworkPolicy")
    own = one(K8S / "networkpolicy.yaml", "NetworkPolicy")
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"] == own["spec"]["podSelector"]
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": pod_port}]
    source = policy["spec"]["ingress"][0]["from"][0]
    namespace = one(EXAMPLE / "exporter.yaml", "Deployment")["metadata"]["namespace"]
    assert source["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    callers = set(source["podSelector"]["matchExpressions"][0]["values"])
    exporter = one(EXAMPLE / "exporter.yaml", "Deployment")
    proxy = one(EXAMPLE / "api-server-svc-keyed.yaml", "Deployment")
    assert callers == {exporter["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
                       proxy["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]}


def test_the_exporter_asks_for_an_azure_region_the_service_resolves():
    deployment = one(EXAMPLE / "exporter.yaml", "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("ghcr.io/azure/kubernetes-carbon-intensity-exporter/exporter:")
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"])
    assert args["configmap-name"] == "carbon-intensity"  # the name the KEDA operator's examples read
    regions = read_table()
    assert f"azure:{args['region']}" in regions, args["region"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env["NAMESPACE"] == env["NAMESPACE_NAME"] == "metadata.namespace"
    # The Role lets it replace the ConfigMap where it runs.
    role = one(EXAMPLE / "exporter.yaml", "Role")
    assert role["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    verbs = {v for rule in role["rules"] if "configmaps" in rule["resources"] for v in rule["verbs"]}
    assert {"get", "create", "delete", "watch"} <= verbs
