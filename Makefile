# The two commands a newcomer needs: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck unit bench clean

install: $(STAMP)

# Reinstall only when the project definition changes, so repeated `make test` is quick and idempotent.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile -e '.[dev]'
	# pip compiles every installed file on one core; compileall does the same on all of them, in a third of the time.
	$(BIN)/python -m compileall -q -j 0 $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
	touch $(STAMP)

run: install
	$(BIN)/lastresort run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# Most tests wait on sockets and subprocesses, not the CPU: six workers keep two cores busy (measured here: 4
# workers 134 s, 6 119 s, 8 119 s). Each test opens its own ports (port 0), SQLite file (tmp_path) and
# PostgreSQL schema, so workers never collide.
PYTEST_WORKERS ?= 6

unit: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

# Lint and type checks run beside the tests (output kept per target), so the whole check takes as long as pytest.
test: install
	$(MAKE) --no-print-directory -j3 --output-sync=target lint typecheck unit

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
