#!/usr/bin/env python3
"""GitLab CI files as GitLab reads them, for the lint script and the tests: `!reference` tags
resolved, `extends:` merged, and a job's shell lines (before_script, then script) in order.

    python scripts/gitlab_ci.py resolve FILE OUT [--with TEMPLATE]   FILE with its !references resolved
    python scripts/gitlab_ci.py script FILE JOB [--with TEMPLATE]    the job's lines, as one shell script

`--with` stands for an `include:` of the template (GitLab fetches it from the project; here it is
the file in this repository). Only what the templates use is modelled: `!reference`, `extends`
(deep merge of mappings, lists replaced), before_script and script.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml


class Reference(list):
    """`!reference [job, key, ...]`: the value at that path, resolved after loading."""


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!reference",
                        lambda loader, node: Reference(loader.construct_sequence(node, deep=True)))


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        # _Loader is SafeLoader with one tag more (bandit sees only the name yaml.load)
        return yaml.load(handle, Loader=_Loader)  # nosec B506


def resolve(value: Any, jobs: dict, depth: int = 0) -> Any:
    """Every !reference replaced by what it names (GitLab allows 10 levels of nesting)."""
    if depth > 10:
        raise ValueError("!reference nested more than 10 levels")
    if isinstance(value, Reference):
        target: Any = jobs
        for key in value:
            if not isinstance(target, dict) or key not in target:
                raise KeyError(f"!reference {list(value)}: no {key!r} there")
            target = target[key]
        return resolve(target, jobs, depth + 1)
    if isinstance(value, dict):
        return {k: resolve(v, jobs, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, jobs, depth) for v in value]
    return value


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def jobs_of(path: str, template: str | None = None) -> dict:
    jobs = dict(load(template)) if template else {}
    jobs.update(load(path))
    return jobs


def job(jobs: dict, name: str) -> dict:
    """One job with its `extends` chain merged (GitLab: the extending job's keys win)."""
    spec = jobs[name]
    parents = spec.get("extends", [])
    merged: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = _merge(merged, job(jobs, parent))
    return _merge(merged, {k: v for k, v in spec.items() if k != "extends"})


def _flatten(lines: Any) -> list[str]:
    if isinstance(lines, list):
        return [line for item in lines for line in _flatten(item)]
    return [lines]


def shell_script(jobs: dict, name: str) -> str:
    """The job's before_script and script lines, one shell script; `set -e` as GitLab's runner
    stops at the first failing line."""
    spec = resolve(job(jobs, name), jobs)
    lines = _flatten(spec.get("before_script", [])) + _flatten(spec.get("script", []))
    return "set -e\n" + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["resolve", "script"])
    parser.add_argument("file")
    parser.add_argument("target", help="resolve: the output file; script: the job")
    parser.add_argument("--with", dest="template")
    args = parser.parse_args()
    jobs = jobs_of(args.file, args.template)
    if args.action == "script":
        sys.stdout.write(shell_script(jobs, args.target))
        return 0
    own = load(args.file)
    with open(args.target, "w", encoding="utf-8") as out:
        json.dump({k: resolve(v, jobs) for k, v in own.items()}, out, indent=1)  # JSON is YAML
    return 0


if __name__ == "__main__":
    sys.exit(main())
