# Chatter: `make run` serves it, `make test` tests it (README.md). Both install what is missing first.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
SERVICES_DIR := var/services

.DEFAULT_GOAL := help
.PHONY: help .venv run test test-quick services-up services-down clean

help:
	@echo "make run            migrate, seed, create a local admin, serve http://127.0.0.1:8000/ (PORT=, HOST=) and the worker"
	@echo "make test           the whole suite on SQLite, then on PostgreSQL + Redis (started locally)"
	@echo "make test-quick     pytest -m \"not server and not fuzz\" -n 2: the tests that start no process, but the two fuzzers, on SQLite, 2 workers (ARGS= as for test)"
	@echo "make services-up    start a local PostgreSQL + Redis in $(SERVICES_DIR) (source $(SERVICES_DIR)/env)"
	@echo "make services-down  stop them"
	@echo "make clean          remove caches, collected static files and test leftovers"

# Installs into .venv when it is missing or a requirements file is newer than the last install.
# requirements-nodeps.txt: packages installed without their declared dependencies (it says why).
.venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -r requirements.txt
	$(VENV)/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	touch $(STAMP)

run: .venv
	scripts/run.sh

# Extra pytest arguments: make test ARGS="-x -k chat"
test: .venv
	scripts/test.sh $(ARGS)

# The tests that start no server, worker, browser or CLI (tests/server_marker.py), but the two fuzzers (marked
# `fuzz`: make test runs them), once, on SQLite, on two pytest-xdist workers (each with its own test database:
# chatter_project/test_settings.py).
test-quick: .venv
	env -u DATABASE_URL -u REDIS_URL -u PYTHONDONTWRITEBYTECODE $(VENV)/bin/pytest -m "not server and not fuzz" -n 2 $(ARGS)

services-up: .venv
	scripts/services.sh start $(SERVICES_DIR)
	@echo "Now: source $(SERVICES_DIR)/env"

services-down:
	scripts/services.sh stop $(SERVICES_DIR)

clean: services-down
	for d in var/test-services/run-*; do [ ! -d "$$d" ] || scripts/services.sh stop "$$d"; done
	rm -rf .pytest_cache test-artifacts var/static var/test-services $(SERVICES_DIR)
	rm -f var/chatter-test*.sqlite3 var/chatter-test*.sqlite3-wal var/chatter-test*.sqlite3-shm
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
