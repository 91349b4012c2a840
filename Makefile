# The README's two commands: `make run` and `make test`. Both build .venv from scratch
# on a machine with only Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: install install-dev prometheus run test lint typecheck unit bench bench-bus clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## run: install and run the main job
run: install
	$(BIN)/hivemem run relay_qa

# Test processes (pytest-xdist): most tests wait on sockets, subprocesses and Ray, so two
# workers halve the suite's time even on 2 cores (697 s serial, 427 s with 2, session 29).
# Each worker starts its own Ray; TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

## test: install with dev tools, lint, type-check and run the whole test suite
test: install-dev prometheus lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS)

# The observability tests run Debian's prometheus and promtool. Installed here when
# missing and we are root (CI on a fresh machine); otherwise install it yourself.
prometheus:
	@command -v promtool >/dev/null || [ "$$(id -u)" != 0 ] || \
		apt-get install -y -q --no-install-recommends prometheus >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
	@command -v promtool >/dev/null || { echo "promtool missing: apt-get install prometheus"; exit 1; }

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow setuptools' editable finder, so it checks a link farm that puts
# each top-level folder where its import name says.
typecheck: install-dev
	@rm -rf .mypy_src && mkdir -p .mypy_src/hivemem
	@for d in platform agents memory_bus scenarios; do ln -s ../../$$d .mypy_src/hivemem/$$d; done
	$(BIN)/mypy -p hivemem

bench: install
	$(BIN)/python benchmarks/store.py

# The bus against a bare ZeroMQ echo and Redis: redis-py from the bench extra, Debian's
# redis-server (installed here when missing and we are root).
bench-bus: install
	$(PIP) -e '.[bench]'
	@command -v redis-server >/dev/null || [ "$$(id -u)" != 0 ] || \
		apt-get install -y -q --no-install-recommends redis-server >/dev/null || \
		{ apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends redis-server >/dev/null; }
	$(BIN)/python benchmarks/bus.py --quick

clean:
	rm -rf $(VENV) .mypy_src build *.egg-info .pytest_cache .mypy_cache .ruff_cache
