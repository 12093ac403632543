#!/usr/bin/env bash
# Checks what CI users adopt (the GitHub Action, the GitLab template, their examples) against the
# published schemas that check-jsonschema ships (no download). Run by `make lint-ci-templates`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
CHECK="$VENV/bin/check-jsonschema"

echo "== action.yml against the GitHub Actions metadata schema"
"$CHECK" --builtin-schema vendor.github-actions action.yml

echo "== example workflows against the GitHub workflow schema"
"$CHECK" --builtin-schema vendor.github-workflows examples/github/*.yml

echo "== GitLab template and example against the GitLab CI schema"
"$CHECK" --builtin-schema vendor.gitlab-ci ci/gitlab/carbon-optimizer.gitlab-ci.yml examples/gitlab/.gitlab-ci.yml

# The schema accepts anything under a hidden (.dotted) job, and the template is only hidden jobs:
# check each one again as a visible job, with the script the job extending it brings.
visible="$(mktemp -d)"
trap 'rm -rf "$visible"' EXIT
"$VENV/bin/python" - "$visible/template-as-jobs.yml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open("ci/gitlab/carbon-optimizer.gitlab-ci.yml"))
jobs = {}
for name, job in doc.items():
    assert name.startswith("."), f"{name}: the template defines hidden jobs only"
    job = dict(job)
    job.setdefault("script", ["true"])
    if "extends" in job:
        job["extends"] = job["extends"].lstrip(".")
    jobs[name.lstrip(".")] = job
yaml.safe_dump(jobs, open(sys.argv[1], "w"))
PY
"$CHECK" --builtin-schema vendor.gitlab-ci "$visible/template-as-jobs.yml"
echo "lint-ci-templates: all checks passed"
