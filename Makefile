# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CONFIG ?= configs/demo.yaml
# pip prints a warning per package for this machine's local indexes; keep the log readable.
PIP_QUIET := 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: venv venv-dev venv-mlflow mlflow-server demo test docs lint clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt $(PIP_QUIET)
	$(PY) -c "import ray, torch, decord, cv2, sklearn, scipy" && touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PIP) install -q -r requirements-dev.txt $(PIP_QUIET)
	$(PY) -c "import pytest, xdist, moto, mkdocs, material" && touch $@

# Optional MLflow client (config tracking.mlflow_uri); part of venv-dev.
$(VENV)/.mlflow: requirements-mlflow.txt $(VENV)/.runtime
	$(PIP) install -q -r requirements-mlflow.txt $(PIP_QUIET)
	$(PY) -c "import mlflow" && touch $@

# A local MLflow server for the tests, in its own virtualenv (it pins an older pyarrow).
MLFLOW_VENV ?= .venv-mlflow
$(MLFLOW_VENV)/.server: requirements-mlflow-server.txt
	test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install -q -r requirements-mlflow-server.txt $(PIP_QUIET)
	$(MLFLOW_VENV)/bin/mlflow --version && touch $@

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev
venv-mlflow: $(VENV)/.mlflow
mlflow-server: $(MLFLOW_VENV)/.server

demo: venv
	$(PY) jobs/pipeline.py --config $(CONFIG)

# Two pytest-xdist workers, each test module whole on one of them (tests/conftest.py says
# why); TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: venv-dev mlflow-server
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30 $(PYTEST_ARGS)

# The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken link or a nav
# entry without its page fails (not with --quiet, which hides the warnings --strict counts).
# NO_MKDOCS_2_WARNING: Material's end-of-life notice on every build.
docs: venv-dev
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: venv-dev
	$(VENV)/bin/ruff check mer jobs tests benchmarks
	$(VENV)/bin/ruff format --check mer jobs tests benchmarks

clean:
	rm -rf runs/demo
