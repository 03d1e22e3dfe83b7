# MDF-Net: the two commands are `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/demo

.PHONY: setup demo test lint bench clean

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
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check mdfnet tests benchmarks components pipelines

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_join.py
	@for b in benchmarks/bench_eval.py benchmarks/bench_train.py; do \
	  if [ -f $$b ]; then $(BIN)/python $$b || exit 1; fi; done

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
