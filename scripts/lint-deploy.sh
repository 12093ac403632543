#!/usr/bin/env bash
# Checks the deployment artifacts by linters and schemas (no Docker engine or cluster needed):
# hadolint, the compose-spec JSON schema (vendored, see scripts/vendor/README), kubernetes-validate,
# promtool check/test rules, the Grafana dashboard's JSON, and cfn-lint on the CloudFormation template. Run by `make lint-deploy`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"

echo "== hadolint Dockerfile"
"$VENV/bin/hadolint" --failure-threshold warning Dockerfile

echo "== docker-compose.yml against the compose-spec schema"
"$PY" - <<'PY'
import json, sys, yaml, jsonschema
schema = json.load(open("scripts/vendor/compose-spec.schema.json"))
doc = yaml.safe_load(open("docker-compose.yml"))
errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
for e in errors:
    print("docker-compose.yml:", "/".join(map(str, e.path)) or "<root>", e.message)
assert not any(":" in str(p) and str(p).split(":")[0].isdigit() for s in doc["services"].values()
               for p in s.get("ports", []) if "127.0.0.1" not in str(p)), "fixed host port would collide when scaled"
sys.exit(1 if errors else 0)
PY
test -f .env.example

echo "== k8s manifests with kubernetes-validate (and the exporter example's)"
"$VENV/bin/kubernetes-validate" --strict k8s/*.yaml examples/kubernetes-carbon-intensity-exporter/*.yaml

echo "== Prometheus rules with promtool"
if ! command -v promtool >/dev/null; then
  if ! apt-get install -y -qq prometheus >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq prometheus >/dev/null
  fi
fi
promtool check rules monitoring/alerts.yml
(cd monitoring && promtool test rules alerts.test.yml)

echo "== Grafana dashboard JSON"
"$PY" -c 'import json; d = json.load(open("monitoring/grafana-dashboard.json")); assert d["panels"], "no panels"'
echo "== CloudFormation template with cfn-lint (errors and warnings fail)"
"$VENV/bin/cfn-lint" deploy/aws/*.yaml

echo "lint-deploy: all checks passed"
