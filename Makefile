# btsys: two commands from a fresh clone:
#   make demo   # set up .venv, then run the offline demo (synthetic mirror -> Spark -> numba -> MLflow)
#   make test   # set up .venv, then run the test suite
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup java demo demo-ml test quick lint bench ui clean

setup: java $(STAMP)

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; assert sys.version_info >= (3, 11), "btsys needs Python 3.11+, found " + sys.version.split()[0]'
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
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
	$(VPY) -m btsys +experiment=demo

demo-ml: setup
	$(VPY) -m btsys +experiment=demo_ml

test: setup
	$(VPY) -m pytest

# the quick loop while editing: no Spark, nothing slow (under a minute)
quick: setup
	$(VPY) -m pytest -m "not spark and not slow"

lint: setup
	$(VENV)/bin/ruff format --check . && $(VENV)/bin/ruff check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(VPY) $$b || exit 1; done

ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

clean:
	rm -rf data outputs multirun mlflow.db mlruns
