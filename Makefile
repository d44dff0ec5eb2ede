# One entry point for humans and CI. Needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FLOW   ?= flows/default.yaml
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck pytest bench docs screenshot clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@echo "make: creating the virtual environment $(VENV) and upgrading pip ..."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "make: installing les02-flow and its dependencies into $(VENV) (the first time takes about a minute) ..."
	$(BIN)/python -m pip install --quiet -e .
	@echo "make: installed."
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "make: installing les02-flow with the test tools into $(VENV) (the first time takes about a minute) ..."
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@echo "make: installed."
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## create .venv and install les02-flow

run: $(VENV)/.installed ## run a flow (FLOW=flows/default.yaml, ARGS='--set ws.port=9000')
	$(BIN)/les02-flow run $(FLOW) $(ARGS)

lint: $(VENV)/.installed-test ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy sees the installed layout (les02_flow, les02_flow.nodes) through a tree of symlinks.
typecheck: $(VENV)/.installed-test ## mypy --strict over the package, tests and bench
	rm -rf build/typecheck && mkdir -p build/typecheck/les02_flow
	for f in runtime/*; do ln -s ../../../$$f build/typecheck/les02_flow/; done
	ln -s ../../../nodes build/typecheck/les02_flow/nodes
	MYPYPATH=build/typecheck $(BIN)/mypy -p les02_flow
	MYPYPATH=build/typecheck $(BIN)/mypy --explicit-package-bases tests bench

pytest: $(VENV)/.installed-test ## the test suite only
	$(BIN)/pytest $(ARGS)

test: lint typecheck pytest ## everything CI runs: ruff, mypy, pytest

bench: $(VENV)/.installed-test ## run the benchmarks, append results to bench/RESULTS.md
	$(BIN)/python -m bench $(ARGS)

docs: $(VENV)/.installed ## regenerate docs/nodes.md from the node registry
	$(BIN)/les02-flow nodes --markdown > docs/nodes.md

screenshot: $(VENV)/.installed-test ## docs/web-console.png from flows/default.yaml (headless Chromium, ~1 min)
	$(BIN)/python -m tests.web.screenshot docs/web-console.png $(ARGS)

clean: ## remove .venv and build output
	rm -rf $(VENV) build .mypy_cache .pytest_cache .ruff_cache
