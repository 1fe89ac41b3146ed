# The two commands of README.md: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-hosts lint install chromium clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP) chromium
	$(BIN)/python -m deployments.launcher

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Browser steps need a Chromium; Playwright cannot download one here, Debian's works: its
# headless shell for headless runs (as Playwright's own), its full browser for headed ones.
chromium:
	@test -n "$$REGJOBS_CHROMIUM_EXECUTABLE" || ls $${PLAYWRIGHT_BROWSERS_PATH:-$$HOME/.cache/ms-playwright}/chromium-*/chrome-linux*/chrome >/dev/null 2>&1 \
	  || (test -x /usr/bin/chromium && test -x /usr/bin/chromium-headless-shell) \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-headless-shell)

# Test files are spread over TEST_WORKERS processes, each with a test system of its own (its
# own Prefect server, worker, stand-in, API, state folder and ports); the `serial` tests,
# which measure time against their system's own load, run first, one at a time. TEST_MARK selects
# (e.g. 'database and not slow'); pytest's exit 5 (no test selected) is not a failure here.
TEST_WORKERS ?= 3
TEST_MARK ?=
_and = $(if $(TEST_MARK),($(TEST_MARK)) and ,)

# Both phases run whatever the first's outcome; the target fails if either did.
test: $(STAMP) chromium
	@status=0; \
	$(BIN)/python -m pytest -p no:xdist --ignore=tests/hosts -m "$(_and)serial" $(PYTEST_ARGS) \
	  || { code=$$?; [ $$code -eq 5 ] || status=$$code; }; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --ignore=tests/hosts -m "$(_and)not serial" $(PYTEST_ARGS) \
	  || { code=$$?; [ $$code -eq 5 ] || status=$$code; }; \
	exit $$status

clean:
	rm -rf .state

# The production shape across test hosts (network namespaces on a private bridge; root):
# tests/hosts, README "Across hosts". Bounded: the whole suite under 8 minutes.
# At the bound pytest gets SIGINT, so the harness tears the hosts down; `net clean` removes
# whatever a killed run left (every rjh- namespace and bridge).
test-hosts: $(STAMP) chromium
	timeout --signal=INT --kill-after=60 480 $(BIN)/python -m pytest -p no:xdist tests/hosts -m hosts $(PYTEST_ARGS); \
	  status=$$?; $(BIN)/python -m tests.hosts.net clean; exit $$status
