# MDF-Net: the two commands are `make demo` and `make test`. The other targets: setup (the venv, .[dev]), lint (ruff;
# CI runs it), e2e (the pipeline in the built images), chart-check (the Helm chart), bench (benchmarks), clean.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/demo
E2E_CACHE ?= /var/tmp/mdfnet-e2e

.PHONY: setup demo test e2e lint bench clean

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m mdfnet.demo --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=12

# Build the step images with a real Docker engine (DOCKER_HOST, or a private dockerd: needs root) and run the
# tiny pipeline in them against an mlflow server + S3 on loopback (tests/test_containers_e2e.py). Layers and the
# debootstrap base are cached in $(E2E_CACHE). The JUnit check makes a run that collected or passed nothing fail.
e2e: $(STAMP)
	@mkdir -p $(E2E_CACHE)
	MDFNET_E2E_CONTAINERS=1 MDFNET_E2E_CACHE=$(E2E_CACHE) $(BIN)/python -m pytest -q -p no:cacheprovider \
	  -m containers -rs --junitxml=$(E2E_CACHE)/junit.xml tests/test_containers_e2e.py
	@$(BIN)/python -c "import sys, xml.etree.ElementTree as E; s = E.parse(sys.argv[1]).getroot().find('testsuite'); \
	  n = int(s.get('tests')); bad = sum(int(s.get(k, 0)) for k in ('failures', 'errors', 'skipped')); \
	  sys.exit(0 if n and not bad else f'make e2e: {n} tests, {bad} failed/errored/skipped: not a pass')" \
	  $(E2E_CACHE)/junit.xml

lint: $(STAMP)
	$(BIN)/ruff check mdfnet tests benchmarks components pipelines

# bench_train.py: the MDF-Net variants next to torchvision's stock detector and the training DataLoader (small
# CPU defaults; e.g. make bench BENCH_TRAIN_ARGS="--size 512 --batch 4 --steps 20 --no-mask" on a GPU).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_join.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/bench_train.py $(BENCH_TRAIN_ARGS)

clean:
	rm -rf $(DEMO_DIR) .pytest_cache

# The Helm chart (charts/mdfnet) linted, rendered for its values sets, validated against the Kubernetes schemas
# and scanned by checkov (charts/check.py); no cluster, no helm binary. Its tools live in their own venv
# (charts/requirements.txt), installed once per change of that file.
CHART_VENV := .venv-chart
CHART_STAMP := $(CHART_VENV)/.installed

.PHONY: chart-check

$(CHART_STAMP): charts/requirements.txt
	@command -v $(PY) >/dev/null 2>&1 || { echo "need $(PY) on PATH (Python 3.11)"; exit 1; }
	test -x $(CHART_VENV)/bin/python || $(PY) -m venv $(CHART_VENV)
	$(CHART_VENV)/bin/python -m pip install -q --disable-pip-version-check -r charts/requirements.txt
	touch $(CHART_STAMP)

chart-check: $(CHART_STAMP)
	$(CHART_VENV)/bin/python charts/check.py
