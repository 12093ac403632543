# Two commands do all the set-up on a fresh machine:
#   make run    creates .venv, installs the pinned runtime, starts Gunicorn on :5000 (demo data)
#   make test   creates .venv, installs runtime + test tools, runs the whole test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: run test test-fast container-test lint lint-imports lint-deploy lint-ci-templates lint-security docs bench clean

# pip byte-compiles every file of every package it installs (about 70 s of a fresh set-up's 135 s
# here, most of it botocore, moto and cfn-lint, which the tests barely import): skip that, and let
# Python compile what a process imports on first use and keep it. Which needs bytecode writing on:
# some machines (this project's CI among them) set PYTHONDONTWRITEBYTECODE, and then every process
# would compile numpy, scipy and flask afresh (measured: the suite 319 s -> 410 s).
unexport PYTHONDONTWRITEBYTECODE
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --no-compile

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PIP_INSTALL) -r requirements-dev.txt
	touch $@

# GUNICORN_BIND (default 0.0.0.0:5000) moves it; a taken port is said so at once, naming it.
run: $(VENV)/.runtime
	@$(PY) scripts/check_bind.py
	$(VENV)/bin/gunicorn -c gunicorn.conf.py app:app

# Two processes (pytest-xdist), each test file whole in one, the CI machine's 2 cores: most tests wait
# on Gunicorn or sockets, so this about halves the suite's time. The schemathesis file runs after,
# alone: its operations share one node id, which xdist would run only once.
TEST_WORKERS ?= 2
test: $(VENV)/.dev
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --ignore=tests/test_fuzz_api.py
	$(PY) -m pytest tests/test_fuzz_api.py

# The edit loop: in-process tests only (the `slow` ones start Gunicorn or redis-server), first failure stops.
test-fast: $(VENV)/.dev
	$(PY) -m pytest -m "not slow" -x -q

# The image built from the Dockerfile and run under podman (installs podman and builds a base image
# from Debian's packages when missing; DEPLOYMENT.md, "How the image is checked"). Needs root.
container-test: $(VENV)/.dev
	VENV=$(VENV) scripts/container-test.sh

# Checks beyond the tests, run by CI after them.
lint: lint-imports lint-deploy lint-ci-templates lint-security

# The layer rules in .importlinter: dependency direction, Flask only in web/, no cycles, and the
# service free of devkit/, tests/, bench/ and tools/ (devkit free of the other three).
lint-imports: $(VENV)/.dev
	$(VENV)/bin/lint-imports

# Dockerfile, compose, Kubernetes, Prometheus rules and the CloudFormation template, by linters and
# schemas (no Docker engine or AWS account here).
lint-deploy: $(VENV)/.dev
	VENV=$(VENV) scripts/lint-deploy.sh

# The GitHub Action, the GitLab template and their examples, against their published schemas.
lint-ci-templates: $(VENV)/.dev
	VENV=$(VENV) scripts/lint-ci-templates.sh

# Static security analysis and known-vulnerability audit of the pinned requirements.
lint-security: $(VENV)/.dev
	$(VENV)/bin/bandit -q -r . -x ./.venv,./tests,./bench,./tools,./devkit --severity-level high
	scripts/audit_requirements.sh requirements.txt

# DEPLOYMENT.md's configuration table, generated from Settings' field descriptions and the lists beside
# the code that reads the other variables; tests/test_deployment_docs.py fails when it is stale.
docs: $(VENV)/.runtime
	$(PY) -m tools.config_table

# Every benchmark whose figures BENCHMARKS.md reports, with the commands it names (roughly 25 minutes
# on 2 cores: run it on a quiet machine); not part of CI. Each one's output is shown and kept in
# $(BENCH_OUT)/NAME.txt, and the first that fails stops the run.
BENCH_OUT ?= bench/results
bench_run = bash -o pipefail -c '$(PY) $(2) 2>&1 | tee $(BENCH_OUT)/$(1).txt'
bench: $(VENV)/.dev
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	mkdir -p $(BENCH_OUT)
	$(call bench_run,window_paths,bench/optimizer_bench.py --json $(BENCH_OUT)/window_paths.json)
	$(call bench_run,optimizer,bench/cats_bench.py --json $(BENCH_OUT)/optimizer.json)
	$(call bench_run,http,bench/http_bench.py --decompose --json $(BENCH_OUT)/http.json)
	$(PY) bench/report.py $(BENCH_OUT)/optimizer.json $(BENCH_OUT)/http.json > $(BENCH_OUT)/tables.md
	$(call bench_run,request_cpu,bench/request_cpu.py --requests 1000)
	$(call bench_run,request_cpu_no_limiter,bench/request_cpu.py --requests 1000 --no-rate-limit)
	$(call bench_run,soak,bench/soak.py)
	$(call bench_run,fleet,bench/fleet_bench.py)
	$(call bench_run,chunks,bench/chunks_bench.py --json $(BENCH_OUT)/chunks.json)
	$(call bench_run,worst_requests,bench/worst_requests.py)
	$(call bench_run,worst_requests_at_once,bench/worst_requests.py --at-once 20)
	$(call bench_run,slow_clients,bench/slow_clients.py)
	$(call bench_run,location_costs,bench/location_costs.py)
	$(call bench_run,hung_dependencies,bench/hung_dependencies.py)
	$(call bench_run,extension,bench/extension_bench.py)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
