# Two commands for a newcomer: `make run` and `make test`.
# Both create .venv when missing and install the pinned set from constraints.txt.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test bench lock clean

$(STAMP): constraints.txt requirements.in pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.in -c constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m flows.main

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmarks' outside anchors (DuckDB, pyarrow) come from their own pinned file, so that
# `make test` and `make run` never install or need them.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt -c constraints.txt
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run_all

# Re-resolve the pinned set (needs the package index).
lock:
	rm -rf /tmp/cachelib-lock && $(PY) -m venv /tmp/cachelib-lock
	/tmp/cachelib-lock/bin/pip install --quiet -r requirements.in
	/tmp/cachelib-lock/bin/pip freeze > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
