# Developer shortcuts. `make test` is the README's test command and what CI runs.
PYTHON ?= python3

.PHONY: install test lint unit benchmark

install:
	$(PYTHON) -m pip install -e ".[all]"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy policy cli cluster inference
	# operator/ has no __init__.py (it must never import as `operator`), so it is checked on its own.
	$(PYTHON) -m mypy operator

unit:
	$(PYTHON) -m pytest -q

test: lint unit

benchmark:
	edgeaigc benchmark --scenario traffic-city --output bench-out
