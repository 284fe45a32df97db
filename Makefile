# btsys: two commands from a fresh clone:
#   make demo   # set up .venv, then run the offline demo (synthetic mirror -> Spark -> numba -> MLflow)
#   make test   # set up .venv, then run the test suite
# Variables: ARGS (extra overrides for demo/demo-ml), BENCH/BENCH_ARGS (scripts and flags for
# bench, e.g. BENCH_ARGS=--quick), UI_PORT/MLFLOW_DB (ui), TEST_WORKERS (test). tests/test_workflows.py runs the targets.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
BENCH ?= $(filter-out bench/_common.py,$(wildcard bench/*.py))
BENCH_ARGS ?=
UI_PORT ?= 5000
MLFLOW_DB ?= mlflow.db
TEST_WORKERS ?= 2

.PHONY: setup java demo demo-ml test quick lint bench ui clean

setup: java $(STAMP)

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "btsys needs Python 3.11+, found " + sys.version.split()[0]'
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

# Spark needs Java 17+: install openjdk-17-jre-headless with apt when we are root, else say what to do.
java:
	@major=$$(java -version 2>&1 | awk -F'"' '/version/ {split($$2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'); \
	if [ "$${major:-0}" -ge 17 ] 2>/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "Java 17+ not found (found: $${major:-none}); installing openjdk-17-jre-headless with apt" >&2; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null && exit 0; \
	fi; \
	echo "btsys needs Java 17+ for Spark (found: $${major:-none})." >&2; \
	echo "Install it, e.g. 'sudo apt-get install -y openjdk-17-jre-headless' (Debian/Ubuntu)" >&2; \
	echo "or 'brew install openjdk@17' (macOS), or set JAVA_HOME to a JDK 17+, then rerun." >&2; \
	exit 1

demo: setup
	$(VPY) -m btsys +experiment=demo $(ARGS)

demo-ml: setup
	$(VPY) -m btsys +experiment=demo_ml $(ARGS)

# two pytest workers (pytest-xdist), each taking whole test files: the suite waits on JVMs, subprocesses
# and disks often enough that two of them fill the 2 cores (TEST_WORKERS=0 runs in one process)
test: setup
	$(VPY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# the quick loop while editing: no Spark, nothing slow (under a minute)
quick: setup
	$(VPY) -m pytest -m "not spark and not slow"

lint: setup
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

# every benchmark (the bench extra comes with setup); BENCH_ARGS=--quick: tiny sizes, as the tests run them
bench: setup
	@for b in $(BENCH); do echo "== $$b"; $(VPY) $$b $(BENCH_ARGS) || exit 1; done

# one local user: one worker (MLflow's default 4 take long to start); MLflow 3.17's UI opens in its
# GenAI view, ?workflowType=machine_learning (the links btsys prints) selects the runs view
ui: setup
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)/#/experiments?workflowType=machine_learning"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --host 127.0.0.1 --port $(UI_PORT) --workers 1

clean:
	rm -rf data outputs multirun mlflow.db mlflow.db.lock mlruns
