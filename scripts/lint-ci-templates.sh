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

# GitLab resolves `!reference` tags before it validates; check-jsonschema's YAML loader does not
# know the tag, so each file is checked as GitLab sees it (scripts/gitlab_ci.py resolves them, and
# fails on a reference to nothing). The examples include the template, as GitLab would fetch it.
TEMPLATE=ci/gitlab/carbon-optimizer.gitlab-ci.yml
resolved="$(mktemp -d)"
trap 'rm -rf "$resolved"' EXIT
echo "== GitLab template and examples against the GitLab CI schema"
files=("$TEMPLATE")
for example in examples/gitlab/*.yml examples/gitlab/.gitlab-ci.yml; do files+=("$example"); done
checked=()
for file in "${files[@]}"; do
  out="$resolved/$(echo "$file" | tr / _).json"
  "$VENV/bin/python" scripts/gitlab_ci.py resolve "$file" "$out" --with "$TEMPLATE"
  checked+=("$out")
done
"$CHECK" --builtin-schema vendor.gitlab-ci "${checked[@]}"

# The schema accepts anything under a hidden (.dotted) job, and the template is only hidden jobs:
# check each one again as a visible job, with the script the job extending it brings.
"$VENV/bin/python" - "$resolved/template-as-jobs.yml" <<'PY'
import sys
sys.path.insert(0, "scripts")
import yaml
import gitlab_ci
template = "ci/gitlab/carbon-optimizer.gitlab-ci.yml"
doc = gitlab_ci.load(template)
jobs = {}
for name, job in gitlab_ci.resolve(doc, doc).items():
    assert name.startswith("."), f"{name}: the template defines hidden jobs only"
    job = dict(job)
    job.setdefault("script", ["true"])
    if "extends" in job:
        job["extends"] = job["extends"].lstrip(".")
    jobs[name.lstrip(".")] = job
yaml.safe_dump(jobs, open(sys.argv[1], "w"))
PY
"$CHECK" --builtin-schema vendor.gitlab-ci "$resolved/template-as-jobs.yml"
echo "lint-ci-templates: all checks passed"
