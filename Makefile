# The two commands: `make run` (the console on the embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench faults clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/qtui demo

# Four pytest processes, each taking whole files (tests in one file share its fixtures and names):
# most of the suite waits on real workers and brokers (1,198 tests in 10:11 with three, against
# 18:38 with two, both loaded; 2,087 in 15:08 with three on a quiet machine at load 1.3 to 1.6).
# The known-slow files start first (SLOW_FILES in tests/conftest.py): xdist's own order, most
# tests first, left few-test slow files such as test_scheduled.py (5 min loaded) for the end.
# Six, not four: the 16 slow files (118 tests) took 227 s and 201 s with six against 278 s and
# 244 s with four, interleaved at load 9 to 14, every test passing (bench/RESULTS.md, fx-suite4).
TEST_PROCESSES ?= 6

# Lint and types first (2 s once mypy's cache is warm): ruff over the tree, mypy over
# the installed names (strict on qtui.core). build/typecheck/qtui/ links the three source folders
# under those names, since mypy cannot follow the editable install's import hook.
TYPECHECK := build/typecheck/qtui

lint: $(VENV)/.installed-test
	mkdir -p $(TYPECHECK)
	for package in core workers tui; do ln -sfn ../../../$$package $(TYPECHECK)/$$package; done
	$(BIN)/ruff check .
	$(BIN)/mypy -p qtui.core -p qtui.workers -p qtui.tui

# The sources are compiled once first: where PYTHONDONTWRITEBYTECODE is set (CI images, this
# machine) nothing caches them, and every worker and command the tests start compiled qtui again
# (0.3 s of CPU each: 1.32 s against 1.03 s per worker start, task and stop).
test: $(VENV)/.installed-test lint
	$(BIN)/python -m compileall -q core workers tui tests bench
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

bench: $(VENV)/.installed-bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)

faults: $(VENV)/.installed-bench
	$(BIN)/python -m bench.faults $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
